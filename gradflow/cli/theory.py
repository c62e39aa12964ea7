"""`gradflow theory`: mean-field predictions for one (activation, sw2, sb2), the critical sw2, or a
phase diagram."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from gradflow import theory
from gradflow.activations import ACTIVATIONS
from gradflow.cli.app import app
from gradflow.cli.console import console, formulas_whole, out_path, print_note, print_table, user_errors
from gradflow.errors import GradflowError, did_you_mean
from gradflow.fmt import fmt, strict_json

theory_app = typer.Typer(
    help="Mean-field theory (Poole et al. 2016, Schoenholz et al. 2017): q*, chi_1, depth scales, "
         "the edge of chaos, phase diagrams. No training, no torch.",
    no_args_is_help=False,
)

ActivationOpt = Annotated[Optional[str], typer.Option(
    "--activation", "-a", help=f"Nonlinearity: {', '.join(ACTIVATIONS)}.", show_default=False)]


def _activation(name: str | None) -> str:
    if name is None:
        raise GradflowError(f"--activation is required; choices: {', '.join(ACTIVATIONS)}")
    if name not in ACTIVATIONS:
        raise GradflowError(f"--activation={name!r} is not a known activation{did_you_mean(name, list(ACTIVATIONS))}; "
                            f"choices: {', '.join(ACTIVATIONS)}")
    return name


def _variance(flag: str, value: float) -> float:
    if problem := theory.variance_problem(value):
        shown = repr(value).removesuffix(".0")  # (-1 as typed, not Typer's float -1.0; -1.234567 whole)
        past = " (a number past 1.8e308, as 1e400, reads as inf)" if math.isinf(value) else ""
        raise GradflowError(f"{flag}={shown} {problem}{past}")
    return value


def _fmt(x: float, digits: int = 4) -> str:
    return fmt(x, digits, missing="n/a")  # undefined (nan) reads "n/a" here: a theory value, not a missing cell


def _power_of_ten(log10: float, digits: int) -> str:
    """10^log10 written out where it is beyond a float: 3.98e-13791."""
    exponent = math.floor(log10)
    mantissa = _fmt(10.0 ** (log10 - exponent), digits)
    if mantissa.startswith("10"):  # (rounded up to the next power)
        mantissa, exponent = "1", exponent + 1
    return f"{mantissa}e{exponent:+d}"


def _print_json(record: dict) -> None:
    console.file.write(json.dumps(strict_json(record), indent=1, allow_nan=False) + "\n")


DigitsOpt = Annotated[int, typer.Option("--digits", min=1, max=17, help="Significant digits in the table.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print JSON at full precision (inf as \"inf\", undefined as null) instead of a table.")]


@theory_app.callback(invoke_without_command=True)
@user_errors
def theory_point(
    ctx: typer.Context,
    activation: ActivationOpt = None,
    sw2: Annotated[Optional[float], typer.Option(
        "--sw2", help="Weight variance times fan-in: W ~ N(0, sw2/fan_in).", show_default=False)] = None,
    sb2: Annotated[float, typer.Option("--sb2", help="Bias variance: b ~ N(0, sb2).")] = 0.0,
    depth: Annotated[Optional[int], typer.Option(
        "--depth", min=1, help="Also predict the first/last-layer gradient ratio over this many layers.",
        show_default=False)] = None,
    critical: Annotated[bool, typer.Option(
        "--critical", help="Print the sw2 at the edge of chaos (chi_1 = 1) for this --sb2 instead.")] = False,
    digits: DigitsOpt = 4,
    as_json: JsonOpt = False,
) -> None:
    """Mean-field predictions at one (activation, sw2, sb2), or the critical sw2 with --critical."""
    if ctx.invoked_subcommand is not None:  # `theory -a gelu phase`: the activation is the subcommand's too
        given = [o for o, v in (("--sw2", sw2), ("--depth", depth), ("--critical", critical or None),
                                ("--json", as_json or None)) if v is not None]
        if given or sb2 != 0.0 or digits != 4:
            option = (given or (["--sb2"] if sb2 != 0.0 else ["--digits"]))[0]
            raise GradflowError(f"{option} does not apply to `gradflow theory {ctx.invoked_subcommand}`, which "
                                "draws log chi_1 over every sw2 and sb2; it takes --activation and --out")
        ctx.obj = {"activation": activation}
        return
    name = _activation(activation)
    _variance("--sb2", sb2)
    if critical:
        if sw2 is not None:
            raise GradflowError("--sw2 and --critical exclude each other: --critical finds the sw2 where chi_1 = 1")
        if depth is not None:
            raise GradflowError(f"--depth {depth} does not apply to --critical: at the edge of chaos chi_1 = 1, so "
                                "the predicted first/last gradient ratio is 1 at any depth")
        _show_critical(name, sb2, digits, as_json)
        return
    if sw2 is None:
        raise GradflowError("--sw2 is required (the weight variance, e.g. --sw2 1.76), or pass --critical "
                            "to find the sw2 at the edge of chaos")
    _show_point(theory.point(name, _variance("--sw2", sw2), sb2), depth, digits, as_json)


def _show_point(mf: theory.MeanField, depth: int | None, digits: int, as_json: bool) -> None:
    notes = _length_notes(mf.activation, mf.sw2, mf.sb2)
    if (endless := theory.endless_length_note(mf)) is not None:
        notes.append(endless)
    # sqrt(chi1)^depth is the signal's first/last ratio only where the law holds (theory.signal_law_applies:
    # tanh at sigma_w^2 = 1, sigma_b^2 = 0 is not such a point)
    law = depth is None or theory.signal_law_applies(mf.activation, mf.q_star, mf.chi1)
    if not law:
        why = (f"at q* = 0 the length takes many layers to reach 0 (as ~1/l for tanh at σ_w² = 1), and each "
               f"layer's own χ₁, set by its length on the way, is not the limit's {_fmt(mf.chi1, digits)}"
               if mf.q_star < math.inf else
               "at q* = ∞ the length grows layer by layer and χ₁ changes with it (only a scale-free activation, "
               "relu or linear, keeps it)")
        notes.append(f"√χ₁^{depth} does not apply: {why}; measure the ratio (gradflow run with these settings, "
                     "then gradflow ls: signal ratio).")
    if as_json:
        record = dataclasses.asdict(mf) | {"six_xi_c": mf.six_xi_c}
        if depth is not None:
            ratio, log10 = mf.grad_ratio(depth), mf.log10_grad_ratio(depth)
            # beyond a float's range the float (0 or inf) would read as exact: null, with log10 holding it
            exact = ratio != 0 and math.isfinite(ratio) or not math.isfinite(log10)
            record |= {"depth": depth, "grad_ratio": ratio if exact and law else None,
                       "log10_grad_ratio": log10 if law else None}
        _print_json(record | {"notes": notes})
        return
    rows = [
        ("q*", mf.q_star, "fixed-point pre-activation variance"),
        ("χ₁", mf.chi1, "per-layer factor of ‖∂L/∂z‖² (the signal)"),
        ("√χ₁", math.sqrt(mf.chi1), "per-layer factor of ‖∂L/∂z‖"),
        ("c*", mf.c_star, "fixed-point correlation of two inputs"),
        ("ξ_q", mf.xi_q, "depth scale of the length map"),
        ("ξ_c", mf.xi_c, "depth scale of the correlation map"),
        ("6 ξ_c", mf.six_xi_c, "trainable depth (Schoenholz et al.)"),
    ]
    if depth is not None:
        ratio, log10 = mf.grad_ratio(depth), mf.log10_grad_ratio(depth)
        beyond = ratio in (0.0, math.inf) and math.isfinite(log10)  # (beyond a float: 0 or inf read as exact)
        rows.append((f"√χ₁^{depth}", (_power_of_ten(log10, digits) if beyond else ratio) if law else "-",
                     f"‖∂L/∂z‖ first / last layer, depth {depth}" + ("" if law else ": no law (note)")))
    rows = [(label, value if isinstance(value, str) else _fmt(value, digits), meaning) for label, value, meaning in rows]
    table = Table(title=f"mean field: {mf.activation}, σ_w² = {mf.sw2:g}, σ_b² = {mf.sb2:g}", title_justify="left")
    # the numbers whole whatever the width (√χ₁^123456789012 at 17 digits was cut to "5.95…e-169769…"): the
    # meanings wrap instead
    table.add_column("quantity", no_wrap=True, min_width=max(len(r[0]) for r in rows))
    table.add_column("value", justify="right", no_wrap=True, min_width=max(len(r[1]) for r in rows))
    table.add_column("meaning", style="dim")
    for row in rows:
        table.add_row(*row)
    verdict = {"ordered": "gradients vanish towards the input",
               "critical": f"|χ₁ - 1| < {theory.CRITICAL_TOL:g}: edge of chaos",
               "chaotic": "gradients explode towards the input"}[mf.phase]
    table.add_row("phase", mf.phase, verdict)
    print_table(table)
    for note in notes:
        _note(note)


def _show_critical(name: str, sb2: float, digits: int, as_json: bool) -> None:
    try:
        sw2 = theory.critical_sw2(name, sb2)
    except theory.NoEdge as e:  # an answer (gelu at sb2 = 0: chi_1 jumps over 1), exit 0, as any other
        why = str(e).split(": ", 1)[-1]
        if as_json:
            _print_json({"activation": name, "sb2": sb2, "critical_sw2": None, "q_star": None, "why": why})
            return
        table = Table(title=f"edge of chaos: {name}, σ_b² = {sb2:g}", title_justify="left")
        for column, justify in (("quantity", "left"), ("value", "right"), ("meaning", "left")):
            table.add_column(column, justify=justify, style="dim" if column == "meaning" else None)
        table.add_row("critical σ_w²", "none", "no σ_w² where χ₁ = 1 (note)")
        print_table(table)
        _note(f"{why}; another --sb2 may have one")
        return
    q = theory.q_star(name, sw2, sb2)
    notes = _length_notes(name, sw2, sb2)
    if q == math.inf:  # (it was printed without a word: softplus's edge is a limit no finite variance reaches)
        notes.append("q* = ∞: at this σ_w² the signal variance grows without bound with depth, and "
                     + ("χ₁ = 1 at every variance (a piecewise-linear activation is scale-free)"
                        if isinstance(theory.moments(name), theory.PiecewiseLinear) else
                        "χ₁ reaches 1 only in that limit, below it at every finite variance: the edge is a "
                        "limit, not a point a net sits at"))
    if as_json:  # (the notes too: the table's reader was told q* = 1 is any q, q* = ∞ a limit; --json's was not)
        _print_json({"activation": name, "sb2": sb2, "critical_sw2": sw2, "q_star": q, "notes": notes})
        return
    table = Table(title=f"edge of chaos: {name}, σ_b² = {sb2:g}", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    table.add_row("critical σ_w²", _fmt(sw2, max(digits, 4)), "weight variance × fan-in where χ₁ = 1")
    table.add_row("q*", _fmt(q, digits), "fixed-point pre-activation variance there")
    print_table(table)
    for note in notes:
        _note(note)


def _length_notes(name: str, sw2: float, sb2: float) -> list[str]:
    """What the table's q* does not say of the length map: every q is fixed (q* = 1 read as if 1 were
    special), or q* is one of several fixed points, reached from inputs of some scales only."""
    if theory.every_q_fixed(name, sw2, sb2):
        return [f"every q is a fixed point here ({name} is scale-free and σ_b² = 0): the q* shown is the length "
                "the map starts from, and χ₁ = 1 at any input scale."]
    b = theory.basin(name, sw2, sb2)
    ends = [(q, side, to) for q, side, to in ((b.low, "below", b.below), (b.high, "above", b.above)) if q]
    if not ends:
        return []
    goes = [f"{side} {q:.4g} {'it' if i else 'the signal variance'} " + (
        f"goes to {to:.4g}" if 0 < to < math.inf else "decays to 0" if to == 0 else "grows without bound")
        for i, (q, side, to) in enumerate(ends)]
    return ["q* depends on the inputs' scale: the length map has "
            + (f"an unstable fixed point at q = {ends[0][0]:.4g}" if len(ends) == 1 else
               f"unstable fixed points at q = {ends[0][0]:.4g} and {ends[1][0]:.4g}")
            + ": from a first-layer variance " + ", and ".join(goes)
            + ". The q* and χ₁ shown are those reached from q = 1."]


@theory_app.command("phase")
@user_errors
def phase(
    ctx: typer.Context,
    activation: ActivationOpt = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", "-o", help="Figure file (.png, .pdf, .svg) or folder to write phase-ACTIVATION.png into "
        "(default: results/theory).", show_default=False)] = None,
) -> None:
    """Draw the phase diagram (log chi_1 over sw2 x sb2, with the edge of chaos) to a figure."""
    from gradflow.cli.plots import figure_target  # matplotlib only when drawing
    from gradflow.plots.phase import phase_diagram

    before = (ctx.obj or {}).get("activation")  # (given before `phase`, too)
    if activation is not None and before is not None:
        raise GradflowError(f"--activation is given twice ({before} before `phase`, {activation} after it); "
                            "give it once")
    name = _activation(activation or before)
    folder, file, fmt = figure_target(out_path(out), Path("results") / "theory", None)
    path = phase_diagram(name, file or folder / f"phase-{name}.{fmt}")
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


app.add_typer(theory_app, name="theory")


def _note(text: str) -> None:
    """A note under the table, broken at spaces but never inside a formula's ` = ` (`ξ_c = ∞` ran onto
    two lines), with no trailing spaces."""
    print_note(formulas_whole(f"note: {text}"), style="dim")
