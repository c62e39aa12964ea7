"""Figures from hand-made tables in the store's contract: what is drawn is checked against the data.

The fabricated sweep has geometric per-layer profiles value = base * r**(L - l) (r < 1 vanishes
towards the input, r > 1 explodes), a diverged run (inf/NaN at its last probed step, then stopped)
and a run with exactly-zero gradients in its first layers.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.colors import LogNorm

from gradflow.errors import GradflowError
from gradflow.plots import figures
from gradflow.plots.figures import save
from gradflow.keys import is_grid, swept_keys
from gradflow.plots.labels import QUANTITIES
from gradflow.probes import HIST_EDGES

STEPS = (0, 1, 3, 10, 30, 100)  # log-spaced probes, like probe.points
EVAL_STEPS = tuple(range(0, 101, 10))
RATE = {"tanh": 0.8, "relu": 1.15}  # per-layer factor r: tanh vanishes toward the input, relu explodes
DIVERGED = "model.depth=20,model.activation=relu,seed=2"
ZEROS = "model.depth=10,model.activation=relu,seed=1"


def config(depth=10, activation="tanh", seed=1, **over):
    """One run's config columns, flattened with dots, in the order the store writes them."""
    cfg = {"model.name": "mlp", "model.depth": depth, "model.width": 64, "model.activation": activation,
           "model.skip": "none", "init.name": "kaiming_normal", "init.sw2": 1.0, "init.sb2": 0.0,
           "norm.name": "none", "data.name": "gaussian", "optim.name": "sgd", "optim.lr": 0.05, "seed": seed}
    return cfg | over


def run_id(cfg, keys=("model.depth", "model.activation", "seed")):
    return ",".join(f"{k}={cfg[k]}" for k in keys)


def fabricate(configs, source="sweep", rate=None, diverged=(), zeros=(), steps=STEPS):
    """layers, metrics and runs tables for `configs` (one dict each), with geometric profiles."""
    layer_rows, metric_rows, run_rows = [], [], []
    for cfg in configs:
        run = run_id(cfg) if "run" not in cfg else cfg["run"]
        cfg = {k: v for k, v in cfg.items() if k != "run"}
        depth, seed = cfg["model.depth"], cfg["seed"]
        r = (rate or RATE)[cfg["model.activation"]] if not callable(rate) else rate(cfg)
        status = "diverged" if run in diverged else "ok"
        stop = 30 if run in diverged else max(steps)
        meta = {"run": run, "source": source, "status": status}
        for step in [s for s in steps if s <= stop]:
            base = 0.1 * (1 + 0.2 * math.log1p(step)) * (1 + 0.05 * seed)
            for layer in range(depth + 1):
                g = base * r ** (depth - layer)
                if run in zeros and layer < 3:
                    g = 0.0
                if run in diverged and step == stop:
                    g = math.inf if layer < depth // 2 else math.nan
                name = "head" if layer == depth else f"linear{layer}"
                for q, v in (("grad_norm", g), ("signal_norm", 2 * g), ("weight_norm", 1.0 + 0.01 * step),
                             ("act_mean", 0.01 * (layer - depth / 2)), ("act_dead", 0.05)):
                    layer_rows.append(meta | {"step": step, "layer": layer, "name": name, "quantity": q,
                                              "value": v} | cfg)
        for step in [s for s in EVAL_STEPS if s <= stop]:
            loss = 2.3 * math.exp(-step / (4.0 * depth)) * (1 + 0.02 * seed)
            if run in diverged and step == stop:
                loss = math.nan
            for split, shift in (("train", 1.0), ("test", 1.1)):
                metric_rows.append(meta | {"step": step, "split": split, "metric": "loss", "value": loss * shift} | cfg)
                metric_rows.append(meta | {"step": step, "split": split, "metric": "acc",
                                           "value": 1 - loss / 2.3 / shift} | cfg)
        run_rows.append(meta | {"steps_done": stop, "wall_time": 1.0,
                                "diverged_step": float(stop) if status == "diverged" else math.nan,
                                "diverged_layer": 0.0 if status == "diverged" else math.nan})
        run_rows[-1] |= cfg
    layers, metrics = pd.DataFrame(layer_rows), pd.DataFrame(metric_rows)
    runs = pd.DataFrame(run_rows)
    # the per-run summaries, as the store computes them from the tables
    for i, row in runs.iterrows():
        m = metrics[(metrics.run == row.run) & (metrics.split == "test")]
        last = m[m.step == m.step.max()]
        runs.loc[i, "final.test_acc"] = float(last[last.metric == "acc"].value.iloc[0])
        runs.loc[i, "final.test_loss"] = float(last[last.metric == "loss"].value.iloc[0])
        g = layers[(layers.run == row.run) & (layers.quantity == "grad_norm")]
        for when, step in (("init", 0), ("final", g.step.max())):
            v = g[g.step == step].sort_values("layer").value.to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                runs.loc[i, f"grad_ratio.{when}"] = v[0] / v[-1]
        runs.loc[i, "chi1_measured"] = (RATE.get(row["model.activation"], 1.0)) ** 2
        runs.loc[i, "chi1_theory"] = math.nan
    return layers, metrics, runs


@pytest.fixture(scope="module")
def sweep():
    """depth 5, 10, 20 x tanh/relu x seeds 1, 2; one diverged run, one with zero gradients."""
    configs = [config(d, a, s) for d in (5, 10, 20) for a in ("tanh", "relu") for s in (1, 2)]
    return fabricate(configs, diverged=(DIVERGED,), zeros=(ZEROS,))


@pytest.fixture(scope="module")
def single():
    return fabricate([config(10, "tanh", 1)])


def series_lines(ax):
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("series:")]


def lines_with(fig, gid):
    return [ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith(gid)]


def legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()] + \
           [leg.get_title().get_text() for leg in fig.legends]


def colorbar_axes(fig):
    return [ax for ax in fig.axes if ax.get_gid() == "colorbar"]


# --- swept keys ----------------------------------------------------------------------------------
def test_swept_keys_are_the_config_columns_that_vary_without_seed(sweep):
    layers, _, runs = sweep
    assert swept_keys(layers) == ["model.depth", "model.activation"]
    assert swept_keys(runs) == ["model.depth", "model.activation"]
    assert "seed" in swept_keys(runs, exclude=())
    nan_vs_value = runs.assign(**{"init.sw2": [math.nan] * (len(runs) - 1) + [1.0]})
    assert "init.sw2" in swept_keys(nan_vs_value)  # NaN is a value of its own


# --- profile -------------------------------------------------------------------------------------
def test_profile_draws_one_median_line_per_seed_group(sweep):
    layers, _, _ = sweep
    fig = figures.profile(layers, "grad_norm", step=0)
    ax = fig.axes[0]
    lines = series_lines(ax)
    assert len(lines) == 6  # 3 depths x 2 activations, seeds aggregated
    assert ax.get_yscale() == "log"
    assert "layer index" in ax.get_xlabel() and "gradient" in ax.get_ylabel()
    # the drawn line is the median over seeds, recomputed here from the table
    g = layers[(layers.quantity == "grad_norm") & (layers.step == 0) & (layers["model.depth"] == 5)
               & (layers["model.activation"] == "tanh")]
    median = g.groupby("layer").value.median().to_numpy()
    drawn = [ln for ln in lines if len(ln.get_xdata()) == 6]
    assert any(np.allclose(ln.get_ydata(), median) for ln in drawn)
    # the min-max bands are one collection: one polygon per group, its edges the seeds' min and max
    (band,) = [c for c in ax.collections if c.get_gid() == "band"]
    polygons = [p.vertices for p in band.get_paths()]
    assert len(polygons) == 6 and len(band.get_facecolor()) == 6
    lo, hi = g.groupby("layer").value.min().to_numpy(), g.groupby("layer").value.max().to_numpy()
    edges = np.r_[np.c_[np.arange(6), lo], np.c_[np.arange(6), hi][::-1]]
    assert any(len(v) >= 12 and np.allclose(v[:12], edges) for v in polygons)
    # the activation, the key the study varies beside depth, is the colour (each line's end says its depth);
    # depth is a marker on each solid line
    assert not colorbar_axes(fig)
    texts = legend_texts(fig)
    assert {"relu", "tanh", "depth=5", "depth=10", "depth=20"} <= set(texts), texts
    assert any("min-max over seeds" in t for t in texts)
    title = fig.get_suptitle()
    assert "step 0" in title and "width 64" in title and "kaiming_normal" in title
    assert "depth 5" not in title  # swept values are not "held fixed"


def test_bands_cover_what_fill_between_covers_and_split_at_non_finite_edges():
    """add_band draws fill_between's polygons (one per finite stretch) into one collection per axes."""
    from matplotlib.figure import Figure

    from gradflow.plots.style import add_band

    x = np.arange(7.0)
    lo = np.array([0.5, 0.4, np.nan, 0.3, 0.2, 0.1, 0.05])
    hi = np.array([2.0, 3.0, 4.0, 5.0, np.inf, 20.0, 40.0])
    ax = Figure().subplots()
    ax.plot(x, np.ones(7))
    add_band(ax, x, lo, hi, "red")
    add_band(ax, x, lo / 2, hi / 2, "blue")
    (band,) = [c for c in ax.collections if c.get_gid() == "band"]
    reference = Figure().subplots().fill_between(x, lo, hi)
    want = [{tuple(v) for v in p.vertices} for p in reference.get_paths()]
    got = [{tuple(v) for v in p.vertices} for p in band.get_paths()]
    assert got[:3] == want and len(got) == 6  # [0, 1], [3] and [5, 6]: where both edges are finite
    assert [tuple(c[:3]) for c in band.get_facecolor()] == [(1, 0, 0)] * 3 + [(0, 0, 1)] * 3
    assert ax.get_ylim()[0] <= 0.025 and ax.get_ylim()[1] >= 40  # the view takes in every band


def test_profile_without_seeds_draws_one_line_per_run(sweep):
    layers, _, _ = sweep
    one_seed = layers[layers.seed == 1]
    fig = figures.profile(one_seed, "signal_norm", step=0, color="model.activation")
    assert len(series_lines(fig.axes[0])) == one_seed.run.nunique() == 6
    assert not any(c.get_gid() == "band" for c in fig.axes[0].collections)
    texts = legend_texts(fig)
    assert {"tanh", "relu"} <= set(texts)  # categorical colours get a legend, titled by the key
    assert any("model.activation" in t for t in texts)
    assert not colorbar_axes(fig)


def test_profile_at_a_step_some_runs_never_reached_says_so(sweep):
    layers, _, _ = sweep
    last = int(layers["step"].max())
    cut = layers[~((layers["run"] == layers["run"].iloc[0]) & (layers["step"] == last))]  # one run stopped before it
    fig = figures.profile(cut, "grad_norm", step=last, color="model.depth")
    n, reached = layers["run"].nunique(), cut.loc[cut["step"] == last, "run"].nunique()
    assert reached < n - 1  # the run cut here, and the fixture's diverged one
    assert f"step {last}; {n - reached} of {n} runs never reached it (not drawn)" in fig.get_suptitle()
    assert "never reached" not in figures.profile(layers, "grad_norm", step=0, color="model.depth").get_suptitle()


def test_profile_facets_share_y(sweep):
    layers, _, _ = sweep
    fig = figures.profile(layers, step=0, facet="model.activation")
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert len(panels) == 2
    assert {ax.get_title() for ax in panels} == {"activation=relu", "activation=tanh"}
    assert panels[0].get_ylim() == panels[1].get_ylim()
    assert sum(len(series_lines(ax)) for ax in panels) == 6


def test_long_panel_titles_and_axis_labels_stay_within_their_panel():
    # two unrelated studies side by side differ in many keys at once: each panel's title named them all
    # on one line, running into the next panel's, and the two x-axis labels ran into each other
    keys = ("model.depth", "train.grad_clip")
    sources = []
    for data, lr, init, width, batch, every in (("gaussian", 0.05, "kaiming_normal", 64, 256, 100),
                                               ("mnist1d", 0.1, "xavier_normal", 128, 128, 10)):
        configs = [config(d, "tanh", 1, **{"data.name": data, "optim.lr": lr, "init.name": init, "model.width": width,
                                            "train.batch_size": batch, "train.eval_every": every,
                                            "train.grad_clip": clip}) for d in (5, 10) for clip in (0, 1)]
        sources.append(fabricate([c | {"run": run_id(c, keys)} for c in configs], source=data)[0])
    # (at the last step: at step 0 the learning rate, grad_clip and eval_every change nothing, and are no keys)
    fig = figures.profile(pd.concat(sources, ignore_index=True), step="last")
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert len(panels) == 4 and all("batch_size=" in ax.get_title() for ax in panels), [a.get_title() for a in panels]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # (the layout as saved)
    renderer = canvas.get_renderer()
    for ax in panels:
        width = ax.get_window_extent(renderer).width
        assert ax.title.get_window_extent(renderer).width <= width * 1.05, ax.get_title()
        assert ax.xaxis.label.get_window_extent(renderer).width <= width * 1.05, ax.get_xlabel()


def test_profile_gives_the_keys_colour_and_style_leave_out_a_panel_per_combination():
    """Four swept keys: the activation (the first of the keys with fewest values but depth) colours the lines,
    depth marks them, and each width x init pair gets a panel of its own, titled by both, so that no two
    lines in a panel look alike; where those pairs would be more than 9 panels, the title names the keys
    instead."""
    keys = ("model.depth", "model.activation", "init.name", "model.width", "seed")
    configs = [config(d, a, 1, **{"init.name": i, "model.width": w}) for d in (5, 10, 20) for a in ("tanh", "relu")
               for i in ("xavier_normal", "kaiming_normal") for w in (16, 32)]
    layers, _, _ = fabricate([c | {"run": run_id(c, keys)} for c in configs])
    fig = figures.profile(layers, step=0)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels] == [
        "width=16, init=kaiming_normal", "width=16, init=xavier_normal",
        "width=32, init=kaiming_normal", "width=32, init=xavier_normal"]
    for ax in panels:  # 2 activations x 3 depths, each a colour and marker of its own, every line solid
        lines = series_lines(ax)
        assert len(lines) == 6 and len({(str(ln.get_color()), ln.get_marker()) for ln in lines}) == 6
        assert {ln.get_linestyle() for ln in lines} == {"-"}
    assert "also differ" not in fig.get_suptitle()
    assert panels[0].get_ylim() == panels[3].get_ylim()  # one y axis for all, as facets share it
    # four panels in two rows of two (not 3 + 1), the axes labelled on the bottom row and left column
    at = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in panels]
    assert at == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [bool(ax.get_xlabel()) for ax in panels] == [False, False, True, True]
    assert [bool(ax.get_ylabel()) for ax in panels] == [True, False, True, False]
    # 2 activations x 5 inits: 10 panels, one too many
    inits = ("xavier_normal", "kaiming_normal", "orthogonal", "standard", "xavier_uniform")
    wide = [config(d, a, 1, **{"init.name": i, "model.width": w}) for d in (5, 10) for a in ("tanh", "relu")
            for i in inits for w in (16, 32)]
    layers, _, _ = fabricate([c | {"run": run_id(c, keys)} for c in wide])
    fig = figures.profile(layers, step=0)
    assert len([ax for ax in fig.axes if ax.get_gid() != "colorbar"]) == 1
    assert "lines also differ in" in fig.get_suptitle()

def test_profiles_with_more_keys_than_colour_marker_and_panels_show_are_a_figure_per_value():
    """activation x batch size x width, five batch sizes and five widths: colour takes the activation, and
    neither batch size nor width has few enough values for a marker (a profile has no line style: its dashes
    are the theory's), nor 25 combinations room in the panels. One figure drew the lines of a panel alike in
    both (its title said `lines also differ in ...`); now one figure per value of one of them (`figure_parts`,
    as the curves'), in plot, compare and the standard set, each a panel per value of the other, and no two
    lines of a panel alike."""
    from gradflow.plots.kinds import Options, draw, figure_parts, overlay_facet, split_note
    from gradflow.plots.standard import plan

    keys = ("model.activation", "train.batch_size", "model.width")
    # (a key that changes step 0: optim.lr does not, and a profile of step 0 draws its runs as one line)
    sizes, widths = (16, 32, 64, 128, 256), (8, 16, 32, 64, 128)
    cs = [config(4, a, 1, **{"model.width": w, "train.batch_size": b})
          for a in ("relu", "tanh") for b in sizes for w in widths]
    layers, _, _ = fabricate([c | {"run": run_id(c, keys)} for c in cs], steps=(0, 20))
    for step in (0, "last"):
        assert _alike_in_a_panel(figures.profile(layers, step=step), layers) != []  # (one figure of them all)
        o = Options(step=step)
        parts = figure_parts("profile", layers, o)
        assert [items for items, _ in parts] == [[f"model.width={w}"] for w in widths]
        assert "colour, marker and panels show; one figure per value of model.width (5 figures)" \
            in split_note("profile", parts).replace("\n", " ")
        items, part = parts[2]
        fig, stem = draw("profile", part, o)
        assert _alike_in_a_panel(fig, part) == [] and "also differ" not in fig.get_suptitle()
        panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
        assert [ax.get_title() for ax in panels] == [f"batch_size={b}" for b in sizes]
        assert [len(series_lines(ax)) for ax in panels] == [2] * len(sizes)  # relu and tanh, each its colour
        assert {"relu", "tanh"} <= set(legend_texts(fig))
    # the standard set, which facets by the activation (its third key), colours by width: a figure per batch
    # size, each named as the curves' are
    planned = [p for p in plan(layers, None, None) if p.name.startswith("profile-grad_norm")]
    assert [p.name for p in planned] == [f"profile-grad_norm-{when}-train.batch_size={b}"
                                         for when in ("step0", "last") for b in sizes]
    fig = planned[2].draw(*planned[2].args, **planned[2].kwargs)
    assert "only the runs with train.batch_size=64" in fig.get_suptitle() and "also differ" not in fig.get_suptitle()
    assert "colour, marker and panels" in fig.get_suptitle()
    assert _alike_in_a_panel(fig, planned[2].args[0]) == []
    # compare of two folders of it: the sources take the markers, the activation the panels, the width the
    # colour: a figure per batch size
    both = pd.concat([layers, layers.assign(source="other", value=layers.value * 2)], ignore_index=True)
    o = Options()
    o.facet = overlay_facet(both, "profile", o)
    parts = figure_parts("profile", both, o)
    assert [items for items, _ in parts] == [[f"train.batch_size={b}"] for b in sizes]
    for items, part in parts:
        fig, _ = draw("profile", part, o)
        assert _alike_in_a_panel(fig, part) == [] and "also differ" not in fig.get_suptitle(), items
        assert [ax.get_title() for ax in fig.axes if ax.get_gid() != "colorbar"] == ["activation=relu",
                                                                                     "activation=tanh"]
    # a study whose keys each have a channel is one figure, as it was
    assert [items for items, _ in figure_parts("profile", parts[0][1], o)] == [[]]
    four = layers[layers["model.width"] == 16]
    assert [p.name for p in plan(four, None, None) if p.name.startswith("profile-grad_norm")] == [
        "profile-grad_norm-step0", "profile-grad_norm-last"]


def test_a_profile_at_step_0_draws_runs_alike_in_update_only_keys_as_one_line_where_they_measured_the_same():
    """depth x activation x lr, two seeds: at step 0 the lr is no key (its runs measured the same: the fabricated
    profiles depend on the step and seed alone), one line per activation and depth whose band spans the two
    seeds, not eight runs; the standard set and compare give it no panels there. Where the lr's runs did
    measure differently at step 0 (a user's loop), or a colour is asked for it, it stays a key."""
    from gradflow.plots.kinds import Options, overlay_facet
    from gradflow.plots.standard import plan

    lrs = (0.01, 0.1, 1.0)
    cs = [config(d, a, seed, **{"optim.lr": lr}) for d in (2, 4) for a in ("relu", "tanh") for seed in (1, 2)
          for lr in lrs]
    layers, _, _ = fabricate([c | {"run": run_id(c, ("model.depth", "model.activation", "optim.lr", "seed"))}
                              for c in cs], steps=(0, 20))
    fig = figures.profile(layers, step=0)
    assert "optim.lr: no effect at step 0 (one line per value of the other keys)" in " ".join(
        fig.get_suptitle().split())
    (ax,) = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    lines = series_lines(ax)
    assert len(lines) == 4 and all(ln.get_gid().endswith("(+5 runs)") for ln in lines)  # 3 lrs x 2 seeds each
    assert "min-max over seeds\n(line: median of 2)" in legend_texts(fig)
    drawn = fig.data["lines"]
    at0 = layers[(layers["step"] == 0) & (layers["quantity"] == "grad_norm")]
    for line, points in drawn.groupby("line"):
        first = at0[at0["run"] == line.split(" (+")[0]].iloc[0]
        runs = at0[(at0["model.depth"] == first["model.depth"])
                   & (at0["model.activation"] == first["model.activation"])]
        per_layer = runs.groupby("layer")["value"]
        assert np.allclose(points.sort_values("x")["lo"], per_layer.min()) and \
            np.allclose(points.sort_values("x")["hi"], per_layer.max())  # (the band: the seeds' spread)
    # at the last step the lr is a key, and so it is in panels of the standard set and compare's
    assert len(series_lines(figures.profile(layers, step="last", facet="optim.lr").axes[0])) == 4
    facets = {p.name: p.kwargs.get("facet") for p in plan(layers, None, None) if p.name.startswith("profile-grad")}
    assert facets == {"profile-grad_norm-step0": None, "profile-grad_norm-last": "optim.lr"}, facets
    both = pd.concat([layers, layers.assign(source="other", value=layers.value * 2)], ignore_index=True)
    assert overlay_facet(both, "profile", Options(step=0)) == "model.activation"
    assert overlay_facet(both, "profile", Options(step="last")) == "optim.lr"
    # a colour asked for it keeps it
    fig = figures.profile(layers, step=0, color="optim.lr")
    (bar,) = colorbar_axes(fig)
    assert "no effect" not in fig.get_suptitle() and "optim.lr" in bar.get_ylabel() + bar.get_xlabel()
    # runs of one lr that measured differently at step 0: the lr stays a key
    other = layers.assign(value=layers["value"].where(~((layers["step"] == 0) & (layers["optim.lr"] == 1.0)),
                                                      layers["value"] * 1.001))
    fig = figures.profile(other, step=0)
    assert "no effect" not in fig.get_suptitle()
    assert sum(len(series_lines(ax)) for ax in fig.axes) == 12


def test_ratio_gives_the_keys_colour_and_style_leave_out_a_panel_per_value():
    """Depth on the x axis, activation the colour, width the line style: the init gets a panel per value."""
    keys = ("model.depth", "model.activation", "init.name", "model.width", "seed")
    configs = [config(d, a, 1, **{"init.name": i, "model.width": w}) for d in (5, 10, 20) for a in ("tanh", "relu")
               for i in ("xavier_normal", "kaiming_normal") for w in (16, 32)]
    layers, _, _ = fabricate([c | {"run": run_id(c, keys)} for c in configs])
    fig = figures.ratio(layers, quantity="signal_norm")
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels] == ["init=kaiming_normal", "init=xavier_normal"]
    for ax in panels:  # 2 activations x 2 widths, each over the 3 depths
        lines = series_lines(ax)
        assert len(lines) == 4 and len({(str(ln.get_color()), str(ln.get_linestyle())) for ln in lines}) == 4
        assert all(list(ln.get_xdata()) == [5, 10, 20] for ln in lines)
    assert "also differ" not in fig.get_suptitle()
    assert [bool(ax.get_ylabel()) for ax in panels] == [True, False] and all(ax.get_xlabel() for ax in panels)


def test_profile_last_step_marks_nonfinite_and_zero_values(sweep):
    layers, _, _ = sweep
    fig = figures.profile(layers, "grad_norm", step="last")
    ax = fig.axes[0]
    # the diverged run is entirely inf/NaN at its last probed step: drawn at its last finite one instead,
    # one mark on the top edge at its end saying it diverged after (every layer's mark said nothing drawn)
    marks = lines_with(fig, "nonfinite")
    assert marks and sorted(np.concatenate([m.get_xdata() for m in marks])) == [20]
    assert "its last finite one (diverged after it" in " ".join(fig.get_suptitle().split())
    zero_marks = lines_with(fig, "offscale")
    assert zero_marks and set(np.concatenate([m.get_xdata() for m in zero_marks])) == {0, 1, 2}
    texts = " ".join(legend_texts(fig))
    assert "NaN/inf" in texts and "<= 0" in texts
    assert "last probed" in fig.get_suptitle()
    assert len(series_lines(ax)) == 6


def test_profile_last_step_marks_a_run_that_diverged_after_its_last_probe(sweep):
    """A run whose last probe (finite, 1e34 in an RNN) came before the step it diverged at, with no probe
    after: it is named in the title and marked at the top, not drawn as a run that ended well."""
    layers, _, _ = sweep
    # the diverged run as gradflow records an RNN that blew up between probes: no NaN row, diverged_step set
    cut = layers[~((layers.run == DIVERGED) & (layers.step == 30))]
    cut = cut.assign(diverged_step=np.where(cut.run == DIVERGED, 17.0, np.nan))
    fig = figures.profile(cut, "grad_norm", step="last")
    title = " ".join(fig.get_suptitle().split())
    assert f"{DIVERGED} at step 10, its last finite one (diverged after it" in title
    marks = lines_with(fig, "nonfinite")
    assert marks and sorted(np.concatenate([m.get_xdata() for m in marks])) == [20]  # its end, depth 20


def test_profile_names_a_long_diverged_run_within_its_title():
    """A diverged run's folder name (key=value items, no space a title line can break at) is not written whole
    into the title: a figure of that run alone says "the run", a figure of several names it by what sets it apart."""
    keys = ("init.name", "init.gain", "model.activation", "model.depth", "model.width", "optim.lr", "seed")
    cfg = config(20, "relu", 2, **{"init.name": "orthogonal", "init.gain": 3.0})
    long_name = run_id(cfg, keys)
    assert len(long_name) > 80
    alone, _, _ = fabricate([cfg | {"run": long_name}], diverged=(long_name,))
    title = " ".join(figures.profile(alone, "grad_norm", step="last").get_suptitle().split())
    assert "the run at step 10, its last finite one (diverged after it" in title and long_name not in title
    other = config(10, "tanh", 1, **{"init.name": "orthogonal", "init.gain": 3.0})
    both, _, _ = fabricate([cfg | {"run": long_name}, other | {"run": run_id(other, keys)}], diverged=(long_name,))
    fig = figures.profile(both, "grad_norm", step="last")
    title = fig.get_suptitle()
    # by the items that set it apart from the other run drawn (its activation, depth and seed)
    assert "model.activation=relu,model.depth=20,seed=2 at step 10, its last" in " ".join(title.split()), title
    assert long_name not in title and max(len(line) for line in title.splitlines()) <= 100
    # where those are still too long, whole items around "…" (a cut inside one, depth=1…, read as another value)
    from gradflow.plots.series import title_name

    assert title_name(long_name, [long_name, "a=1"]) == "init.name=orthogonal,init.gain=3.0,…,seed=2"


def test_a_diverged_run_of_one_source_is_drawn_beside_the_same_name_in_another():
    # two folders' runs named alike (a Recorder's run0 in each): the last step was taken over both, so the one that
    # diverged at step 30, its last finite probe at 10, had no row at step 100 and was not drawn
    cfg = config(20, "relu", 2)
    a, _, _ = fabricate([cfg | {"run": "run0"}], source="a", diverged=("run0",))
    b, _, _ = fabricate([cfg | {"run": "run0"}], source="b")
    both = pd.concat([a, b], ignore_index=True)
    fig = figures.profile(both, "grad_norm", step="last")
    assert len(series_lines(fig.axes[0])) == 2
    assert "a/run0 at step 10, its last finite one (diverged after it" in " ".join(fig.get_suptitle().split())
    # ids that name their source already (compare's, store.prefix_runs): named once (it read a/a/run0)
    fig = figures.profile(both.assign(run=both["source"] + "/" + both["run"]), "grad_norm", step="last")
    title = " ".join(fig.get_suptitle().split())
    assert "a/run0 at step 10, its last finite one" in title and "a/a/" not in title, title
    # one mark, at the end of a's line alone (b's run0, which ended well, was marked too)
    assert len(np.concatenate([m.get_xdata() for m in lines_with(fig, "nonfinite")])) == 1
    # at a step one of them never reached, it is said, with the source none of whose runs did (its lines all
    # gone, and with them any word of it: the one source left is in no legend)
    title = " ".join(figures.profile(both, "grad_norm", step=100).get_suptitle().split())
    assert "step 100; 1 of 2 runs never reached it (not drawn: all of a)" in title, title


def test_profile_linear_quantities_and_errors(sweep):
    layers, _, _ = sweep
    fig = figures.profile(layers, "act_mean", step=0)
    assert fig.axes[0].get_yscale() == "linear"
    with pytest.raises(GradflowError, match="choices: .*grad_norm"):
        figures.profile(layers, "nope")
    with pytest.raises(GradflowError, match="probed steps: 0, 1, 3"):
        figures.profile(layers, step=7)
    with pytest.raises(GradflowError, match="choices: model.depth, model.activation"):
        figures.profile(layers, color="optim.lr")


def test_profile_theory_line_has_slope_sqrt_chi1_per_layer():
    theory = pytest.importorskip("gradflow.theory")
    cfg = config(12, "tanh", 1, **{"init.name": "meanfield", "init.sw2": 1.0, "init.sb2": 0.05})
    prediction = theory.predict(cfg)
    assert prediction is not None
    layers, _, _ = fabricate([cfg], rate={"tanh": 0.9})
    fig = figures.profile(layers, "signal_norm", step=0)
    (line,) = lines_with(fig, "theory")
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    # value_l = value_L * sqrt(chi1)^(L - l): per layer towards the input, log y changes by log sqrt(chi1)
    np.testing.assert_allclose(-np.diff(np.log(y)) / np.diff(x), math.log(math.sqrt(prediction.chi1)), rtol=1e-9)
    last = layers[(layers.quantity == "signal_norm") & (layers.step == 0) & (layers.layer == 12)].value.iloc[0]
    assert x[-1] == 12 and y[-1] == pytest.approx(last)
    assert any("chi_1" in t for t in legend_texts(fig))


def test_a_profile_colours_what_the_study_varies_and_only_its_theory_lines_are_dashed():
    """A depth x init study: init, what it is about (each line's end already says its depth), takes the colour,
    depth a marker on solid lines, and the dashed mean-field lines are the only dashed ones. Depth, the first
    column, took the colour, and init was told only by dash patterns beside the theory's dashes."""
    pytest.importorskip("gradflow.theory")
    keys = ("model.depth", "init.name", "seed")
    configs = [config(d, "relu", 1, **{"init.name": i, "init.sw2": sw2}) for d in (4, 8, 12)
               for i, sw2 in (("kaiming_normal", 2.0), ("meanfield", 1.5))]
    layers, _, _ = fabricate([c | {"run": run_id(c, keys)} for c in configs])
    fig = figures.profile(layers, "signal_norm", step=0)
    assert not colorbar_axes(fig)
    leg = fig.legends[0]
    assert "init.name" in leg.get_title().get_text()
    entries = {t.get_text(): h for t, h in zip(leg.get_texts(), leg.legend_handles)}
    assert {"kaiming_normal", "meanfield", "depth=4", "depth=8", "depth=12"} <= set(entries), list(entries)
    runs, theory = lines_with(fig, "series:"), lines_with(fig, "theory")
    assert len(runs) == 6 and len(theory) == 6
    # each run's colour is its init's, its marker its depth's, its line solid; the theory's dashed
    colour = {i: entries[i].get_color() for i in ("kaiming_normal", "meanfield")}
    marker = {d: entries[f"depth={d}"].get_marker() for d in (4, 8, 12)}
    assert len(set(map(str, colour.values()))) == 2 and len(set(marker.values())) == 3
    for ln in runs:
        label = ln.get_gid().removeprefix("series:")
        init = "meanfield" if "meanfield" in label else "kaiming_normal"
        depth = int(max(ln.get_xdata()))
        assert (ln.get_color(), ln.get_marker(), ln.get_linestyle()) == (colour[init], marker[depth], "-"), label
    assert all(entries[f"depth={d}"].get_linestyle() == "-" for d in (4, 8, 12))
    assert {ln.get_linestyle() for ln in theory} == {"--"}
    # a length of more values than markers: it keeps the colour (a panel each would split the study)
    many = [config(d, "relu", 1, **{"init.name": i}) for d in (2, 4, 6, 8, 10) for i in ("xavier_normal", "orthogonal")]
    fig = figures.profile(fabricate([c | {"run": run_id(c, keys)} for c in many])[0], "signal_norm", step=0)
    (cbar,) = colorbar_axes(fig)
    assert "model.depth" in cbar.get_ylabel()


def test_profile_overlays_or_splits_sources(sweep):
    layers, _, _ = sweep
    a = layers[layers.seed == 1]
    both = pd.concat([a, a.assign(source="other", value=a.value * 2)], ignore_index=True)
    fig = figures.profile(both, step=0)
    # source as the line style, depth the colour: the activation, which neither shows, gets a panel per value
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels] == ["activation=relu", "activation=tanh"]
    assert [len(series_lines(ax)) for ax in panels] == [6, 6]  # 3 depths x 2 sources
    assert {"source=sweep", "source=other"} <= set(legend_texts(fig)) and "also differ" not in fig.get_suptitle()
    fig = figures.profile(both, step=0, by_source=True)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels] == ["source=sweep", "source=other"]  # (in the order given)
    assert [len(series_lines(ax)) for ax in panels] == [6, 6]
    # compare's sources set apart by a key each fixes (its table leaves it out): each panel says it, as the
    # legend names an overlaid source ("source=sweep" alone said nothing of the init)
    both.attrs["source_keys"] = {"sweep": {"init.name": "xavier_normal"}, "other": {"init.name": "orthogonal"}}
    titles = [ax.get_title() for ax in figures.profile(both, step=0, by_source=True).axes if ax.get_gid() != "colorbar"]
    assert titles == ["sweep (init=xavier_normal)", "other (init=orthogonal)"], titles
    metrics = sweep[1][sweep[1].seed == 1]
    metrics = pd.concat([metrics, metrics.assign(source="other")], ignore_index=True)
    metrics.attrs["source_keys"] = both.attrs["source_keys"]
    titles = [ax.get_title().replace("\n", " ") for ax in figures.curves(metrics, by_source=True).axes]
    assert titles[:2] == ["sweep (init=xavier_normal): train", "sweep (init=xavier_normal): test"], titles



def test_two_sources_with_nothing_swept_are_coloured_apart(single):
    # one run each (a user's GPT of 2 blocks and of 4, compared): drawn in one colour, told apart by their
    # small markers alone
    layers, _, _ = single
    both = pd.concat([layers.assign(source="gpt2"), layers.assign(source="gpt4", value=layers.value * 2)],
                     ignore_index=True)
    (ax,) = [ax for ax in figures.profile(both, step=0).axes if ax.get_gid() != "colorbar"]
    colours = [tuple(line.get_color()) for line in series_lines(ax)]
    assert len(colours) == 2 and len(set(colours)) == 2, colours


def _norm_and_skip_studies():
    """Two folders: one sweeps depth x norm, the other depth x skip (compare's BatchNorm-vs-residual study)."""
    keys = ("model.depth", "norm.name", "model.skip")
    bn = [config(d, **{"norm.name": n}) for d in (4, 8) for n in ("none", "batchnorm")]
    skip = [config(d, **{"model.skip": k}) for d in (4, 8) for k in ("none", "residual")]
    return [pd.concat([fabricate([c | {"run": run_id(c, keys)} for c in cs], source=src)[i] for src, cs in
                       (("bn", bn), ("skip", skip))], ignore_index=True) for i in (0, 1)]


def test_panels_per_source_split_by_the_key_neither_colour_nor_marker_shows():
    """--panels: a folder's runs that differ in a key its colour and marker leave out (its norm, where the
    colour is the other folder's skip) get a panel each, not lines drawn alike in the folder's panel."""
    layers, metrics = _norm_and_skip_studies()
    want = ["source=bn, norm=batchnorm", "source=bn, norm=none", "source=skip, norm=none"]
    fig = figures.profile(layers, "signal_norm", step=0, by_source=True)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels] == want
    assert [len(series_lines(ax)) for ax in panels] == [2, 2, 4]  # 2 depths (x 2 skips in the skip folder)
    assert "also differ" not in fig.get_suptitle()
    fig = figures.curves(metrics, by_source=True)
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [t for t in titles if t.endswith("train")] == [f"{w}: train" for w in want]  # (over the loss row)
    assert "also differ" not in fig.get_suptitle()
    loss = metrics[(metrics.split == "train") & (metrics.metric == "loss")]
    fig = figures.gradnorm(pd.concat([metrics, loss.assign(split="opt", metric="grad_norm")]), by_source=True)
    assert [ax.get_title() for ax in fig.axes if ax.get_gid() != "colorbar"] == want
    assert "also differ" not in fig.get_suptitle()


def _alike_in_a_panel(fig, table) -> list[set]:
    """The groups of lines one panel draws alike (the same colour, line style and marker) whose runs differ in
    some swept key or source: each group's distinct (source, swept values), where it has more than one."""
    from matplotlib.colors import to_hex

    keys = ["source", *swept_keys(table)]
    values = {r: tuple(map(str, v)) for r, *v in table.drop_duplicates("run")[["run", *keys]].itertuples(index=False)}
    alike = []
    for ax in fig.axes:
        looks: dict[tuple, set] = {}
        for ln in series_lines(ax):
            run = ln.get_gid().removeprefix("series:").split(" (+")[0]
            looks.setdefault((to_hex(ln.get_color()), ln.get_linestyle(), ln.get_marker()), set()).add(values[run])
        alike += [v for v in looks.values() if len(v) > 1]
    return alike


def _init_studies(lr_b=0.01):
    """compare's two init studies: A sweeps depth 4, 12 x relu, tanh x three inits; B the same with two inits
    (orthogonal, kaiming_normal) at another lr; run ids prefixed by their source, as compare's are."""
    keys = ("init.name", "model.activation", "model.depth")
    a = [config(d, act, 0, **{"init.name": i}) for d in (4, 12) for act in ("relu", "tanh")
         for i in ("xavier_normal", "kaiming_normal", "orthogonal")]
    b = [c | {"optim.lr": lr_b} for c in a if c["init.name"] != "xavier_normal"]
    rate = lambda c: {"relu": 1.15, "tanh": 0.8}[c["model.activation"]]  # noqa: E731
    parts = [fabricate([c | {"run": f"{src}/{run_id(c, keys)}"} for c in cs], source=src, rate=rate)
             for src, cs in (("inits", a), ("inits-lr01", b))]
    return [pd.concat([p[i] for p in parts], ignore_index=True).drop(columns="optim.lr") for i in (0, 1)]


def test_curves_of_a_comparison_leave_no_swept_key_without_a_channel():
    """compare --kind curves of two depth x activation x init studies: colour (depth), the sources' line
    styles and a pair of panels per init left the activation nowhere, relu and tanh drawn alike (the title
    only said `lines also differ in model.activation`); the activation takes a marker, so no two lines of a
    panel whose runs differ in any swept key or source look alike, and the legend names each marker."""
    from gradflow.plots.kinds import Options, draw, overlay_facet

    _, metrics = _init_studies()
    # overlaid: depth's colours, the sources' styles, init's panels, the activation's markers; compare
    # --panels: the activation's colours, depth's styles, a panel per source, init's markers
    for by_source, key, shown in ((False, "activation", ("relu", "tanh")),
                                  (True, "init", ("xavier_normal", "kaiming_normal", "orthogonal"))):
        o = Options(by_source=by_source)
        o.facet = overlay_facet(metrics, "curves", o)
        fig, _ = draw("curves", metrics, o)
        assert _alike_in_a_panel(fig, metrics) == [], by_source
        assert "also differ" not in fig.get_suptitle()
        markers = {t.get_text(): h.get_marker() for lg in fig.legends
                   for h, t in zip(lg.legend_handles, lg.get_texts())}
        drawn = {markers.get(f"{key}={v}") for v in shown}
        assert len(drawn) == len(shown) and not drawn & {None, "None"}, markers
    grads = pd.concat([metrics, metrics[(metrics.split == "train") & (metrics.metric == "loss")]
                       .assign(split="opt", metric="grad_norm")], ignore_index=True)
    o = Options()
    o.facet = overlay_facet(grads, "gradnorm", o)
    fig, _ = draw("gradnorm", grads, o)
    assert _alike_in_a_panel(fig, grads) == [] and "also differ" not in fig.get_suptitle()


def test_curves_of_five_swept_keys_put_the_pairs_past_three_on_rows_below():
    """depth x activation x init x width x lr: colour and line style take two keys, a marker the width, and
    the six init x lr pairs of columns go on two rows of three (the title named three keys the lines were
    drawn alike in); every panel's lines told apart."""
    keys = ("model.depth", "model.activation", "init.name", "model.width", "optim.lr")
    cs = [config(d, a, 1, **{"init.name": i, "model.width": w, "optim.lr": lr})
          for d in (4, 8) for a in ("relu", "tanh") for i in ("xavier_normal", "kaiming_normal", "orthogonal")
          for w in (16, 32) for lr in (0.01, 0.1)]
    _, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in cs])
    fig = figures.curves(metrics)
    assert _alike_in_a_panel(fig, metrics) == [] and "also differ" not in fig.get_suptitle()
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert len(panels) == 2 * 12  # loss and accuracy under each of 6 x train | test
    rows = sorted({ax.get_subplotspec().rowspan.start for ax in panels})
    assert rows == [0, 1, 2, 3]  # two blocks of loss over accuracy
    assert {ax.get_subplotspec().colspan.start for ax in panels} == set(range(6))
    titles = [ax.get_title() for ax in panels if ax.get_subplotspec().rowspan.start == 2]
    assert titles[0] == "init=orthogonal, lr=0.1: train", titles
    # a study whose keys each have a channel keeps its figure: 2 pairs, no marker
    two = [c for c in cs if c["model.width"] == 16 and c["optim.lr"] == 0.01 and c["init.name"] != "orthogonal"]
    _, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in two])
    fig = figures.curves(metrics)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["init=kaiming_normal: train", "init=kaiming_normal: test",
                                                       "init=xavier_normal: train", "init=xavier_normal: test"]
    assert _alike_in_a_panel(fig, metrics) == [] and {ln.get_marker() for ln in lines_with(fig, "series:")} == {"None"}


def test_curves_with_more_keys_than_any_channel_shows_are_a_figure_per_value():
    """activation x lr x width, five lrs and five widths: colour takes the activation, and neither lr nor width
    has few enough values for a line style or marker, nor 25 combinations room in the panels: one figure per
    width (`figure_parts`, in plot, compare and the standard set alike; of equals the first swept), each a pair
    of panels per lr, its title naming its width, and no two lines of a panel alike (one figure drew the 25
    alike in a panel)."""
    from gradflow.plots.kinds import Options, draw, figure_parts, split_note
    from gradflow.plots.standard import plan

    keys = ("model.activation", "optim.lr", "model.width")
    lrs, widths = (0.001, 0.003, 0.01, 0.03, 0.1), (8, 16, 32, 64, 128)
    cs = [config(4, a, 1, **{"optim.lr": lr, "model.width": w}) for a in ("relu", "tanh") for lr in lrs for w in widths]
    _, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in cs], steps=(0, 20))
    assert _alike_in_a_panel(figures.curves(metrics), metrics) != []  # (one figure of them all)
    parts = figure_parts("curves", metrics, Options())
    assert [items for items, _ in parts] == [[f"model.width={w}"] for w in widths]
    assert "one figure per value of model.width (5 figures)" in split_note("curves", parts)
    items, part = parts[2]
    fig, _ = draw("curves", part, Options())
    assert _alike_in_a_panel(fig, part) == [] and "also differ" not in fig.get_suptitle()
    assert len([ax for ax in fig.axes if ax.get_gid() != "colorbar"]) == 2 * 2 * len(lrs)
    at = {ax.get_title(): (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start)
          for ax in fig.axes if ax.get_title()}  # five pairs on rows of three: no pair broken across rows
    assert [at[f"lr={lr}: test"] for lr in lrs] == [(r, c + 1) for r, c in (at[f"lr={lr}: train"] for lr in lrs)]
    assert sorted({r for r, _ in at.values()}) == [0, 2]
    # the standard set, which facets by the activation (its third key), colours by width: a figure per lr
    planned = [p for p in plan(None, metrics, None) if p.name.startswith("curves")]
    assert [p.name for p in planned] == [f"curves-optim.lr={lr}" for lr in lrs]
    fig = planned[2].draw(*planned[2].args, **planned[2].kwargs)
    assert "only the runs with optim.lr=0.01" in fig.get_suptitle() and "also differ" not in fig.get_suptitle()
    assert _alike_in_a_panel(fig, planned[2].args[0]) == []
    # a study whose keys each have a channel is one figure, as it was
    assert [items for items, _ in figure_parts("curves", part, Options())] == [[]]


def test_a_marker_key_of_the_curves_takes_no_shape_depth_has_in_the_profiles():
    """depth x activation x init x width x lr: the profiles mark depth o, s; the curves' marker key (width) took
    the same o, s, so a marker read as depth 4 in one figure of the study and width 16 in the next (and a dot,
    a line of one point, shows its line style by those shapes)."""
    keys = ("model.depth", "model.activation", "init.name", "model.width", "optim.lr")
    cs = [config(d, a, 1, **{"init.name": i, "model.width": w, "optim.lr": lr})
          for d in (4, 8) for a in ("relu", "tanh") for i in ("xavier_normal", "kaiming_normal", "orthogonal")
          for w in (16, 32) for lr in (0.01, 0.1)]
    layers, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in cs])
    depth_marks = {ln.get_marker() for ln in lines_with(figures.profile(layers, step=0), "series:")}
    assert len(depth_marks) == 2 and "None" not in depth_marks  # depth 4, 8 by their markers
    fig = figures.curves(metrics)
    width_marks: dict[str, set] = {}
    for ln in lines_with(fig, "series:"):
        width_marks.setdefault(ln.get_gid().split("model.width=")[1].split(",")[0], set()).add(ln.get_marker())
    assert sorted(width_marks) == ["16", "32"] and all(len(m) == 1 for m in width_marks.values()), width_marks
    shapes = set.union(*width_marks.values())
    assert len(shapes) == 2 and not shapes & depth_marks, (shapes, depth_marks)
    legend = {t.get_text(): h.get_marker() for lg in fig.legends for h, t in zip(lg.legend_handles, lg.get_texts())}
    assert {legend["width=16"], legend["width=32"]} == shapes, legend


def test_figures_per_value_of_values_a_file_name_reads_alike_get_names_of_their_own():
    """A figure per tag, two tags of which a file name reads alike (a/b and a b: tag=a_b): the second figure
    overwrote the first, in plot, compare and the standard set; each gets a name of its own."""
    from gradflow.plots.kinds import Options, figure_parts, part_names
    from gradflow.plots.standard import plan

    keys = ("model.activation", "optim.lr", "model.variant")
    tags, lrs = ("a/b", "a b", "c", "d", "e"), (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
    cs = [config(4, a, 1, **{"optim.lr": lr, "model.variant": t}) for a in ("relu", "tanh") for lr in lrs for t in tags]
    _, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in cs], steps=(0, 20))
    parts = figure_parts("curves", metrics, Options())
    assert sorted(items for items, _ in parts) == sorted([f"model.variant={t}"] for t in tags)
    names = dict(zip((items[0] for items, _ in parts), part_names(parts)))
    assert len(set(names.values())) == 5, names
    assert [names[f"model.variant={t}"] for t in "cde"] == [f"model.variant={t}" for t in "cde"], names
    assert names["model.variant=a/b"].startswith("model.variant=a_b-"), names
    planned = [p.name for p in plan(None, metrics, None) if p.name.startswith("curves")]
    assert len(planned) == len(set(planned)) == 5, planned


# --- heatmap -------------------------------------------------------------------------------------
def test_heatmap_is_layer_by_step_on_a_log_colour_scale(single, sweep):
    layers, _, _ = single
    fig = figures.heatmap(layers)
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if c.get_gid() == "heatmap"]
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.get_array().shape == (11, len(STEPS))  # (layers, steps)
    g = layers[(layers.quantity == "grad_norm")].pivot(index="layer", columns="step", values="value")
    np.testing.assert_allclose(mesh.get_array(), g.to_numpy())
    assert "layer index" in ax.get_ylabel() and "step" in ax.get_xlabel()
    (cbar,) = colorbar_axes(fig)
    assert cbar.get_ylabel() == QUANTITIES["grad_norm"].axis
    # a colour scale of a few decades reads round values, as the profiles' log axes do (2×10⁻¹ read as 0.2)
    short = layers.assign(value=np.where(layers.quantity == "grad_norm", 0.15 + layers.layer / 20, layers.value))
    fig = figures.heatmap(short)
    fig.canvas.draw()
    labels = [t.get_text() for t in colorbar_axes(fig)[0].get_yticklabels() if t.get_text()]
    assert labels and all("10" not in t and "×" not in t for t in labels) and "0.2" in labels, labels
    sweep_layers = sweep[0]
    with pytest.raises(GradflowError, match="pass run="):
        figures.heatmap(sweep_layers)
    for run in (DIVERGED, ZEROS):  # the special cells are drawn and listed
        fig = figures.heatmap(sweep_layers, run=run)
        texts = " ".join(legend_texts(fig))
        assert ("NaN/inf" in texts) if run == DIVERGED else ("exactly 0: 18 cells" in texts)
    # a point without the quantity (a transformer's residual junction has no weight) is said to have none,
    # not to be "not logged"
    weightless = layers[~((layers.quantity == "grad_norm") & (layers.layer == 4))]
    texts = " ".join(legend_texts(figures.heatmap(weightless)))
    assert "no value (none at that point, e.g. no weight; or not probed)" in texts and "not logged" not in texts


@pytest.mark.parametrize("depth", [7, 13, 20, 23])
def test_the_layer_axis_ticks_the_output_head_it_names(depth):
    """The axis label says `20 = output head`; the ticks ran 0, 3, ..., 18 and left the head unticked. Ticks
    are whole indices 1, 2 or 5 times a power of ten apart, and the last one is always among them."""
    layers, _, _ = fabricate([config(depth, "tanh", 1)])
    for fig, axis in ((figures.heatmap(layers), "y"), (figures.profile(layers, "grad_norm", step=0), "x")):
        ax = fig.axes[0]
        fig.canvas.draw()
        lo, hi = sorted(getattr(ax, f"get_{axis}lim")())
        ticks = [t for t in getattr(ax, f"get_{axis}ticks")() if lo <= t <= hi]
        assert ticks[-1] == depth and "output head" in getattr(ax, f"get_{axis}label")(), (axis, ticks)
        assert all(float(t).is_integer() for t in ticks) and 3 not in np.diff(ticks[:-1]), ticks


def test_heatmap_of_an_activation_statistic_calls_no_layer_the_head(single):
    # its last row is the last hidden layer (the head has no activation): the axis read "9 = output head";
    # and all 0, its colour bar ran from -0.1 to 0.1, negative shares of dead units
    layers, _, _ = single
    head = layers.layer.max()
    acts = layers[(layers.quantity == "act_dead") & (layers.layer < head)].assign(value=0.0)
    ax = figures.heatmap(acts, quantity="act_dead").axes[0]
    label = " ".join(ax.get_ylabel().split())
    assert "the output head has none" in label and "= output head" not in label, label
    (mesh,) = [c for c in ax.collections if c.get_gid() == "heatmap"]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 1.0)
    assert f"{head} = output head" in " ".join(figures.heatmap(layers).axes[0].get_ylabel().split())


def test_heatmap_of_few_probed_steps_has_a_cell_at_each_and_no_negative_step():
    # a Recorder's 20 steps probed every 10th: steps 0 and 10 were cells over -5..5 and 5..15 under ticks
    # -4, 0, 4, 8, 12
    layers, _, _ = fabricate([config(4, "tanh", 1)], steps=(0, 10))
    ax = figures.heatmap(layers).axes[0]
    (mesh,) = [c for c in ax.collections if c.get_gid() == "heatmap"]
    np.testing.assert_allclose(mesh.get_coordinates()[0, :, 0], [-0.5, 0.5, 1.5])  # one even cell per step
    np.testing.assert_allclose(ax.get_xticks(), [0, 1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "10"]
    # many probed steps keep a step axis, its first cell starting at step 0, not half a gap before it
    layers, _, _ = fabricate([config(4, "tanh", 1)], steps=tuple(range(0, 101, 10)))
    ax = figures.heatmap(layers).axes[0]
    (mesh,) = [c for c in ax.collections if c.get_gid() == "heatmap"]
    assert mesh.get_coordinates()[0, 0, 0] == 0 and ax.get_xlim()[0] == 0
    assert min(t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]) >= 0


# a 60-step run's log-spaced probe steps were ticked 0, 1, 10 alone (the 40% of the axis past 10 bare), and its
# update ratio, which has no value at the last step, read as evenly spaced: a linear axis beside the symlog one
def test_heatmap_step_axis_ticks_its_last_decade_and_takes_the_runs_scale():
    steps = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 22, 25, 29, 33, 39, 45, 52, 60)  # probe.points, 60
    layers, _, _ = fabricate([config(4, "tanh", 1)], steps=steps)
    ax = figures.heatmap(layers).axes[0]
    ax.figure.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels() if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert ax.get_xscale() == "symlog" and shown == ["0", "1", "2", "5", "10", "20", "50"], shown
    last_missing = layers[(layers.quantity != "signal_norm") | (layers.step < 60)]
    assert figures.heatmap(last_missing, quantity="signal_norm").axes[0].get_xscale() == "symlog"


# the last cell ran half a gap past the last probed step: a default 200-step run's (probe.points=30)
# to step 217, every=10's to 205, log-spaced steps to 1024's to 1448, where the run's curves end at its last step
@pytest.mark.parametrize("steps, scale", [
    (tuple(range(0, 201, 10)), "linear"),  # probe.every=10, train.steps=200
    (tuple(range(0, 91, 10)) + (95,), "linear"),  # probe.every=10, train.steps=95: a short last gap
    ((0, 1, 2, 3, 4, 5, 7, 8, 10, 12, 14, 17, 21, 25, 30, 36, 44, 53, 64, 78, 94, 113, 137, 166, 200), "symlog"),
    ((0, 1, 2, 3, 4, 5) + tuple(range(10, 101, 10)), "symlog"),  # a Recorder's loop probing each step, then fewer
    ((0,) + tuple(2 ** k for k in range(11)), "symlog"),  # log-spaced
    (tuple(range(10, 101, 10)), "linear"),  # a loop that counts from 1: no step 0
])
def test_heatmap_cells_span_the_first_to_the_last_probed_step(steps, scale):
    layers, _, _ = fabricate([config(4, "tanh", 1)], steps=tuple(sorted({0, *steps})))
    ax = figures.heatmap(layers[layers.step.isin(steps)]).axes[0]
    (mesh,) = [c for c in ax.collections if c.get_gid() == "heatmap"]
    edges = mesh.get_coordinates()[0, :, 0]
    assert ax.get_xscale() == scale
    assert ax.get_xlim() == (steps[0], steps[-1]) and (edges[0], edges[-1]) == (steps[0], steps[-1])
    # each step inside its own cell, the edges between two steps between them (halfway on the axis drawn)
    assert len(edges) == len(steps) + 1 and all(edges[j] <= s <= edges[j + 1] for j, s in enumerate(steps))
    inner = ax.xaxis.get_transform().transform(edges[1:-1])
    points = ax.xaxis.get_transform().transform(np.asarray(steps, dtype=float))
    np.testing.assert_allclose(inner, (points[1:] + points[:-1]) / 2)


# --- curves --------------------------------------------------------------------------------------
def test_curves_panels_lines_and_log_loss(sweep):
    _, metrics, _ = sweep
    fig = figures.curves(metrics)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert len(panels) == 4  # loss / accuracy x train / test
    assert [ax.get_title() for ax in panels[:2]] == ["train", "test"]
    assert all(len(series_lines(ax)) == 6 for ax in panels)
    assert panels[0].get_yscale() == "log" and panels[2].get_yscale() == "linear"  # loss spans decades
    assert panels[0].get_ylabel().startswith("loss") and panels[2].get_ylabel() == "accuracy"
    assert any(lines_with(fig, "nonfinite"))  # the diverged run's NaN loss is marked
    only_train = metrics[metrics.split == "train"]
    fig = figures.curves(only_train)
    assert len([ax for ax in fig.axes if ax.get_gid() != "colorbar"]) == 2
    # a reproduction's thresholds, across the loss panels only, each named in the legend
    fig = figures.curves(metrics, levels={"chance": 2.3, "half of chance": 1.15})
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    for ax in panels:
        levels = [line.get_ydata()[0] for line in ax.get_lines() if line.get_gid() == "level"]
        assert levels == ([2.3, 1.15] if ax in panels[:2] else [])  # the loss row: train, test
    assert {"chance", "half of chance"} <= set(legend_texts(fig))


def test_a_diverging_runs_loss_does_not_squash_the_others(sweep):
    _, metrics, _ = sweep
    # the diverged run's loss is ordinary until its NaN: the axis takes in everything
    fig = figures.curves(metrics)
    assert not any("axis cut" in t for t in legend_texts(fig))
    # an exploding loss (1e20 by its last finite evaluation) set the axis to 1e20, the others a flat line at its
    # bottom: the axis now ends 3 decades above the finite runs, the exploding one leaving it at the top
    boom = metrics.copy()
    mine = (boom.run == DIVERGED) & (boom.metric == "loss") & boom.value.notna()
    boom.loc[mine, "value"] *= 10.0 ** (boom.loc[mine, "step"] + 1.0)
    assert boom.loc[mine, "value"].max() > 1e20
    fig = figures.curves(boom)
    loss = [ax for ax in fig.axes if ax.get_gid() != "colorbar"][0]
    finite = boom[(boom.run != DIVERGED) & (boom.metric == "loss")].value.max()
    assert loss.get_yscale() == "log" and loss.get_ylim()[1] == pytest.approx(1e3 * finite)
    assert any(t.startswith("loss axis cut at 3 decades above") for t in legend_texts(fig)), legend_texts(fig)
    assert all(line.get_clip_on() for line in loss.get_lines())  # the exploding line leaves at the top


def test_a_seed_that_finished_high_beside_seeds_that_diverged_stays_on_the_loss_axis():
    """relu's three seeds: two diverged, one finished with a loss of 1e4 (2.3 for tanh's). Pooled, the relu
    line held a NaN, so the axis was cut 3 decades above tanh alone (2.3e3) and the seed that finished,
    its loss 1e4, was off the axis with no mark."""
    configs = [config(5, a, seed) for a in ("tanh", "relu") for seed in (1, 2, 3)]
    gone = [run_id(c) for c in configs[4:]]  # relu's seeds 2 and 3
    _, metrics, _ = fabricate(configs, diverged=gone)
    high = (metrics.run == run_id(configs[3])) & (metrics.metric == "loss")
    metrics.loc[high, "value"] = 1e4
    fig = figures.curves(metrics)
    loss = [ax for ax in fig.axes if ax.get_gid() != "colorbar"][0]
    assert loss.get_ylim()[1] >= 1e4, loss.get_ylim()
    assert not any("axis cut" in t for t in legend_texts(fig))
    # one seed alone, exploding, still leaves the axis at its top
    boom = metrics.copy()
    boom.loc[high, "value"] = np.nan
    boom.loc[(boom.run == gone[0]) & (boom.metric == "loss"), "value"] *= 1e9
    fig = figures.curves(boom[~boom.run.isin([run_id(configs[3]), gone[1]])])
    loss = [ax for ax in fig.axes if ax.get_gid() != "colorbar"][0]
    assert any(t.startswith("loss axis cut at 3 decades above") for t in legend_texts(fig)), legend_texts(fig)


def test_a_cut_loss_axis_labels_values_between_its_powers_of_ten_where_the_finite_runs_lie():
    """The finite runs' loss from 0.3 to 2.3 under an axis cut at 2300 (a run exploding beside them) was
    labelled at 10^0 alone there: round values on and next to them are labelled, and where the finite runs
    span two decades or more, the powers of ten alone, as before."""
    configs = [config(d, a, s) for d in (5, 10, 20) for a in ("tanh", "relu") for s in (1, 2)]
    _, metrics, _ = fabricate(configs, diverged=(DIVERGED,))
    loss = metrics.metric == "loss"
    mine, rest = loss & (metrics.run == DIVERGED), loss & (metrics.run != DIVERGED)
    boom = metrics.copy()
    v = boom.loc[rest, "value"]
    boom.loc[rest, "value"] = 0.3 + (v - v.min()) * 2.0 / (v.max() - v.min())  # 0.3 to 2.3
    boom.loc[mine, "value"] *= 10.0 ** (boom.loc[mine, "step"] + 1.0)

    def labelled(m):
        fig = figures.curves(m)
        ax, beside = [a for a in fig.axes if a.get_gid() != "colorbar"][:2]
        fig.canvas.draw()
        # the test panel beside it shares the axis and labels none of its ticks (it showed 0.3 and 0.03 alone)
        assert [t.get_text() for t in beside.get_yticklabels() + beside.get_yticklabels(minor=True)
                if t.get_text()] == []
        lo, hi = ax.get_ylim()
        assert ax.get_yscale() == "log" and hi / lo > 1e3  # (cut 3 decades above the finite runs)
        return sorted(t.get_position()[1] for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
                      if t.get_text() and lo <= t.get_position()[1] <= hi)

    near = [y for y in labelled(boom) if 0.3 / 1.5 <= y <= 2.3 * 1.5]
    assert len(near) >= 3, near  # e.g. 0.3, 1, 3
    wide = metrics.copy()  # the finite runs over 0.016 to 2.6: more than two decades, labelled at 0.1, 1 alone
    wide.loc[mine, "value"] *= 10.0 ** (wide.loc[mine, "step"] + 1.0)
    assert all(math.log10(y) == round(math.log10(y)) for y in labelled(wide))


def test_curves_by_source(sweep):
    _, metrics, _ = sweep
    both = pd.concat([metrics, metrics.assign(source="other")], ignore_index=True)
    one = both[both["model.activation"] == "tanh"]  # depth alone is swept: it colours the lines
    fig = figures.curves(one, by_source=True)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert len(panels) == 4 and "sweep" in panels[0].get_title()  # (the sources in the order given)
    assert len(series_lines(panels[0])) == 6  # 3 depths x (train solid, test dotted)
    assert {"train", "test"} <= set(legend_texts(fig))
    # activation swept too: it takes the colour, as in the set's profiles, and depth the line style, so each
    # folder gets a train and a test panel (drawn alike, train and test would read as one line)
    fig = figures.curves(both, by_source=True)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert len(panels) == 8 and [ax.get_title() for ax in panels[:4]] == [
        "sweep: train", "sweep: test", "other: train", "other: test"]
    assert len(series_lines(panels[0])) == 6  # 3 depths x 2 activations
    assert len({ln.get_linestyle() for ln in series_lines(panels[0])}) == 3  # a style per depth
    assert len({ln.get_color() for ln in series_lines(panels[0])}) == 2  # a colour per activation
    assert any("relu" in t for t in legend_texts(fig)) and "also differ" not in fig.get_suptitle()


def test_curves_facet_gives_a_train_test_pair_per_value(sweep):
    _, metrics, _ = sweep
    fig = figures.curves(metrics, facet="model.activation")
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels[:4]] == ["activation=relu: train", "activation=relu: test",
                                                     "activation=tanh: train", "activation=tanh: test"]
    assert all(len(series_lines(ax)) == 3 for ax in panels)  # 3 depths, seeds aggregated
    assert "also differ" not in fig.get_suptitle()


def test_curves_give_the_key_colour_and_style_leave_out_a_train_test_pair_per_value():
    keys = ("model.depth", "model.activation", "init.name", "seed")
    configs = [config(d, a, 1, **{"init.name": i}) for d in (5, 10, 20) for a in ("tanh", "relu")
               for i in ("xavier_normal", "kaiming_normal")]
    _, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in configs])
    fig = figures.curves(metrics)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels[:4]] == ["init=kaiming_normal: train", "init=kaiming_normal: test",
                                                     "init=xavier_normal: train", "init=xavier_normal: test"]
    for ax in panels:  # 3 depths x 2 activations, each a colour and line style of its own
        lines = series_lines(ax)
        assert len(lines) == 6 and len({(str(ln.get_color()), str(ln.get_linestyle())) for ln in lines}) == 6
    assert "also differ" not in fig.get_suptitle()
    # four inits: more pairs of columns than fit across; init takes a marker each instead (the title only
    # named it, the four inits' lines drawn alike)
    inits = ("xavier_normal", "kaiming_normal", "orthogonal", "standard")
    more = [config(d, a, 1, **{"init.name": i}) for d in (5, 10) for a in ("tanh", "relu") for i in inits]
    _, metrics, _ = fabricate([c | {"run": run_id(c, keys)} for c in more])
    fig = figures.curves(metrics)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["train", "test"]
    assert "also differ" not in fig.get_suptitle()
    for ax in fig.axes[:2]:  # 2 depths x 2 activations x 4 inits, each a colour, line style and marker of its own
        lines = series_lines(ax)
        assert len(lines) == 16 and len({(str(ln.get_color()), ln.get_linestyle(), ln.get_marker())
                                         for ln in lines}) == 16
    assert {f"init={i}" for i in inits} <= set(legend_texts(fig))


def test_the_accuracy_axis_says_what_a_regression_run_counts():
    """For the adding problem (and a Gaussian regression task) "accuracy" is the share of predictions within
    the loop's tolerance: the axis says so, for every run or for the regression ones among others."""
    from gradflow.metrics import REGRESSION_TOLERANCE
    from gradflow.train import loss_and_accuracy

    import torch

    def acc_label(configs):
        _, metrics, _ = fabricate([c | {"run": run_id(c)} for c in configs])
        return figures.curves(metrics).axes[2].get_ylabel()  # (loss, loss; then accuracy, train first)

    assert acc_label([config(d) for d in (5, 10)]) == "accuracy"
    adding = [config(d, **{"data.name": "adding"}) for d in (5, 10)]
    assert acc_label(adding) == f"accuracy (|error| < {REGRESSION_TOLERANCE:g})"
    mixed = [config(5), config(10, **{"data.name": "gaussian", "data.task": "regression"})]
    assert acc_label(mixed) == f"accuracy (regression runs: |error| < {REGRESSION_TOLERANCE:g})"
    # the label's tolerance is the one the loop counts by: just inside it is correct, just outside is not
    y = torch.zeros(2, 1)
    out = torch.tensor([[REGRESSION_TOLERANCE * 0.99], [REGRESSION_TOLERANCE * 1.01]])
    assert float(loss_and_accuracy(out, y, "regression")[1]) == 0.5


def test_a_clipping_key_says_that_0_is_off():
    """A sweep of train.grad_clip=0,1 coloured its lines by 0 and 1 with nothing saying 0 is no clipping."""
    configs = [config(d, **{"train.grad_clip": c}) for d in (5, 10) for c in (0.0, 1.0)]
    _, metrics, _ = fabricate([c | {"run": run_id(c, ("model.depth", "train.grad_clip"))} for c in configs])
    fig = figures.curves(metrics, color="train.grad_clip")
    named = [ax.get_ylabel() for ax in fig.axes if ax.get_gid() == "colorbar"] + legend_texts(fig)
    assert any("gradient-norm clip (0 = off) [train.grad_clip]" in t for t in named), named


def test_runs_to_pick_from_are_listed_in_the_order_of_their_values():
    """heatmap without --run lists the runs to choose from: depth 5 before depth 10, as ls lists them (by
    name, 10 came first)."""
    from gradflow.plots.series import pick_run

    df = pd.DataFrame({"run": ["model.depth=10,seed=0", "model.depth=5,seed=0", "model.depth=20,seed=0"]})
    with pytest.raises(GradflowError, match=r"one of: model.depth=5,seed=0, model.depth=10,seed=0, "
                                            r"model.depth=20,seed=0$"):
        pick_run(df, None, "heatmap")


# --- ratio ---------------------------------------------------------------------------------------
def test_ratio_against_depth(sweep):
    _, _, runs = sweep
    fig = figures.ratio(runs, "init")
    ax = fig.axes[0]
    lines = series_lines(ax)
    assert len(lines) == 2  # tanh, relu; depths on x, seeds aggregated
    assert ax.get_yscale() == "log" and "model.depth" in ax.get_xlabel()
    # the ratio = 1 reference: a faint band, in no line style a series takes (a dotted one read as it)
    from gradflow.plots.style import LINE_STYLES

    (ref,) = [ln for ln in ax.get_lines() if ln.get_gid() == "reference"]
    assert ref.get_linewidth() > 3 * max(ln.get_linewidth() for ln in lines) and ref.get_alpha() < 0.5
    assert all(ln.get_linestyle() != ":" or ln.get_gid() != "reference" for ln in ax.get_lines())
    assert ":" in LINE_STYLES  # (a series may be dotted: the reference is told apart by width and shade)
    # geometric profiles: ratio = r**depth, independent of the seed
    tanh = next(ln for ln in lines if np.allclose(ln.get_ydata(), [0.8 ** d for d in (5, 10, 20)]))
    assert list(tanh.get_xdata()) == [5, 10, 20]
    assert {"tanh", "relu"} <= set(legend_texts(fig))
    with pytest.raises(GradflowError, match="model.depth"):
        figures.ratio(runs[runs["model.depth"] == 5])
    fig = figures.ratio(runs, "final")  # the diverged run's ratio is NaN there: marked, not dropped
    assert lines_with(fig, "nonfinite")


def test_the_ratio_at_the_end_is_a_diverged_runs_last_before_it_and_no_point_where_it_is_0_over_0():
    """At the last step, the ratio figure took each run's last probed step: a diverged run's is the step its
    values went NaN/inf, so it was drawn as diverged with no value where `ls` gives its ratio end (the last
    step before), and a run that finished with every gradient exactly 0 (0 / 0) was marked "NaN/inf or
    diverged" too, where `ls` shows `-`."""
    from gradflow import store
    from gradflow.plots.series import first_last

    configs = [config(d, "tanh", 1) for d in (5, 10, 20)] + [config(d, "relu", 1) for d in (5, 10, 20)]
    bad, dead = run_id(configs[4]), run_id(configs[5])  # relu at depth 10 diverged, relu at 20 all zero
    layers, _, _ = fabricate(configs, diverged=(bad,))
    layers[store.DIVERGED_AT] = np.where(layers["run"] == bad, 30, np.nan)
    layers.loc[(layers["run"] == dead) & (layers["quantity"] == "grad_norm"), "value"] = 0.0
    end = first_last(layers, "grad_norm", "final").set_index("run")["value"]
    before = layers[(layers["run"] == bad) & (layers["step"] < 30)]["step"].max()
    assert before < 30 and end[bad] == pytest.approx(RATE["relu"] ** 10)  # (as at every step before it)
    assert np.isnan(end[dead])
    fig = figures.ratio(layers, "final")
    (ax,) = fig.axes[:1]
    drawn = fig.data["lines"]
    relu = drawn[drawn["line"].astype(str).str.contains("relu")]
    assert sorted(relu["x"]) == [5, 10]  # the 0 / 0 run is no point; the diverged one is, at its value
    assert relu.set_index("x")["y"][10] == pytest.approx(RATE["relu"] ** 10)
    (cross,) = [c for c in ax.collections if c.get_gid() == "diverged after"]
    assert cross.get_offsets().tolist() == [[10.0, pytest.approx(RATE["relu"] ** 10)]]
    assert not lines_with(fig, "nonfinite")
    assert "1 run not drawn: no ratio (0 / 0" in " ".join(fig._suptitle.get_text().split())
    assert "diverged: its last probed step before it" in " ".join(" ".join(legend_texts(fig)).split())
    # a run that failed before its first step has no ratio either: no 0 / 0 of a finished run, it is counted
    # (and marked) as failed, as before
    _, _, runs = fabricate(configs)
    runs.loc[runs.run == dead, ["status", "grad_ratio.init"]] = ["failed", math.nan]
    fig = figures.ratio(runs, "init")
    assert "0 / 0" not in fig._suptitle.get_text() and lines_with(fig, "nonfinite")
    for status in ("interrupted", "running"):  # (0 / 0 all the same: no point, counted)
        runs.loc[runs.run == dead, "status"] = status
        fig = figures.ratio(runs, "init")
        assert "1 run not drawn: no ratio (0 / 0" in " ".join(fig._suptitle.get_text().split()), status
        assert not lines_with(fig, "nonfinite"), status


def test_ratio_theory_follows_chi1():
    theory = pytest.importorskip("gradflow.theory")
    over = {"init.name": "meanfield", "init.sw2": 1.0, "init.sb2": 0.05}
    chi1 = theory.predict(config(**over)).chi1
    _, _, runs = fabricate([config(d, "tanh", s, **over) for d in (5, 10, 20) for s in (1, 2)])
    fig = figures.ratio(runs, "init")
    (line,) = lines_with(fig, "theory")
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    np.testing.assert_allclose(np.diff(np.log(y)) / np.diff(x), math.log(chi1) / 2)  # ratio = chi1^(depth/2)
    assert x[0] == 5 and y[0] == pytest.approx(0.8 ** 5)  # anchored at the shallowest measured point
    # without a bias the forward length decays (q* = 0): the weight gradient need not follow chi1
    _, _, runs = fabricate([config(d, "tanh", 1, **(over | {"init.sw2": 0.5, "init.sb2": 0.0})) for d in (5, 10, 20)])
    assert not lines_with(figures.ratio(runs, "init"), "theory")


# --- grid ----------------------------------------------------------------------------------------
SW2 = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
GRID_DEPTHS = (5, 10, 20, 40)


@pytest.fixture(scope="module")
def grid_runs():
    """A tanh mean-field sweep over sw2 x depth, 2 seeds; accuracy falls off away from sw2 = 1.75."""
    rows = []
    for sw2 in SW2:
        for depth in GRID_DEPTHS:
            for seed in (1, 2):
                cfg = config(depth, "tanh", seed, **{"init.name": "meanfield", "init.sw2": sw2, "init.sb2": 0.05})
                acc = 0.1 + 0.8 * math.exp(-depth / (60 * math.exp(-2 * (sw2 - 1.75) ** 2))) + 0.01 * seed
                diverged = sw2 == 3.0 and depth == 40 and seed == 2
                rows.append({"run": run_id(cfg, ("init.sw2", "model.depth", "seed")), "source": "grid",
                             "status": "diverged" if diverged else "ok",
                             "final.test_acc": math.nan if diverged else acc,
                             "grad_ratio.init": (sw2 / 1.75) ** depth} | cfg)
    return pd.DataFrame(rows)


def test_grid_cell_labels_tell_values_near_each_other_apart():
    # χ₁ measured at 0.996, 1.015 and 1.002 around the edge of chaos all read "1" at 2 significant digits
    values = {20: (0.996, 1.016, 1.002), 40: (0.5, 0.6, 0.7)}
    rows = [{"run": f"r{depth}-{sw2}", "status": "ok", "model.activation": "tanh", "init.sw2": sw2,
             "model.depth": depth, "chi1_measured": v}
            for depth, vs in values.items() for sw2, v in zip((1.7, 1.76, 1.8), vs)]
    fig = figures.grid(pd.DataFrame(rows), "init.sw2", "model.depth", "chi1_measured")
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "cell"]
    assert sorted(labels) == ["0.5", "0.6", "0.7", "0.996", "1", "1.02"], labels


def test_grid_cells_are_seed_means(grid_runs):
    fig = figures.grid(grid_runs, "init.sw2", "model.depth", "final.test_acc")
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if c.get_gid() == "grid"]
    z = mesh.get_array()
    assert z.shape == (len(GRID_DEPTHS), len(SW2))
    expected = grid_runs.groupby(["model.depth", "init.sw2"])["final.test_acc"].mean().unstack()
    np.testing.assert_allclose(z, expected.to_numpy())  # NaN seeds are left out of the mean
    assert "init.sw2" in ax.get_xlabel() and "model.depth" in ax.get_ylabel()
    assert ax.get_yscale() == "log"  # depths 5, 10, 20, 40 are geometric
    assert len([t for t in ax.texts if t.get_gid() == "cell"]) == z.size
    assert len([p for p in ax.patches if p.get_gid() == "diverged"]) == 1
    assert "test accuracy" in fig.get_suptitle() and "tanh" in fig.get_suptitle()
    (cbar,) = colorbar_axes(fig)
    assert "accuracy" in cbar.get_ylabel() and "mean over seeds" in cbar.get_ylabel()
    # one seed per cell: the colorbar says no mean (beside the title's "1 seed per cell")
    one = figures.grid(grid_runs[grid_runs["seed"] == grid_runs["seed"].min()], "init.sw2", "model.depth",
                       "final.test_acc")
    (cbar,) = colorbar_axes(one)
    assert "accuracy" in cbar.get_ylabel() and "mean" not in cbar.get_ylabel()


def test_a_grid_cell_whose_runs_all_diverged_says_so(grid_runs):
    """Every seed of a cell diverged: its label read "n/a", which the legend defined as "no value (not
    measured)"; it reads "diverged", and the legend has no n/a where no cell is unmeasured."""
    both = grid_runs.copy()
    dead = (both["init.sw2"] == 3.0) & (both["model.depth"] == 40)
    both.loc[dead, "status"], both.loc[dead, "final.test_acc"] = "diverged", np.nan
    fig = figures.grid(both, "init.sw2", "model.depth", "final.test_acc")
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "cell"]
    assert labels.count("diverged") == 1 and "n/a" not in labels, labels
    assert not any(t.startswith("n/a") for t in legend_texts(fig)), legend_texts(fig)


def test_grid_with_one_finite_cell_centres_its_colour_range_on_it(grid_runs):
    """Every other cell diverged: the range was (v, v + 1e-12), the cell drawn in the bottom colour over an
    offset label (1e-12+1.35e-1) on the colorbar."""
    one = grid_runs.assign(**{"final.test_acc": np.where(
        (grid_runs["init.sw2"] == 1.5) & (grid_runs["model.depth"] == 10), 0.13, np.nan)})
    fig = figures.grid(one, "init.sw2", "model.depth", "final.test_acc")
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() == "grid"]
    assert mesh.norm.vmin == pytest.approx(0.065) and mesh.norm.vmax == pytest.approx(0.195)
    (cbar,) = colorbar_axes(fig)
    fig.canvas.draw()
    assert cbar.yaxis.get_offset_text().get_text() == ""


def test_grid_log_ratio_is_centred_and_extra_keys_are_refused(grid_runs, sweep):
    fig = figures.grid(grid_runs, "init.sw2", "model.depth", "grad_ratio.init")
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() == "grid"]
    np.testing.assert_allclose(mesh.get_array()[0, 0], 5 * math.log10(0.5 / 1.75))
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    _, _, runs = sweep
    with pytest.raises(GradflowError, match=r"model.activation also varies \(model.activation: relu, tanh\); facet by "
                                            r"it \(--facet model.activation; in Python facet='model.activation'\) or keep one value "
                                            r"\(--where model.activation=relu; in Python"):
        figures.grid(runs.assign(**{"optim.lr": runs.seed * 0.1}), "optim.lr", "model.depth")
    fig = figures.grid(runs, "model.activation", "model.depth")  # categories are fine as an axis
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["relu", "tanh"]


def test_a_key_tied_to_a_grid_axis_is_that_axis(tmp_path):
    """A user's own key that changes with the depth, value for value (a Recorder's model.blocks = depth / 2),
    over depth x lr: the standard set plans the grid of depth by lr, and the grid drew it, not an error that
    blocks also varies (which took `gradflow plot` and the report page down)."""
    runs = fabricate([config(d, "tanh", 1, **{"model.blocks": d // 2, "optim.lr": lr})
                      for d in (4, 8) for lr in (0.001, 0.01)])
    fig = figures.grid(runs[2], "model.depth", "optim.lr")
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() == "grid"]
    assert mesh.get_array().shape == (2, 2)
    written = [p.name for p in figures.standard_set(*runs, tmp_path / "tied")]
    assert "grid-final.test_acc-model.depth-optim.lr.png" in written, written
    with pytest.raises(GradflowError, match=r"model.blocks also varies"):  # a key of its own still needs a facet
        figures.grid(runs[2].assign(**{"model.blocks": [1, 1, 2, 1]}), "model.depth", "optim.lr")


def test_grid_theory_curve_is_six_xi_c():
    theory = pytest.importorskip("gradflow.theory")
    rows = [{"run": f"r{i}", "source": "g", "status": "ok", "final.test_acc": 0.5} |
            config(d, "tanh", 1, **{"init.name": "meanfield", "init.sw2": s, "init.sb2": 0.05})
            for i, (s, d) in enumerate((s, d) for s in SW2 for d in GRID_DEPTHS)]
    fig = figures.grid(pd.DataFrame(rows), "init.sw2", "model.depth", theory="6xi_c")
    (curve,) = lines_with(fig, "theory")
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    for i in (0, 60, 200):
        expected = theory.point("tanh", float(x[i]), 0.05).six_xi_c
        assert y[i] == pytest.approx(expected if np.isfinite(expected) else 1e12)
    assert not any("off the plot" in t for t in legend_texts(fig))
    # the cell labels sit above the curve, each with a halo of its cell's colour, so a label the curve
    # crosses stays legible
    cells = [t for t in fig.axes[0].texts if t.get_gid() == "cell"]
    assert cells and all(t.get_zorder() > curve.get_zorder() and t.get_path_effects() for t in cells)
    # and an opaque box of its halo's colour (its cell's) behind it, which the line does not show through between
    # the glyphs ("-0.21" read "-0!21")
    for t in cells:
        box, (halo,) = t.get_bbox_patch(), t.get_path_effects()
        assert box is not None and box.get_edgecolor()[3] == 0 and box.get_facecolor()[3] == 1
        assert tuple(box.get_facecolor()[:3]) == pytest.approx(halo._gc["foreground"][:3])
    # sw2 1.5-2.5 around the edge of chaos, depths 5 and 10: 6 xi_c >= 70 everywhere, no curve in sight, and
    # the legend says why
    near = [r for r in rows if r["init.sw2"] in (1.5, 2.0, 2.5) and r["model.depth"] in (5, 10)]
    texts = legend_texts(figures.grid(pd.DataFrame(near), "init.sw2", "model.depth", theory="6xi_c"))
    assert any("(off the plot: above the depths shown)" in t for t in texts), texts
    fig = figures.grid(pd.DataFrame(rows), "init.sw2", "model.depth", theory="chi1=1")
    (vline,) = lines_with(fig, "theory")
    crit = vline.get_xdata()[0]
    assert theory.point("tanh", crit, 0.05).chi1 == pytest.approx(1.0, abs=1e-2)


def test_grid_of_uneven_values_has_one_even_cell_each_and_refuses_a_one_value_axis():
    # sw2 dense near the edge of chaos (1, 1.5, 1.76, 2, 4): cells sized by their neighbours were slivers
    # whose labels ran together, and sw2 = 4's spanned 3-5; one depth drew one row and an unreadable curve
    theory = pytest.importorskip("gradflow.theory")
    sw2s, depths = (1.0, 1.5, 1.76, 2.0, 4.0), (3, 6, 30)
    rows = [{"run": f"r{i}", "source": "g", "status": "ok", "final.train_acc": 0.5} |
            config(d, "tanh", 1, **{"init.name": "meanfield", "init.sw2": s, "init.sb2": 0.05})
            for i, (s, d) in enumerate((s, d) for s in sw2s for d in depths)]
    fig = figures.grid(pd.DataFrame(rows), "init.sw2", "model.depth", "final.train_acc", theory="6xi_c")
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if c.get_gid() == "grid"]
    corners = mesh.get_coordinates()  # (rows + 1, columns + 1, 2)
    np.testing.assert_allclose(corners[0, :, 0], np.arange(len(sw2s) + 1) - 0.5)  # one even cell per sw2
    np.testing.assert_allclose(corners[:, 0, 1], np.arange(len(depths) + 1) - 0.5)  # and per depth (3, 6, 30)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "1.5", "1.76", "2", "4"]
    np.testing.assert_allclose(ax.get_xticks(), range(len(sw2s)))
    # the curve passes each sw2's cell at its own 6 xi_c, placed between the depths' rows as between values
    (curve,) = lines_with(fig, "theory")
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    d = theory.point("tanh", 1.0, 0.05).six_xi_c
    row = np.interp(d, depths, range(len(depths)))  # (at sw2 = 1, between 6 and 30)
    assert 1 < row < 2 and np.interp(0, x, y) == pytest.approx(row, abs=0.03)
    # it leaves the top (6 xi_c > 30 around the edge of chaos): the legend says for which sw2
    (text,) = [t for t in legend_texts(fig) if "6" in t]
    assert "above the depths shown for" in text and "1.76" not in text.split("for")[1].split("-")[0], text
    # said within the values swept: depths to 12 and sw2 1, 1.76, 4, whose axis runs on to its cells' edges
    # (0.9 and 6), where the curve is above the depths too: "for σ_w² 0.9-6" named values never swept
    low = pd.DataFrame([r | {"model.depth": {30: 12}.get(r["model.depth"], r["model.depth"])} for r in rows
                        if r["init.sw2"] in (1.0, 1.76, 4.0)])
    (said,) = [t for t in legend_texts(figures.grid(low, "init.sw2", "model.depth", "final.train_acc",
                                                     theory="6xi_c")) if "6" in t]
    assert said.endswith(r"(above the depths shown for $\sigma_w^2$ 1-4)"), said
    one = pd.DataFrame([r for r in rows if r["model.depth"] == 6])
    with pytest.raises(GradflowError, match=r"--y model.depth has one value here \(6\): a grid needs two or more "
                                            r"on each axis.*keys with several values: init.sw2"):
        figures.grid(one, "init.sw2", "model.depth", "final.train_acc", theory="6xi_c")


# --- every kind survives the diverged run and saves in every format ------------------------------
@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_every_kind_saves(sweep, grid_runs, tmp_path, fmt):
    layers, metrics, runs = sweep
    made = {
        "profile": figures.profile(layers, step="last"),
        "heatmap": figures.heatmap(layers, run=DIVERGED),
        "curves": figures.curves(metrics),
        "ratio": figures.ratio(runs, "final"),
        "grid": figures.grid(grid_runs, "init.sw2", "model.depth"),
    }
    for kind, fig in made.items():
        path = save(fig, tmp_path / kind, fmt)
        magic = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[fmt]
        assert path == tmp_path / f"{kind}.{fmt}" and path.read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{k}.{fmt}" for k in made)  # no temp files
    with pytest.raises(GradflowError, match="png, pdf, svg"):
        save(made["profile"], tmp_path / "x", "jpg")


def test_standard_set_writes_the_expected_files(sweep, single, grid_runs, tmp_path):
    written = figures.standard_set(*single, tmp_path / "one")
    assert [p.name for p in written] == [
        "profile-grad_norm-step0.png", "profile-grad_norm-last.png", "profile-signal_norm-step0.png",
        "profile-signal_norm-last.png", "heatmap-grad_norm.png", "curves.png"]
    layers, metrics, runs = sweep
    written = figures.standard_set(layers[layers.quantity == "grad_norm"], metrics, runs, tmp_path / "sweep", fmt="svg")
    assert [p.name for p in written] == [  # no heatmap for a sweep, no grid: only one numeric key swept
        "profile-grad_norm-step0.svg", "profile-grad_norm-last.svg", "curves.svg", "ratio-init.svg"]
    written = figures.standard_set(layers, metrics, runs, tmp_path / "both")
    assert [p.name for p in written if p.name.startswith("ratio")] == ["ratio-init.png", "ratio-signal_norm-init.png"]
    written = figures.standard_set(None, None, grid_runs, tmp_path / "grid")
    assert [p.name for p in written] == ["ratio-init.png", "grid-final.test_acc-init.sw2-model.depth.png"]
    # no run trained (train.steps=0): its metrics are step 0 alone, a dot per run, and no curves are drawn
    at_init = metrics[metrics["step"] == 0]
    written = figures.standard_set(layers[layers["step"] == 0], at_init, runs, tmp_path / "init")
    assert "curves.png" not in [p.name for p in written] and "profile-grad_norm-step0.png" in [p.name for p in written]
    # ... nor, for one run probed at step 0 alone, a heatmap over time: one column under a step axis of -0.4..0.4
    one_layers, one_metrics = single[0], single[1]
    written = figures.standard_set(one_layers[one_layers["step"] == 0], one_metrics[one_metrics["step"] == 0],
                                   *single[2:], tmp_path / "one-init")
    assert [p.name for p in written] == ["profile-grad_norm-step0.png", "profile-signal_norm-step0.png"]


def test_keys_that_change_together_are_one_axis_of_a_grid(tmp_path):
    # each activation with its own init, over depths (a depth study as it is usually set up): the standard
    # set drew no depth-ratio figure, taking the runs for unrelated ones (6 of 12 combinations)
    from gradflow.keys import is_grid

    paired = [config(d, a, 1, **{"init.name": "xavier_normal" if a == "tanh" else "kaiming_normal"})
              for d in (5, 10, 20) for a in ("tanh", "relu")]
    layers, metrics, runs = fabricate(paired)
    assert is_grid(runs, ["model.depth", "model.activation", "init.name"])
    written = [p.name for p in figures.standard_set(layers, metrics, runs, tmp_path / "paired")]
    assert "ratio-init.png" in written and "ratio-signal_norm-init.png" in written, written
    # runs whose keys do not change together are still no grid: no figure over their keys
    odd = [config(5, "tanh", 1), config(10, "relu", 1, **{"init.name": "xavier_normal"}),
           config(20, "relu", 1), config(10, "tanh", 1, **{"init.name": "xavier_normal"})]
    assert not is_grid(fabricate(odd)[2], ["model.depth", "model.activation", "init.name"])
    # two configurations differ in two keys, each with two seeds: the keys are not one axis (each value is one
    # configuration's), so the runs are no grid, as before
    two = [config(d, "tanh", s, **{"optim.lr": lr}) for d, lr in ((5, 0.1), (10, 0.01)) for s in (1, 2)]
    assert not is_grid(fabricate(two)[2], ["model.depth", "optim.lr"])
    # a learning rate tied to the depth (optim.lr=${gf.div:0.5,model.depth}) over two activations: a line per
    # activation along depth, not a dot per learning rate, and no grid of depth by lr (its diagonal)
    # (these two sets are planned, not drawn: the paired set above is drawn whole, and the ratio figure each
    # plans is drawn below and its lines counted)
    from gradflow.plots.standard import plan

    tied = [config(d, a, 1, **{"optim.lr": 0.5 / d}) for d in (5, 10, 20) for a in ("tanh", "relu")]
    layers, metrics, runs = fabricate(tied)
    planned = [f.name for f in plan(layers, metrics, runs)]
    assert "ratio-init" in planned and not [n for n in planned if n.startswith("grid")], planned
    lines = series_lines(figures.ratio(layers, "init").axes[0])
    assert len(lines) == 2 and all(len(ln.get_xdata()) == 3 for ln in lines)
    # ... and with the depth alone swept (the README's lr-by-depth sweep): three configurations, each value of
    # the two keys one configuration's, a depth study all the same: it got no ratio figure
    alone = fabricate([config(d, "tanh", 1, **{"optim.lr": 0.5 / d}) for d in (5, 10, 20)])
    planned = [f.name for f in plan(*alone)]
    assert "ratio-init" in planned and not [n for n in planned if n.startswith("grid")], planned
    assert [len(ln.get_xdata()) for ln in series_lines(figures.ratio(alone[0], "init").axes[0])] == [3]


# --- labels --------------------------------------------------------------------------------------
def test_every_stored_quantity_has_a_label_and_recurrent_nets_say_time_step(single):
    from gradflow.probes import HIST_TENSORS, QUANTITIES as STORED

    assert set(STORED) <= set(QUANTITIES)
    from gradflow.plots.labels import TENSORS

    assert set(HIST_TENSORS) <= set(TENSORS)
    layers = single[0]
    rnn = layers.assign(**{"model.name": "lstm", "model.recurrent_init": "orthogonal"})  # (every gradflow rnn's)
    fig = figures.profile(rnn, "grad_norm", step=0)
    assert fig.axes[0].get_xlabel().startswith("time step t (0 = first")
    assert "per time step" in fig.get_suptitle()
    fig = figures.heatmap(rnn)
    assert fig.axes[0].get_ylabel().startswith("time step t (0 = first, 10 = output head")
    # a Recorder's run whose config names the user's own model "gru" (an nn.GRU classifier: its points are its
    # layers) has no time steps: its axis read "time step t" and the ratio figure asked for data.T
    own = layers.assign(**{"model.name": "gru"})
    fig = figures.profile(own, "grad_norm", step=0)
    assert fig.axes[0].get_xlabel().startswith("layer index (0 = input"), fig.axes[0].get_xlabel()
    assert "per layer" in fig.get_suptitle()


# --- hist ----------------------------------------------------------------------------------------
def hist_rows(samples, step=0, run="r", cfg=None):
    """The hist table of one run, recomputed with numpy from raw samples {(tensor, layer): values}."""
    from gradflow.probes import HIST_EDGES

    cfg = cfg or config(3, "relu", 1)
    lo, hi = HIST_EDGES[:-1], HIST_EDGES[1:]
    rows = []
    meta = {"run": run, "source": "sweep", "status": "ok", "step": step} | cfg
    for (tensor, layer), x in samples.items():
        a = np.abs(x[np.isfinite(x)])
        inside = (a >= HIST_EDGES[0]) & (a < HIST_EDGES[-1])
        for kind, sel in (("pos", x[np.isfinite(x)] > 0), ("neg", x[np.isfinite(x)] < 0)):
            counts = np.histogram(a[sel & inside], HIST_EDGES)[0]
            rows += [meta | {"layer": layer, "name": f"l{layer}", "tensor": tensor, "kind": kind, "lo": l, "hi": h,
                             "count": int(c)} for l, h, c in zip(lo, hi, counts)]
        special = {"zero": ((a == 0).sum(), 0.0, 0.0), "underflow": (((a > 0) & (a < HIST_EDGES[0])).sum(), 0.0, 1e-12),
                   "overflow": ((a >= HIST_EDGES[-1]).sum(), 1e4, math.inf),
                   "nonfinite": ((~np.isfinite(x)).sum(), math.nan, math.nan)}
        rows += [meta | {"layer": layer, "name": f"l{layer}", "tensor": tensor, "kind": k, "lo": l, "hi": h,
                         "count": int(n)} for k, (n, l, h) in special.items()]
    return pd.DataFrame(rows)


def test_hist_lines_are_the_normalized_magnitude_histograms_per_layer():
    from gradflow.probes import HIST_EDGES

    rng = np.random.default_rng(0)
    depth = 3
    samples = {}
    for layer in range(depth):
        act = np.maximum(rng.normal(0, 0.5 ** layer, 4000), 0.0)  # relu: about half exactly zero
        samples[("activation", layer)] = act
        samples[("gradient", layer)] = rng.normal(0, 1e-3 * 2.0 ** layer, 4000)  # vanishing towards the input
    samples[("gradient", depth)] = np.r_[rng.normal(0, 0.1, 3990), [np.nan] * 10]  # the head, with NaNs
    table = pd.concat([hist_rows(samples), hist_rows(samples, step=5)], ignore_index=True)
    fig = figures.hist(table, step=0)
    act_ax, grad_ax = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert act_ax.get_title() == "Activation values" and grad_ax.get_title() == "Back-propagated gradients"
    assert act_ax.get_xscale() == "log"
    assert len(series_lines(act_ax)) == depth and len(series_lines(grad_ax)) == depth  # the head is left out
    assert "output head (3) left out" in fig.get_suptitle()
    for layer in range(depth):
        x = samples[("gradient", layer)]
        expected = np.histogram(np.abs(x), HIST_EDGES)[0] / len(x)
        (line,) = [ln for ln in series_lines(grad_ax) if ln.get_gid() == f"series:layer {layer}"]
        np.testing.assert_allclose(line.get_xdata(), np.sqrt(HIST_EDGES[:-1] * HIST_EDGES[1:]))
        np.testing.assert_allclose(line.get_ydata(), expected)
    # exact zeros: stated with their count and marked per layer
    zeros = int(sum((samples[("activation", l)] == 0).sum() for l in range(depth)))
    (note,) = [t for t in act_ax.texts if t.get_gid() == "special"]
    assert f"exactly 0: {zeros:,} units" in note.get_text() and "layers 0-2" in note.get_text()
    assert len([ln for ln in act_ax.get_lines() if ln.get_gid() in ("zeros", "zeros above")]) == depth
    (cbar,) = colorbar_axes(fig)
    assert "layer index (0 = input" in cbar.get_ylabel()
    # the head's NaNs are counted even though its line is left out of the panel
    fig = figures.hist(table[table.layer < depth].pipe(lambda t: pd.concat(
        [t, hist_rows({("gradient", 0): np.r_[np.ones(5), [np.inf] * 3]}, step=5)])), step=5)
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "NaN/inf: 3 units" in texts


def test_hist_thins_many_layers_and_needs_one_run():
    rng = np.random.default_rng(1)
    samples = {(t, l): rng.normal(0, 1, 200) for t in ("activation", "gradient") for l in range(30)}
    table = hist_rows(samples)
    fig = figures.hist(table)
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    drawn = {ln.get_gid() for ln in series_lines(panels[0])}
    assert len(drawn) == 9 and {"series:layer 0", "series:layer 29"} <= drawn
    assert "9 of 30 layers shown" in fig.get_suptitle()
    two = pd.concat([table, table.assign(run="other")], ignore_index=True)
    with pytest.raises(GradflowError, match="pass run=one of"):
        figures.hist(two)
    assert figures.hist(two, run="other")
    with pytest.raises(GradflowError, match="probed steps: 0"):
        figures.hist(table, step=3)


# --- spectrum ------------------------------------------------------------------------------------
def jacobian_rows(values, cfg, run, step=0, scope="input_output"):
    return pd.DataFrame([{"run": run, "source": "sweep", "status": "ok", "step": step, "sample": i // 8,
                          "scope": scope, "layer": cfg["model.depth"] - 1, "index": i % 8, "value": v} | cfg
                         for i, v in enumerate(values)])


def test_spectrum_density_and_legend_statistics():
    rng = np.random.default_rng(2)
    iso = np.ones(32)  # dynamical isometry: every singular value is 1
    spread = np.exp(rng.normal(-3, 2, 32))
    broken = np.r_[spread[:29], [np.inf, np.nan, 0.0]]
    table = pd.concat([jacobian_rows(iso, config(5, "tanh", 1), "a"), jacobian_rows(spread, config(20, "tanh", 1), "b"),
                       jacobian_rows(broken, config(40, "tanh", 1), "c"),
                       jacobian_rows(spread * 2, config(5, "tanh", 1), "a", step=10)], ignore_index=True)
    fig = figures.spectrum(table)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = series_lines(ax)
    assert len(lines) == 3
    assert any(ln.get_gid() == "reference" for ln in ax.get_lines())
    title = fig.get_suptitle()
    assert "input-output Jacobian" in title and "Pennington" in title and "step 0" in title
    texts = legend_texts(fig)
    finite = broken[np.isfinite(broken)]
    for v in (spread, finite):
        assert any(f"mean s = {v.mean():.3g}, var s² = {(v ** 2).var():.3g}" in t for t in texts)
    assert any("mean s = 1, var s² = 0" in t for t in texts)
    assert any("2 NaN/inf" in t and "1 zero" in t for t in texts)
    # the drawn density integrates to the fraction of positive finite values (per decade of s)
    (b,) = [ln for ln in lines if "depth=20" in ln.get_gid()]
    x, y = np.asarray(b.get_xdata()), np.asarray(b.get_ydata())
    width = np.log10(x[1] / x[0])
    assert (y * width).sum() == pytest.approx(1.0)
    fig = figures.spectrum(table, step="last")
    assert "each run's last probed step" in fig.get_suptitle()
    with pytest.raises(GradflowError, match="choices: input_output"):
        figures.spectrum(table, scope="layer")
    with pytest.raises(GradflowError, match="choices: model.depth"):
        figures.spectrum(table, color="optim.lr")


def test_a_spectrum_colours_by_the_key_the_studys_other_figures_colour_by():
    # a depth x activation sweep: its spectrum took depth, the first swept key, for the colour, where every
    # other figure of the study colours by activation (and depth takes the markers or line styles)
    from gradflow.plots.style import colour_key

    rng = np.random.default_rng(0)
    table = pd.concat([jacobian_rows(np.exp(rng.normal(0, 1, 16)), config(d, a, 1), f"{a}{d}")
                       for d in (5, 20) for a in ("tanh", "relu")], ignore_index=True)
    swept = ["model.depth", "model.activation"]
    assert colour_key(table.drop_duplicates("run"), swept, None) == "model.activation"
    colours = {ln.get_gid(): ln.get_color() for ln in series_lines(figures.spectrum(table).axes[0])}
    by_activation = {a: {c for gid, c in colours.items() if f"activation={a}" in gid} for a in ("tanh", "relu")}
    assert all(len(c) == 1 for c in by_activation.values()) and by_activation["tanh"] != by_activation["relu"], \
        colours


def test_a_spectrum_of_more_keys_than_colour_and_line_style_names_the_rest_in_each_line():
    # compare of two depth x activation folders: the source took the line style, the depth the colour, and
    # relu and tanh were drawn alike, their legend entries alike ("depth=4, source=full" twice)
    rng = np.random.default_rng(4)
    table = pd.concat([jacobian_rows(np.exp(rng.normal(0, 1, 16)), config(d, a, 1), f"{a}{d}").assign(source=src)
                       for d in (5, 20) for a in ("tanh", "relu") for src in ("full", "fullo")], ignore_index=True)
    fig = figures.spectrum(table, color="model.depth")
    labels = [t.split("\n")[0] for t in legend_texts(fig) if "mean s" in t]
    assert len(labels) == 8 == len(set(labels)) and all("activation=" in t for t in labels), labels
    assert "lines also differ in model.activation" in " ".join(fig.get_suptitle().split())


def test_a_compared_sources_spectrum_legend_names_what_sets_each_source_apart():
    # compare of a tanh folder and a relu one: compare's table leaves the activation to the sources (the attrs'
    # source_keys); the legend read "source=j1", "source=j2", where every other figure reads "j1 (... tanh)"
    rng = np.random.default_rng(5)
    table = pd.concat([jacobian_rows(np.exp(rng.normal(0, 1, 16)), config(5, a, 1), f"{src}/r").assign(source=src)
                       .drop(columns="model.activation") for src, a in (("j1", "tanh"), ("j2", "relu"))],
                      ignore_index=True)
    table.attrs["source_keys"] = {"j1": {"model.activation": "tanh"}, "j2": {"model.activation": "relu"}}
    labels = [t.split("\n")[0] for t in legend_texts(figures.spectrum(table)) if "mean s" in t]
    assert sorted(labels) == ["j1 (model.activation=tanh)", "j2 (model.activation=relu)"], labels


def test_a_spectrum_line_of_several_seeds_says_they_are_pooled():
    # one configuration, two seeds: one line, whose legend read "this run (2 runs)"
    rng = np.random.default_rng(3)
    table = pd.concat([jacobian_rows(np.exp(rng.normal(0, 1, 16)), config(5, "tanh", seed), f"s{seed}")
                       for seed in (1, 2)], ignore_index=True)
    (text,) = [t for t in legend_texts(figures.spectrum(table)) if "mean s" in t]
    assert text.startswith("2 runs, pooled\n") and "this run" not in text, text
    (text,) = [t for t in legend_texts(figures.spectrum(table[table["run"] == "s1"])) if "mean s" in t]
    assert text.startswith("this run\n"), text


def test_spectrum_counts_numerical_zeros_rather_than_stretch_the_axis():
    """A dead ReLU unit's singular value comes out of the float64 Gram as 1e-56 or so: it is zero to the
    Gram's accuracy (below 1e-6 x the run's largest), counted as such, and the axis keeps to the rest. The Gram's
    floor spreads zeros over 1e-9 to 3e-8 of the largest: a cut at 1e-8 drew those above it as a mode 5 decades
    below the rest."""
    values = np.r_[np.geomspace(1e-3, 2.0, 30), [1e-56, 3e-9, 2e-8 * 2.0, 3e-8 * 2.0]]
    fig = figures.spectrum(jacobian_rows(values, config(8, "relu", 1), "a"))
    assert fig.axes[0].get_xlim()[0] > 1e-5
    assert any("4 zero (s < 1e-6 max)" in t for t in legend_texts(fig)), legend_texts(fig)


def test_a_short_log_axis_is_labelled_at_round_values_over_its_whole_range():
    """0.064 to 0.6 beside a reference line at 1: the default log ticks labelled 0.1 and 1 only, and round
    linear ticks (0.2 ... 1) left the lowest point under the bare bottom 40% of the axis; 1-2-5 ticks alone (0.1,
    0.2, 0.5, 1) left it under the bare bottom 20%: finer ones fill it."""
    from matplotlib.figure import Figure

    from gradflow.plots.style import label_short_log_axis

    for values, labels in (([0.064, 0.6], ["0.06", "0.08", "0.1", "0.2", "0.5", "1"]), ([8.5e-6, 1.8e-5], None)):
        ax = Figure().add_subplot()
        ax.set_yscale("log")
        ax.plot([0, 1], values)
        ax.axhline(1.0 if labels else 1.8e-5)
        label_short_log_axis(ax, values)
        ax.figure.canvas.draw()
        lo, hi = ax.get_ylim()
        shown = [(t.get_position()[1], t.get_text()) for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
        if labels:
            assert [text for _, text in shown] == labels
        else:  # within a decade: linear round steps, each labelled, four or more (and a finer one below them
            # where they leave over 15% of the axis bare: 9e-06 under 1e-05, 1.2e-05, ...)
            assert len(shown) >= 4 and all(text for _, text in shown)
            assert np.allclose(np.diff([y for y, _ in shown[1:]]), shown[2][0] - shown[1][0])
    # within a decade, round linear steps left the lowest quarter of the log axis or more unlabelled (0.055 to
    # 0.25: nothing below 0.1; 0.22 to 1: nothing below 0.4; a ratio axis of 0.73 to 3.1, under 1 a fifth of
    # it: nothing below 1): finer round ticks fill it
    for values, lowest in (([0.055, 0.25], ["0.06", "0.08"]), ([0.22, 0.95], ["0.3"]), ([0.73, 3.1], ["0.8"])):
        ax = Figure().add_subplot()
        ax.set_yscale("log")
        ax.plot([0, 1], values)
        ax.axhline(1.0 if values[1] > 0.5 else values[1])
        label_short_log_axis(ax, values)
        ax.figure.canvas.draw()
        lo, hi = ax.get_ylim()
        shown = [(t.get_position()[1], t.get_text()) for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
        assert [text for _, text in shown][:len(lowest)] == lowest, shown
        assert math.log(shown[0][0] / lo) <= 0.25 * math.log(hi / lo)



@pytest.mark.parametrize("lo, hi", [(1.2506, 2.2087), (0.2523, 0.7255), (2.897e-5, 2.263e-4), (0.45, 4.8),
                                    (0.0477, 0.924), (6.3e-5, 1.22e-3), (170.1, 204.5)])
def test_a_short_log_axis_labels_each_value_once_and_leaves_neither_end_bare(lo, hi):
    """A gradnorm axis from 1.25 to 2.2 read 1.3, 1.35, 1.4, 1.4, 1.6 (the finer ticks' 1.4000000000000001 beside
    the round steps' 1.4), and 1-2-5 ticks left the top 37% of one from 0.45 to 4.8 bare (0.5, 1, 2), the curves
    on it. Drawn, each label is distinct, at most a fifth of the log axis lies past its first or last label, and
    no two labels stand closer than 4% of it (7e-05, 8e-05, 9e-05 ran together)."""
    from matplotlib.figure import Figure

    from gradflow.plots.style import label_short_log_axis

    ax = Figure().add_subplot()
    ax.set_yscale("log")
    ax.plot([0, 1], [lo, hi])
    ax.set_ylim(lo, hi)
    label_short_log_axis(ax, [lo, hi])
    ax.figure.canvas.draw()
    shown = [(t.get_position()[1], t.get_text()) for t in ax.get_yticklabels()
             if lo <= t.get_position()[1] <= hi and t.get_text()]
    texts = [text for _, text in shown]
    assert len(set(texts)) == len(texts), texts
    at = np.log([y for y, _ in shown])
    span = math.log(hi / lo)
    assert at[0] - math.log(lo) <= 0.2 * span and math.log(hi) - at[-1] <= 0.2 * span, texts
    assert np.diff(at).min() >= 0.04 * span, texts

def test_standard_set_adds_hist_and_spectrum(single, tmp_path):
    layers, metrics, runs = single
    run = layers.run.iloc[0]
    rng = np.random.default_rng(3)
    hists = hist_rows({(t, l): rng.normal(0, 1, 100) for t in ("activation", "gradient") for l in range(3)},
                      run=run, cfg=config(10, "tanh", 1))
    jac = jacobian_rows(rng.uniform(0.5, 2, 16), config(10, "tanh", 1), run)
    written = figures.standard_set(layers, metrics, runs, tmp_path, hists=hists, jacobian=jac)
    assert [p.name for p in written][-2:] == ["hist-step0.png", "spectrum-step0.png"]


# --- figures that never mislead -------------------------------------------------------------
def test_no_mean_field_line_for_tanh_without_bias_and_relu_keeps_its_signal_line():
    """Xavier on tanh is sigma_w^2 = 1, sigma_b^2 = 0: q* = 0, which the forward length approaches only as
    ~1/l, each layer's own chi1 below the chi1 = 1 at q*: neither the weight gradient nor the signal gets a
    line (a flat one stood beside a signal that fell 3x over 16 layers). Under Glorot's standard init
    (sw2 = 1/3) the length reaches q* = 0 within a few layers: the signal keeps its line. ReLU's
    chi1 = sw2 / 2 holds at every length: without a bias (q* = 0) its signal keeps its line, its
    weight gradient does not."""
    from gradflow import theory

    layers, _, _ = fabricate([config(10, "tanh", 1, **{"init.name": "xavier_normal"})])
    for quantity in ("grad_norm", "signal_norm"):
        fig = figures.profile(layers, quantity, step=0)
        assert "theory" not in fig.data and not lines_with(fig, "theory"), quantity
    # Glorot's standard init on tanh (sw2 = 1/3): the length shrinks 3x per layer to q* = 0, where chi1 = 1/3
    standard, _, _ = fabricate([config(10, "tanh", 1, **{"init.name": "standard"})])
    assert not lines_with(figures.profile(standard, "grad_norm", step=0), "theory")
    line = figures.profile(standard, "signal_norm", step=0).data["theory"]
    assert line["chi1"].eq(theory.point("tanh", 1 / 3, 0.0).chi1).all() and line["chi1"].iloc[0] == pytest.approx(1 / 3)
    relu, _, _ = fabricate([config(10, "relu", 1, **{"init.name": "meanfield", "init.sw2": 1.5, "init.sb2": 0.0})])
    assert not lines_with(figures.profile(relu, "grad_norm", step=0), "theory")
    line = figures.profile(relu, "signal_norm", step=0).data["theory"]
    chi1 = theory.point("relu", 1.5, 0.0).chi1
    assert chi1 == pytest.approx(0.75) and line["chi1"].eq(chi1).all()
    np.testing.assert_allclose(np.diff(np.log(line["y"])) / np.diff(line["x"]), -0.5 * math.log(chi1), atol=1e-12)
    # the theory is of the random initialization: after training (the last step, or any but 0) no line
    for step in ("last", int(relu["step"].max())):
        assert "theory" not in figures.profile(relu, "signal_norm", step=step).data, step


def test_the_weight_gradients_line_is_left_out_where_the_correlation_map_is_slow_and_the_legend_says_so():
    """A batch's weight gradient sums its examples: its norm carries their correlations, which move on the scale
    xi_c. The 60-layer edge-of-chaos preset at sigma_w^2 = 1.5 (xi_c = 15.8) measured 2.6x below its line at the
    input, 1.25x at sigma_w^2 = 4 (xi_c = 7.0). The signal's line (per example) is drawn at both."""
    from gradflow import theory
    from gradflow.plots.meanfield import WEIGHT_LINE_XI_C

    def drawn(sw2, quantity):
        cfg = config(20, "tanh", 1, **{"init.name": "meanfield", "init.sw2": sw2, "init.sb2": 0.05})
        fig = figures.profile(fabricate([cfg])[0], quantity, step=0)
        return fig.data.get("theory"), legend_texts(fig)

    assert theory.point("tanh", 1.5, 0.05).xi_c > WEIGHT_LINE_XI_C > theory.point("tanh", 4.0, 0.05).xi_c
    line, texts = drawn(1.5, "grad_norm")
    assert line is None and any(t.startswith("no mean-field line where ξ_c > 8") for t in texts), texts
    line, texts = drawn(4.0, "grad_norm")
    assert line is not None and not any(t.startswith("no mean-field line") for t in texts), texts
    for sw2 in (1.5, 4.0):
        line, texts = drawn(sw2, "signal_norm")
        assert line["chi1"].iloc[0] == pytest.approx(theory.point("tanh", sw2, 0.05).chi1)
        assert not any(t.startswith("no mean-field line") for t in texts), texts
    # the ratio against depth, the same product of layers: its line left out too, and said
    for sw2, left in ((1.5, True), (4.0, False)):
        cfgs = [config(d, "tanh", 1, **{"init.name": "meanfield", "init.sw2": sw2, "init.sb2": 0.05}) for d in (5, 10)]
        fig = figures.ratio(fabricate(cfgs)[0], "init")
        said = any(t.startswith("no mean-field line where ξ_c > 8") for t in legend_texts(fig))
        assert said == left and ("theory" in fig.data) != left, (sw2, legend_texts(fig))


def test_ratio_of_the_back_propagated_signal(sweep):
    layers, _, runs = sweep
    fig = figures.ratio(layers, "init", quantity="signal_norm")
    lines = fig.data["lines"]
    for act, r in RATE.items():  # geometric profiles: signal(0) / signal(L) = r ** depth, whatever the seed
        mine = lines[lines["line"].str.contains(f"model.activation={act}")]
        assert sorted(mine["x"]) == [5, 10, 20]
        np.testing.assert_allclose(mine["y"], r ** mine["x"].to_numpy(dtype=float))
    assert fig.get_suptitle().startswith("Back-propagated signal ratio")
    with pytest.raises(GradflowError, match="weight-gradient ratio only"):
        figures.ratio(runs, "init", quantity="signal_norm")
    with pytest.raises(GradflowError, match="choices: grad_norm, signal_norm"):
        figures.ratio(layers, "init", quantity="act_std")


def test_few_points_are_marked_and_each_depths_panel_ends_at_its_own_last_layer(sweep):
    """A run evaluated at its first and last step only drew a straight line that read as a trend: a series
    of FEW_POINTS or fewer marks its points. Panels faceted by depth each end at their own net's last
    point (a shared axis left the depth-5 panel three-quarters empty); an activation statistic's axis
    does not call its last point the output head (the head has no activation)."""
    from gradflow.plots.style import FEW_POINTS, STYLE_MARKERS

    layers, metrics, _ = sweep
    few = metrics[metrics.step.isin([0, 100])]
    assert all(ln.get_marker() in STYLE_MARKERS for ln in series_lines(figures.curves(few).axes[0]))
    assert all(ln.get_marker() in ("None", None, "") for ln in series_lines(figures.curves(metrics).axes[0]))
    shallow = fabricate([config(FEW_POINTS - 1, "tanh", 1)])[0]
    assert series_lines(figures.profile(shallow, "grad_norm", step=0).axes[0])[0].get_marker() == "o"
    # a profile that skips probe points (a transformer's residual stream has no weight gradient) marks the
    # points it has: the line between two of them is no measurement; one that skips none is a plain line
    deep = fabricate([config(20, "tanh", 1)])[0]
    assert series_lines(figures.profile(deep, "grad_norm", step=0).axes[0])[0].get_marker() in ("None", None, "")
    skipping = deep[~((deep.quantity == "grad_norm") & (deep.layer % 3 == 1))]
    (line,) = series_lines(figures.profile(skipping, "grad_norm", step=0).axes[0])
    assert line.get_marker() == "o" and 1 not in line.get_xdata() and len(line.get_xdata()) == 14

    fig = figures.profile(layers, "grad_norm", step=0, facet="model.depth")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_xlim() for ax in panels] == [(0, 5), (0, 10), (0, 20)]
    same = figures.profile(layers[layers["model.depth"] == 10], "grad_norm", step=0, facet="model.activation")
    assert {ax.get_xlim() for ax in same.axes if ax.get_title()} == {(0, 10)}
    assert figures.profile(layers, "grad_norm", step=0).axes[0].get_xlabel().endswith("last = output head)")
    act = figures.profile(layers, "act_mean", step=0).axes[0].get_xlabel()
    assert "output head has none" in act and "= output head" not in act


def test_a_log_axis_within_a_decade_labels_round_values_across_it_and_ends_at_the_last_layer():
    """Within a decade a log axis has one or two powers of ten and unlabelled minor ticks (8.5e-6 to 1.8e-5
    showed 9e-06 and 1e-05, the upper half bare): round values across the axis instead, each label its
    tick's value (not 1.25 shown as 1.2)."""
    layers, metrics, _ = fabricate([config(4, "tanh", 1)], rate=lambda cfg: 1.2)  # 1.2^4: less than a decade
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def labelled(fig, which="both"):
        FigureCanvasAgg(fig).draw()  # tick labels are decided when drawing
        ax = fig.axes[0]
        lo, hi = ax.get_ylim()
        ticks = {"minor": ax.yaxis.get_minorticklabels(), "both": [*ax.yaxis.get_majorticklabels(),
                                                                   *ax.yaxis.get_minorticklabels()]}[which]
        return [(t.get_position()[1], t.get_text()) for t in ticks if t.get_text() and lo <= t.get_position()[1] <= hi]

    fig = figures.profile(layers, "grad_norm", step=0)
    lo, hi = fig.axes[0].get_ylim()
    ticks = labelled(fig)
    assert hi / lo < 10 and len(ticks) >= 3, ticks
    assert all(abs(float(text.replace("−", "-")) / pos - 1) < 1e-9 for pos, text in ticks), ticks
    spread = np.log(max(p for p, _ in ticks) / min(p for p, _ in ticks))
    assert spread >= 0.5 * np.log(hi / lo), (ticks, lo, hi)  # across the axis, not bunched at one end
    assert fig.axes[0].get_xlim() == (0, 4)
    assert figures.curves(metrics).axes[0].get_xlim() == (0, 100)  # the last evaluated step
    assert not labelled(figures.profile(fabricate([config(20, "tanh", 1)])[0], "grad_norm", step=0), "minor")


def test_unrelated_runs_get_one_legended_line_each_and_no_panels(tmp_path):
    configs = [config(5, "tanh", 1, **{"init.name": "xavier_normal", "run": "a"}),
               config(10, "relu", 1, **{"init.name": "kaiming_normal", "run": "b"}),
               config(20, "tanh", 1, **{"init.name": "standard", "run": "c"})]
    layers, metrics, runs = fabricate(configs)
    for fig in (figures.profile(layers, step=0), figures.curves(metrics)):
        assert sorted(fig.data["lines"]["line"].unique()) == ["a", "b", "c"]
        (leg,) = fig.legends
        # each run's name, and the settings that set it apart (a loop's own run0, run1 said nothing of them)
        assert [" ".join(t.get_text().split()) for t in leg.get_texts()][:3] == [
            f"{run} (init={init}, model.depth={depth}, 1 more)"
            for run, init, depth in (("a", "xavier_normal", 5), ("b", "kaiming_normal", 10), ("c", "standard", 20))]
        colours = {ln.get_color() for ln in lines_with(fig, "series:")}
        assert len(colours) == 3
    assert len(figures.profile(layers, step=0).data["lines"]["axes"].unique()) == 1
    # a list-valued key (Adam's betas) among the settings that set the runs apart: named as written
    betas = [config(d, "tanh", 1, **{"optim.betas": b, "run": r})
             for d, b, r in ((5, [0.9, 0.99], "a"), (10, [0.9, 0.999], "b"), (10, [0.9, 0.99], "c"))]
    (leg,) = figures.curves(fabricate(betas)[1]).legends  # (the curves: at step 0 an optim key is no key)
    assert "optim.betas=[0.9, 0.999]" in " ".join(" ".join(t.get_text().split()) for t in leg.get_texts())
    # a real sweep (every combination) still gets colour, line style and panels
    grid3 = [config(d, a, 1, **{"init.name": i}) for d in (5, 10) for a in ("tanh", "relu")
             for i in ("xavier_normal", "kaiming_normal")]
    sweep_layers = fabricate(grid3)[0]
    written = figures.standard_set(sweep_layers, None, None, tmp_path)
    assert [p.name for p in written][:1] == ["profile-grad_norm-step0.png"]


def test_unrelated_runs_keep_each_seed_a_line_of_its_own_as_the_legend_names_it():
    # two seeds of one config among unrelated runs (a folder of studies): the legend names both runs, so each
    # is a line; merged into a median with a min-max band, one name had no line and "over seeds" a band
    configs = [config(5, "tanh", 0, **{"init.name": "xavier_normal", "run": "s/seed=0"}),
               config(5, "tanh", 1, **{"init.name": "xavier_normal", "run": "s/seed=1"}),
               config(10, "relu", 1, **{"init.name": "kaiming_normal", "run": "b"}),
               config(20, "tanh", 1, **{"init.name": "standard", "run": "c"})]
    layers, metrics, _ = fabricate(configs)
    for fig in (figures.profile(layers, step=0), figures.curves(metrics)):
        assert sorted(fig.data["lines"]["line"].unique()) == ["b", "c", "s/seed=0", "s/seed=1"]
        assert fig.data["lines"]["n"].max() == 1
        assert not any("over seeds" in t for t in legend_texts(fig)), legend_texts(fig)


def test_runs_no_key_tells_apart_are_a_line_each_not_seeds_of_one_setting():
    # a Recorder's loops of two optimizers, the config naming neither: one line with a band "min-max over
    # seeds (median of 2)" hid that they were two different runs
    configs = [config(5, "tanh", 0, **{"run": "opt/sgd"}), config(5, "tanh", 0, **{"run": "opt/adam"})]
    layers, metrics, _ = fabricate(configs)
    for fig in (figures.profile(layers, step=0), figures.curves(metrics)):
        assert sorted(fig.data["lines"]["line"].unique()) == ["opt/adam", "opt/sgd"]
        assert fig.data["lines"]["n"].max() == 1
        assert not any("over seeds" in t for t in legend_texts(fig)), legend_texts(fig)
    # two seeds of that config are still one line and its band
    seeds = [config(5, "tanh", s) for s in (0, 1)]
    fig = figures.curves(fabricate(seeds)[1])
    assert fig.data["lines"]["n"].max() == 2 and any("over seeds" in t for t in legend_texts(fig))
    # compared with another folder of the two (compare's runs: ids unique across sources), still a line each
    other = [config(5, "tanh", 0, **{"run": f"B/{name}"}) for name in ("sgd", "adam")]
    both = [pd.concat([a, b], ignore_index=True) for a, b in zip((layers, metrics), fabricate(other, source="B"))]
    for fig in (figures.profile(both[0], step=0), figures.curves(both[1])):
        assert fig.data["lines"]["line"].nunique() == 4 and fig.data["lines"]["n"].max() == 1
        assert not any("over seeds" in t for t in legend_texts(fig)), legend_texts(fig)
    # an attempt that failed beside its config's finished run is no repeat: the sweep keeps its keys
    sweep = fabricate([config(d, a, 0) for d in (5, 10) for a in ("tanh", "relu")])[0]
    failed = fabricate([config(5, "tanh", 0, **{"run": "model.depth=5,old"})])[0].assign(status="failed")
    assert is_grid(sweep, swept_keys(sweep)) and is_grid(pd.concat([sweep, failed]), swept_keys(sweep))


def test_a_ratio_coloured_by_a_key_with_no_lines_of_its_own_says_why():
    # each activation with its own init, over depths: init moves with the activation, not the depth (it was
    # called "set by model.depth"); a learning rate set by the depth is; the depth is the x axis itself
    tied = [config(d, a, 1, **{"init.name": i, "optim.lr": 0.1 / d})
            for d in (2, 4) for a, i in (("tanh", "xavier_normal"), ("relu", "kaiming_normal"))]
    layers = fabricate(tied)[0]
    for by, why in (("init.name", "--color init.name changes together with model.activation, value for value: "
                                  "colour by it; choices: model.activation"),
                    ("optim.lr", "--color optim.lr changes with model.depth alone (it is set by it)"),
                    ("model.depth", "--color model.depth is this plot's x axis")):
        with pytest.raises(GradflowError, match=re.escape(why)):
            figures.ratio(layers, "init", by=by, quantity="signal_norm")


def test_a_ratio_of_several_sweeps_draws_a_line_per_sweep_and_setting_as_its_legend_names_them():
    """A folder of sweeps, ratio figure: the legend named each of the runs while the lines pooled runs across
    sweeps by their shared keys, a line labelled with one run's depth spanning two depths. Now each run's
    name but its depth item is a line, and the legend names exactly the lines drawn."""
    configs = [config(d, a, 1, **{"run": f"s1/model.activation={a},model.depth={d}"})
               for d in (2, 4) for a in ("tanh", "relu")]
    configs += [config(d, "tanh", 1, **{"init.name": "orthogonal", "run": f"s2/model.depth={d}"}) for d in (2, 4, 8)]
    fig = figures.ratio(fabricate(configs)[0], "init", quantity="signal_norm")
    lines = fig.data["lines"]
    assert sorted(lines["line"].unique()) == ["s1/model.activation=relu", "s1/model.activation=tanh", "s2"]
    assert lines.groupby("line")["x"].apply(sorted).to_dict() == {
        "s1/model.activation=relu": [2, 4], "s1/model.activation=tanh": [2, 4], "s2": [2, 4, 8]}
    assert (lines["n"] == 1).all()  # no run pooled with another
    # (each named with the setting its name does not say, the one that sets s2 apart; its depths are its line's)
    assert [" ".join(t.split()) for t in legend_texts(fig)[:3]] == [
        "s1/model.activation=relu (init=kaiming_normal)", "s1/model.activation=tanh (init=kaiming_normal)",
        "s2 (init=orthogonal, model.activation=tanh)"]


def test_a_hundred_unrelated_runs_name_the_first_in_the_legend_and_count_the_rest():
    """A legend of a hundred runs left the axes a sliver: at most MAX_NAMED entries for the colours, the
    last saying how many are not named; runs in their folders' order (depth=2 before depth=10)."""
    from gradflow.plots.style import MAX_NAMED

    configs = [config(d, ("tanh", "relu")[d % 2], 1, **{"run": f"s/model.depth={d}"}) for d in range(1, 41)]
    fig = figures.profile(fabricate(configs)[0], step=0)
    assert fig.data["lines"]["line"].nunique() == 40
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    named = [" ".join(t.split()) for t in texts if t.startswith("s/")]
    assert named == [f"s/model.depth={d} (model.activation={('tanh', 'relu')[d % 2]})" for d in range(1, MAX_NAMED)]
    assert f"and {40 - MAX_NAMED + 1} more runs\n(not named here)" in texts, texts
    ax = fig.axes[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    assert ax.get_position().width > 0.35  # the axes keep their room beside the legend


def test_subtitles_give_each_inits_effective_sigma_w2_never_the_unused_key():
    configs = [config(10, "relu", 1, **{"init.name": n}) for n in ("xavier_normal", "kaiming_normal")]
    layers, _, _ = fabricate(configs, rate=lambda cfg: 1.0)
    title = figures.profile(layers, step=0).get_suptitle()
    assert r"$\sigma_w^2$: xavier_normal 1, kaiming_normal 2" in title
    assert r"$\sigma_w^2$=1" not in title
    one = figures.profile(layers[layers["init.name"] == "kaiming_normal"], step=0).get_suptitle()
    assert r"$\sigma_w^2$=2" in one
    # an init at several gains: its values in numeric order (1/16/6.25 was sorted as text and read as fractions)
    gains = [config(10, "relu", 1, **{"init.name": "orthogonal", "init.gain": g}) for g in (1.0, 4.0, 2.5)]
    gains.append(config(10, "relu", 1, **{"init.name": "xavier_normal"}))
    title = " ".join(figures.profile(fabricate(gains, rate=lambda cfg: 1.0)[0], step=0).get_suptitle().split())
    assert r"$\sigma_w^2$: orthogonal 1, 6.25 and 16; xavier_normal 1" in title, title
    # compare drops the keys that differ between sources (the source says them): still no sigma_w^2 = 1
    assert "sigma_w" not in figures.profile(layers.drop(columns="init.name"), step=0).get_suptitle()


def test_a_title_over_inits_names_the_one_without_a_sigma_w2_and_a_recurrent_ones_input_init():
    # gpt2's fixed std has no mean-field sigma_w^2: "sigma_w^2: xavier_normal 1" alone read as every line's
    configs = [config(10, "tanh", 1, **{"init.name": n}) for n in ("gpt2", "xavier_normal")]
    layers, metrics, _ = fabricate(configs, rate=lambda cfg: 1.0)
    for fig in (figures.profile(layers, step=0), figures.curves(metrics)):
        title = fig.get_suptitle()
        assert r"$\sigma_w^2$: xavier_normal 1, gpt2 none" in title, title
    # a recurrent sweep over its models: its init is the input weights', as a single run's title says
    rnns = [config(10, "tanh", 1, **{"model.name": m, "init.name": "xavier_normal", "model.recurrent_init": "orthogonal"})
            for m in ("rnn", "lstm")]
    for cfg, m in zip(rnns, ("rnn", "lstm")):
        cfg["run"] = f"model={m}"
    layers, _, _ = fabricate(rnns, rate=lambda cfg: 1.0)
    for sub in (layers, layers[layers["model.name"] == "lstm"]):
        title = figures.profile(sub, step=0).get_suptitle()
        assert "xavier_normal input init" in title and r"input $\sigma_w^2$=1" in title, title


def test_line_style_skips_a_key_the_colour_already_determines():
    # each variant at its own rate: a style for the rate would repeat the colour; the seed-independent
    # depth varies within a variant, so it gets the style
    from gradflow.plots.style import style_key

    rows = [{"run": f"{v}-{d}-{s}", "model.variant": v, "optim.lr": lr, "model.depth": d, "seed": s}
            for v, lr in (("batchnorm", 0.05), ("fixup", 0.1)) for d in (4, 8) for s in (0, 1)]
    df = pd.DataFrame(rows * 3)  # several rows per run, as in a metrics table
    swept = ["model.variant", "optim.lr", "model.depth"]
    assert style_key(df, swept, ("model.variant", None), source=False) == "model.depth"
    assert style_key(df[df["model.depth"] == 4], swept, ("model.variant", None), source=False) is None
    assert style_key(df, swept, (None,), source=False) == "model.variant"  # nothing used yet: nothing repeats


def test_a_line_over_several_runs_says_whether_they_are_seeds(sweep):
    # lines grouped by depth and activation: each is its two seeds, "(+1 seeds)"; grouped by depth alone (an
    # activation not drawn, as where more keys are swept than a figure has encodings), each line's runs
    # differ in their activation too, and its label must not call them seeds
    from gradflow.plots.series import collect_series

    layers = sweep[0]
    rows = layers[(layers["quantity"] == "grad_norm") & (layers["step"] == 0)]
    both = collect_series(rows, "layer", ["model.depth", "model.activation"], log=True)
    assert len(both) == 6 and all(s.label.endswith("(+1 seeds)") for s in both), [s.label for s in both]
    depth_only = collect_series(rows, "layer", ["model.depth"], log=True)
    assert len(depth_only) == 3 and all(s.label.endswith("(+3 runs)") for s in depth_only), \
        [s.label for s in depth_only]


def test_seed_statistics_match_pandas_for_groups_of_different_sizes():
    # groups of 1, 2 and 3 seeds in one table (their statistics are taken a size at a time), with runs that
    # logged different steps, a NaN, a zero on a log axis, and a diverged run that logged nothing non-finite
    from gradflow.plots.series import collect_series

    rng = np.random.default_rng(3)
    rows = []
    for depth, seeds in ((2, [0]), (4, [0, 1]), (8, [0, 1, 2]), (16, [0, 1])):
        for seed in seeds:
            steps = [0, 1, 3, 10] if seed != 1 else [0, 3, 10, 30]
            status = "diverged" if (depth, seed) == (8, 2) else "ok"
            for step in steps:
                value = float(rng.uniform(0.1, 10))
                value = math.nan if (depth, seed, step) == (4, 1, 3) else 0.0 if (depth, seed, step) == (16, 0, 1) \
                    else value
                rows.append({**config(depth, seed=seed), "run": f"d{depth}-s{seed}", "step": step,
                             "value": value, "status": status, "source": "sweep"})
    df = pd.DataFrame(rows)
    series = {s.config["model.depth"]: s for s in collect_series(df, "step", ["model.depth"], log=True,
                                                                 mark_diverged_end=True)}
    assert sorted(series) == [2, 4, 8, 16]
    drawable = df[np.isfinite(df["value"]) & (df["value"] > 0)]
    for depth, s in series.items():
        logged = df[df["model.depth"] == depth]
        stats = drawable[drawable["model.depth"] == depth].groupby("step")["value"]
        expected = pd.DataFrame({"med": stats.median(), "lo": stats.min(), "hi": stats.max()}) \
            .reindex(sorted(logged["step"].unique()))
        assert list(s.x) == list(expected.index), depth
        for column in ("med", "lo", "hi"):
            np.testing.assert_allclose(getattr(s, column), expected[column].to_numpy(), err_msg=f"{depth} {column}")
        assert list(s.count) == list(logged.groupby("step").size()), depth
        assert s.runs == sorted(logged["run"].unique()) and s.label.endswith(
            "" if len(s.runs) == 1 else f"(+{len(s.runs) - 1} seeds)")
    assert list(series[4].nonfinite) == [False, False, True, False, False]  # the NaN at step 3, steps 0 1 3 10 30
    assert list(series[16].offscale) == [False, True, False, False, False]  # the zero at step 1
    assert list(series[8].nonfinite) == [False, False, False, True, False]  # the diverged run's last step, 10
    assert not series[2].nonfinite.any() and not series[2].offscale.any()


def test_a_wide_legend_widens_the_figure_rather_than_squeezing_the_panels(tmp_path):
    """Sixteen runs of four sweeps in a folder: their names in two legend columns left the panels under
    half the figure. The figure grows by what the legend takes beyond its room, the panels keep their
    width, and the legend's title sits at its left edge, not over its second column."""
    def drawn(names):
        configs = [config(d, ("tanh", "relu")[d % 2], 1, **{"run": f"{name}/model.depth={d}"})
                   for d, name in zip(range(1, 17), names)]
        fig = figures.curves(fabricate(configs)[1])
        save(fig, tmp_path / "curves.png")  # (lays it out)
        return fig, fig.axes[0].get_position().width * fig.get_figwidth()

    plain, room = drawn([f"s{d % 4}" for d in range(16)])  # a legend within its room
    crowded, squeezed = drawn([f"sweep{d % 4}/model.activation=sigmoid,model.init=xavier_normal" for d in range(16)])
    # (plain's names carry their activation too: "s1/model.depth=1 (model.activation=relu)")
    assert crowded.get_figwidth() > plain.get_figwidth() + 1 and squeezed > 0.9 * room, (squeezed, room)
    (leg,) = crowded.legends
    assert leg.get_title().get_window_extent().x0 - leg.get_window_extent().x0 < 20  # (pixels; centred: ~300)


def test_a_figure_whose_legend_leaves_no_room_saves_without_a_matplotlib_warning(tmp_path):
    """Forty runs' legend beside a small axes: constrained layout gives up; the figure is saved as laid
    out, and matplotlib's warning (a source path and a line of its code) does not reach the terminal."""
    import warnings

    import matplotlib.pyplot as plt

    from gradflow.plots.save import save

    fig, ax = plt.subplots(figsize=(2, 1.5), layout="constrained")
    for i in range(40):
        ax.plot([0, 1], [i, i + 1], label=f"a long label number {i}")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = save(fig, tmp_path / "crowded.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not caught, [str(w.message) for w in caught]


def test_a_long_legend_entry_wraps_at_its_commas():
    """Three run folders' names as legend entries took half a comparison's width; wrapped at commas
    (never inside a key=value item), each line within LEGEND_WRAP characters."""
    from matplotlib.lines import Line2D

    from gradflow.plots.style import LEGEND_WRAP, legend, new_figure, wrap_label

    def wrap_commas(text):
        return wrap_label(text, LEGEND_WRAP)

    name = "source=data=gaussian,model.activation=relu,model.depth=6,model.width=16,optim.lr=1e6,train.steps=20"
    lines = wrap_commas(name).split("\n")
    assert "".join(lines) == name and len(lines) == 3 and all(len(ln) <= LEGEND_WRAP for ln in lines)
    assert all(ln.endswith(",") for ln in lines[:-1])
    assert wrap_commas("model.depth=6") == "model.depth=6" and wrap_commas("x" * 60) == "x" * 60
    fig, _ = new_figure()
    legend(fig, [Line2D([], [], label=name), Line2D([], [], label="short")])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [wrap_commas(name), "short"]


@pytest.mark.parametrize("config, has, lacks", [
    ({"model.name": "resnet", "model.skip": "none"}, ["resnet", "no skip"], []),  # plain32 read as a ResNet
    ({"model.name": "resnet", "model.skip": "residual"}, ["residual skip"], ["no skip"]),
    ({"model.name": "mlp", "model.skip": "none"}, ["mlp"], ["no skip"]),  # an MLP has none unless set
    ({"model.name": "custom", "model.target": "my_models:Net", "model.activation": "auto"},
     ["custom", "my_models:Net"], ["auto"]),  # which of the user's models, not "auto"
    # glorot2010's probe: no step taken, inputs U[0, 1] (it read "gaussian, sgd, lr 0.05")
    ({"data.name": "gaussian", "data.distribution": "uniform01", "optim.name": "sgd", "optim.lr": 0.05,
      "train.steps": 0}, ["U[0,1] inputs"], ["gaussian", "sgd", "lr 0.05"]),
    ({"data.name": "gaussian", "data.distribution": "normal", "optim.name": "sgd", "optim.lr": 0.05,
      "train.steps": 10}, ["gaussian inputs", "sgd", "lr 0.05"], ["U[0,1] inputs", "gaussian"]),  # (not weights)
])
def test_titles_name_the_model_as_the_user_chose_it(config, has, lacks):
    from gradflow.plots.labels import held_fixed

    items = held_fixed(pd.DataFrame([config]))
    assert all(h in items for h in has) and not any(x in items for x in lacks), items


def test_an_unprobed_step_lists_the_probed_steps_near_it_and_the_last():
    # "probed steps: 0, 1, ... 11, ..." left out the last step, the one a user asking for 999 wants
    from gradflow.plots.series import steps_phrase

    every = range(201)
    assert steps_phrase(every, 999) == "0, 1, 2, 3, ..., 197, 198, 199, 200"
    assert steps_phrase(every, 55) == "0, 1, 2, 3, ..., 53, 54, 55, 56, ..., 200"
    assert steps_phrase([0, 10, 20], 5) == "0, 10, 20"
    assert steps_phrase(range(0, 1001, 50), 10**6).endswith("..., 850, 900, 950, 1000")


def test_evenly_evaluated_steps_with_a_divergence_step_keep_a_linear_axis():
    # a run evaluated every 10 steps that diverged at step 31 (30, 31, 40: one gap of 1 among gaps of 10)
    # drew its curves on a symlog step axis, as if its steps were log-spaced probes
    from gradflow.plots.style import is_log_spaced
    from gradflow.probes.core import schedule

    assert not is_log_spaced(np.r_[np.arange(0, 201, 10), 31])
    assert not is_log_spaced([*range(0, 1001, 100), 1001])
    assert is_log_spaced(schedule(1000, 0, 12)) and is_log_spaced(schedule(1000, 0, 6))  # probe.points' geomspace
    # the default probe.points=30 over a 200-step run (its later gaps 8x its early ones: drawn linear, the first
    # twenty steps slivers) and over 80; over 50 its gaps grow 3x, and a linear axis shows them well
    assert is_log_spaced(schedule(200, 0, 30)) and is_log_spaced(schedule(80, 0, 30))
    assert not is_log_spaced(schedule(50, 0, 30))


def test_the_curves_step_axis_is_judged_on_the_evaluations_not_the_divergence_steps():
    """Runs evaluated every 10 steps that diverged at 1, 2, 4, ..., 64 (their last rows at those steps): the
    axis follows the evaluations, linear; judged on the divergence steps alone it went symlog."""
    import matplotlib.pyplot as plt

    from gradflow.plots.curves import _curve_steps

    rows = [("f", s, np.nan) for s in range(0, 101, 10)]
    for i, d in enumerate([1, 2, 4, 8, 16, 32, 64]):
        rows += [(f"r{i}", s, float(d)) for s in range(0, d, 10)] + [(f"r{i}", d, float(d))]
    fig, ax = plt.subplots()
    _curve_steps(ax, pd.DataFrame(rows, columns=["run", "step", "diverged_step"]))
    assert ax.get_xscale() == "linear" and ax.get_xlim() == (0.0, 100.0)
    plt.close(fig)


def test_a_diverged_curve_is_carried_on_only_where_its_evaluations_stopped_before_the_divergence():
    """to_divergence adds a NaN at the step a run diverged where its last evaluation came before it (run b,
    evaluated at 0 and 10, diverged at 15); a run that diverged at an evaluated step (a, at 10) already ends
    there: no NaN beside its last value at the same step (judged on its first evaluation, one was added)."""
    from gradflow.plots.curves import to_divergence

    drawn = pd.DataFrame({"run": ["a", "a", "b", "b"], "step": [0, 10, 0, 10], "split": "train", "metric": "loss",
                          "value": [1.0, 2.0, 1.0, 3.0], "status": "diverged"})
    metrics = pd.concat([drawn, pd.DataFrame({"run": ["a", "b"], "step": [10, 15], "split": "diverged",
                                              "metric": "loss", "value": np.inf, "status": "diverged"})])
    out = to_divergence(metrics, drawn)
    added = out.iloc[len(drawn):]
    assert added["run"].tolist() == ["b"] and added["step"].tolist() == [15] and added["value"].isna().all()


def test_a_diverged_runs_finite_climb_still_leaves_the_loss_axis():
    """A run that diverged at an evaluated step has only finite losses drawn (1e30 at its last evaluation): it
    is a diverging run all the same, so the axis is cut above the run that stayed finite (taken by its values
    alone, it counted as one that stays and the axis ran to 1e30, the other line flat at its bottom)."""
    from gradflow.plots.curves import CUT_DECADES, _diverging_cut

    rows = pd.DataFrame({"run": ["a", "a", "b", "b"], "value": [1.0, 2.0, 1.0, 1e30],
                         "status": ["ok", "ok", "diverged", "diverged"]})
    assert _diverging_cut(rows) == pytest.approx(2.0 * 10.0**CUT_DECADES)


def test_a_named_value_keeps_its_colour_from_one_figure_to_the_next():
    # colours went by the values each figure showed: sigmoid orange beside relu, tanh orange beside relu
    from gradflow.plots.style import FIXED_COLOURS, Palette

    def colour(values: list[str], of: str, key: str = "model.activation"):
        return Palette(pd.DataFrame({key: values}), key).color_of({key: of})

    assert colour(["relu", "sigmoid", "tanh"], "tanh") == colour(["relu", "tanh"], "tanh") == colour(["tanh"], "tanh")
    assert colour(["relu", "sigmoid", "tanh"], "sigmoid") != colour(["relu", "sigmoid", "tanh"], "tanh")
    assert colour(["none", "batchnorm"], "batchnorm", "norm.name") == colour(["layernorm", "batchnorm"], "batchnorm",
                                                                              "norm.name")
    # a value outside the fixed names: the figure's own order, each value still its own colour
    mixed = ["relu", "softsign", "tanh"]
    assert len({str(colour(mixed, v)) for v in mixed}) == 3
    # a --points sweep's runs, coloured run by run (no grid): each its activation's own colour, tanh orange
    # (they took tab10 in folder order: tanh green); not where the runs share an activation
    runs = ["init.sb2=0.0,init.sw2=2.0,model.activation=relu", "init.sb2=0.05,init.sw2=1.534,model.activation=elu",
            "init.sb2=0.05,init.sw2=1.76,model.activation=tanh"]
    points = pd.DataFrame({"run": runs, "model.activation": ["relu", "elu", "tanh"]})
    palette = Palette(points, "run")
    assert [palette.color_of({"run": r}) for r in runs] == [colour([a], a) for a in ("relu", "elu", "tanh")]
    shared = Palette(points.assign(**{"model.activation": ["relu", "relu", "tanh"]}), "run")
    assert shared.color_of({"run": runs[2]}) != colour(["tanh"], "tanh")
    # the ten names' colours each apart from every other in hue, lightness or saturation (gpt2 was tab10's cyan
    # beside xavier_normal's blue in the README's transformer sweep, softplus the same beside relu)
    import colorsys
    import itertools

    for key, names in FIXED_COLOURS.items():
        hsv = {v: colorsys.rgb_to_hsv(*colour(list(names), v, key)[:3]) for v in names}
        for (a, (ha, sa, va)), (b, (hb, sb, vb)) in itertools.combinations(hsv.items(), 2):
            hue = min(abs(ha - hb), 1 - abs(ha - hb))
            assert hue >= 0.06 or abs(va - vb) >= 0.2 or abs(sa - sb) >= 0.4, (a, b)


def test_a_facet_and_the_keys_no_line_shows_share_the_panels():
    # a facet (compare's, by init) left the keys neither colour nor style shows in one panel: two activations'
    # lines alike, the title's "lines also differ in model.activation" the only word of it
    cfgs = [config(depth, act, 1, **{"init.name": init, "model.width": width})
            for depth in (4, 8) for act in ("tanh", "relu") for init in ("kaiming_normal", "orthogonal")
            for width in (32, 64)]
    for c in cfgs:
        c["run"] = f"d{c['model.depth']}-{c['model.activation']}-{c['init.name']}-{c['model.width']}"
    layers, metrics, _ = fabricate(cfgs)
    fig = figures.profile(layers, "grad_norm", step=0, color="model.depth", facet="init.name")
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert len(titles) == 4 and all(t.startswith("init=") and ", " in t for t in titles), titles
    assert "also differ" not in fig.get_suptitle()
    other = titles[0].split(", ")[1].split("=")[0]  # (the key the line style leaves: a panel per value, with init)
    # the curves' pairs of columns: up to AUTO_CURVE_PANELS (3) combinations
    key = next(k for k in ("model.activation", "model.width") if k.endswith(other))
    three = metrics[~((metrics["init.name"] == "orthogonal") & (metrics[key] == metrics[key].max()))]
    for figure, n in ((figures.curves(three, color="model.depth", facet="init.name"), 3),
                      (figures.gradnorm(metrics.assign(split="opt", metric="grad_norm"), color="model.depth",
                                        facet="init.name"), 4)):
        titles = {ax.get_title().replace("\n", " ").split(":")[0] for ax in figure.axes if ax.get_title()}
        assert len(titles) == n and all(t.startswith("init=") and f", {other}=" in t for t in titles), titles
        assert "also differ" not in figure.get_suptitle()
    # six columns of curves: each title wrapped to its column's width (they ran into each other)
    lines = [line for ax in figures.curves(three, color="model.depth", facet="init.name").axes
             for line in ax.get_title().split("\n") if line]
    assert lines and max(map(len, lines)) <= 32, lines


def test_a_column_title_of_one_long_word_is_broken_to_its_column():
    """A swept value without spaces (+tag=a_very_long_tag_value_that_goes_on_and_on) was one word, which the
    wrap between words left whole: the curves' first column title ran into the next. It breaks after a `_`,
    `,`, `=`, `/` or `:` (or at the width), never inside mathtext."""
    from gradflow.plots.style import wrap_words

    long = "tag=a_very_long_tag_value_that_goes_on_and_on_and_on: train"
    assert wrap_words(long, 30) == "tag=a_very_long_tag_value_that_goes_on_and_on_and_on:\ntrain"  # (a legend's)
    lines = wrap_words(long, 30, long_words=True).split("\n")
    assert max(map(len, lines)) <= 30 and "".join(lines).replace(":train", ": train") == long, lines
    assert all(line.endswith(("_", ":", ",", "=", "/")) for line in lines[:-1]), lines
    assert wrap_words("x" * 70, 30, long_words=True).split("\n") == ["x" * 30, "x" * 30, "x" * 10]
    assert wrap_words("$\\sigma_w^2$ long", 4, long_words=True) == "$\\sigma_w^2$\nlong"  # (mathtext whole)
    configs = [config(5, a, 1, **{"tag": t, "run": f"model.activation={a},tag={t}"})
               for a in ("tanh", "relu") for t in ("a_very_long_tag_value_that_goes_on_and_on_and_on", "s")]
    _, metrics, _ = fabricate(configs)
    metrics.attrs["user_keys"] = ["tag"]  # (a +tag, as gradflow.load names it)
    fig = figures.curves(metrics, color="model.activation", facet="tag")
    titles = [line for ax in fig.axes for line in ax.get_title().split("\n") if line]
    assert titles and max(map(len, titles)) < len("tag=a_very_long_tag_value_that_goes_on_and_on_and_on:"), titles


def test_ordered_values_put_a_missing_value_last():
    """A key some runs lack (init.sw2, NaN beside init=standard's runs) orders its values ascending with the
    missing one last, as the legends and ls list them; sources keep their given order. (A bug this catches: NaN first.)"""
    from gradflow.keys import ordered_values

    got = ordered_values(pd.Series([2.0, math.nan, 1.0, 2.0], name="init.sw2"))
    assert got[:2] == [1.0, 2.0] and len(got) == 3 and math.isnan(got[2])
    assert ordered_values(pd.Series(["b", "a", "b"], name="source")) == ["b", "a"]


# --- distribution figures: what the histogram and spectrum draw, on hand-made tables -----------------------
def _relu_hist_figure():
    """Three relu layers (about half their activations exactly 0), shrinking towards the output."""
    rng = np.random.default_rng(3)
    samples = {}
    for layer in range(3):
        samples[("activation", layer)] = np.maximum(rng.normal(0, 0.5 ** layer, 2000), 0.0)
        samples[("gradient", layer)] = rng.normal(0, 1e-3 * 2.0 ** layer, 2000)
    return samples, figures.hist(hist_rows(samples), step=0)


def test_hist_fractions_and_zero_marks_count_a_layers_exact_zeros_in_its_units():
    """A relu layer's line is the fraction of ALL its units per bin (the exact zeros included, stated apart):
    normalising by the nonzero units only doubled every bar; the left-edge mark is the zeros' fraction, and the
    panel's note gives the zeros' share of all units drawn."""
    samples, fig = _relu_hist_figure()
    act_ax = [ax for ax in fig.axes if ax.get_gid() != "colorbar"][0]
    for layer in range(3):
        x = samples[("activation", layer)]
        (line,) = [ln for ln in series_lines(act_ax) if ln.get_gid() == f"series:layer {layer}"]
        np.testing.assert_allclose(line.get_ydata(), np.histogram(x[x > 0], HIST_EDGES)[0] / len(x))
    # half of each layer's units at 0, against lines that peak near 0.1: on the y axis, the marks pressed the lines
    # into its bottom fifth; they sit on its top edge instead, pointing up, the legend and the note saying so
    lines_top = max(max(ln.get_ydata()) for ln in series_lines(act_ax))
    top = act_ax.get_ylim()[1]
    above = [ln for ln in act_ax.get_lines() if ln.get_gid() == "zeros above"]
    assert len(above) == 3 and all(ln.get_ydata()[0] == top and ln.get_marker() == "^" for ln in above)
    assert top < 1.5 * lines_top and min((samples[("activation", l)] == 0).mean() for l in range(3)) > top
    assert "fraction exactly 0, above\nthe axis (the box: by layer)" in legend_texts(fig)
    (note,) = [t for t in act_ax.texts if t.get_gid() == "special"]  # (the marks read alike: each one's share)
    shares = "  ".join(f"{l}: {(samples[('activation', l)] == 0).mean():.0%}" for l in range(3))
    assert f"exactly 0 by layer (▲):\n{shares}" in note.get_text(), note.get_text()
    # a few zeros (under 1.5 times the lines' top): on the axis, at their fraction
    for layer in range(3):
        samples[("activation", layer)][:len(samples[("activation", layer)]) // 2] = 1.0  # (half the zeros gone)
        samples[("activation", layer)][:100 * (layer + 1)] = 0.0
    fig = figures.hist(hist_rows(samples), step=0)
    act_ax = [ax for ax in fig.axes if ax.get_gid() != "colorbar"][0]
    marks = sorted(float(ln.get_ydata()[0]) for ln in act_ax.get_lines() if ln.get_gid() == "zeros")
    expected = sorted((samples[("activation", l)] == 0).mean() for l in range(3))
    np.testing.assert_allclose(marks, expected)
    assert max(marks) <= act_ax.get_ylim()[1]
    samples, fig = _relu_hist_figure()
    act_ax = [ax for ax in fig.axes if ax.get_gid() != "colorbar"][0]
    zeros = sum(int((samples[("activation", l)] == 0).sum()) for l in range(3))
    (note,) = [t for t in act_ax.texts if t.get_gid() == "special"]
    assert f"exactly 0: {zeros:,} units ({zeros / 6000:.1%})" in note.get_text(), note.get_text()


def test_hist_x_range_holds_every_visible_bin_and_layers_go_dark_to_bright():
    samples, fig = _relu_hist_figure()
    for ax in [ax for ax in fig.axes if ax.get_gid() != "colorbar"]:
        lo, hi = ax.get_xlim()
        for line in series_lines(ax):
            x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
            shown = x[y >= 1e-3]
            # each bin's whole width (a quarter decade) and a bin of margin on both sides
            assert lo <= shown.min() / 10 ** 0.25 and shown.max() * 10 ** 0.25 <= hi, (ax.get_title(), lo, hi)
        # input (layer 0) dark, output bright, as the docstring and colour bar say: viridis from 0
        colours = {ln.get_gid(): ln.get_color() for ln in series_lines(ax)}
        np.testing.assert_allclose(colours["series:layer 0"], colormaps["viridis"](0.0))
        np.testing.assert_allclose(colours["series:layer 2"], colormaps["viridis"](0.88))


def test_hist_leaves_out_only_an_output_head_not_a_first_point_without_activations():
    """A gradient-only point is the output head's dL/d(logits) only when it is the last one: a first point
    with no activation histogram (an input projection) stays drawn."""
    rng = np.random.default_rng(4)
    samples = {("gradient", l): rng.normal(0, 1, 500) for l in range(4)}
    samples |= {("activation", l): rng.normal(0, 1, 500) for l in range(1, 4)}
    fig = figures.hist(hist_rows(samples), step=0)
    grad_ax = [ax for ax in fig.axes if ax.get_title() == "Back-propagated gradients"][0]
    assert {ln.get_gid() for ln in series_lines(grad_ax)} == {f"series:layer {l}" for l in range(4)}
    assert "left out" not in fig.get_suptitle()


def test_spectrum_density_integrates_to_the_share_of_finite_positive_values_and_returns_to_zero():
    """The density of a run with NaN/inf and exact zeros integrates to its share of finite positive values
    (29 of 32), not to 1 (they are counted in the legend, not spread over the curve); the curve starts and
    ends on an empty bin, and the isometry reference is the vertical line s = 1."""
    rng = np.random.default_rng(2)
    spread = np.exp(rng.normal(-3, 2, 32))
    broken = np.r_[spread[:29], [np.inf, np.nan, 0.0]]
    fig = figures.spectrum(jacobian_rows(broken, config(40, "tanh", 1), "c"))
    ax = fig.axes[0]
    (line,) = series_lines(ax)
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    width = np.log10(x[1] / x[0])
    assert (y * width).sum() == pytest.approx(29 / 32)
    assert y[0] == 0 and y[-1] == 0 and (y > 0).any()
    (ref,) = [ln for ln in ax.get_lines() if ln.get_gid() == "reference"]
    assert list(ref.get_xdata()) == [1.0, 1.0] and list(ref.get_ydata()) == [0, 1]  # (axvline: axes-fraction y)


def test_spectrum_numerical_zeros_are_relative_to_each_runs_own_largest_value():
    """A run whose whole spectrum is small (a vanishing net: 1e-12 to 1e-10) has no numerical zeros of its own;
    compared with another run's largest value every one of them read zero and its line vanished."""
    small = np.geomspace(1e-12, 1e-10, 32)
    table = pd.concat([jacobian_rows(small, config(40, "tanh", 1), "deep"),
                       jacobian_rows(np.geomspace(0.5, 2.0, 32), config(5, "tanh", 1), "shallow")], ignore_index=True)
    fig = figures.spectrum(table)
    assert len(series_lines(fig.axes[0])) == 2
    assert not any("zero" in t for t in legend_texts(fig)), legend_texts(fig)
    assert fig.axes[0].get_xlim()[0] < 1e-12


# --- labels and the palette: symbols, colour maps, title items, log colour scales, markers ----------------
def _cfg(**over):
    cfg = {"model.name": "mlp", "model.depth": 10, "model.width": 64, "model.activation": "tanh",
           "model.skip": "none", "init.name": "kaiming_normal", "init.sw2": 1.0, "init.sb2": 0.0,
           "norm.name": "none", "data.name": "gaussian", "optim.name": "sgd", "optim.lr": 0.05, "seed": 1}
    return cfg | over


def test_sigma_keys_are_labelled_with_their_own_symbol():
    from gradflow.plots.labels import key_label, value_label

    assert r"\sigma_w" in key_label("init.sw2") and r"\sigma_b" not in key_label("init.sw2")
    assert r"\sigma_b" in key_label("init.sb2") and r"\sigma_w" not in key_label("init.sb2")
    assert value_label("init.sw2", 2.0).startswith(r"$\sigma_w^2$")


def test_loss_summaries_that_say_bright_is_low_use_a_colour_map_bright_at_low():
    from matplotlib import colormaps

    from gradflow.plots.labels import SUMMARIES

    def brightness(rgba):
        return 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]

    said = [k for k, s in SUMMARIES.items() if "bright = low" in s.label]
    assert said
    for k in said:
        cmap = colormaps[SUMMARIES[k].cmap]
        assert brightness(cmap(0.0)) > brightness(cmap(1.0)), k


def test_title_names_each_fixed_key_once():
    from gradflow.plots.labels import held_fixed

    items = held_fixed(pd.DataFrame([_cfg()]))
    assert items.count("depth 10") == 1 and items.count("width 64") == 1, items


def test_sigma_b_is_in_the_title_for_the_meanfield_init_only():
    from gradflow.plots.labels import held_fixed

    mf = held_fixed(pd.DataFrame([_cfg(**{"init.name": "meanfield", "init.sw2": 1.5, "init.sb2": 0.05})]))
    kaiming = held_fixed(pd.DataFrame([_cfg(**{"init.sb2": 0.05})]))
    assert any(r"\sigma_b^2" in i and "0.05" in i for i in mf), mf
    assert not any(r"\sigma_b^2" in i for i in kaiming), kaiming


def test_no_warm_up_is_not_said_in_the_title():
    from gradflow.plots.labels import held_fixed

    assert not any("warm-up" in i for i in held_fixed(pd.DataFrame([_cfg(**{"optim.warmup": 0})])))
    assert "warm-up 100 steps" in held_fixed(pd.DataFrame([_cfg(**{"optim.warmup": 100})]))


def test_depth_of_transformers_beside_mlps_is_called_both():
    from gradflow.plots.labels import key_label

    both = pd.DataFrame([{"model.name": "transformer", "model.depth": 2}, {"model.name": "mlp", "model.depth": 4}])
    only = pd.DataFrame([{"model.name": "transformer", "model.depth": 2}])
    assert "hidden layers" in key_label("model.depth", both) and "blocks" in key_label("model.depth", both)
    assert "hidden layers" not in key_label("model.depth", only)


def test_a_choice_key_is_named_by_its_group():
    from gradflow.plots.labels import short_key, value_label

    assert short_key("init.name") == "init" and short_key("norm.name") == "norm"
    assert value_label("norm.name", "batchnorm") == "norm=batchnorm"


def test_many_numeric_values_over_decades_get_a_log_colour_scale():
    from matplotlib.colors import LogNorm

    from gradflow.plots.style import Palette

    lrs = np.geomspace(1e-4, 1e-2, 13)  # more than 12 values (a continuous scale), two decades
    pal = Palette(pd.DataFrame({"optim.lr": lrs}), "optim.lr")
    assert isinstance(pal.mappable.norm, LogNorm)
    # evenly spread over the scale: the middle value sits mid-way
    assert abs(pal.mappable.norm(float(lrs[6])) - 0.5) < 1e-9


def test_colorbar_ticks_are_labelled_with_the_value_of_their_colour():
    from gradflow.plots.style import Palette

    df = pd.DataFrame({"model.depth": [2, 5, 10, 20]})
    pal = Palette(df, "model.depth")
    assert pal.ticks is not None
    for tick, text in zip(pal.ticks, pal.tick_labels):
        [value] = [d for d in df["model.depth"] if str(d) == text]
        assert np.allclose(pal.mappable.to_rgba(tick), pal.color_of({"model.depth": value})), text


def test_each_line_style_has_its_own_marker():
    from gradflow.plots.style import LINE_STYLES, marker_of

    markers = [marker_of(ls) for ls in LINE_STYLES]
    assert len(set(markers)) == len(LINE_STYLES), markers


def test_curves_of_an_lr_sweep_whose_runs_diverged_early_keep_a_linear_step_axis(tmp_path):
    # runs evaluated every 10 steps, six of them diverging at steps 4, 5, 6, 7, 9 and 16: the steps of all runs
    # together (0, 4, 5, 6, 7, 9, 10, 16, 20, ...) read as log-spaced once is_log_spaced took 4x growth of the gaps,
    # and the curves went on a symlog step axis
    from typer.testing import CliRunner

    import gradflow
    from gradflow.cli import app
    from gradflow.plots.style import is_log_spaced

    out = CliRunner().invoke(app, ["sweep", "data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8",
                                   "model.width=8", "model.depth=2", "train.batch_size=32", "train.steps=100",
                                   "train.eval_every=10", "optim.momentum=0", "model.activation=linear",
                                   "optim.lr=0.05,1.5,2.2,3,4,8,30", f"results={tmp_path}", "--name", "lrs"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    metrics = gradflow.load(tmp_path / "lrs", "metrics")
    assert is_log_spaced(metrics["step"].unique()), sorted(metrics["step"].unique())  # (what the axis was judged on)
    fig = figures.curves(metrics)
    bottom = [ax for ax in fig.axes if ax.get_xlabel()]
    assert bottom and all(ax.get_xscale() == "linear" and ax.get_xlabel() == "training step" for ax in bottom)
    assert all(ax.get_xlim() == (0.0, 100.0) for ax in bottom), [ax.get_xlim() for ax in bottom]


def test_a_long_title_note_with_mathtext_breaks_between_words_not_inside_the_snippet():
    # a note longer than the figure is wide was broken between its words only where it held no `$`: one that
    # held a mathtext snippet ran past both edges; a double space left a line ending in a space
    import matplotlib.pyplot as plt

    from gradflow.plots.labels import _visible_len, set_title

    fig = plt.figure(figsize=(6, 4))
    width = int(fig.get_figwidth() * 13)
    df = pd.DataFrame({"run": ["a"], "status": ["ok"]})
    note = r"$\chi_1 = 1$ at $\sigma_w^2$ = 2 for the runs " + "that ran far past the edge of the figure " * 4
    set_title(fig, "What", df, [note])
    lines = fig.get_suptitle().splitlines()[1:]
    assert len(lines) > 1 and max(_visible_len(line) for line in lines) <= width, lines
    assert r"$\chi_1 = 1$" in lines[0] and " ".join(" ".join(lines).split()) == " ".join(note.split())
    set_title(fig, "What", df, ["words  apart " * 12])
    assert not [line for line in fig.get_suptitle().splitlines() if line != line.strip()], fig.get_suptitle()
    plt.close(fig)


def test_spread_apart_moves_labels_as_little_as_their_gaps_and_bounds_allow():
    # end-of-line labels (gradnorm's clipped shares): each kept `gap` from the next, in order, inside [lo, hi],
    # the least total squared move; checked against a general solver on random ends, crowded and not
    from scipy.optimize import minimize

    from gradflow.plots.style import spread_apart

    rng = np.random.default_rng(0)
    for case in range(40):
        n = int(rng.integers(1, 7))
        want = np.sort(rng.uniform(0, 60 if case % 2 else 200, n))
        gap, lo, hi = 15.0, (-np.inf if case % 3 else 5.0), (np.inf if case % 4 else 90.0)
        got = spread_apart(want, gap, lo, hi)
        assert np.all(np.diff(got) >= gap - 1e-9) and np.all(got >= lo - 1e-9) and np.all(got <= hi + 1e-9)
        cons = [{"type": "ineq", "fun": lambda c, i=i: c[i + 1] - c[i] - gap} for i in range(n - 1)]
        bounds = [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi)] * n
        best = minimize(lambda c: np.sum((c - want) ** 2), np.clip(want, max(lo, -1e9), min(hi, 1e9)),
                        method="SLSQP", constraints=cons, bounds=bounds, options={"ftol": 1e-12, "maxiter": 500})
        assert np.sum((got - want) ** 2) <= best.fun * (1 + 1e-7) + 1e-6, (want, got, best.x)
        if np.all(np.diff(want) >= gap) and np.all((want >= lo) & (want <= hi)):
            assert got == pytest.approx(want)  # (none collides: none moves)
    # two that collide move apart evenly about their middle
    assert spread_apart([10.0, 12.0], 15.0) == pytest.approx([3.5, 18.5])


def test_readable_keeps_a_colours_hue_and_darkens_it_until_it_reads_on_white():
    from matplotlib.colors import to_rgb

    from gradflow.plots.style import READABLE_CONTRAST, readable

    def contrast(c):
        lin = np.where(np.array(c) <= 0.04045, np.array(c) / 12.92, ((np.array(c) + 0.055) / 1.055) ** 2.4)
        return 1.05 / (lin @ [0.2126, 0.7152, 0.0722] + 0.05)

    for c in [colormaps["viridis"](t) for t in np.linspace(0, 0.88, 6)] + ["tab:orange", "tab:blue", "0.1"]:
        rgb, got = np.array(to_rgb(c)), np.array(readable(c))
        assert contrast(got) >= READABLE_CONTRAST - 1e-3
        assert got == pytest.approx(rgb * (got @ rgb) / (rgb @ rgb), abs=1e-9)  # (the same hue, scaled)
        if contrast(rgb) >= READABLE_CONTRAST:
            assert got == pytest.approx(rgb)  # (a colour that reads is kept)
        else:
            assert contrast(got) <= READABLE_CONTRAST + 0.05  # (darkened no further than it needs)


def test_the_panel_over_a_removed_one_labels_the_shared_x_axis():
    # 5 panels in 2 x 3: the third, the lowest of its column, is an inner panel of the shared axes, and its
    # steps (gradnorm) or layers (profile) had no tick labels under it
    cfgs = [config(4, "tanh", 1, **{"init.name": "kaiming_normal", "model.width": w}) for w in (8, 16, 32, 64, 128)]
    layers, metrics, _ = fabricate(cfgs)
    for fig in (figures.gradnorm(metrics.assign(split="opt", metric="grad_norm"), facet="model.width"),
                figures.profile(layers, "grad_norm", step=0, facet="model.width")):
        fig.canvas.draw()
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert len(panels) == 5, [ax.get_title() for ax in fig.axes]
        for ax in panels:
            row = ax.get_subplotspec().rowspan.start
            shown = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
            lowest = row == 1 or ax.get_subplotspec().colspan.start == 2
            assert bool(shown) == lowest, (ax.get_title(), shown)


def test_a_run_is_picked_by_a_choice_under_the_name_ls_heads_it_with():
    # ls heads model.name as "model": --run model=tx said "is not a run", while --run name=tx picked it
    from gradflow.plots.series import runs_by_config

    df = pd.DataFrame({"run": ["a", "b"], "model.name": ["tx", "mlp"], "model.depth": [2, 2]})
    assert runs_by_config("model=tx", df) == ["a"] and runs_by_config("name=mlp", df) == ["b"]
    assert runs_by_config("model.name=tx", df) == ["a"] and runs_by_config("model=cnn", df) == []


def test_a_tall_legend_makes_the_figure_taller_rather_than_running_into_the_title(tmp_path):
    """Six families' runs in one folder, each named by its overrides over three or four lines: the legend,
    centred beside the panel, was taller than the figure and its title ran into the figure's title."""
    from matplotlib.lines import Line2D

    from gradflow.plots.save import save
    from gradflow.plots.style import legend, new_figure

    fig, axes = new_figure()
    axes[0, 0].plot([0, 1], [0, 1])
    fig.suptitle("Back-propagated signal norm per layer\nseed 0; step 0 (initialization)")
    names = [f"data.T=6,data=adding,model.activation=relu,model.hidden={8 + i},model.recurrent_init=identity,"
             f"model=rnn,optim.lr=0.01,model.forget_bias=1,train.batch_size=16,train.steps=3" for i in range(7)]
    legend(fig, [Line2D([], [], label=n) for n in names], title="run")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    save(fig, tmp_path / "tall.png")  # (as saved)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (leg,) = fig.legends
    top, title = leg.get_window_extent(renderer), fig._suptitle.get_window_extent(renderer)
    assert top.y1 <= title.y0 + 1, (top, title)  # (pixels)


def test_lines_of_different_seed_counts_say_the_range_in_the_legend():
    # two folders compared, of 2 and of 4 seeds: the legend said "median of 4" of every line
    cs = [config(2, "tanh", seed) for seed in (1, 2)] + [config(4, "tanh", seed) for seed in (1, 2, 3, 4)]
    layers, _, _ = fabricate([c | {"run": run_id(c, ("model.depth", "seed"))} for c in cs], steps=(0, 20))
    assert "min-max over seeds\n(line: median of 2-4)" in legend_texts(figures.profile(layers, step=0))
    assert "min-max over seeds\n(line: median of 2)" in legend_texts(figures.profile(layers[layers["model.depth"] == 2],
                                                                                       step=0))


def test_a_panel_whose_every_value_is_zero_on_a_log_axis_says_so_not_nan():
    # a ReLU net whose hidden weight gradients are all exactly 0 at the end: the panel read "no finite values
    # to draw (all NaN/inf)" beside the legend's "<= 0, off the log axis"
    layers = fabricate([config(5, "relu", 0)])[0]
    layers.loc[layers["quantity"] == "grad_norm", "value"] = 0.0
    fig = figures.profile(layers, "grad_norm", step="last")
    notes = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "note"]
    assert notes == ["every value <= 0, off the log axis\n(see the marks at the bottom edge)"], notes
    assert lines_with(fig, "offscale")


def test_the_marker_goes_to_the_key_after_which_the_other_keys_fit_the_panels():
    # keys of 2, 4 and 3 values beyond colour and line style, 9 panels at most: the 2-valued one (the fewest
    # values) took the marker, leaving 4 x 3 = 12 combinations, too many for panels, so those lines were drawn
    # alike; the 3-valued one leaves 2 x 4 = 8, which fit
    from gradflow.plots.style import marker_key

    df = pd.DataFrame([{"k1": a, "k2": b, "k3": c} for a in range(2) for b in range(4) for c in range(3)])
    assert marker_key(df, None, ["k1", "k2", "k3"], 9) == "k3"


def test_one_figure_of_several_takes_a_colour_key_its_own_runs_share(sweep):
    """`plot FOLDER --kind curves --color lr` over a folder of sweeps is drawn a figure per value of a key left
    over, and a figure whose runs share one lr refused it: "color='optim.lr' is not a swept key of this data;
    choices: model.depth". The command checks the key against all the runs; one figure of them takes it."""
    from gradflow.plots.kinds import _part_of

    layers, metrics, _ = sweep
    fig = figures.curves(_part_of(metrics[metrics["model.activation"] == "tanh"]), color="model.activation")
    assert any("tanh" in t for t in legend_texts(fig)), legend_texts(fig)
    figures.profile(_part_of(layers[layers["model.activation"] == "relu"]), color="model.activation")
    # called by itself, a key its runs do not vary in is still refused, as the command refuses it
    with pytest.raises(GradflowError, match="not a swept key"):
        figures.curves(metrics[metrics["model.activation"] == "tanh"], color="model.activation")


def test_a_depth_without_a_ratio_breaks_its_line(sweep):
    """A depth whose runs have no ratio (0 / 0: every gradient exactly 0) is left out of the figure, and the line
    of its group ran straight across it, from the depth before to the one after, read as values between."""
    _, _, runs = sweep
    gone = (runs["model.activation"] == "tanh") & (runs["model.depth"] == 10)
    fig = figures.ratio(runs.assign(**{"grad_ratio.init": runs["grad_ratio.init"].where(~gone)}), "init")
    lines = [ln for ln in series_lines(fig.axes[0]) if "tanh" in ln.get_gid()]
    assert lines
    for tanh in lines:  # (a line per seed here)
        x, y = np.asarray(tanh.get_xdata(), dtype=float), np.asarray(tanh.get_ydata(), dtype=float)
        assert list(x) == [5, 10, 20] and np.isnan(y[1]) and np.isfinite(y[[0, 2]]).all(), (x, y)
    assert "not drawn: no ratio" in fig.get_suptitle()
