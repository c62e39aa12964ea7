"""`gradflow gradcheck`: backprop gradients against central finite differences, and what each costs.

The table is laid out as `gradflow ls` lays out its runs (gradflow.cli.ls.render): readable at the
terminal's width and when piped, tensor names never broken across lines."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from gradflow.cli.app import app
from gradflow.cli.console import console, labels, near_options, print_note, user_errors
from gradflow.cli.ls import SEP, choose, one_line_headers, render
from gradflow.errors import GradflowError, shorten
from gradflow.fmt import fmt
from gradflow.columns import KEY_PRIORITY, Column

MIN_NAME = 12  # a tensor name is never shortened below this many characters


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def gradcheck(
    ctx: typer.Context,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Config overrides, as for `gradflow run`: model=resnet20 data=mnist1d ...; gradcheck.mode=forward "
             "checks forward-mode AD (one JVP per entry) instead of backprop.", show_default=False)] = None,
    entries: Annotated[int, typer.Option(help="Random entries checked per parameter tensor (1 or more).")] = 8,
    batch: Annotated[int, typer.Option(
        help="Training examples in the loss (1 or more; at most the training set's size is used).")] = 8,
    eps: Annotated[float, typer.Option(help="Central-difference step (float64; finite, > 0).")] = 1e-6,
    tol: Annotated[float, typer.Option(
        help="The largest max relative error that passes (finite, > 0; the backprop-vs-fd reproduction's bound). "
             "Exit status 1 above it, or where too few tensors are resolved for the check to mean anything.")] = 1e-6,
) -> None:
    """Check backprop (or forward-mode AD) against float64 central differences and time both; exit 1 if they disagree."""
    from gradflow.config import compose, uses_batchnorm
    from gradflow.gradcheck import EPS, FLOOR, check_arguments
    from gradflow.gradcheck import gradcheck as check
    from gradflow.sweep import check_overrides

    near_options(ctx, overrides)  # a mistyped option (--entry): one line naming --entries
    check_overrides(list(overrides or []), "gradcheck")
    check_arguments(entries, batch, eps, cli=True, tol=tol)  # before the model is built: one line, not a traceback
    # train.batch_size is a key of training, which the check never reads (--batch is its batch; check_overrides
    # refuses it given): one that fits any set of examples (data.n_train=50 was refused over 128), 2 where the
    # model normalizes over the batch (the batch variance of one example is 0)
    try:
        cfg = compose(["train.batch_size=1", *(overrides or [])])
    except GradflowError as e:
        if "with batch normalization" not in str(e):
            raise
        try:
            cfg = compose(["train.batch_size=2", *(overrides or [])])
        except GradflowError as e2:  # (its advice, train.batch_size=1, is a key the check refuses)
            if not str(e2).startswith("train.batch_size=2 must be <="):
                raise
            raise GradflowError("a net with batch normalization needs 2 or more training examples (the batch "
                                "variance of one is 0): give the data 2 or more") from None
    if batch < 2 and uses_batchnorm(cfg):
        raise GradflowError(f"--batch {batch} must be >= 2 with batch normalization (the batch variance of one "
                            "example is 0)")
    with console.status("finite differences ..."):
        r = check(cfg, entries=entries, batch=batch, eps=eps)
    method = "backprop" if r.mode == "reverse" else "forward mode"
    title = f"{method} vs central differences (float64, eps {eps:g}, batch {r.batch})"
    shown, hidden = _layout(r.params, console.width)
    print_note(title)  # wrapped between words on a narrow terminal
    console.print(render(shown, len(r.params)), highlight=False, soft_wrap=True)
    if hidden:
        need = sum(c.width + SEP for c in _columns(r.params)) - SEP  # headers wrapped between words
        print_note(f"not shown ({console.width} columns): {labels(c.label for c in hidden)}; {need} columns show all")
    if r.batch < batch:
        print_note(f"--batch {batch} is more than the {r.batch} training examples: the loss is on all {r.batch}")
    print_note(f"max relative error {fmt(r.max_rel, 3, missing='nan')} over {sum(p.checked for p in r.params)} entries of "
               f"{r.n_params} parameters; errors are relative to at least the floor, {fmt(FLOOR, 3)} |L| = "
               f"{fmt(FLOOR * r.loss, 3)} (resolved: of the checked entries, those whose gradient reaches it)")
    if r.kinks:
        where = ", ".join(f"{p.name} {p.kinks}" for p in r.params if p.kinks)
        print_note(f"{r.kinks} entr{'y sits' if r.kinks == 1 else 'ies sit'} at a kink of the activation (its input "
                   f"exactly 0 at these weights, as a dead channel's bias: {shorten(where, 120)}): judged against "
                   "the one-sided difference backprop takes there (PyTorch's relu'(0) = 0, for one), not the central one, "
                   "which straddles the kink")
    if r.crossed:
        where = ", ".join(f"{p.name} {p.crossed}" for p in r.params if p.crossed)
        print_note(f"{r.crossed} entr{'y' if r.crossed == 1 else 'ies'} judged with every activation held on its "
                   f"linear piece at the weights ({shorten(where, 120)}): within eps of "
                   f"{'it' if r.crossed == 1 else 'them'} some unit's input crosses a kink, so the plain differences "
                   "mix two pieces; held, the loss is smooth there and its difference is the derivative backprop "
                   "takes")
    vague = r.unresolved()
    if vague:
        print_note(f"warning: {vague}", style="bold yellow")
    how = "" if r.mode == "reverse" else " (one JVP per entry, projected)"
    print_note(f"{method}: {fmt(r.grad_s, 3)} s for the full gradient{how}; finite differences: "
               f"{fmt(r.fd_entry_s, 3)} s per entry, {fmt(r.fd_full_s, 3)} s projected for all "
               f"{r.n_params}: {fmt(r.cost_ratio, 3)}x the cost")
    # the verdict last, where a script's log ends (NaN errors fail: a NaN compares as no error)
    if not r.max_rel < tol:
        print_note(f"FAIL: max relative error {fmt(r.max_rel, 3, missing='nan')} is not below --tol {tol:g}"
                   + (" (a gradient or a difference quotient is not finite)" if math.isnan(r.max_rel) else
                      f" (with --eps {eps:g} the difference quotient's own error, ~eps² from the curvature and "
                      f"~1e-16/eps from rounding, may be what exceeds it; the default {EPS:g} keeps both below "
                      "~1e-10)" if eps != EPS else ""),
                   style="bold red")
        raise typer.Exit(1)
    if vague:
        print_note("FAIL: too few tensors resolved for the agreement to mean anything (warning above); "
                   + _resolves_more(cfg), style="bold red")
        raise typer.Exit(1)
    at_kinks = f"; {r.kinks} at a kink, with a one-sided difference" if r.kinks else ""
    print_note(f"ok: {method} agrees with central differences (max relative error below {tol:g}{at_kinks})")


def _resolves_more(cfg) -> str:
    """What would give more tensors a gradient above the floor, for this net."""
    variant = cfg.model.get("variant")
    if variant in ("fixup", "skipinit"):  # (by design: the check cannot see those weights' backward at init)
        starts = "its branches' last layers and its head" if variant == "fixup" else "its branch scales"
        other = "batchnorm" if cfg.model.name == "resnet20" else "standard"  # (each family's default variant)
        return (f"model.variant={variant} starts {starts} at 0, which leaves the weights before them no gradient "
                f"at initialization; model.variant={other} checks the same blocks' backward")
    return ("a net whose gradients are mostly tiny (vanishing with depth: sigmoid, or relu under Xavier, whose "
            "init=kaiming_normal keeps them; or dead units) resolves more with fewer layers, an init that keeps "
            "them, more width or channels, or another seed")


def _columns(params, name_width: int | None = None) -> list[Column]:
    """The table's columns, in display order; priorities say which give way first at a narrow width
    (size, then the resolved/checked counts, then the median). Names longer than `name_width` keep both ends around
    an ellipsis."""
    def name(n: str) -> str:
        if name_width is None or len(n) <= name_width:
            return n
        head = (name_width - 1) // 2
        return f"{n[:head]}…{n[len(n) - (name_width - 1 - head):]}"

    return [Column("parameter", "parameter", KEY_PRIORITY, [name(p.name) for p in params], False),
            Column("size", "size", 4, [str(p.size) for p in params], True),  # (--entries of them are checked)
            Column("resolved", "resolved", 3, [f"{p.resolved}/{p.checked}" for p in params], True),
            Column("max_rel", "max rel err", 1, [fmt(p.max_rel, 3) for p in params], True),
            Column("median_rel", "median rel err", 2, [fmt(p.median_rel, 3) for p in params], True)]


def _layout(params, width: int) -> tuple[list[Column], list[Column]]:
    """The columns shown at `width` characters and those left out: the parameter names and their max
    relative error always show, names shortened only when even those two alone would not fit."""
    columns = _columns(params)
    room = width - SEP - columns[3].width  # what the names may take beside the max relative error
    if columns[0].width > room:
        columns = _columns(params, max(room, MIN_NAME, len(columns[0].label)))
    shown, hidden = choose(columns, width)
    one_line_headers(shown, width)
    return shown, hidden
