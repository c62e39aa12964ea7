"""`gradflow report`: one self-contained HTML page for a run, a sweep, a comparison or a reproduction."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gradflow.cli.app import app
from gradflow.cli.console import console, folder, user_errors


@app.command()
@user_errors
def report(
    paths: Annotated[list[str], typer.Argument(
        help="A run, a sweep or a reproduction folder; several paths make a comparison.", show_default=False,
        metavar="PATH")],
    out: Annotated[Optional[str], typer.Option(  # (a str: a trailing slash says "a folder", which Path drops)
        "--out", metavar="PATH",
        help="Write the page here, a file or a folder (default: PATH/report.html, or beside the first PATH).")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
) -> None:
    """Write one HTML page (opens offline, one file to send): the runs table, every figure, theory, claims, config."""
    from gradflow import report as report_mod

    paths = [folder(p, "report") for p in paths]
    with console.status("drawing figures"):
        page = report_mod.write(paths, out)
    console.print(f"report: {page}", highlight=False, soft_wrap=True)  # (a long path whole: a copy of it works)
    if open_:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):  # no browser here (a server, $BROWSER failing)
            console.print(f"no browser could open it; open {page.resolve().as_uri()} yourself", highlight=False)
