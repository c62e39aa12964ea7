"""`gradflow run`: one network trained and probed into results/NAME/JOB/."""

from __future__ import annotations

import inspect
import math
import re
import shlex
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from typer.core import TyperCommand
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

from gradflow import config as config_mod
from gradflow import store
from gradflow.choices import settings
from gradflow.cli.app import app
from gradflow.cli.console import (NBSP, console, formulas_whole, leave_interrupted, near_options, note_replaced,
                                  print_note, said_changes, user_errors)
from gradflow.cli.app import progress_bar
from gradflow.errors import GradflowError
from gradflow.fmt import and_list, fmt
from gradflow.probes.quantities import JACOBIAN_MODEL, QUANTITIES
from gradflow.overrides import home_expanded, job_name, last_overrides, point_name
from gradflow.metrics import REGRESSION_TOLERANCE, is_regression
from gradflow.choices import RECURRENT
from gradflow.summary import RESIDUAL_STREAM, block_of


# --- help text generated from the schema and the group YAMLs, so it cannot drift from the code --------
HELP_WIDTH = 76  # fits 80 columns inside typer's padding of the epilog; narrower terminals get less
KEY_COLUMN = 28  # where the meaning starts; a longer key=default puts its meaning on the next line


def help_width() -> int:
    """The epilog's line width in this terminal (typer pads it by 4): at most HELP_WIDTH, and rich never
    has to fold a line we wrapped (at 60 columns it folded each 76-wide line into two ragged ones)."""
    import shutil

    return max(KEY_COLUMN + 16, min(HELP_WIDTH, shutil.get_terminal_size((80, 24)).columns - 4))


def _field_comments(cls) -> dict[str, str]:
    """Each field's meaning: its trailing comment, or else the comment lines just above it, from `cls`
    and the classes it inherits fields from (a subclass's own comment wins)."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if "__dataclass_fields__" in vars(k)]):
        above: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            comment = re.match(r"\s+#\s*(.*)$", line)
            if comment:
                above.append(comment.group(1))
                continue
            m = re.match(r"\s+(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", line)
            if m and (m.group(2) or above):
                out[m.group(1)] = m.group(2) or " ".join(above)
            above = []
    return out


def _shown(v) -> str:
    """A default as the user would type it: a list in brackets (Hydra reads a,b as a sweep), strings as
    they are (empty ones empty), numbers and booleans as gradflow prints them."""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig":
        return "[" + ",".join(map(_shown, v)) + "]"
    return fmt(v) if not isinstance(v, str) else v


def _group_yaml(group: str, choice: str) -> dict:
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(config_mod.CONF_DIR / group / f"{choice}.yaml"))
    return {k: v for k, v in (raw or {}).items() if k not in ("defaults", "name")}


def _key_lines(key: str, default: str, meaning: str, width: int) -> list[str]:
    import textwrap

    head = f"  {key}={default}"
    body = textwrap.wrap(meaning, width - KEY_COLUMN) or [""]
    if len(head) >= KEY_COLUMN - 1:
        return [head] + [" " * KEY_COLUMN + ln for ln in body if ln]
    return [head.ljust(KEY_COLUMN) + body[0]] + [" " * KEY_COLUMN + ln for ln in body[1:]]


def _section(title: str, prefix: str, cls, choices: list[str], group: str | None, width: int,
             keys: set[str] | None = None) -> list[str]:
    """One block: the heading, then every key of `cls` (or those of `keys`) with its default and meaning; a
    value a choice's YAML sets differently is added as (choice: value)."""
    from dataclasses import MISSING, fields

    notes = _field_comments(cls)
    sets = {c: _group_yaml(group, c) for c in choices} if group else {}
    lines = [title]
    for f in fields(cls):
        if (f.name == "name" and prefix) or f.name in config_mod.GROUPS + ("train", "gradcheck"):
            continue
        if keys is not None and f"{prefix}{f.name}" not in keys:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        base = sets[choices[0]].get(f.name, default) if len(choices) == 1 else default
        differ = {c: v[f.name] for c, v in sets.items() if f.name in v and _shown(v[f.name]) != _shown(base)}
        meaning = notes.get(f.name, "")
        if "gradflow.activations.ACTIVATIONS" in meaning:  # (the recurrent cells' own comment names theirs)
            from gradflow.activations import ACTIVATIONS

            meaning = meaning.replace("a name from gradflow.activations.ACTIVATIONS", f"one of: {', '.join(ACTIVATIONS)}")
        if differ:
            meaning = "; ".join(f"{group}={c} sets {_shown(v)}" for c, v in differ.items()) + (
                f". {meaning}" if meaning else "")
        lines += _key_lines(f"{prefix}{f.name}", _shown(base), meaning, width)
    return lines


def _family(group: str, cls, members: dict[str, str], width: int) -> list[str]:
    """The blocks of one schema's choices: the keys they all take under all of them, then the keys only some
    take (CHOICE_KEYS: init.gain is xavier's and orthogonal's) under those only, so that no heading lists a
    choice that refuses a key below it (`init=standard init.gain=2` is refused). `members`: each choice -> the
    schema's choice it is a preset of (resnet32 -> resnet)."""
    import textwrap

    def heading(text: str) -> str:
        return "\n".join(textwrap.wrap(text, width, initial_indent=" ", subsequent_indent="   ",
                                        break_on_hyphens=False))

    taken = {c: config_mod.choice_keys(group, base) for c, base in members.items()}
    shared = set.intersection(*map(set, taken.values()))
    by_keys: dict[tuple, list[str]] = {}  # the keys beyond the shared ones -> the choices that take them
    for c in members:
        by_keys.setdefault(tuple(k for k in taken[c] if k not in shared), []).append(c)
    lines = []
    if shared or len(by_keys) == 1:
        lines += _section(heading(f"{group}={', '.join(members)}"), f"{group}.", cls, list(members), group, width,
                          shared)
    for extra, some in by_keys.items():
        if len(by_keys) == 1:
            break
        if not extra:  # (after a shared block, these take the shared keys only)
            lines += [] if shared else [heading(f"{group}={', '.join(some)}: no keys")]
            continue
        also = " also takes" if shared else ""
        lines += _section(heading(f"{group}={', '.join(some)}{also}"), f"{group}.", cls, some, group, width,
                          set(extra))
    return lines


def config_help(width: int = HELP_WIDTH) -> str:
    """The reference under `gradflow run --help`, in lines of `width`: each config group with its choices
    and its keys (a model or data family's keys under that family only), then the top-level keys."""
    import textwrap

    out = textwrap.wrap("Config: GROUP=CHOICE picks a group, KEY=VALUE sets a key (shown with its default).", width)
    out = [f"[bold]Config[/]{out[0].removeprefix('Config')}", *out[1:], ""]
    from omegaconf import OmegaConf

    picked = {}  # conf/config.yaml's defaults list: the choice each group starts from
    for entry in OmegaConf.to_container(OmegaConf.load(config_mod.CONF_DIR / "config.yaml")).get("defaults", []):
        if isinstance(entry, dict):
            picked.update({k: v for k, v in entry.items() if k in config_mod.GROUPS})
    for group in config_mod.GROUPS:
        choices = config_mod.group_choices(group)
        chosen = picked.get(group)
        listing = " | ".join(f"{c}\xa0(default)" if c == chosen else c for c in choices).replace(" | ", "\xa0| ")
        out += [ln.replace("\xa0", " ") for ln in  # (no line starts with "|" or splits "(default)" from its choice)
                textwrap.wrap(f"{group}: {listing}", width, subsequent_indent="    ", break_on_hyphens=False)]
        schemas = config_mod.GROUP_SCHEMAS.get(group)
        if schemas is not None:  # one block per family: its keys only, under the choices that use them
            families: dict = {}
            for c in choices:
                base = _schema_of(group, c, schemas)
                if base is not None:
                    families.setdefault(schemas[base], {})[c] = base
            for cls, members in families.items():
                out += _family(group, cls, members, width)
        else:
            cls = {"norm": config_mod.NormConfig, "probe": config_mod.ProbeConfig}[group]
            out += _section("", f"{group}.", cls, choices, group, width)[1:]
        out.append("")
    out += _section("train (no group: set the keys)", "train.", config_mod.TrainConfig, [], None, width)
    out += [""] + _section("gradcheck (gradflow gradcheck)", "gradcheck.", config_mod.GradcheckConfig, [], None, width)
    out += [""] + _section("top level", "", config_mod.Config, [], None, width)
    return "\n".join(escape(line) if not line.startswith("[bold]") else line for line in out)


def _schema_of(group: str, choice: str, schemas: dict) -> str | None:
    """The schema a preset of `group` composes: itself, or the one its file's defaults list extends, followed
    (plain20 -> resnet20 -> resnet). By name it was a guess: a preset named otherwise lost its keys' block."""
    from omegaconf import OmegaConf

    seen = set()
    while choice not in schemas and choice not in seen:
        seen.add(choice)
        path = config_mod.CONF_DIR / group / f"{choice}.yaml"
        defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []) if path.exists() else []
        parent = next((d for d in defaults if isinstance(d, str) and d != "_self_" and not d.startswith("/")), None)
        if parent is None:
            return None
        choice = parent
    return choice if choice in schemas else None


class _RunCommand(TyperCommand):
    """Composes the config reference only when help is shown: at import it would cost every command
    (`gradflow ls` included) a Hydra compose and a torch import."""

    def format_help(self, ctx, formatter):
        self.epilog = self.epilog or config_help(help_width())
        return super().format_help(ctx, formatter)


@app.command(
    cls=_RunCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@user_errors
def run(
    ctx: typer.Context,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Hydra overrides: GROUP=CHOICE (init=xavier_normal) or KEY=VALUE (model.depth=30).",
        show_default=False)] = None,
) -> None:
    """Train one network and record its per-layer gradient signals into results/NAME/JOB/."""
    import torch

    from gradflow import job
    from gradflow.sweep import check_overrides

    near_options(ctx, overrides)
    note_replaced(overrides)
    overrides = last_overrides(home_expanded(overrides))  # (the replaced values are neither checked nor used)
    check_overrides(overrides, "run")
    command = shlex.join(["gradflow", "run", *overrides])  # (run.json keeps it: the report page gives it)
    cfg = config_mod.compose(overrides)
    store.refuse_reproduce_name(cfg.name, cfg.results)
    study = store.study_dir(cfg.results, cfg.name)
    store.refuse_nested(study, cfg.results, cfg.name)
    flat = settings(store.flatten(cfg))
    digest = store.config_hash(flat)
    job_dir = _sweep_point(study, overrides, cfg.name, flat, digest)
    store.check_writable(job_dir, study)
    store.check_clearable(job_dir)
    if "root" in cfg.data:  # files missing under data.root: one line, no failed run written
        from gradflow.data import check_files

        check_files(cfg.data.name, cfg.data.root, cfg.data.download)
    with store.lock(study):
        store.recover(job_dir)  # (a swap a killed process cut off: see store.swap_in)
        before = store.standing(job_dir, digest)  # a finished run there, kept until this one ends (job.execute)
        old = _identity(store.read_run(job_dir)) if before else None
        _warn_replaced(job_dir, flat, before)
        try:
            if console.is_terminal:
                with progress_bar() as progress:
                    task = progress.add_task("training", total=cfg.train.steps)
                    record = job.execute(cfg, job_dir, on_step=lambda t, n: progress.update(task, completed=t),
                                         flat=flat, command=command)
            else:
                record = job.execute(cfg, job_dir, on_step=progress_lines(cfg.train.steps), flat=flat, command=command)
        except KeyboardInterrupt:
            rec = store.read_run(job_dir) or {}
            if before and _identity(rec) == old:  # (job.execute dropped the replacement)
                leave_interrupted(f"interrupted: the run was dropped, and the finished run {_of(before)} in "
                                  f"{job_dir} stays as it was; rerun the same command to replace it")
            if rec.get(store.STATUS) in store.FINISHED:  # Ctrl-C as its last tables were written: it waited
                leave_interrupted(f"interrupted after the run ended: {job_dir} is recorded {rec[store.STATUS]}, "
                                  f"with its tables (gradflow plot {job_dir})")
            kept = (f", with its tables up to there (gradflow plot {job_dir})"
                    if store.LAYERS_FILE in rec.get("files", ()) else "")
            leave_interrupted(f"interrupted at step {rec.get('steps_done', 0)}: {job_dir} is marked interrupted"
                              f"{kept}; rerun the same command to start it again")
    show_run(job_dir, record, torch.get_num_threads(), kept=_of(before) if before and
             _identity(store.read_run(job_dir)) == old else "")
    if record["status"] == store.FAILED:
        raise typer.Exit(1)


def _sweep_point(study: Path, overrides: list[str], name: str, flat: dict, digest: str) -> Path:
    """The run's folder: its overrides' name in the study. In a sweep's folder (name= the sweep's) a run
    must be one of the sweep's points, with the point's settings: any other run there would be listed
    `stale` at once, as a run of an earlier spec is, and left out of the sweep's plots. A run with a
    point's settings takes that point's folder (it reruns the point), whichever of its values it names."""
    own = job_name(overrides)
    spec = store.sweep_spec(study) or {}
    planned = spec.get("runs")
    if not isinstance(planned, dict):  # a folder of single runs: a run of these settings written otherwise
        # (model.depth="2" beside model.depth=2, optim.lr=1e-3 beside 0.001: one value to the config) is rerun
        # in its folder, not beside it
        same = [] if (study / own).exists() or not study.is_dir() else [
            f for f in sorted(study.iterdir()) if not store.is_staging(f.name) and store.is_run_folder(f)
            and (store.read_run(f) or {}).get("config_hash") == digest]  # (not a replacement's hidden folder)
        return same[0] if same else study / own
    points = [point for point, want in planned.items() if want == digest]
    if points:
        return study / (own if own in points else points[0])
    where = f"name={name} is the folder of a sweep ({study / store.SWEEP_FILE}), and this run"
    fix = f"ls would list it as stale; give the run a name of its own, or {_rerun_advice(study, name)}"
    point = next((p for p in (own, point_name(overrides, spec.get("swept") or [])) if p in planned), None)
    if point is None:  # (the nearest points by their swept values: which of them was meant, and what differs)
        from gradflow.plots.series import nearest_runs

        near = nearest_runs(point_name(overrides, spec.get("swept") or []), list(planned), 3).replace(", ", "; ")
        raise GradflowError(f"{where} is none of its points (nearest: {near}): {fix}")
    rec = store.read_run(study / point) or {}  # the point's run, if it has the point's settings: what differs
    said = (f" (the point → this run: {_differences(rec.get('config') or {}, flat)})"
            if rec.get("config_hash") == planned[point] else "")
    raise GradflowError(f"{where} has other settings than its point {point}{said}: {fix}")


def _rerun_advice(study: Path, name: str) -> str:
    """How the sweep of `study` is changed or run again: by its reproduction, for an arm of one."""
    from gradflow.report import reproduction

    try:
        made = reproduction(study.parent)
    except GradflowError:  # (a claims.json gradflow did not write: no reproduction's)
        made = {}
    if "experiment" in made and "scale" in made:
        return f"rerun the reproduction (gradflow reproduce {made['experiment']} --scale {made['scale']})"
    return f"change the sweep (gradflow sweep ... --name {name})"


def _warn_replaced(job_dir: Path, flat: dict, before: str | None) -> None:
    """Say so when the run replaces a finished one made with other settings (a run of a folder name that
    leaves out a seed or a device), naming what differs, as `gradflow sweep` says it; or redoes one of the same
    settings, which stays until this one has ended."""
    if before == store.SAME:
        print_note(f"rerunning the finished run in {job_dir} (the same settings): it stays there until this "
                   "run has ended")
    if before != store.OTHER:
        return
    old = (store.read_run(job_dir) or {}).get("config") or {}
    print_note(f"replacing the finished run in {job_dir}, made with other settings ({_differences(old, flat)})",
               style="yellow")


def _identity(rec: dict | None) -> tuple:
    """Which run a run.json records (its start and process): the finished one kept, or the one that replaced it."""
    return ((rec or {}).get("started"), (rec or {}).get("pid"))


def _of(before: str | None) -> str:
    return "of the same settings" if before == store.SAME else "of other settings"


def _differences(old: dict, new: dict, most: int = 4) -> str:
    """`key old → new` for the first `most` identity keys that differ (device too, which no folder name has)."""
    return said_changes(store.differing(old, new), most)


def progress_lines(steps: int, lines: int = 5):
    """Without a terminal (a log file, CI): a few "step t/N" lines instead of a bar nobody sees."""
    import time

    start = time.perf_counter()
    marks = {round(steps * k / lines) for k in range(1, lines)} - {0, steps}

    def on_step(t: int, n: int) -> None:
        if t in marks:
            console.print(f"step {t}/{n}  {time.perf_counter() - start:.0f} s elapsed", highlight=False)

    return on_step


SHOWN_LAYERS = 13  # rows of the per-layer table; deeper nets are thinned evenly, both ends kept


def show_run(job_dir: Path, record: dict, threads: int | None = None, kept: str = "") -> None:
    """The summary of one finished run, read back from its results folder. `kept`: it failed, and the
    finished run it was to replace stays in the folder (`job.execute`), "of other settings" (or the same)."""
    show_status(record, threads)
    if record["status"] == store.FAILED:
        console.print(escape(str(record.get("error"))), style="red", highlight=False, soft_wrap=True)
        if kept:
            print_note(f"the finished run {kept} in {job_dir} was kept (its run.json notes this "
                       f"failure under {store.REPLACEMENT!r}, with the traceback)", style="yellow")
        else:
            console.print(f"results: {job_dir}", soft_wrap=True)
        return
    show_final(record)
    layers = store.run_table(job_dir, "layers")
    if not layers.empty:
        show_layers(layers, record)
    console.print(f"results: {job_dir}", soft_wrap=True, highlight=False)


def show_status(record: dict, threads: int | None = None) -> None:
    """How the run ended, where and how fast; its flags; for a diverged run, what went non-finite first."""
    status = record["status"]
    colour = store.STATUS_COLOURS.get(status, "white")
    device = record.get("device", "?")
    on = f"{device}, {threads} thread{'s' * (threads != 1)}" if threads and device == "cpu" else device
    if status == store.DIVERGED:  # the step that went non-finite (its steps done are the updates before it)
        done = f"at step {record['diverged_step']} of {record.get('steps', '?')}"
    else:
        n = record.get('steps_done', 0)
        done = f"after {n} step{'s' * (n != 1)}"
    console.print(f"[bold {colour}]{status}[/] {done} in {record.get('wall_time', 0):.1f} s on {on}", highlight=False)
    for flag in flag_notes(record.get("flags") or []) + list(record.get("notes") or []):
        print_note(formulas_whole(f"note: {flag}"), style="yellow")  # (at spaces; "ln 10 = 2.303" whole)
    if clipped := clip_note(record):
        print_note(clipped)
    if spectra := no_spectra_note(record):
        print_note(spectra, style="yellow")
    if status == store.DIVERGED:
        layer, what = record.get("diverged_layer"), record.get("diverged_in") or "loss or gradient"
        where = f", first in layer {layer}" if layer is not None else ""
        finite = ", the gradients finite" if what == "loss" else ""  # (e.g. a regression loss overflowing)
        console.print(escape(f"non-finite {what}{where}{finite}"), style="yellow", highlight=False)
        if record.get("diverged_step") and (hint := diverged_hint(record.get("config") or {})):
            print_note(hint)  # (not at step 0: no update had been taken, so neither a step nor clipping helps)


def diverged_hint(config: dict) -> str:
    """What would train a diverged net through, in the keys that set it: a smaller step, or clipping where
    the run had none (an exploding net is often the point of the run: a hint, not a warning)."""
    lr, clip = config.get("optim.lr"), config.get("train.grad_clip")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        return ""
    clipping = " or train.grad_clip=1.0" if not clip and not config.get("train.clip_value") else ""
    return f"to train through it: a smaller optim.lr (it was {lr:g}){clipping}"


def show_final(record: dict) -> None:
    """The final train and test loss and accuracy, or a diverged run's last finite ones (none: no line)."""
    final = record.get("final") or record.get("last_finite") or {}
    label = "final" if record.get("final") else f"last finite evaluation (step {final['step']})" if final else ""
    if not label:
        return
    # (NBSP: a narrow terminal breaks the line between the train and the test pair, never inside one)
    config = record.get("config") or {}
    acc = f"acc(|err|<{REGRESSION_TOLERANCE:g})" if is_regression(config.get("data.name"),
                                                                  config.get("data.task")) else "acc"
    train, test = (f"{split}{NBSP}loss{NBSP}{fmt(final.get(f'{split}_loss'))}{NBSP * 2}"
                   f"{acc}{NBSP}{fmt(final.get(f'{split}_acc'))}" for split in ("train", "test"))
    print_note(f"{label}  {train}   {test}")


def show_layers(layers: pd.DataFrame, record: dict) -> None:
    """The per-layer table (SYMBOLS at init and at the last step, deep nets thinned to SHOWN_LAYERS rows),
    why a cell is "-", and the first/last ratios."""
    from gradflow.summary import grad_ratio

    # a diverged run's last column is its last probed step before the divergence, as ls's "ratio end" (its
    # diverged step's cells read nan, a column of nothing)
    diverged = record.get("diverged_step")
    before = layers if diverged is None else layers[layers[store.STEP] < diverged]
    last = store.last_step(before if len(before) else layers)
    quantities = tuple(SYMBOLS)
    rows = layers[layers[store.STEP].isin([0, last]) & layers[store.QUANTITY].isin(quantities)]
    wide = rows.pivot_table(index=store.LAYER, columns=[store.QUANTITY, store.STEP], values=store.VALUE,
                            aggfunc="first", dropna=False)  # (a layer whose every value is NaN stays a row)
    # a frozen layer (requires_grad=False: a fine-tuned net's backbone) has no gradient row and, where no trainable
    # layer comes before it, no signal row either: a row of "-" said why, not a layer left out without a word
    wide = wide.reindex(sorted(layers[store.LAYER].unique()))
    # a row whose value is NaN was measured and not finite (a diverged step): "nan"; "-" is no row at all
    measured = set(rows[[store.LAYER, store.QUANTITY, store.STEP]].itertuples(index=False, name=None))
    names = layers.drop_duplicates(store.LAYER).set_index(store.LAYER)[store.NAME]
    weighted = {i for i, layer in enumerate(wide.index) if (layer, "grad_norm", 0) in measured}
    rows, which = _thin_rows([str(names[layer]) for layer in wide.index], SHOWN_LAYERS, weighted)
    shown = wide.index[sorted(rows)]
    title = "per-layer gradients (layer 0 = input)"
    if len(shown) < len(wide.index):
        title += f", showing {len(shown)} of {len(wide.index)} layers"
        if which:
            title += f" ({which})"
    print_note(title)  # (a rich title is padded to the table's width)
    cols = [(q, s) for q in quantities for s in dict.fromkeys([0, last])]
    heads = ["layer", "name", *(f"{SYMBOLS[q]} @{s}" for q, s in cols)]
    for digits in (4, 3, 2):  # significant digits: fewer only where a narrow terminal has no room for them
        cells = [[str(layer), str(names[layer]), *(fmt(wide.loc[layer].get((q, s)), digits,
                                                       missing="nan" if (layer, q, s) in measured else "-")
                                                   for q, s in cols)] for layer in shown]
        room, widths = _name_room(heads, cells)
        cut = _cut_names([c[1] for c in cells], max(room, NAME_ROOM))
        if max(map(cell_len, cut)) <= room:  # (else rich narrows the number columns, and cuts their cells)
            break
    table = Table()
    for i, h in enumerate(heads):
        table.add_column(h, justify="left" if i == 1 else "right", no_wrap=i == 1, width=widths and widths[i])
    for c, name in zip(cells, cut):
        table.add_row(c[0], name, *c[2:])
    console.print(table)
    at_init = [{q for lay, q, s in measured if lay == layer and s == 0} for layer in shown]
    recurrent = (record.get("config") or {}).get("model.name") in RECURRENT
    weights = set(layers.loc[layers[store.QUANTITY] == "weight_norm", store.NAME])  # (a frozen layer's too)
    for note in _dash_notes([names[layer] for layer in shown], at_init, recurrent, weights, record.get("tied") or [],
                            record.get("frozen")):
        print_note(note)
    if diverged is not None and last < diverged:
        print_note(f"@{last}: the last probed step before the divergence (at step {diverged})")
    # (a tied point's weight gradient is the sum of every use, no layer's own: left out, as ls leaves it)
    own = layers[~layers[store.NAME].isin(record.get("tied") or [])]
    for q, what in (("grad_norm", "weight-gradient ratio"), ("signal_norm", "back-prop signal ratio")):
        rows = own if q == "grad_norm" else layers
        ratios = grad_ratio(rows, 0, q), grad_ratio(rows, last, q)
        if not all(math.isnan(r) for r in ratios):  # (a recurrent net's time steps have no weights)
            end = f", end{NBSP}{fmt(ratios[1])}" if last else ""  # (probed at init alone: one value)
            print_note(f"{what} {SYMBOLS[q]} first/last: init{NBSP}{fmt(ratios[0])}{end}")


def _name_room(heads: list[str], cells: list[list[str]]) -> tuple[int, list[int | None] | None]:
    """The terminal columns the layer table leaves its name column (the second): a name too long for them
    keeps its last part and its numbers (`_cut_names`: enc.layers.0.linear1 and .linear2 cut at their end
    both read "enc.layers.0.li…"), and reads as no other name of the table. With each column's width
    where the headers must wrap (else None): each other column as wide as its widest cell or header
    word, so that rich, which narrows the widest columns first, never cuts a number ("0.0056…")."""
    def widest(i: int, head_width) -> int:
        return max(head_width(heads[i]), *(cell_len(c[i]) for c in cells))

    def others(head_width) -> int:  # the cells beside the name column, with their padding and borders
        return sum(widest(i, head_width) + 3 for i in range(len(heads)) if i != 1)

    room = console.width - others(cell_len) - 4
    if not any(cell_len(c[1]) > room for c in cells):
        return room, None
    # the headers wrap at their spaces before a name is cut
    word = lambda h: max(map(cell_len, h.split()))  # noqa: E731
    room = max(console.width - others(word) - 4, room)
    return room, [None if i == 1 else widest(i, word) for i in range(len(heads))]


NAME_ROOM = 6  # the fewest cells a layer name is cut to, however narrow the terminal


SYMBOLS = {q: QUANTITIES[q].symbol for q in ("grad_norm", "signal_norm")}  # the per-layer table's quantities


def clip_note(record: dict) -> str:
    """"clipped 37% of updates (train.grad_clip=1)" for a run that clips (its run.json summary's share), else ""."""
    from gradflow.summary import CLIPPED

    share = (record.get("summary") or {}).get(CLIPPED)
    if share is None:
        return ""
    config = record.get("config") or {}
    how = ", ".join(f"{k}={fmt(config[k])}" for k in ("train.grad_clip", "train.clip_value")
                    if (config.get(k) or 0) > 0)
    return f"clipped {share:.0%} of updates" + (f" ({how})" if how else "")


def no_spectra_note(record: dict) -> str:
    """Why a run with probe.jacobian=true (probe=full) has no jacobian.parquet: its family is not the MLP's."""
    config = record.get("config") or {}
    model = config.get("model.name")
    if not config.get("probe.jacobian") or model in (None, JACOBIAN_MODEL):
        return ""
    return (f"note: no Jacobian spectra: probe.jacobian takes them of model={JACOBIAN_MODEL} only, and this "
            f"run is model={model}")


def flag_notes(flags: list[str]) -> list[str]:
    """A run's flags as notes, those of one kind in one note: `learned nothing: every hidden weight gradient
    is exactly 0 at the end; final train loss 2.3, chance ...` (two notes of "learned nothing" read as a
    repetition)."""
    by_kind: dict[str, list[str]] = {}
    for flag in flags:
        kind, _, why = flag.partition(": ")
        by_kind.setdefault(kind, []).append(why)
    return [f"{kind}: {'; '.join(w for w in whys if w)}" if any(whys) else kind for kind, whys in by_kind.items()]


def _dash_notes(names: list[str], measured: list[set[str]], recurrent: bool = False,
                weights: set[str] = frozenset(), tied: list[str] = (), frozen_weights: list[str] | None = None,
                ) -> list[str]:
    """Why a layer's weight gradient or signal is `-` (no row) in the run's table: the points (`names`)
    with the quantities `measured` at step 0 of each, of a recurrent net (time steps) or not; `weights`: the
    points with a weight (its norm recorded), so that a frozen one's missing gradient is not read as none;
    `tied`: the points whose weight a later one uses too (run.json's), where that one's is recorded;
    `frozen_weights`: the points whose weight is frozen (run.json's; None in a record from before it), where
    any other without a gradient took none in the step (a layer its forward pass does not use)."""
    def which(points: list[str]) -> str:
        return points[0] + (f" and {len(points) - 1} more" if len(points) > 1 else "")

    no_signal = [n for n, m in zip(names, measured) if "grad_norm" in m and "signal_norm" not in m]
    frozen = [n for n, m in zip(names, measured) if not m & {"grad_norm", "signal_norm"}]
    unused = [n for n in frozen if frozen_weights is not None and n not in frozen_weights]
    frozen = [n for n in frozen if n not in unused]
    no_weight = [n for n, m in zip(names, measured) if "signal_norm" in m and "grad_norm" not in m]
    frozen_signal = [n for n in no_weight if n in weights]  # (frozen, with a trainable layer before it)
    no_weight = [n for n in no_weight if n not in weights]
    inside = [n for n in no_signal if n.endswith(("in_proj", "q_proj", "k_proj", "v_proj", "out_proj"))]
    unbatched = [n for n in no_signal if n not in inside]
    notes = []
    if inside:
        notes.append(f"{SYMBOLS['signal_norm']} - at {which(inside)}: a weight used inside its module's own "
                     "forward (nn.MultiheadAttention's in_proj and out_proj) has no output to hook, so no "
                     "back-propagated signal")
    if unbatched:
        notes.append(f"{SYMBOLS['signal_norm']} - at {which(unbatched)}: its output has no batch dimension to "
                     "take a per-example signal by (a position embedding of arange(T), added to every sample, its "
                     "dL/dz the batch's sum; or a head given the examples' positions flattened into rows)")
    stream = [n for n in no_weight if n.endswith(f".{RESIDUAL_STREAM}") and not recurrent]
    other = [n for n in no_weight if n not in stream]
    if stream:
        notes.append(f"{SYMBOLS['grad_norm']} - at {which(stream)}: a point on the residual stream, after a block's "
                     "branch is added, has no weight of its own")
    if other:
        if recurrent:
            why = "a recurrent net's time steps share its weights, so the signal is per step, the gradient per weight"
        elif tied:  # (a later use of an earlier point's weight: a GPT's head, its token embedding's)
            why = (f"uses {tied[0]}'s weight (tied), recorded there" if len(tied) == 1 else
                   f"uses an earlier layer's weight (tied: {', '.join(tied)}), recorded there")
        else:
            why = "no weight of its own"
        notes.append(f"{SYMBOLS['grad_norm']} - at {which(other)}: {why}")
    if frozen_signal:
        notes.append(f"{SYMBOLS['grad_norm']} - at {which(frozen_signal)}: frozen (requires_grad=False), no gradient")
    if frozen:
        notes.append(f"{SYMBOLS['grad_norm']} and {SYMBOLS['signal_norm']} - at {which(frozen)}: frozen "
                     "(requires_grad=False), no gradient, and no signal where no trainable layer comes before it")
    if unused:
        notes.append(f"{SYMBOLS['grad_norm']} and {SYMBOLS['signal_norm']} - at {which(unused)}: it took no "
                     "gradient (the forward pass did not use it), masked, not 0")
    return notes


def _middle_cut(name: str, width: int) -> str:
    """`name` in `width` cells, dotted parts left out (each gap an ellipsis) from its middle: its last part
    kept, then the parts with numbers (the block's, the layer's index), then the rest from the right,
    each where it still fits ("enc.layers.0.linear1" -> "enc…0.linear1", "b1.attn.resid" -> "b1…resid")."""
    if cell_len(name) <= width:
        return name
    parts = name.split(".")
    last = len(parts) - 1

    def shown(kept: set[int]) -> str:
        out, gap = "", False
        for i, part in enumerate(parts):
            if i not in kept:
                gap = True
                continue
            out += ("…" if gap else "." if out else "") + part
            gap = False
        return out + ("…" if gap else "")

    kept = {last}
    order = [i for i in reversed(range(last)) if any(c.isdigit() for c in parts[i])] + \
            [i for i in reversed(range(last)) if not any(c.isdigit() for c in parts[i])]
    for i in order:
        if cell_len(shown(kept | {i})) <= width:
            kept.add(i)
    text = shown(kept)
    return text if cell_len(text) <= width else next(_numbered_cuts(parts, width), "…" + _cells(name, width - 1, -1))


def _cells(text: str, cells: int, end: int = 1) -> str:
    """The start of `text` (end=-1: its end) that fills at most `cells` terminal cells: a wide character
    (注) takes two, so a cut counted in characters overflowed its column."""
    chars, used = [], 0
    for ch in text[::end]:
        used += cell_len(ch)
        if used > cells:
            break
        chars.append(ch)
    return "".join(chars[::end])


def _numbered_cuts(parts: list[str], width: int, dot: bool = False, lead: int = 6, tail: int = 8):
    """The cuts, best first, of a name whose last part alone is wider than `width`, in `width` cells: its
    last numbered part (the block's index) after up to `lead` cells of what comes before it, then the end
    of its last part, at least `tail` cells of it where they fit, else 4 ("encoder.layers.0.self_attention_qkv"
    -> "…layers.0…attention_qkv"); none where there is no numbered part. The cells before the number keep
    block 0 from reading as block 10 ("…0…" would be either), and `dot`, the dot after it, block 1
    ("…layers.1.…attention_qkv")."""
    last = len(parts) - 1
    d = next((i for i in reversed(range(last)) if any(c.isdigit() for c in parts[i])), None)
    if d is None:
        return
    before = ".".join(parts[:d])
    for least, leads in ((tail, range(min(lead, len(before)), 0, -1)), (4, range(min(lead, len(before)) + 1))):
        for keep in leads:
            head = ("…" if keep < len(before) else "") + before[len(before) - keep:] + "." * (keep > 0) + \
                   parts[d] + "." * dot + "…"
            room = width - cell_len(head)
            if room >= min(least, cell_len(parts[last])):
                yield head + _cells(parts[last], room, -1)


def _cut_names(names: list[str], width: int) -> list[str]:
    """The names of one table, each in `width` cells (`_middle_cut`), none readable as another, reading "…"
    as any text: "b0…out" would be b0.attn.out or b0.mlp.out, "b0…resid" b0.attn.resid or b0.resid. Such
    a cut keeps more of the name's start instead, its end (the last part whole first) as it fits
    ("b0.att…out", "b0.a…resid"); only where no cut of `width` reads as one name alone is it wider."""
    def alone(shown: str, name: str) -> bool:
        pattern = re.compile(".*".join(map(re.escape, shown.split("…"))))
        return not any(pattern.fullmatch(other) for other in names if other != name)

    def cuts(name: str, width: int):
        yield _middle_cut(name, width)
        if cell_len(name.rsplit(".", 1)[-1]) >= width:  # (its last part alone too wide: _middle_cut's last way)
            yield from _numbered_cuts(name.split("."), width)
            yield from _numbered_cuts(name.split("."), width, dot=True)
        last = cell_len(name.rsplit(".", 1)[-1])
        for end in [*range(last, width - 1), *range(min(last, width - 1) - 1, 0, -1)]:
            yield _cells(name, width - 1 - end) + "…" + _cells(name, end, -1)

    out = []
    for name in names:
        for w in range(width, cell_len(name)):
            shown = next((c for c in cuts(name, w) if alone(c, name)), None)
            if shown is not None:
                break
        else:
            shown = name
        out.append(shown)
    return out


def _thin_rows(names: list[str], keep: int, prefer: set[int]) -> tuple[set[int], str]:
    """The rows of a table of layers `names` to show: a net of repeated blocks (a transformer's "b3.attn.qkv", a
    ResNet's "s2.b1.conv2") shows the same layers of each block, so that down the column one layer of the
    block is compared from block to block, and, where its blocks outnumber the rows, the first layer of
    evenly spaced blocks; the layers outside the blocks (embeddings, head) are all shown. Other nets: `_thin`.
    `prefer`: as in `_thin` (the weight layers), the only ones taken where there are any. Also which layers of
    the blocks are shown, for the table's title ("" for `_thin`'s rows)."""
    n = len(names)
    if n <= keep + keep // 2:
        return set(range(n)), ""
    pool = sorted(j for j in prefer if 0 <= j < n) or list(range(n))
    blocks: dict[str, dict[str, int]] = {}  # block -> its layers' roles -> row
    outside = []
    for j in pool:
        block, role = block_of(names[j]) or (None, names[j])  # (a head, an embedding: no block)
        if block is None:
            outside.append(j)
        else:
            blocks.setdefault(block, {}).setdefault(role, j)
    first = next(iter(blocks.values()), {})
    roles = [r for r in first if all(r in b for b in blocks.values())]  # (in the first block's order)
    budget = keep - len(outside)
    if len(blocks) < 3 or not roles or budget < 3 or all(len(b) == 1 for b in blocks.values()):
        return _thin(n, keep, prefer), ""  # (blocks of one layer each: evenly spaced over the net)
    rows = list(blocks.values())
    if len(rows) <= budget:
        per = min(len(roles), budget // len(rows))
        taken = [roles[round(i * (len(roles) - 1) / (per - 1))] for i in range(per)] if per > 1 else roles[:1]
    else:
        rows = [rows[round(i * (len(rows) - 1) / (budget - 1))] for i in range(budget)]
        taken = roles[:1]
    layers = and_list(taken)
    which = f"{layers} of {'each' if len(rows) == len(blocks) else f'{len(rows)} of {len(blocks)}'} block"
    return {*outside, *(b[r] for b in rows for r in taken)}, which + "s" * (len(rows) < len(blocks))


def _thin(n: int, keep: int, prefer: set[int] | None = None) -> set[int]:
    """Evenly spaced row indices, both ends included, when there are over half as many rows again as `keep`
    (thinning 15 rows to 13 saved two lines and hid two layers). Rows of `prefer` (a transformer's weight
    layers rather than its residual-stream points, which have no weight gradient: 7 of 13 rows read "-")
    are taken alone where there are `keep` of them spread over the net (no gap over two spacings); else
    each row moves to the nearest of them within half a spacing."""
    if n <= keep + keep // 2:
        return set(range(n))
    prefer = {j for j in prefer or () if 0 <= j < n}
    spacing = (n - 1) / (keep - 1)
    if len(prefer | {0, n - 1}) >= keep:  # evenly spaced among the preferred rows, if still spread over the net
        pool = sorted(prefer | {0, n - 1})
        rows = sorted({pool[round(i * (len(pool) - 1) / (keep - 1))] for i in range(keep)})
        if max(b - a for a, b in zip(rows, rows[1:])) <= 2 * spacing:
            return set(rows)
    out = set()
    for i in range(keep):
        at = round(i * spacing)
        if prefer and at not in prefer and 0 < i < keep - 1:
            near = [j for j in prefer if abs(j - at) <= spacing / 2 and j not in out]
            at = min(near, key=lambda j: (abs(j - at), j)) if near else at
        out.add(at)
    return out
