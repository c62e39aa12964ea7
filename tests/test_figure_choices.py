"""What a study's figures and report page choose, on hand-made tables: the grid's cells, title and colour
scale, the curves' axes, the gradient-norm figure's shares and marks, which figures the standard set plans,
and the report page's notes and verdicts. Each comment says what went wrong where the choice was off."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest


def cfg(depth=10, activation="tanh", seed=1, **over):
    """One run's flattened config, as tests/test_plots.py's `config` builds it."""
    c = {"model.name": "mlp", "model.depth": depth, "model.width": 64, "model.activation": activation,
         "model.skip": "none", "init.name": "meanfield", "init.sw2": 1.0, "init.sb2": 0.05,
         "norm.name": "none", "data.name": "gaussian", "optim.name": "sgd", "optim.lr": 0.05, "seed": seed}
    return c | over


def grid_table(sw2s=(1.0, 1.5, 2.0), depths=(5, 10, 20), seeds=(1, 2), value=lambda sw2, d, s: 0.5 + 0.01 * s,
               skip=()):
    """A runs table over init.sw2 x model.depth x seed; `skip` holds (sw2, depth, seed) left out."""
    rows = []
    for sw2 in sw2s:
        for d in depths:
            for s in seeds:
                if (sw2, d, s) in skip:
                    continue
                c = cfg(d, "tanh", s, **{"init.sw2": sw2})
                rows.append({"run": f"init.sw2={sw2},model.depth={d},seed={s}", "source": "grid", "status": "ok",
                             "final.test_acc": value(sw2, d, s)} | c)
    return pd.DataFrame(rows)


def grid_mesh(fig):
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() == "grid"]
    return mesh


# --- curves.py ---------------------------------------------------------------------------------------
# the grid's title counted the seeds of the thinnest cell (.min()) instead of the fullest (.max())
def test_grid_title_counts_the_seeds_of_the_fullest_cell():
    from gradflow.plots.curves import grid

    fig = grid(grid_table(skip={(1.0, 5, 2)}), "init.sw2", "model.depth")
    assert "2 seeds per cell" in fig.get_suptitle()


def metrics_table(runs, steps=(0, 10, 20, 30), loss=lambda c, step: 2.0 * math.exp(-step / 20),
                  acc=lambda c, step: 0.1 + 0.02 * step, extra=None):
    """A metrics table (train and test loss/acc) for `runs`: [(run, config, status)]; extra(c, step) gives
    further rows' {split, metric, value} dicts (opt/grad_norm, opt/clipped)."""
    rows = []
    for run, c, status in runs:
        meta = {"run": run, "source": "sweep", "status": status} | c
        for step in steps:
            for split in ("train", "test"):
                rows.append(meta | {"step": step, "split": split, "metric": "loss", "value": loss(c, step)})
                rows.append(meta | {"step": step, "split": split, "metric": "acc", "value": acc(c, step)})
            for r in (extra(c, step) if extra else []):
                rows.append(meta | {"step": step} | r)
    return pd.DataFrame(rows)


# the log axis was chosen for any metric spanning two decades, not for the loss alone (accuracy went log)
def test_accuracy_axis_stays_linear_when_it_spans_decades():
    from gradflow.plots.curves import curves

    runs = [(f"model.depth={d}", cfg(d), "ok") for d in (5, 10)]
    fig = curves(metrics_table(runs, acc=lambda c, step: 0.001 * 10 ** (step / 10)))  # 0.001 .. 1
    acc_ax = fig.axes[2]  # rows loss | acc, columns train | test
    assert "accuracy" in acc_ax.get_ylabel()
    assert acc_ax.get_yscale() == "linear"


# one evaluation's spike (a loss of 40 beside runs at 2-2.4) kept a linear loss axis and flattened every curve
def test_a_loss_spike_puts_the_loss_axis_on_a_log_scale():
    from gradflow.plots.curves import curves

    runs = [(f"model.depth={d}", cfg(d), "ok") for d in (5, 10)]
    steps = tuple(range(0, 200, 10))
    calm = curves(metrics_table(runs, steps, loss=lambda c, step: 2.0 + 0.4 * step / 200))
    assert calm.axes[0].get_yscale() == "linear"  # 2-2.4: a linear axis reads it
    spiky = curves(metrics_table(runs, steps, loss=lambda c, step: 40.0 if (c["model.depth"], step) == (10, 100)
                                 else 2.0 + 0.4 * step / 200))
    assert spiky.axes[0].get_yscale() == "log" and spiky.axes[2].get_yscale() == "linear"  # (accuracy stays)
    assert spiky.axes[0].get_ylabel() == "loss (log)"


# a run shorter than its evaluation interval (train.eval_every 100, the default, over 60 steps) was drawn a straight
# line from step 0 to its last, which read as a curve, without a word why
def test_curves_of_two_evaluations_each_say_to_lower_eval_every():
    from gradflow.plots.curves import curves

    runs = [(f"model.depth={d}", cfg(d, **{"train.eval_every": 100, "train.steps": 60}), "ok") for d in (5, 10)]
    title = " ".join(curves(metrics_table(runs, steps=(0, 60))).get_suptitle().split())
    assert "evaluated at the first and last step alone: lower train.eval_every" in title, title
    # not where lowering it cannot help: one step, or evaluated at every step already
    for every, steps in ((100, 1), (1, 1)):
        one = [(r, c | {"train.eval_every": every, "train.steps": steps}, st) for r, c, st in runs]
        assert "eval_every" not in curves(metrics_table(one, steps=(0, 1))).get_suptitle()
    for table in (metrics_table(runs), metrics_table([(r, {k: v for k, v in c.items() if k != "train.eval_every"}, st)
                                                      for r, c, st in runs], steps=(0, 60))):  # (a Recorder's loop)
        assert "eval_every" not in curves(table).get_suptitle()


# a depth-4 net's chi1 cell (too few layers to fit) was explained as "no finite value", read as a NaN or divergence
def test_a_grid_cell_without_a_value_is_said_to_be_unmeasured():
    from gradflow.plots.curves import grid

    table = grid_table(value=lambda sw2, d, s: math.nan if d == 5 else 0.5).rename(
        columns={"final.test_acc": "chi1.measured"})
    texts = [t.get_text() for lg in grid(table, "init.sw2", "model.depth", value="chi1.measured").legends
             for t in lg.get_texts()]
    assert "n/a: no value (not measured,\ne.g. too few layers to fit chi1)" in texts, texts
    texts = [t.get_text() for lg in grid(grid_table(value=lambda sw2, d, s: math.nan if d == 5 else 0.5),
                                         "init.sw2", "model.depth").legends for t in lg.get_texts()]
    assert "n/a: no value (not measured)" in texts, texts


# a grid cell took the median of its seeds, not their mean
def test_grid_cell_is_the_mean_of_three_seeds_not_their_median():
    from gradflow.plots.curves import grid

    spread = {1: 0.1, 2: 0.2, 3: 0.9}
    fig = grid(grid_table(seeds=(1, 2, 3), value=lambda sw2, d, s: spread[s]), "init.sw2", "model.depth")
    np.testing.assert_allclose(grid_mesh(fig).get_array(), 0.4)


# cells were labelled only below 80 cells (< 80), where the limit is 80 inclusive
def test_a_grid_of_exactly_80_cells_is_still_labelled():
    from gradflow.plots.curves import grid

    sw2s = tuple(np.round(np.linspace(1.0, 2.4, 8), 2))
    depths = tuple(range(2, 22, 2))  # 10 evenly spaced depths
    fig = grid(grid_table(sw2s, depths, seeds=(1,)), "init.sw2", "model.depth")
    assert len([t for t in fig.axes[0].texts if t.get_gid() == "cell"]) == 80


# a centred colour scale took its half-width from the largest value only, clipping values far below centre
def test_a_centred_colour_scale_reaches_the_value_furthest_below_its_centre():
    from gradflow.plots.curves import grid

    # grad_ratio.init, shown as log10: from -6 (1e-6) to +1 (10)
    table = grid_table(value=lambda sw2, d, s: 0.0)
    table["grad_ratio.init"] = np.where(table["init.sw2"] == 1.0, 1e-6, 10.0)
    mesh = grid_mesh(grid(table, "init.sw2", "model.depth", "grad_ratio.init"))
    assert mesh.norm.vmin == pytest.approx(-6) and mesh.norm.vmax == pytest.approx(6)


# --- gradnorm.py -------------------------------------------------------------------------------------
def clip_metrics(clips, seeds=(1,), clipped=lambda run, step: 3, status=lambda clip, seed: "ok",
                 eval_every=10.0, steps=(10, 20, 30)):
    """opt/grad_norm and opt/clipped rows (and train loss) of runs swept over train.grad_clip x seed."""
    rows = []
    for clip in clips:
        for seed in seeds:
            run = f"train.grad_clip={clip},seed={seed}"
            meta = {"run": run, "source": "clip", "status": status(clip, seed)} | cfg(
                3, seed=seed, **{"train.grad_clip": clip, "train.eval_every": eval_every})
            for step in steps:
                rows += [meta | {"step": step, "split": "opt", "metric": "grad_norm", "value": 2.0 + step / 10},
                         meta | {"step": step, "split": "opt", "metric": "clipped", "value": clipped(run, step)},
                         meta | {"step": step, "split": "train", "metric": "loss", "value": 1.0}]
    return pd.DataFrame(rows)


def shares_written(fig) -> pd.DataFrame:
    return fig.data.get("clipped", pd.DataFrame(columns=["line", "share"]))


# shares were written beside at most 5 clipping lines (< MOST_SHARES), where 6 is still few enough
def test_six_clipping_lines_each_get_their_share_written():
    from gradflow.plots.gradnorm import MOST_SHARES, gradnorm

    clips = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)[:MOST_SHARES]
    fig = gradnorm(clip_metrics(clips))
    assert len(shares_written(fig)) == MOST_SHARES == 6


# a line over several seeds gave its seeds' largest clipped share, not their mean
def test_a_lines_clipped_share_is_the_mean_over_its_seeds():
    from gradflow.plots.gradnorm import gradnorm

    # 30 updates each: seed 1 clipped 2 + 2 + 2 = 6 (20%), seed 2 clipped 6 + 6 + 6 = 18 (60%)
    fig = gradnorm(clip_metrics((1.0, 2.0), seeds=(1, 2), clipped=lambda run, step: 2 if "seed=1" in run else 6))
    written = shares_written(fig)
    assert len(written) == 2
    np.testing.assert_allclose(written["share"].to_numpy(), 0.4)


# a run that diverged before its first window was logged lost its mark (the `~` of the filter dropped)
def test_a_run_that_diverged_before_its_first_window_still_gets_a_line():
    from gradflow.plots.gradnorm import gradnorm

    table = clip_metrics((1.0, 0.0), status=lambda clip, seed: "diverged" if clip == 0.0 else "ok")
    early = "train.grad_clip=0.0,seed=1"
    # the early run diverged at step 5, before the first window (step 10): a train row at 5, no norms
    table = table[(table["run"] != early) | ((table["split"] == "train") & (table["step"] == 10))]
    table.loc[table["run"] == early, "step"] = 5
    lines = gradnorm(table).data["lines"]
    assert any(str(line).startswith(early) for line in lines["line"].unique())


# the y label said "mean over each evaluation window" where some runs (a Recorder's) have no windows
def test_the_gradnorm_label_says_windows_only_where_every_run_has_them():
    from gradflow.plots.gradnorm import gradnorm

    table = clip_metrics((1.0, 2.0))
    table.loc[table["train.grad_clip"] == 2.0, "train.eval_every"] = np.nan
    label = gradnorm(table).axes[0].get_ylabel()
    assert "as the loop logged it" in label and "window" not in label


# compare of two folders evaluated at different intervals (compare drops train.eval_every, a key of each source):
# gradflow's own runs were labelled as a Recorder's, "opt_grad_norm as the loop logged it"
def test_the_gradnorm_label_of_a_comparison_reads_each_sources_evaluation_interval():
    from gradflow.plots.gradnorm import gradnorm

    a, b = clip_metrics((1.0,), eval_every=10.0).assign(source="a"), clip_metrics((1.0,), eval_every=5.0).assign(
        source="b")
    table = pd.concat([a, b], ignore_index=True).drop(columns="train.eval_every")
    table["run"] = table["source"] + "/" + table["run"]
    table.attrs["source_keys"] = {"a": {"train.eval_every": 10.0}, "b": {"train.eval_every": 5.0}}
    label = gradnorm(table, by_source=True).axes[0].get_ylabel()
    assert "mean over each evaluation window" in label and "as the loop logged it" not in label, label
    table.attrs["source_keys"] = {"a": {"train.eval_every": 10.0}, "b": {"train.eval_every": None}}  # a Recorder's
    assert "as the loop logged it" in gradnorm(table, by_source=True).axes[0].get_ylabel()


# the threshold line takes its runs' colour: viridis's top, a pale lime, was near invisible on white
def test_a_light_clip_threshold_line_is_outlined():
    from matplotlib.colors import to_rgb

    from gradflow.plots.gradnorm import gradnorm

    ax = gradnorm(clip_metrics((0.0, 1.0))).axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == "threshold"]
    r, g, b = to_rgb(line.get_color())
    assert 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.7 and line.get_path_effects(), line.get_color()


# a run that diverged at step 2, before its first window (train.eval_every=10) ended: the error said the norm is
# logged by `gradflow run` with train.steps > 0, which this run was
def test_gradnorm_of_runs_that_all_diverged_before_a_window_says_so():
    from gradflow.errors import GradflowError
    from gradflow.plots.gradnorm import gradnorm

    table = clip_metrics((0.0,), status=lambda clip, seed: "diverged")
    table = table[table["split"] != "opt"]
    with pytest.raises(GradflowError, match=r"^every run diverged before its first evaluation window ended "
                                            r"\(train.eval_every=10\), so no gradient norm was logged: lower "
                                            r"train.eval_every to see it rise$"):
        gradnorm(table)
    with pytest.raises(GradflowError, match=r"rec.log\(step, opt_grad_norm=norm\)"):  # a Recorder's: no window
        gradnorm(table.drop(columns="train.eval_every"))


# runs that do not clip got a clipped share too (the clipping filter dropped)
def test_clipped_shares_leave_out_runs_that_do_not_clip():
    from gradflow.plots.gradnorm import clipped_shares

    shares = clipped_shares(clip_metrics((0.0, 1.0), clipped=lambda run, step: 1))
    assert list(shares.index) == ["train.grad_clip=1.0,seed=1"]
    assert shares.iloc[0] == pytest.approx(0.1)


# a clip threshold of 0 (off) read as clipping (> 0 became >= 0)
def test_a_threshold_of_zero_is_no_clipping():
    from gradflow.plots.gradnorm import clipping

    df = pd.DataFrame({"train.grad_clip": [0.0, 1.0, np.nan], "train.clip_value": [0.0, 0.0, np.nan]})
    assert clipping(df).tolist() == [False, True, False]


# --- standard.py -------------------------------------------------------------------------------------
def planned_names(**tables):
    from gradflow.plots.standard import plan

    return [p.name for p in plan(tables.get("layers"), tables.get("metrics"), tables.get("runs"),
                                 tables.get("hists"), tables.get("jacobian"))]


def layer_table(runs, steps=(0, 10), quantities=("grad_norm", "signal_norm")):
    """A layers table for [(run, config)]: value 0.1 * 0.8 ** (depth - layer) at every probed layer."""
    rows = []
    for run, c in runs:
        d = c["model.depth"]
        for step in steps:
            for q in quantities:
                for layer in range(d + 1):
                    rows.append({"run": run, "source": "sweep", "status": "ok", "step": step, "layer": layer,
                                 "name": f"linear{layer}", "quantity": q, "value": 0.1 * 0.8 ** (d - layer)} | c)
    return pd.DataFrame(rows)


# every run's histograms got a last-step figure, where only a single run's do (hist-last-RUN for a sweep)
def test_hist_at_the_last_step_is_planned_for_one_run_only():
    hists = pd.DataFrame({"run": ["a", "a", "b", "b"], "step": [0, 10, 0, 10]})
    names = planned_names(hists=hists)
    assert names == ["hist-step0-a", "hist-step0-b"]
    assert planned_names(hists=hists[hists["run"] == "a"]) == ["hist-step0", "hist-last"]


# the gradient-norm figure was planned only where a run clips, not where one diverged unclipped
def test_gradnorm_is_planned_where_a_run_diverged_without_clipping():
    table = clip_metrics((0.0,), seeds=(1, 2), status=lambda clip, seed: "diverged" if seed == 2 else "ok")
    assert "gradnorm" in planned_names(metrics=table)
    assert "gradnorm" not in planned_names(metrics=table.assign(status="ok"))


# a run that diverged before its first evaluation window ended logs no opt/grad_norm (its mark alone is drawn), so a
# sweep whose only diverged run was such a one, none clipping, left the figure out (a relu sweep, eval_every=20)
def test_gradnorm_is_planned_where_a_run_diverged_before_its_first_window():
    from gradflow.plots.gradnorm import gradnorm

    fine = clip_metrics((0.0,), seeds=(1,))
    meta = {"run": "train.grad_clip=0.0,seed=2", "source": "clip", "status": "diverged"} | cfg(
        3, seed=2, **{"train.grad_clip": 0.0, "train.eval_every": 10.0})
    early = pd.DataFrame([meta | {"step": 0, "split": "train", "metric": "loss", "value": 400.0},
                          meta | {"step": 3, "split": "diverged", "metric": "loss", "value": float("nan")},
                          meta | {"step": 3, "split": "diverged", "metric": "grad_norm", "value": float("nan")}])
    table = pd.concat([fine, early], ignore_index=True)
    assert "gradnorm" not in planned_names(metrics=fine)
    assert "gradnorm" in planned_names(metrics=table)
    assert "diverged before its first evaluation window ended" in " ".join(gradnorm(table).get_suptitle().split())
    # no run logged the norm at all: nothing to draw a line of, so still no figure
    assert "gradnorm" not in planned_names(metrics=early)


# a grid with one further (non-numeric) swept key was dropped instead of getting a panel per its value
def test_a_grid_with_a_third_swept_key_is_planned_with_it_as_facet():
    from gradflow.plots.standard import plan

    table = pd.concat([grid_table(seeds=(1,)).assign(**{"model.activation": a, "run": lambda t, a=a: t["run"] + a})
                       for a in ("tanh", "relu")], ignore_index=True)
    grids = [p for p in plan(None, None, table) if p.name.startswith("grid")]
    assert [p.name for p in grids] == ["grid-final.test_acc-init.sw2-model.depth"]
    assert grids[0].kwargs["facet"] == "model.activation"


def left_out(layers, metrics=None) -> tuple[list[str], list[str]]:
    """The standard set planned for these tables, and its lines for the figures it leaves out."""
    from gradflow.plots.standard import left_out_lines, plan

    skipped = []
    names = [p.name for p in plan(layers, metrics, None, left_out=skipped)]
    return names, left_out_lines(skipped)


def one_run_metrics(steps):
    return pd.DataFrame([{"run": "r", "source": "rec", "status": "ok", "step": s, "split": "train", "metric": "loss",
                          "value": 1.0} for s in steps])


# a Recorder's run of a frozen backbone (requires_grad=False but the head) drew its curves alone, the profiles and
# the heatmap left out without a word: its gradients are at the head alone, its frozen layers' masked
def test_the_figures_a_run_cannot_make_are_each_said_with_why():
    full = layer_table([("r", cfg(2))], steps=(0, 10, 20), quantities=("grad_norm", "signal_norm", "weight_norm"))
    metrics = one_run_metrics((0, 10, 20))
    names, lines = left_out(full, metrics)
    assert names == ["profile-grad_norm-step0", "profile-grad_norm-last", "profile-signal_norm-step0",
                     "profile-signal_norm-last", "heatmap-grad_norm", "curves"] and lines == []
    frozen = full[(full.quantity == "weight_norm") | (full.layer == 2)]  # the head alone has gradients
    names, lines = left_out(frozen, metrics)
    assert names == ["curves"] and lines == ["profile-*, heatmap not drawn: only layer 2 has a value (0-1 frozen)"]
    # a layer without a weight (no weight norm either) is no frozen one
    names, lines = left_out(frozen[frozen.layer != 1], metrics)
    assert lines == ["profile-*, heatmap not drawn: only layer 2 has a value (0 frozen)"]
    # one probed layer: a linear model
    names, lines = left_out(full[full.layer == 0], metrics)
    assert names == ["curves"] and lines == ["profile-*, heatmap not drawn: one probed layer (0); a profile needs two"]
    # step 0 alone: train.steps=0, or a Recorder's one step
    names, lines = left_out(full[full.step == 0], metrics[metrics.step == 0])
    assert names == ["profile-grad_norm-step0", "profile-signal_norm-step0"]
    assert lines == ["profile-*-last, heatmap, curves not drawn: step 0 alone recorded"]
    # a loop that counts from 1 has no step 0; one that logs nothing has no curves
    names, lines = left_out(full[full.step > 0], None)
    assert names == ["profile-grad_norm-last", "profile-signal_norm-last", "heatmap-grad_norm"]
    assert lines == ["profile-*-step0 not drawn: step 0 not probed (the first is 10)",
                     "curves not drawn: no loss or accuracy logged"]
    # the weight gradient at one point, the signal at every one: the signal's figures drawn; a recurrent net's time
    # steps share its weights (no weight norm of their own: none is called frozen)
    one = full[(full.quantity != "grad_norm") | (full.layer == 2)]
    names, lines = left_out(one, metrics)
    assert "profile-signal_norm-last" in names and "heatmap-signal_norm" in names
    assert lines == ["profile-grad_norm not drawn: only layer 2 has a value (0-1 frozen)"]
    lstm = one[(one.quantity != "weight_norm") | (one.layer == 2)].assign(**{"model.name": "lstm", "model.recurrent_init": "orthogonal"})
    assert left_out(lstm, metrics)[1] == []  # (one point by design: said on every plot of every recurrent run)
    # the signal at one point: said as the signal's
    names, lines = left_out(full[(full.quantity != "signal_norm") | (full.layer == 2)], metrics)
    assert lines == ["profile-signal_norm not drawn: only layer 2 has a value"], lines


# the depth ratio was planned from the runs table's depths, where an incomplete run (not in the layers)
# gave a second depth that the layers do not have
def test_no_depth_ratio_where_only_an_incomplete_run_has_another_depth():
    probed = [("model.depth=5,seed=1", cfg(5, seed=1)), ("model.depth=5,seed=2", cfg(5, seed=2))]
    runs = pd.DataFrame([{"run": r, "source": "sweep", "status": "ok"} | c for r, c in probed]
                        + [{"run": "model.depth=10,seed=1", "source": "sweep", "status": "incomplete"} | cfg(10)])
    names = planned_names(layers=layer_table(probed), runs=runs)
    assert not [n for n in names if n.startswith("ratio")], names
    # (with the depth-10 run probed too, both ratios are planned)
    probed.append(("model.depth=10,seed=1", cfg(10)))
    names = planned_names(layers=layer_table(probed), runs=runs.assign(status="ok"))
    assert [n for n in names if n.startswith("ratio")] == ["ratio-init", "ratio-signal_norm-init"]


# the facet of the standard set was the first swept key with few values after the colour, not the last
def test_third_key_is_the_last_swept_key_with_few_values():
    from gradflow.keys import swept_keys
    from gradflow.plots.standard import _third_key

    runs = [(f"r{d}{a}{lr}", cfg(d, a, **{"optim.lr": lr}), "ok")
            for d in (5, 10, 20) for a in ("tanh", "relu") for lr in (0.1, 0.01)]
    table = metrics_table(runs)
    assert swept_keys(table) == ["model.depth", "model.activation", "optim.lr"]
    assert _third_key(table) == "optim.lr"


# model.alpha, read only where model.skip=residual (unset beside model.skip=none), was a third swept key:
# a skip x norm sweep's figures got panels `alpha=1.0` and `alpha not set`, each holding one skip value
def test_a_key_only_some_runs_read_is_no_axis_where_another_key_says_which():
    from gradflow.keys import implied_keys, swept_keys
    from gradflow.plots.standard import _third_key

    def table(alphas, runs=None):
        rows = [(f"r{skip}{norm}{i}", cfg(5, **{"model.skip": skip, "norm.name": norm, "model.alpha": alpha}), "ok")
                for skip in ("none", "residual") for norm in ("none", "batchnorm")
                for i, alpha in enumerate(alphas if skip == "residual" else [math.nan])]
        return metrics_table(rows)

    read = table([1.0])
    assert swept_keys(read) == ["model.skip", "norm.name"] and _third_key(read) is None
    assert implied_keys(read, swept_keys(read, implied=True)) == {"model.alpha": "model.skip"}
    # two values where it is read: an axis of its own (the facet)
    swept = table([0.5, 1.0])
    assert set(swept_keys(swept)) == {"model.skip", "model.alpha", "norm.name"}
    # unset in runs that no other key tells apart: no key says which runs read it
    odd = read.copy()
    odd.loc[odd["run"] == "rresidualnone0", "model.alpha"] = math.nan
    assert "model.alpha" in swept_keys(odd)
    # two runs of a folder, each its own depth: the depth splits them as trivially as the skip does; the key
    # that decides it is named (ls said "as each depth choice sets them: alpha"), and of keys gradflow does not
    # know, one with a new value in every run says nothing
    two = pd.DataFrame([cfg(2, **{"model.skip": "residual", "model.alpha": 1.0, "train.clip": 1.0}),
                        cfg(3, **{"model.skip": "none", "model.alpha": math.nan, "train.clip": math.nan})])
    keys = ["model.depth", "model.skip", "model.alpha", "train.clip"]
    assert implied_keys(two, keys) == {"model.alpha": "model.skip"}
    assert implied_keys(two, ["model.depth", "train.clip"]) == {}
    # a Recorder's lr set by one run alone, at a depth of its own beside 2, 2 and 4: ls said "as each depth
    # choice sets them: lr", of a depth no other run has; at a depth two runs share, both setting it, it is
    four = pd.DataFrame({"model.depth": [2, 2, 3, 4], "lr": [math.nan, math.nan, 0.1, math.nan]})
    assert implied_keys(four, ["model.depth", "lr"]) == {}
    four["model.depth"] = [2, 2, 3, 3]
    assert implied_keys(four.assign(lr=[math.nan, math.nan, 0.1, 0.1]), ["model.depth", "lr"]) == {"lr": "model.depth"}
    # a choice one run makes still sets its own keys: adam's beta2 beside three sgd runs
    optimizers = pd.DataFrame({"optimizer": ["sgd", "sgd", "sgd", "adam"], "lr": [0.1, 0.01, 0.001, 0.001],
                               "beta2": [math.nan, math.nan, math.nan, 0.999]})
    assert implied_keys(optimizers, ["optimizer", "lr", "beta2"]) == {"beta2": "optimizer"}
    # a resnet's norm.eps, read by its batchnorm variant alone: a variant sweep's one run each showed it as an axis
    variants = pd.DataFrame({"model.name": ["resnet"] * 3, "model.variant": ["batchnorm", "fixup", "skipinit"],
                             "norm.eps": [1e-5, math.nan, math.nan]})
    assert implied_keys(variants, ["model.variant", "norm.eps"]) == {"norm.eps": "model.variant"}


# the grid's value was final.test_acc whenever the column existed, even all NaN (final.train_acc has numbers)
def test_grid_falls_back_to_train_accuracy_where_test_accuracy_is_all_missing():
    table = grid_table(seeds=(1,))
    table = table.assign(**{"final.train_acc": table["final.test_acc"], "final.test_acc": np.nan})
    assert "grid-final.train_acc-init.sw2-model.depth" in planned_names(runs=table)


# --- report.py ---------------------------------------------------------------------------------------
def runs_listing(depths=(5, 10), **extra):
    """A runs table as `columns.listing` gives it, by hand: one run per depth, 12 columns shown."""
    return pd.DataFrame([{"run": f"model.depth={d}", "status": "ok", "model.name": "mlp", "model.depth": d,
                          "model.activation": "tanh", "seed": 1, "steps_done": 100, "wall_time": 1.0,
                          "final.train_loss": 0.9, "final.train_acc": 0.6, "final.test_loss": 1.0,
                          "final.test_acc": 0.5, "grad_ratio.init": 0.5, "signal_ratio.init": 0.4,
                          "grad_ratio.final": 0.3, "chi1_measured": 0.9} | extra for d in depths])


# a runs table of exactly WIDE_COLUMNS columns was set small (> became >=)
def test_a_runs_table_of_exactly_wide_columns_is_not_set_smaller():
    from gradflow import columns, report
    from gradflow.keys import swept_keys

    df = runs_listing()
    assert len(columns.table_columns(df, swept_keys(df))) == report.WIDE_COLUMNS == 12
    assert 'id="runs">' in report.runs_html(df, swept_keys(df))
    wider = df.assign(**{"chi1_theory": 1.0})
    assert len(columns.table_columns(wider, swept_keys(wider))) == 13
    assert 'id="runs" class=wide>' in report.runs_html(wider, swept_keys(wider))


# the note explaining a flagged run's "ok*" was dropped from the page
def test_the_runs_table_explains_a_flagged_runs_mark():
    from gradflow import report
    from gradflow.keys import swept_keys

    df = runs_listing()
    df["flags"] = ["learned nothing: test acc at chance", None]
    html = report.runs_html(df, swept_keys(df))
    assert ">ok*<" in html
    assert "finished but flagged: learned nothing (1 run)" in html


# the notes of a non-default scale lost their "(written of the default scale's runs)" (condition flipped)
def test_reproduction_notes_say_they_were_written_of_the_default_scale():
    from gradflow.report import reproduction_html

    smoke = "".join(reproduction_html({"claims": [], "scale": "smoke", "notes": "the ratio falls"}))
    assert "<h2>Notes (written of the default scale's runs)</h2>" in smoke
    default = "".join(reproduction_html({"claims": [], "scale": "default", "notes": "the ratio falls"}))
    assert "<h2>Notes</h2>" in default


# a reproduction with no claims read PASS ("0 of 0 pass") in a folder's list of reproductions
def test_a_reproduction_without_claims_is_no_pass(tmp_path):
    import json

    from gradflow.report import reproductions_html

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "claims.json").write_text(json.dumps({"claims": [], "scale": "smoke"}))
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "claims.json").write_text(json.dumps({"claims": [{"claim": "c", "passed": True}]}))
    html = "".join(reproductions_html(tmp_path))
    assert "1 of 2 reproductions pass" in html
    assert "<td class=FAIL>0 of 0 pass</td>" in html


# the swept note listed keys that take one value (the n_distinct > 1 filter dropped)
def test_the_swept_note_names_only_keys_that_vary():
    from gradflow.report import swept_html

    df = runs_listing().assign(seed=[1, 2])
    (note,) = swept_html(df, ["model.depth"], {})
    assert note == ("<p class=note>Swept: model.depth; the runs also differ in keys a choice sets or only some "
                    "of them have: seed.</p>")


# an rnn-vs-lstm figure's title never said the LSTM's forget-gate bias (3 keeps its memory, PyTorch's 0 does
# not), which explains its line; its legend was titled by the bare key model.name
def test_an_lstms_forget_gate_bias_is_in_the_title_beside_the_rnns_that_lack_it():
    from gradflow.plots.labels import held_fixed, key_label

    def runs(bias):
        return pd.DataFrame([{"run": f"{m}", "model.name": m, "model.hidden": 32, "model.activation": "tanh",
                              "model.recurrent_init": "orthogonal",  # (gradflow's recurrent families have it)
                              "model.forget_bias": bias if m == "lstm" else math.nan} for m in ("rnn", "lstm")])

    assert "lstm forget-gate bias 3" in held_fixed(runs(3.0), skip={"model.name"})
    assert not [i for i in held_fixed(runs(0.0), skip={"model.name"}) if "forget" in i]  # (PyTorch's own)
    both = pd.concat([runs(1.0), runs(3.0)], ignore_index=True)  # swept: its lines say it, not the title
    assert not [i for i in held_fixed(both, skip={"model.name", "model.forget_bias"}) if "forget" in i]
    assert not [i for i in held_fixed(both, skip={"model.name"}) if "forget" in i]  # (two values: no one bias)
    assert key_label("model.name") == "model [model.name]"
    # beside other families (a folder of every family's runs) the title said it as if of every line
    mlp = pd.DataFrame([{"run": "mlp", "model.name": "mlp", "model.activation": "tanh", "model.forget_bias": math.nan}])
    assert not [i for i in held_fixed(pd.concat([runs(3.0), mlp], ignore_index=True), skip={"model.name"})
                if "forget" in i]


# a transformer sweep's figures never said RMSNorm (model.norm_kind=rmsnorm): "pre-LN" alone read as the default
# LayerNorm; nor the stream width, model.d_model, where an MLP's figures say its width
def test_a_transformers_norm_kind_and_stream_width_are_in_the_title():
    from gradflow.plots.labels import held_fixed, key_label

    def runs(kind, ln=("pre", "post")):
        return pd.DataFrame([{"run": f"{v}", "model.name": "transformer", "model.depth": 4, "model.d_model": 32,
                              "model.ln": v, "model.norm_kind": kind, "model.activation": "gelu"} for v in ln])

    assert {"RMSNorm", "d_model 32"} <= set(held_fixed(runs("rmsnorm"), skip={"model.ln"}))
    assert not [i for i in held_fixed(runs("layernorm"), skip={"model.ln"}) if "Norm" in i]  # (the default)
    assert not [i for i in held_fixed(runs("rmsnorm", ln=("none",))) if "Norm" in i]  # (no norm to be one)
    # ln swept over pre and none: the no-norm runs have no RMSNorm, so the title (what every line shares) says none
    assert not [i for i in held_fixed(runs("rmsnorm", ln=("pre", "none")), skip={"model.ln"}) if "Norm" in i]
    kinds = pd.concat([runs("layernorm"), runs("rmsnorm")], ignore_index=True)  # swept: its lines say it
    assert not [i for i in held_fixed(kinds, skip={"model.ln", "model.norm_kind"}) if "Norm" in i]
    assert key_label("model.norm_kind") == "normalization (layernorm or rmsnorm) [model.norm_kind]"
