"""gradflow: run, measure, plot and reproduce gradient-flow experiments."""

__version__ = "0.1.0"


def load(path, table: str = "layers", include_stale: bool = False):
    """A tidy pandas DataFrame for a run or a sweep folder.

    table="layers": per-layer probe rows (step, layer, name, quantity, value);
    table="metrics": loss/accuracy rows (step, split, metric, value);
    table="runs": one row per run with its status, final metrics and summaries.
    Every config key is a column (e.g. "model.depth"), so swept values are ready for groupby.
    Runs that are not part of their folder's current sweep (status "stale") are left out unless
    `include_stale`; unfinished or broken runs have no table rows.
    """
    from gradflow import store
    from gradflow.errors import given_path

    path = given_path(path, 'gradflow.load("results/my-sweep"), or "." for this folder')  # (not "": every run below)
    if table == "runs":
        from gradflow.summary import runs_table

        return runs_table(path, include_stale=include_stale)
    return store.load(path, table, include_stale)


def __getattr__(name):
    if name == "Recorder":  # imported on first use: `import gradflow` stays free of torch
        from gradflow.recorder import Recorder

        return Recorder
    raise AttributeError(f"module 'gradflow' has no attribute {name!r}")
