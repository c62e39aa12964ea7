"""One self-contained HTML page per study: a run, a sweep, a comparison of several, or a reproduction.

The page holds everything inline (figures as base64 PNG, styles, a few lines of script), so it opens
offline and can be sent as one file: the runs table with the same columns as `gradflow ls` (click a
header to sort; `#sort=KEY` or `#sort=-KEY` in the address sorts on load), every standard figure,
the mean-field prediction beside the measured chi_1, a reproduction's claims, the resolved config of
the runs table's first run and the commands that made the results. Every table sits in its own box
that scrolls sideways when the table is wider than the window, so the page itself never does. Once the
figures have loaded, the script writes their count into the element #figures-status, so a headless
browser can check the page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shlex
import tempfile
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from gradflow import columns, store, summary
from gradflow import theory as theory_mod  # (`theory` names the page's rows below)
from gradflow.compare import NAMED_PARTIAL, differing_keys, setters, source_labels
from gradflow.errors import GradflowError
from gradflow.fmt import and_list, fmt, key_value

TABLES = ("layers", "metrics", "hist", "jacobian")


def kind(path: Path) -> str:
    """run | sweep | reproduction | folder (several sweeps)."""
    path = Path(path)
    if store.claims_path(path).exists():  # (what a reproduction writes; a REPORT.md alone may be the user's notes)
        return "reproduction"
    if (path / store.RUN_FILE).exists():
        return "run"
    return "sweep" if (path / store.SWEEP_FILE).exists() else "folder"


def page_path(paths: list[Path]) -> Path:
    """Where `gradflow report` writes by default: inside the study, or beside the first of several."""
    paths = [_named(p) if Path(p).name in ("", "..") else Path(p) for p in paths]  # (`.`, `..`: a name, a parent)
    if len(paths) == 1:
        return paths[0] / store.REPORT_HTML
    stem = re.sub(r"[^\w.-]+", "_", "-vs-".join(p.name for p in paths))[:120]
    return paths[0].parent / f"compare-{stem}.html"


def _named(path: str | Path) -> Path:
    """`path` made absolute with `.` and `..` resolved (not links): `.` has the name of the folder it is."""
    return Path(os.path.normpath(Path(path).absolute()))


def write(paths: Iterable[str | Path], out: str | Path | None = None) -> Path:
    """Build the page for `paths` and write it atomically; returns its path."""
    paths = [Path(p) for p in paths]
    for p in paths:  # a clear error for a path without runs, or a file given for a folder, before --out's
        store.find_runs(p)  # default beside it is checked (`build` reads the runs through the same call)
    store.check_distinct(paths, "a comparison page")
    target = Path(out) if out else page_path(paths)
    if out and target.is_dir():  # a folder: the page goes in it, under its default name
        target = target / page_path(paths).name
    elif out and str(out).endswith(("/", os.sep)):  # a folder by its slash, mistyped: not a file of that name
        raise GradflowError(f"--out {out}: no such folder; create it first or write the page elsewhere")
    if out and not target.suffix:  # a folder mistyped, or a page named without .html: it wrote a file "pages"
        raise GradflowError(f"--out {out} is no folder here and no .html file: give {target.with_suffix('.html')}, "
                            "or create the folder first")
    if out and target.suffix and target.suffix.lower() not in (".html", ".htm"):  # (x.txt held a page)
        raise GradflowError(f"--out {out} names a {target.suffix} file and the page is HTML: give "
                            f"{target.with_suffix('.html')}, or a folder")
    if out and target.name == store.REPORT_HTML and target.resolve() != page_path(paths).resolve() \
            and _holds_runs(target.parent):
        # (`sweep --report` would take it for that folder's own page, "from an earlier command")
        free = target.with_name(page_path(paths).name if len(paths) > 1 else f"{paths[0].resolve().name}.html")
        raise GradflowError(f"--out {out}: {target} is the page of {target.parent} (`gradflow report "
                            f"{target.parent}` writes it there); give this page another name ({free}) or folder")
    if out and not target.parent.is_dir():  # (a mistyped folder is not made: the page would be lost in it)
        if target.parent.exists():  # (a file: "does not exist" sent the user looking for a typo)
            raise GradflowError(f"--out {out}: {target.parent} is a file, not a folder; write the page elsewhere")
        raise GradflowError(f"--out {out}: the folder {target.parent} does not exist; create it first "
                            "or write the page elsewhere")
    store.check_writable(target.parent, option="--out")
    page = build(paths)
    try:
        store.write_text(target, page)
    except OSError as e:  # a folder that takes no files (/proc), a permission the checks above cannot see
        raise GradflowError(f"--out {out or target}: the page cannot be written there ({e.strerror}); "
                            "write it elsewhere") from None
    return target


def _holds_runs(folder: Path, depth: int = 3) -> bool:
    """Whether `folder` is a run, a study or a folder of studies (`results`, `results/reproduce`), looking
    `depth` folders down at most (`--out ~/report.html` must not walk a home folder)."""
    if (folder / store.RUN_FILE).exists() or store.is_study(folder):
        return True
    try:
        return depth > 0 and any(_holds_runs(f, depth - 1) for f in folder.iterdir()
                                 if f.is_dir() and not f.name.startswith("."))
    except OSError:
        return False


# --- gathering ---------------------------------------------------------------------------------------
def runs(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """The runs table as `ls` lists it; for several paths, one table with a `source` column first."""
    if len(paths) == 1:
        return columns.listing(paths[0])
    frames, labels = [], source_labels(paths)
    for p, label in zip(paths, labels):
        df, _ = columns.listing(p)
        frames.append(store.prefix_runs(df, label).assign(**{store.SOURCE: label}))
    df = store.concat(frames)
    from gradflow.keys import swept_keys

    swept = [store.SOURCE] + swept_keys(df, exclude=columns.study_columns(df), implied=True)  # as ls lists them
    df = columns.sort_runs(df, swept[1:])  # the sources in the order given (as compare letters them), not by name
    given = {label: i for i, label in enumerate(labels)}
    return df.iloc[np.argsort(df[store.SOURCE].map(given).to_numpy(), kind="stable")], swept


def _tables(paths: list[Path]) -> dict[str, pd.DataFrame]:
    import gradflow

    out = {}
    for t in TABLES:
        frames = []
        for p, label in zip(paths, source_labels(paths)):
            df = gradflow.load(p, table=t)
            if len(paths) > 1 and len(df):
                df = store.prefix_runs(df, label).assign(**{store.SOURCE: label})
            frames.append(df)
        out[t] = store.concat(frames) if frames else pd.DataFrame()
    return out


def _overlays(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """A comparison's tables as `gradflow compare` draws them: the sources in the order given, the keys
    fixed within each source but different between them dropped (the line style, `source`, says them:
    they split no panels), each source named by them in the legend."""
    from gradflow import compare

    sources = source_labels(paths)
    runs = compare.load_runs(paths, sources)
    differ = list(compare.differing_keys(runs, sources))
    # (a source without a table, hist without probe=full, is left out of that table's figures alone)
    return {t: compare.overlay_table(paths, sources, runs, t, differ, missing_ok=True) for t in ("runs", *TABLES)}


def figures(paths: list[Path], table: pd.DataFrame) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(name, PNG bytes) of the standard set, drawn into a temporary folder that is then removed; a
    reproduction's own figures as they are. And notes as `gradflow plot` says them: the figures of the set
    the runs cannot make, and why (a frozen backbone's profiles); in a folder of studies, why a study's
    figures were passed over; a figure that failed (the rest are drawn)."""
    if len(paths) == 1 and kind(paths[0]) == "reproduction":
        return [(p.stem, p.read_bytes()) for p in sorted(store.figures_dir(paths[0]).glob("*.png"))], []
    from gradflow.plots.standard import (FiguresFailed, drawing_processes, left_out_lines, standard_set,
                                         standard_sets, studies)

    folders = studies(paths[0]) if len(paths) == 1 else paths
    left_out: list = []  # (the lines `gradflow plot` prints under its paths)
    if len(paths) == 1 and folders != paths:  # a folder of sweeps: each sweep's set, as `gradflow plot` draws it
        with tempfile.TemporaryDirectory(prefix="gradflow-report-") as tmp:
            drawn, passed_over, failed = standard_sets(folders, lambda f: Path(tmp) / f.relative_to(paths[0]),
                                                       left_out=left_out)
            return ([(f"{f.relative_to(paths[0]).as_posix()}/{p.stem}", p.read_bytes()) for f, figs in drawn
                     for p in figs], left_out + [f"Passed over: {why}" for why in passed_over] + failed)

    with drawing_processes(len(table)) as pool, tempfile.TemporaryDirectory(prefix="gradflow-report-") as out:
        t = _tables(paths) if len(paths) == 1 else _overlays(paths)  # (while the drawing processes start)
        try:
            drawn, failed = standard_set(t["layers"], t["metrics"], t.get("runs", table), out, "png",
                                         hists=t["hist"], jacobian=t["jacobian"], pool=pool,
                                         left_out=left_out), []
        except FiguresFailed as e:
            drawn, failed = e.written, e.lines()
        return [(p.stem, p.read_bytes()) for p in drawn], left_out_lines(left_out) + failed


def theory_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per mean-field point among the runs: the prediction beside the mean measured chi_1."""
    config = [c for c in df.columns if isinstance(c, str) and "." in c]
    points: dict[tuple, list[float]] = {}
    for _, row in df.iterrows():
        mf = theory_mod.predict({k: row[k] for k in config})
        if mf is not None:
            points.setdefault((mf.activation, mf.sw2, mf.sb2), []).append(row.get("chi1_measured", math.nan))
    rows = []
    for (act, sw2, sb2), measured in points.items():
        mf = theory_mod.point(act, sw2, sb2)
        finite = [m for m in measured if isinstance(m, float) and math.isfinite(m)]
        rows.append({"activation": act, "σ_w²": sw2, "σ_b²": sb2, "q*": mf.q_star, "ξ_q": mf.xi_q, "ξ_c": mf.xi_c,
                     "phase": mf.phase,
                     # (the q* = 0 limit's, which the signal never follows: columns.LIMIT_NOTE under the table)
                     "χ₁ theory": fmt(mf.chi1) + columns.LIMIT_MARK * theory_mod.q_zero_limit(mf),
                     "χ₁ measured (mean)": sum(finite) / len(finite) if finite else math.nan,
                     # the runs the mean is over: a run too shallow for a fit has none (it said "runs 4" for 2)
                     "runs fitted": f"{len(finite)} of {len(measured)}"})
    return rows


def claims(path: Path) -> list[dict]:
    """A reproduction's claims as it wrote them (claims.json): one dict per claim with the cells of
    REPORT.md's table (claim, source, reference, measured, test, result) plus `passed`, `value` and,
    where it has one, its `tolerance` note."""
    return reproduction(path).get("claims", [])


def reproduction(path: Path) -> dict:
    """A reproduction's claims.json as it wrote it: its scale, the overrides given, the claims and the
    figures not drawn (with why); {} where there is none."""
    f = store.claims_path(path)
    if not f.exists():
        return {}
    try:
        out = json.loads(f.read_text())
        out["claims"] = list(out["claims"])
        if not all(isinstance(c, dict) for c in out["claims"]):  # (a claim of [1, 2] or "x": a traceback)
            raise TypeError
        return out
    except (json.JSONDecodeError, KeyError, TypeError):
        raise GradflowError(f"{f} is not a claims file gradflow wrote (not its JSON); rerun the reproduction") from None


def commands(paths: list[Path]) -> list[str]:
    """The commands that made the results: every sweep.yaml's command, or the run's own overrides."""
    out = []
    for p in paths:
        specs = store.spec_files(p)
        for _, spec in specs:
            cmd = (spec or {}).get("command")  # (none from a sweep.yaml damaged by hand: it was a traceback)
            if isinstance(cmd, str) and cmd:
                out.append(cmd)
        # the runs no sweep made, each with the command line its run.json keeps: a Recorder's script's (it read
        # "not recorded", or for one run a `gradflow run` command that never made it), `gradflow run`'s (a
        # folder of them read "not recorded", and beside sweeps, in a folder of studies, they were left out);
        # a run given alone that keeps none (a sweep's point; a `gradflow run` of before) rebuilt from its
        # folder's name
        swept = [folder for folder, _ in specs]
        for run in store.find_runs(p):
            if any(run.is_relative_to(folder) for folder in swept):
                continue
            cmd = (store.read_run(run) or {}).get("command")
            if not cmd and run == p:
                cmd = _run_command(p)
            if cmd and cmd not in out:
                out.append(cmd)
    return out


def _run_command(run: Path) -> str:
    """The `gradflow run` command of one run folder given alone: its folder name's overrides, and where it
    is a point of a sweep, the sweep's fixed settings before them (a sweep's `model=rnn ... train.grad_clip=1`
    read `gradflow run train.grad_clip=1`, a command that trains another net, an MLP, or is refused); the
    sweep's own command for a point of a --points sweep, whose points the folder name alone does not give."""
    from gradflow.overrides import name_items, override_key

    items = [_as_typed(o, run) for o in ([] if run.name == "default" else name_items(run.name))]
    spec = store.sweep_spec(run.parent)  # (None: a folder of single runs)
    if spec and spec.get("points") is not None and isinstance(spec.get("command"), str):
        return spec["command"]
    if spec:  # (a launcher and its settings are the sweep's: `gradflow run` refuses them)
        swept = set(spec.get("swept") or [])
        items = [o for o in map(str, spec.get("overrides") or []) if override_key(o) not in swept
                 and override_key(o) not in ("results", "name") and not override_key(o).startswith("hydra")] + items
    # (quoted as a shell reads them: a sweep's '+tag="x,y"' read +tag=x,y, two values, which `gradflow run` refuses)
    return shlex.join(["gradflow", "run", *items, f"results={run.parent.parent}", f"name={run.parent.name}"])


def _as_typed(item: str, run: Path) -> str:
    """A folder name's item whose value the name writes otherwise, as typed, read from the run's config.yaml:
    a list (optim.betas=_0.9,0.99_ is [0.9,0.99]); a text with characters a folder name replaces (a tag
    `y&z`, named +tag=_y_z_, is +tag="y&z": the name's +tag=_y_z_ is refused as another tag). Any other
    item as it is."""
    from gradflow.overrides import as_in_name, override_key

    key, _, value = item.partition("=")
    if "_" not in value:  # (the name replaces unsafe characters, and a list's brackets, by _)
        return item
    try:
        flat = store.flatten(yaml.safe_load((run / store.CONFIG_FILE).read_text()) or {})
    except (OSError, yaml.YAMLError):
        return item
    real = flat.get(override_key(key))  # (flatten writes a list as its text: [0.9, 0.99])
    if not isinstance(real, (str, list)):
        return item
    listed = str(real).replace(" ", "")
    if listed.startswith("[") and as_in_name(listed) == value:
        return f"{key}={listed}"
    quoted = '"' + str(real).replace('"', '\\"') + '"'  # (Hydra reads \" as a quote; a \ elsewhere as itself)
    if "\\" not in str(real) and str(real) != value and value in (as_in_name(str(real)), as_in_name(quoted)):
        return f"{key}={quoted}"
    return item


def first_config(paths: list[Path], table: pd.DataFrame | None = None) -> tuple[str, str]:
    """(run, resolved config.yaml text) of the first run: the runs table's first row as the page lists it
    (`runs` sorts by the swept keys, numbers as numbers), else the first run folder of the first path."""
    if table is not None and len(table) and store.PATH in table.columns:
        row = table.iloc[0]
        job, name = Path(row[store.PATH]), str(row[store.RUN])
    else:
        job = store.find_runs(paths[0])[0]
        name = job.name
    f = job / store.CONFIG_FILE
    text = settings_only(f.read_text()) if f.exists() else ""
    used = (store.read_run(job) or {}).get("device")
    if used and re.search(r"^device: auto$", text, re.M):  # (auto is the setting; say what it picked)
        text = re.sub(r"^device: auto$", f"device: auto  # ran on {used}", text, count=1, flags=re.M)
    return name, text


class _AsTyped(str):
    """A number-or-word key's number (model.alpha's '1.0'), written as typed: plain, never quoted."""


class _ConfigDumper(yaml.SafeDumper):
    pass


# (tagged as the text reads, so the emitter has no reason to quote it: 1.0, 0.5 and 1e-3 alike)
_ConfigDumper.add_representer(_AsTyped, lambda d, v: d.represent_scalar(
    d.resolve(yaml.ScalarNode, str(v), (True, False)), str(v)))


def settings_only(text: str) -> str:
    """A config.yaml's text without the keys of another choice, which Hydra's resolved config carries and
    the run does not use (init.sb2 of an init=standard run, whose biases start at 0): run.json's settings.
    A key that takes a number or a word (model.alpha: 0.5 or inv_sqrt_depth) is a string in the schema, so
    config.yaml quotes its number ('1.0'): shown as the user typed it, 1.0 (its words read as they were)."""
    from gradflow.choices import settings
    from gradflow.config import NUMBER_OR_WORD_KEYS, number_in

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(tree, dict):
        return text
    flat = store.flatten(tree)
    drop = set(flat) - set(settings(flat))
    typed = [k for k in NUMBER_OR_WORD_KEYS if k not in drop and isinstance(flat.get(k), str)
             and math.isfinite(number_in(flat[k]))]
    for key in [*drop, *typed]:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        if key in drop:
            del node[leaf]
        else:
            node[leaf] = _AsTyped(node[leaf])
    if not (drop or typed):
        return text
    return yaml.dump(tree, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True)


# --- the page ----------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _sort_value(v: Any) -> str:
    """What the page sorts by: the number itself (so 5 < 10 < 20), '' for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    return repr(float(v)) if isinstance(v, (int, float)) else str(v)


def _text_value(cell: str) -> str:
    """What the page sorts a text cell by: its text, '' for none ("-"), which sorts last as a missing number does."""
    return "" if cell == "-" else cell


WIDE_COLUMNS = 12  # a runs table with more columns than this is set smaller (class wide)


def _scroll(table: str) -> str:
    """A table in its own box that scrolls sideways when the table is wider than the window, so the page
    itself never does."""
    return f'<div class=scroll>{table}</div>'


def runs_html(df: pd.DataFrame, swept: list[str], missing: list[summary.NotRun] | None = None,
              folder: str = "PATH") -> str:
    df, flagged = columns.mark_flagged(df)  # ok*, as ls shows it: a run that learned nothing is no success
    cols = columns.table_columns(df, swept)
    # (a chi1 fit's cell leads with its number of layers, "45 (3-47)": sorted by that, not as text, 45 before 5)
    by_number = [c.numeric or c.key == "chi1_layers" for c in cols]
    head = "".join(f'<th data-key="{_e(c.key)}" data-numeric="{int(n)}" title="{_e(c.key)}">'
                   f'{_e(c.label)}</th>' for c, n in zip(cols, by_number))
    failed = columns.failed_runs(df).to_numpy()  # (a failed or incomplete run: why, over its status)
    body = []
    for i, (_, row) in enumerate(df.iterrows()):
        why = columns.error_text(row["error"]) if failed[i] else row.get(store.FLAGS) if flagged else None
        cells = "".join(f'<td data-value="{_e(_sort_value(row.get(c.key)) if c.numeric else _text_value(c.cells[i]))}"'
                        + (" class=num" if c.numeric else "")
                        + (f' title="{_e(why)}"' if c.key == store.STATUS and isinstance(why, str) and why else "")
                        + f">{_e(c.cells[i])}</td>" for c in cols)
        body.append(f'<tr data-run="{_e(row[store.RUN])}">{cells}</tr>')
    notes = columns.column_notes(cols, df)  # as under ls's table: the ratio, the chi1 fit and its marks
    if flagged:
        notes.append(f"{columns.FLAGGED}: finished but flagged: {', '.join(flagged)}; hover over a status for why")
    notes += columns.failure_notes(df)  # every distinct error, as ls names the first few under its table
    if missing:  # (a sweep cut short, or still running)
        notes.append(summary.not_run_note(missing))
    if stale := columns.stale_note(df, folder):  # (as ls says it: the page listed them without a word)
        notes.append(stale)
    warning = columns.transient_warning(df)
    wide = " class=wide" if len(cols) > WIDE_COLUMNS else ""
    return (_scroll(f'<table id="runs"{wide}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
            + "".join(f"<p class=note>{_e(n)}</p>" for n in notes)
            + (f"<p class=warn>{_e(warning)}</p>" if warning else ""))


def _simple_table(rows: list[dict[str, Any]], table_id: str) -> str:
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ("passed", "value")]  # the cells REPORT.md shows
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_e(fmt(r.get(k)))}</td>" for k in keys) + "</tr>"
                   for r in rows)
    return _scroll(f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


_STEPS = {"step0": "at initialization (step 0)", "last": "at the last probed step", "init": "at initialization",
          "final": "at the end of training"}


def caption(stem: str) -> str:
    """What a figure of the standard set shows, from its file's stem (`profile-grad_norm-step0`: "Weight-gradient
    norm per layer, at initialization (step 0)"); "" for a name it does not know (a reproduction's own). A
    figure of one value of a key (`...-model.width=16`) says so."""
    from gradflow.plots.labels import QUANTITIES, SUMMARIES

    def title(q: str) -> str:
        return QUANTITIES[q].title if q in QUANTITIES else q

    kind, *parts = stem.split("-")
    only = [p for p in parts if "=" in p]
    parts = [p for p in parts if "=" not in p]
    step = re.fullmatch(r"step(\d+)", parts[1]) if len(parts) >= 2 else None
    if kind == "profile" and len(parts) >= 2 and parts[0] in QUANTITIES and (parts[1] in _STEPS or step):
        said = f"{title(parts[0])} per layer, {_STEPS.get(parts[1]) or f'at step {step[1]}'}"
    elif kind in ("profile", "heatmap") and parts and parts[0] not in QUANTITIES:  # (a reproduction's own)
        return ""
    elif kind == "heatmap" and parts:
        said = f"{title(parts[0])} over layer and training step"
    elif kind == "curves":
        said = "Loss and accuracy over training"
    elif kind == "gradnorm":
        said = "Gradient norm before clipping, over training"
    elif kind == "ratio" and parts:
        q = parts[0] if len(parts) > 1 else "grad_norm"
        said = f"First/last-layer ratio of the {title(q).lower()} against depth, {_STEPS.get(parts[-1], parts[-1])}"
    elif kind == "grid" and len(parts) >= 3:
        value = SUMMARIES[parts[0]].label if parts[0] in SUMMARIES else parts[0]
        said = f"{value[:1].upper()}{value[1:]} over {parts[1]} and {parts[2]}"
    elif kind == "hist" and parts:
        said = f"Per-layer histograms of the activations and the back-propagated signal, {_STEPS.get(parts[0], parts[0])}"
    elif kind == "spectrum" and parts:
        said = f"Singular values of the input-output Jacobian, {_STEPS.get(parts[0], parts[0])}"
    else:
        return ""
    return said + (f" ({', '.join(only)})" if only else "")


def figures_html(figs: list[tuple[str, bytes]]) -> str:
    """The figures; those of a folder's sweeps (named SWEEP/figure) under a heading per sweep, each captioned
    with what it shows (`caption`) above its file's name."""
    parts, folder = [], ""
    for name, png in figs:
        at, _, stem = name.rpartition("/")
        if at != folder:
            parts.append(f"<h3>{_e(at)}</h3>")
            folder = at
        data = base64.b64encode(png).decode("ascii")
        wide = ' class="wide"' if _png_width(png) > WIDE_PNG else ""  # (several panels: the page's width)
        said = caption(stem)
        parts.append(f'<figure{wide} data-kind="{_e(stem.split("-")[0])}" data-name="{_e(name)}">'
                     f'<img alt="{_e(said or name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(said) + '<br>' if said else ''}<code>{_e(name)}</code></figcaption></figure>")
    return "".join(parts)


WIDE_PNG = 1200  # pixels: a figure wider (several panels side by side, the 2x2 curves 1320; one panel is ~1050) takes the page's width


def _png_width(png: bytes) -> int:
    """A PNG's width in pixels, from its header (0 for anything else)."""
    return int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 0


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222;
     overflow-wrap:break-word}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{vertical-align:bottom} td.num{text-align:right}
#runs th{cursor:pointer;background:#f4f4f4;white-space:normal;min-width:3em}
#runs.wide{font-size:12px} #runs.wide th,#runs.wide td{padding:2px 5px}
#runs th:first-child,#runs td:first-child{position:sticky;left:0;background:#fff;box-shadow:inset -1px 0 #ddd}
#runs th:first-child{background:#f4f4f4}
#runs th[data-dir=asc]::after{content:" ▲"} #runs th[data-dir=desc]::after{content:" ▼"}
#claims td,#reproductions td{white-space:normal;min-width:4em;vertical-align:top} #claims td:first-child{min-width:10em}
#reproductions td:nth-child(-n+3){white-space:nowrap}
figure{display:inline-block;margin:.5em;vertical-align:top} figure img{max-width:560px;height:auto;cursor:zoom-in}
figure.wide,figure.big{display:block} figure.wide img,figure.big img{max-width:100%}
figure.big img{cursor:zoom-out} figure.wide.big img{max-width:none}
@media (max-width:640px){figure{display:block;margin:.5em 0} figure img{max-width:100%}}
figcaption{font-size:12px;color:#555} pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em;white-space:pre-wrap}
.note,.meta{color:#555;font-size:12px} .PASS{color:#070;font-weight:bold} .FAIL{color:#b00;font-weight:bold}
.warn{color:#8a5a00;font-size:12px}
"""

SCRIPT = """
function sortRuns(key, desc) {
  const table = document.getElementById('runs'); if (!table) return false;
  const ths = Array.from(table.tHead.rows[0].cells);
  const i = ths.findIndex(th => th.dataset.key === key || th.textContent === key); if (i < 0) return false;
  const numeric = ths[i].dataset.numeric === '1', body = table.tBodies[0];
  const rows = Array.from(body.rows), val = r => r.cells[i].dataset.value;
  rows.sort((a, b) => {
    const x = val(a), y = val(b);
    if (x === '' || y === '') return (x === '') - (y === '');
    const c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
    return desc ? -c : c;
  });
  rows.forEach(r => body.appendChild(r));
  ths.forEach(th => delete th.dataset.dir); ths[i].dataset.dir = desc ? 'desc' : 'asc';
  return true;
}
document.querySelectorAll('figure img').forEach(im => im.addEventListener('click',
  () => im.parentElement.classList.toggle('big')));  // a click shows a figure at the page's width (or its own)
document.querySelectorAll('#runs th').forEach(th => th.addEventListener('click',
  () => sortRuns(th.dataset.key, th.dataset.dir === 'asc')));
function applyHash() {
  let hash = location.hash;
  try { hash = decodeURIComponent(hash); } catch (e) {}  // (a malformed %-escape: read as written)
  const m = /#sort=(-?)(.+)/.exec(hash);
  if (m) sortRuns(m[2], m[1] === '-');
}
window.addEventListener('hashchange', applyHash);
window.addEventListener('load', () => {
  applyHash();
  const imgs = Array.from(document.images), ok = imgs.filter(im => im.complete && im.naturalWidth > 0);
  const status = document.getElementById('figures-status');
  status.textContent = 'figures loaded: ' + ok.length + ' of ' + imgs.length;
  status.dataset.loaded = ok.length; status.dataset.total = imgs.length;
});
"""


def _inline_markdown(text: str) -> str:
    """A spec's notes (markdown in REPORT.md), escaped, with their **bold** and `code` as the page's own."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def build(paths: list[Path]) -> str:
    """The whole page as one HTML string."""
    paths = [Path(p) for p in paths]
    what = "comparison" if len(paths) > 1 else kind(paths[0])
    df, swept = runs(paths)
    figs, notes = figures(paths, df)
    labels = source_labels(paths)
    title = " vs ".join(labels) if len(paths) > 1 else _named(paths[0]).name  # (`.`: its folder's name)
    run_name, config = first_config(paths, df)
    sections = [f"<h1>gradflow {_e(what)}: {_e(title)}</h1>",
                f'<p class=meta>{len(df)} run{"s" * (len(df) != 1)} from {_e(", ".join(str(p) for p in paths))}; page written '
                f'{datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}. '
                f'<span id="figures-status">figures not checked (script off)</span></p>']
    rep = reproduction(paths[0]) if what == "reproduction" else {}
    if what == "reproduction":
        sections += reproduction_html(rep)
    if what == "folder":  # the reproductions under it, each's verdict and a link to its own page
        sections += reproductions_html(paths[0])
    missing = summary.not_run(paths[0], dict(zip(df[store.RUN], df[store.STATUS])), []) if len(paths) == 1 else []
    sections += ["<h2>Runs</h2>", "<p class=note>Click a column to sort (again to reverse).</p>",
                 runs_html(df, swept, missing, shlex.quote(str(paths[0])) if len(paths) == 1 else "PATH")]
    theory = theory_rows(df[df[store.STATUS] != store.STALE])  # (no runs of a spec the sweep no longer has)
    # (ξ_c = inf beside an ordered phase read as a net of endless depth scale: `gradflow theory`'s note)
    endless = [f"{r['activation']}, σ_w² {fmt(r['σ_w²'])}, σ_b² {fmt(r['σ_b²'])}: {note}" for r in theory
               if (note := theory_mod.endless_length_note(theory_mod.point(r["activation"], r["σ_w²"], r["σ_b²"])))]
    if theory:
        sections += ["<h2>Mean-field theory beside the measurement</h2>",
                     "<p class=note>χ₁: per-layer growth of ‖∂L/∂z‖² towards the input; measured by a least-squares "
                     "fit over the bulk layers at initialization (chi1 fit in the table).</p>",
                     _simple_table(theory, "theory"),
                     *([f"<p class=note>{_e(columns.LIMIT_NOTE)}</p>"]
                       if any(str(r["χ₁ theory"]).endswith(columns.LIMIT_MARK) for r in theory) else []),
                     *(f"<p class=note>{_e(note)}</p>" for note in endless)]
    not_drawn = "".join([*(f"<p class=note>Figure not drawn, {_e(why)}.</p>" for why in rep.get("not_drawn", [])),
                         *(f"<p class=note>{_e(note)}</p>" for note in notes)])
    why = store.nothing_drawn_reason(paths[0], store.runs(paths[0])) if not figs and len(paths) == 1 else None
    sections += ["<h2>Figures</h2>", (figures_html(figs) + not_drawn)
                 or f"<p>No figures ({_e(why or 'no probed layers, no metrics')}).</p>"]
    cmds = commands(paths)
    sections += ["<h2>How it was made</h2>", "<pre>" + _e("\n".join(cmds) or "not recorded") + "</pre>",
                 f'<h2>Resolved config: <span id="config-run">{_e(run_name)}</span></h2>',
                 "<p class=note>The first run in the runs table's own order (before any re-sorting).</p>",
                 '<pre id="config">' + _e(config) + "</pre>"]
    differ = {}
    if what == "comparison":  # what each source fixes differently (the comparison is about): each by name
        differ = differing_keys(df, labels)
        sections += differ_html(df, labels, differ)
    sections += swept_html(df, swept, differ)
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>gradflow {_e(what)}: {_e(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + f"<script>{SCRIPT}</script></body></html>\n")


def reproduction_html(rep: dict) -> list[str]:
    """A reproduction's head, as the terminal and REPORT.md give it: paper, claim, scale, the verdict with
    the overrides given, the claims table, the tolerance notes and the notes."""
    from gradflow.reproduce import all_pass, tolerance_notes  # (each note once, with the claims it explains)

    rows = rep.get("claims", [])
    given = " ".join(rep.get("overrides") or [])
    sections = [f'<p id="{key}"><b>{label}:</b> {_e(rep[key])}</p>' for key, label in
                (("paper", "Paper"), ("summary", "Claim"), ("scale_text", f"Scale {rep.get('scale', '?')}"))
                if rep.get(key)]  # (a claims.json written before it held them: the page goes without)
    sections += ["<h2>Claims</h2>",
                 f'<p class="{"PASS" if all_pass([bool(r.get("passed")) for r in rows]) else "FAIL"}" id="verdict">'
                 f'{sum(bool(r.get("passed")) for r in rows)} of {len(rows)} '
                 f'claims pass, at the {_e(str(rep.get("scale", "?")))} scale'
                 + (f"; overrides given to every arm: <code>{_e(given)}</code>" if given else "") + ".</p>",
                 _claims_html(rows)]
    sections += [f"<p class=note>Tolerance, {_e(texts)}: {_e(note)}</p>" for texts, note in tolerance_notes(rows)]
    if rep.get("notes"):  # REPORT.md's notes: what the claims' sources point to ("see the notes")
        sections += ["<h2>Notes" + (" (written of the default scale's runs)" if rep.get("scale") != "default"
                                    else "") + "</h2>"]
        sections += [f"<p>{_inline_markdown(_e(' '.join(para.split())))}</p>"
                     for para in rep["notes"].split("\n\n") if para.strip()]
    return sections


def differ_html(df: pd.DataFrame, labels: list[str], differ: dict[str, list]) -> list[str]:
    """A comparison's note on what each source fixes differently, each by name; the keys only some sources
    set (a Gaussian source's data.dim beside MNIST-1D's) by group, as `gradflow compare` says it."""
    from gradflow.keys import is_missing, partial_keys, partial_phrase

    if not differ:
        return []
    partial = partial_keys(df, list(differ), store.SOURCE)
    said = []
    for i, s in enumerate(labels):
        own = [k for k in partial if not is_missing(differ[k][i])]
        named = own if len(own) <= NAMED_PARTIAL else []  # (a few by name, as compare names them; more by group)
        own = [k for k in own if k not in named]
        items = [f"{k}={key_value(v[i])}" for k, v in differ.items()
                 if (k not in partial or k in named) and not is_missing(v[i])]
        whose = "the other keys" if items else "the keys"
        # (by the sources that set them: keys two of three set read "which only it sets" on both)
        groups = setters(differ, own, labels)
        tail = "".join(f"{', and ' if items or n else ''}{partial_phrase(keys, whose)}, which only "
                       + ("it sets" if len(who) == 1 else f"{and_list(list(who))} set")
                       for n, (who, keys) in enumerate(groups.items()))
        said.append(f"{s} has {', '.join(items)}{tail}" if items or own else f"{s} sets none of them")
    return ["<p class=note id=differ>The sources differ in what each fixes: " + _e("; ".join(said)) + ".</p>"]


def swept_html(df: pd.DataFrame, swept: list[str], differ: dict[str, list]) -> list[str]:
    """The note naming the swept axes, and the keys the runs also differ in that are no axis: those a choice
    sets (not init.gain, set by the init choice), those only some sources have. A key the sources each fix
    to a value of their own (`differ`: model.alpha of a skip=none,residual sweep beside a residual one at
    alpha 0.5) is named by the note above it, not again as swept."""
    from gradflow.keys import axes, config_columns, n_distinct

    shown = [k for k in axes(df, swept) if k not in differ]
    if not shown:
        return []
    also = [k for k in config_columns(df) if k not in shown and k not in differ and k != store.SOURCE
            and n_distinct(df[k]) > 1]
    named = ", ".join(also[:10]) + (f" and {len(also) - 10} more" if len(also) > 10 else "")
    tail = (f"; the runs also differ in keys a choice sets or only some of them have: {named}" if also
            else "; other runs differ only there" + (" and in what each source fixes (above)" if differ else ""))
    return ["<p class=note>Swept: " + _e(", ".join(shown)) + _e(tail) + ".</p>"]


def reproductions_html(folder: Path) -> list[str]:
    """A folder's reproductions (each a folder with claims.json, at any depth): one row each with its
    paper, scale, how many claims pass and which fail, linked to its own page (or REPORT.md)."""
    from gradflow.reproduce import all_pass

    found = sorted(f.parent for f in Path(folder).rglob(store.CLAIMS_FILE))
    if not found:
        return []
    body = []
    for study in found:
        name = study.relative_to(folder).as_posix()
        try:
            rep = reproduction(study)
        except GradflowError as e:  # (one damaged or foreign claims.json: said in its row, the page still made)
            body.append(f"<tr><td>{_e(name)}</td><td>?</td><td class=FAIL>unreadable</td><td>{_e(str(e))}</td>"
                        "<td></td></tr>")
            continue
        rows = rep.get("claims", [])
        passed = sum(bool(r.get("passed")) for r in rows)
        verdict = "PASS" if all_pass([bool(r.get("passed")) for r in rows]) else "FAIL"
        page = next((p for p in (study / store.REPORT_HTML, store.reproduction_md_path(study)) if p.exists()), None)
        href = urllib.parse.quote(page.relative_to(folder).as_posix()) if page else ""  # (run#2/: no fragment)
        link = f'<a href="{_e(href)}">{_e(name)}</a>' if page else _e(name)
        failed = "; ".join(str(r.get("claim", "?")) for r in rows if not r.get("passed"))
        # (the verdict first: a paper's long title, unwrapped, pushed it out of the window)
        body.append(f"<tr><td>{link}</td><td>{_e(rep.get('scale', '?'))}</td><td class={verdict}>{passed} of "
                    f"{len(rows)} pass</td><td>{_e(failed or '-')}</td><td>{_e(rep.get('paper', ''))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("reproduction", "scale", "claims", "failed", "paper"))
    n_pass = sum("class=PASS" in row for row in body)
    return ["<h2>Reproductions</h2>",
            f"<p id=verdict>{n_pass} of {len(found)} reproductions pass every claim; each name opens its own "
            "page (<code>gradflow report</code> of its folder writes it where there is none, REPORT.md "
            "is linked instead).</p>",
            _scroll(f'<table id="reproductions"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                    "</table>")]


def _claims_html(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>No claims found (no claims.json beside REPORT.md).</p>"
    from gradflow.reproduce import CLAIM_COLUMNS

    # REPORT.md's columns only: claims.json's raw `passed` and `value` repeat result and measured unformatted
    keys = [k for k in CLAIM_COLUMNS if any(k in r for r in rows)]
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = []
    for r in rows:
        cells = []
        for k in keys:
            v = str(r.get(k, ""))
            verdict = v.split()[0] if v.split() and v.split()[0] in ("PASS", "FAIL") else ""
            cells.append(f'<td class="{verdict}">{_e(v)}</td>' if verdict else f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _scroll(f'<table id="claims"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')

