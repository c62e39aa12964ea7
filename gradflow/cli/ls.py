"""`gradflow ls`: one row per run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.table import Table

from gradflow import store
from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.errors import GradflowError
from gradflow.cli.app import _fmt


LS_COLUMNS = ["status", "steps_done", "wall_time", "final.train_loss", "final.train_acc", "final.test_loss",
              "final.test_acc", "grad_ratio.init", "grad_ratio.final", "chi1_measured", "chi1_theory"]


def runs_view(path: Path, where: list[str] | None = None, sort: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The runs table filtered and sorted as `ls` shows it, and the swept keys."""
    from gradflow.plots.keys import swept_keys  # pandas only: ls stays matplotlib-free
    from gradflow.summary import runs_table

    df = runs_table(path)
    swept = swept_keys(df, exclude=())  # ls shows seed as a swept column too
    for cond in where or []:
        if "=" not in cond:
            raise GradflowError(f"--where {cond!r} must be KEY=VALUE")
        key, value = cond.split("=", 1)
        if key not in df.columns:
            raise GradflowError(f"--where key {key!r} is not a column; choices: {', '.join(sorted(df.columns))}")
        df = df[df[key].astype(str) == value]
    if sort:
        if sort not in df.columns:
            raise GradflowError(f"--sort {sort!r} is not a column; choices: {', '.join(swept + LS_COLUMNS)}")
        df = df.sort_values(sort, kind="stable")
    return df, swept


LS_LABELS = {"steps_done": "steps", "wall_time": "time s", "final.train_loss": "train loss",
             "final.train_acc": "train acc", "final.test_loss": "test loss", "final.test_acc": "test acc",
             "grad_ratio.init": "ratio init", "grad_ratio.final": "ratio end", "chi1_measured": "chi1 meas",
             "chi1_theory": "chi1 theory"}


def show_runs(df: pd.DataFrame, swept: list[str], title: str = "", skipped: int | None = None) -> None:
    """The runs table: swept values, then status, finals and gradient ratios (first/last layer)."""
    columns = [c for c in LS_COLUMNS if c in df.columns and (not c.startswith("chi1") or df[c].notna().any())]
    table = Table(title=title or None, title_justify="left", caption="ratio = ‖∂L/∂W‖ first layer / last layer",
                  caption_justify="left")
    if not swept:
        table.add_column("run", overflow="fold")
    for c in swept:
        table.add_column(c.removeprefix("model."), overflow="fold")
    for c in columns:
        table.add_column(LS_LABELS.get(c, c), justify="left" if c == "status" else "right")
    colours = store.STATUS_COLOURS
    for _, row in df.iterrows():
        cells = [_fmt(row.get(c)) for c in columns]
        if "status" in columns:
            cells[columns.index("status")] = f"[{colours.get(row['status'], 'white')}]{row['status']}[/]"
        table.add_row(*([] if swept else [row["run"]]), *(_fmt(row.get(c)) for c in swept), *cells)
    console.print(table)
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    line = "  ".join(f"{k}: {counts.get(k, 0)}" for k in store.STATUSES if k in store.ENDED or counts.get(k))
    console.print(line + (f"  skipped: {skipped}" if skipped is not None else ""))


@app.command("ls")
@user_errors
def ls(
    path: Annotated[Path, typer.Argument(help="A run folder, a sweep folder, or a folder of sweeps.")],
    where: Annotated[Optional[list[str]], typer.Option(help="Keep rows with KEY=VALUE (repeatable).")] = None,
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column, e.g. final.test_acc.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")] = False,
) -> None:
    """One row per run: swept values, status, final metrics and gradient-norm ratios."""
    df, swept = runs_view(path, where, sort)
    cols = ["run"] + swept + [c for c in LS_COLUMNS if c in df.columns]
    if csv:
        console.file.write(df[cols].to_csv(index=False))
    elif as_json:
        console.file.write(json.dumps(json.loads(df[cols].to_json(orient="records")), indent=1) + "\n")
    else:
        show_runs(df, swept, title=str(path))
