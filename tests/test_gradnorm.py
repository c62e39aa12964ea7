"""The gradient norm over training (`plot --kind gradnorm`) and the clipped share (`ls`'s `clipped`), from real
tiny runs: Pascanu et al.'s exploding RNN (tanh, recurrent gain 1.5, SGD lr 0.1 with momentum) unclipped, which
diverges within ~30 steps, beside the same net clipped at norm 1; each number checked against the run's own
metrics.parquet, read here with pandas alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from typer.testing import CliRunner

import gradflow
from gradflow import store
from gradflow.plots import figures

CLIP_SWEEP = ["model=rnn", "data=adding", "data.T=10", "data.n_train=512", "data.n_test=64", "model.hidden=32",
              "model.recurrent_init=orthogonal", "model.gain=1.5", "optim=sgd", "optim.lr=0.1", "optim.momentum=0.9",
              "train.steps=60", "train.eval_every=10", "threads=1", "train.grad_clip=0,1"]
PLAIN_SWEEP = ["data=gaussian", "data.n_train=256", "data.n_test=128", "data.dim=16", "model.width=16",
               "model.depth=3,4", "train.steps=4", "train.batch_size=32", "train.eval_every=2", "threads=1"]


def gradflow_cli(*args: str) -> str:
    from gradflow.cli import app

    out = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.output


@pytest.fixture(scope="module")
def clip_sweep(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("gradnorm") / "results"
    gradflow_cli("sweep", *CLIP_SWEEP, f"results={results}", "--name", "clip")
    return results / "clip"


@pytest.fixture(scope="module")
def plain_sweep(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("plain") / "results"
    gradflow_cli("sweep", *PLAIN_SWEEP, f"results={results}", "--name", "plain")
    return results / "plain"


def recorded(sweep: Path, clip: int) -> tuple[pd.DataFrame, dict]:
    """One run's metrics.parquet and run.json, read directly."""
    job = sweep / f"train.grad_clip={clip}"
    return pd.read_parquet(job / store.METRICS_FILE), json.loads((job / store.RUN_FILE).read_text())


def opt_rows(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    return metrics[(metrics["split"] == "opt") & (metrics["metric"] == metric)].sort_values("step")


def test_the_runs_do_what_the_figure_is_about(clip_sweep):
    # the premise: unclipped, the norm explodes and the run diverges; clipped, it trains and clips often
    plain, plain_run = recorded(clip_sweep, 0)
    clipped, clipped_run = recorded(clip_sweep, 1)
    assert plain_run["status"] == "diverged" and clipped_run["status"] == "ok"
    norms = opt_rows(plain, "grad_norm")["value"].to_numpy()
    assert norms.max() / norms[0] >= 100
    assert opt_rows(clipped, "clipped")["value"].sum() > 0


def test_gradnorm_lines_are_the_recorded_norms_with_the_threshold_and_the_divergence(clip_sweep):
    fig = figures.gradnorm(gradflow.load(clip_sweep, table="metrics"))
    (ax,) = [a for a in fig.axes if a.get_gid() != "colorbar"]
    assert ax.get_yscale() == "log" and "gradient norm" in ax.get_ylabel() and "step" in ax.get_xlabel()
    assert fig.get_suptitle().startswith("Gradient norm during training")
    lines = fig.data["lines"]
    for clip in (0, 1):
        metrics, run = recorded(clip_sweep, clip)
        want = opt_rows(metrics, "grad_norm")
        drawn = lines[lines["line"] == f"train.grad_clip={clip}"]
        finite = drawn[np.isfinite(drawn["y"])]
        assert finite["x"].tolist() == want["step"].tolist()
        np.testing.assert_allclose(finite["y"], want["value"], rtol=1e-12)
        if run["status"] == "diverged":  # the line ends at the step it diverged, marked as the curves mark it
            assert drawn["x"].max() == run["diverged_step"] and not np.isfinite(drawn["y"].iloc[-1])
    marks = [ln for ln in ax.get_lines() if ln.get_gid() == "nonfinite"]
    _, plain_run = recorded(clip_sweep, 0)
    assert [list(m.get_xdata()) for m in marks] == [[plain_run["diverged_step"]]]
    # the clip threshold: one dashed line at train.grad_clip, named in the legend
    thresholds = [ln for ln in ax.get_lines() if ln.get_gid() == "threshold"]
    assert [ln.get_ydata()[0] for ln in thresholds] == [1.0] and thresholds[0].get_linestyle() == "--"
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any(t.startswith("clip threshold 1") for t in legend), legend
    # the clipped run's share of clipped updates beside its line: clipped updates / updates
    metrics, run = recorded(clip_sweep, 1)
    share = opt_rows(metrics, "clipped")["value"].sum() / run["steps_done"]
    assert fig.data["clipped"]["share"].tolist() == pytest.approx([share])
    assert [t.get_text() for t in ax.texts if t.get_gid() == "clipped"] == [f"{share:.0%} clipped"]


def drawn_shares(df: pd.DataFrame) -> tuple:
    """The gradnorm figure of `df` drawn (as saving draws it: the shares' labels are placed then), its axes, and
    for each share's label: its text box and its line's last point, in display pixels, its leader (None where
    hidden) and its line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    fig = figures.gradnorm(df)
    (ax,) = [a for a in fig.axes if a.get_gid() != "colorbar"]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    texts = [t for t in ax.texts if t.get_gid() == "clipped"]
    lines = fig.data["lines"]
    shares = []
    for t, row in zip(texts, fig.data["clipped"].itertuples()):
        mine = lines[(lines["line"] == row.line) & np.isfinite(lines["y"])]
        assert t.xy == (mine["x"].iloc[-1], mine["y"].iloc[-1])  # (the label's point: its own line's last)
        leader = t.arrow_patch.get_path().transformed(t.arrow_patch.get_transform()) \
            if t.arrow_patch is not None and t.arrow_patch.get_visible() else None
        (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == f"series:{row.line}"]
        shares.append((Text.get_window_extent(t, canvas.get_renderer()), ax.transData.transform(t.xy), leader,
                       line, t))
    return fig, ax, shares


def crowded(df: pd.DataFrame, factors: dict) -> pd.DataFrame:
    """`df` and copies of its train.grad_clip=1 run as runs clipping at each key of `factors`, their norms
    that run's times the key's factor."""
    one = df[df["train.grad_clip"] == 1]
    more = [one.assign(**{"train.grad_clip": c, "run": f"train.grad_clip={c}", "value": np.where(
        one["metric"] == "grad_norm", one["value"] * f, one["value"])}) for c, f in factors.items()]
    return pd.concat([df, *more], ignore_index=True)


def lifted(df: pd.DataFrame, factor: float) -> pd.DataFrame:
    """`df` with each clipping run's last gradient norm times `factor` (its line's end off the lines' lowest)."""
    norms = (df["metric"] == "grad_norm") & (df["train.grad_clip"] > 0)
    last = norms & (df["step"] == df[norms].groupby("run")["step"].transform("max").reindex(df.index))
    return df.assign(value=np.where(last, df["value"] * factor, df["value"]))


@pytest.mark.parametrize("lift", [1, 1000])
def test_clipped_shares_of_close_lines_do_not_overlap_beside_an_exploding_one(clip_sweep, lift):
    """Four clipping runs whose norms end close together beside the unclipped one exploding to 1e17: the
    labels were spaced by a share of the clipping lines' decades, a sliver of that axis, and "77% clipped"
    was written over "92% clipped"; then stacked upwards from the lowest, the top one stood a decade above
    its line (on a train.grad_clip=0,1,2,5 sweep "78% clipped" sat 4x above its line's end, "77%" 6.6x).
    Drawn, no two labels overlap, each stays inside the axes, and the stack is spread evenly about the lines'
    ends: each label's middle at most (n - 1) / 2 label heights (and their gaps) from its own line's end, the
    moves summing to nothing (or, where the ends lie nearer an edge of the axes than that, the stack stands on
    the edge: this sweep's clipped lines end at their lowest, by the x axis, so the ends are also lifted a
    thousandfold, for the centred case), and one that moved joined to its end by a leader in its line's
    colour."""
    from gradflow.plots.gradnorm import LEADER_FROM, LEADER_SHRINK, SHARE_PAD

    fig, ax, shares = drawn_shares(lifted(crowded(gradflow.load(clip_sweep, table="metrics"),
                                                  {c: 1 + 0.03 * c for c in (2, 3, 4)}), lift))
    boxes = [box for box, *_ in shares]
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        assert ax.bbox.y0 <= a.y0 and a.y1 <= ax.bbox.y1
        for b in boxes[i + 1:]:
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1), (a, b)
    px = fig.dpi / 72
    gap = max(b.height for b in boxes) + SHARE_PAD * px
    ends = [xy[1] for _, xy, *_ in shares]
    assert max(ends) - min(ends) < gap  # (the premise: the four ends lie within one label's height)
    moves = [(box.y0 + box.y1) / 2 - xy[1] for box, xy, *_ in shares]
    spread = (len(shares) - 1) / 2 * gap  # (how far the stack reaches either side of the ends' middle)
    half = max(b.height for b in boxes) / 2
    centred = ax.bbox.y0 + half + spread <= min(ends) and max(ends) + spread <= ax.bbox.y1 - half
    assert centred or lift == 1  # (lifted a thousandfold, the ends lie decades above the axis: the centred case)
    if centred:
        assert max(abs(m) for m in moves) <= spread + 0.5, moves
        assert abs(sum(moves)) <= 1.0, moves  # (evenly about the ends: not all of them upwards)
    else:  # the ends too near an edge of the axes for that (these lines end at their lowest, by the x axis):
        # the stack stands on that edge, its labels one gap apart, in their lines' order
        centres = sorted((box.y0 + box.y1) / 2 for box in boxes)
        assert [(box.y0 + box.y1) / 2 for box, *_ in sorted(shares, key=lambda s: s[1][1])] == centres
        assert np.diff(centres) == pytest.approx([gap] * (len(centres) - 1), abs=0.5)
        assert centres[0] == pytest.approx(ax.bbox.y0 + half, abs=0.5) \
            or centres[-1] == pytest.approx(ax.bbox.y1 - half, abs=0.5), (centres, ax.bbox)
    for (box, (x, y), leader, line, t), move in zip(shares, moves):
        assert box.x0 > max(x, ax.bbox.x1)  # (beside its end, in the margin right of the axes: off the curves)
        if abs(move) <= LEADER_FROM * px:
            continue
        assert leader is not None, move
        start, stop = leader.vertices[0], leader.vertices[-1]
        assert abs(start[0] - box.x0) <= 2 * px and box.y0 <= start[1] <= box.y1  # (from the label's side)
        assert np.hypot(*(stop - (x, y))) <= (LEADER_SHRINK + 0.5) * px  # (to its own line's end)
        assert t.arrow_patch.get_edgecolor()[:3] == pytest.approx(to_rgb(line.get_color()))
    # each label in its line's hue (darkened where pale: the same colour, scaled towards black)
    for *_, line, t in shares:
        want, got = np.array(to_rgb(line.get_color())), np.array(to_rgb(t.get_color()))
        assert got == pytest.approx(want * (got @ want) / (want @ want), abs=1e-6)


def test_a_clipped_share_that_collides_with_none_sits_level_with_its_lines_end(clip_sweep):
    # lines ending decades apart: each label level with its own line's end (it stood 4 points and half its
    # height above it), and no leader (its end at the axes' right edge, the label just past it)
    fig, ax, shares = drawn_shares(crowded(gradflow.load(clip_sweep, table="metrics"), {2: 100.0, 5: 1e4}))
    assert len(shares) == 3
    for box, (x, y), leader, *_ in shares:
        assert (box.y0 + box.y1) / 2 == pytest.approx(y, abs=0.5) and box.x0 > max(x, ax.bbox.x1)
        assert leader is None



def test_clipped_shares_of_two_sources_sit_off_the_curves_each_joined_to_its_own_line(clip_sweep):
    """`compare A B --kind gradnorm` of two clipped sweeps: each source's clipped line, of one colour, ending
    beside the other's; their "100% clipped" labels, written left of the ends, lay over the lines' last stretch
    and over each other. Drawn, each label lies in the margin right of the axes, inside the figure, over no
    curve and no other label, in its line's hue, level with its own line's end or joined to it by a leader."""
    from matplotlib.colors import to_rgb

    df = gradflow.load(clip_sweep, table="metrics")
    two = pd.concat([df.assign(source="A", run="A/" + df["run"].astype(str)),
                     lifted(df, 1.02).assign(source="B", run="B/" + df["run"].astype(str))], ignore_index=True)
    fig, ax, shares = drawn_shares(two)
    assert len(shares) == 2
    boxes = [box for box, *_ in shares]
    assert not boxes[0].overlaps(boxes[1]), boxes
    curves = []  # each drawn line's points, every pixel or so along it, in display pixels, where the axes show it
    for line in ax.get_lines():
        if str(line.get_gid()).startswith("series:"):
            xy = line.get_transform().transform(line.get_xydata())
            for a, b in zip(xy[:-1], xy[1:]):
                if not np.isfinite([*a, *b]).all():  # (a diverged line's gap)
                    continue
                curves += list(a + np.linspace(0.0, 1.0, int(np.hypot(*(b - a))) + 2)[:, None] * (b - a))
    curves = np.array([p for p in curves if ax.bbox.contains(*p)])
    for box, (x, y), leader, line, t in shares:
        assert ax.bbox.x1 < box.x0 and box.x1 <= fig.bbox.x1 and ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1
        inside = (curves[:, 0] > box.x0) & (curves[:, 0] < box.x1) & (curves[:, 1] > box.y0) & (curves[:, 1] < box.y1)
        assert not inside.any(), (t.get_text(), box)
        want, got = np.array(to_rgb(line.get_color())), np.array(to_rgb(t.get_color()))
        assert got == pytest.approx(want * (got @ want) / (want @ want), abs=1e-6)
        if leader is None:
            assert (box.y0 + box.y1) / 2 == pytest.approx(y, abs=0.5)
        else:
            assert np.hypot(*(leader.vertices[-1] - (x, y))) <= 4 * fig.dpi / 72  # (to its own line's end)

def test_standard_set_draws_gradnorm_where_runs_clip_and_not_otherwise(clip_sweep, plain_sweep, tmp_path):
    out = gradflow_cli("plot", clip_sweep, "--out", tmp_path / "clip")
    assert (tmp_path / "clip" / "gradnorm.png").exists() and "gradnorm.png" in out
    out = gradflow_cli("plot", plain_sweep, "--out", tmp_path / "plain")
    assert (tmp_path / "plain" / "curves.png").exists() and not (tmp_path / "plain" / "gradnorm.png").exists()
    assert "gradnorm" not in out
    # asked for, a plain sweep's gradient norm is drawn all the same, with no threshold
    path = gradflow_cli("plot", plain_sweep, "--kind", "gradnorm", "--out", tmp_path / "plain.png").strip()
    assert Path(path) == tmp_path / "plain.png" and Path(path).exists()


def test_compare_overlays_the_gradient_norms(clip_sweep, tmp_path):
    other = tmp_path / "again"
    shutil.copytree(clip_sweep, other)
    out = gradflow_cli("compare", clip_sweep, other, "--kind", "gradnorm", "--out", tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").exists(), out


def test_a_comparison_of_a_clipping_source_beside_one_that_does_not_keeps_the_threshold_and_share(clip_sweep):
    # the sources differ in train.grad_clip (1 | 0), a key the overlay drops (the line style says it): its
    # threshold line, its share of clipped updates, and the report's gradnorm figure went with it
    from gradflow import compare as matching
    from gradflow.plots import standard

    roots = [clip_sweep / "train.grad_clip=1", clip_sweep / "train.grad_clip=0"]
    sources = matching.source_labels(roots)
    runs = matching.load_runs(roots, sources)
    assert "train.grad_clip" in matching.differing_keys(runs, sources)
    metrics = matching.overlay_table(roots, sources, runs, "metrics", list(matching.differing_keys(runs, sources)))
    assert "train.grad_clip" not in metrics.columns
    fig = figures.gradnorm(metrics)
    (ax,) = [a for a in fig.axes if a.get_gid() != "colorbar"]
    assert [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_gid() == "threshold"] == [1.0]
    assert any("clip threshold 1" in " ".join(t.get_text().split()) for lg in fig.legends for t in lg.get_texts())
    (share,) = [t.get_text() for t in ax.texts if t.get_gid() == "clipped"]
    assert share.endswith("% clipped")
    names = [p.name for p in standard.plan(None, metrics, None)]
    assert "gradnorm" in names, names


def test_ls_shows_the_clipped_share_where_a_run_clips(clip_sweep, plain_sweep):
    rows = {r["train.grad_clip"]: r for r in json.loads(gradflow_cli("ls", clip_sweep, "--json"))}
    metrics, run = recorded(clip_sweep, 1)
    share = opt_rows(metrics, "clipped")["value"].sum() / run["config"]["train.steps"]
    assert rows[1.0]["clipped"] == pytest.approx(share) and 0 < share <= 1
    assert rows[0.0]["clipped"] is None  # no clipping: no share
    table = gradflow_cli("ls", clip_sweep)
    header = table.splitlines()[1:3]
    assert any("clipped" in line for line in header), table
    assert f"{share:.3g}"[:4] in table and "clipped = share of updates" in table
    assert "clipped" in gradflow_cli("ls", clip_sweep, "--csv").splitlines()[0].split(",")
    plain = gradflow_cli("ls", plain_sweep, "--wide")
    assert "clipped" not in plain, plain  # no run clips: no column, however wide


def test_ls_shows_no_share_for_runs_recorded_before_it_was_kept(clip_sweep, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(clip_sweep, old)
    for job in old.glob("train.grad_clip=*"):
        record = json.loads((job / store.RUN_FILE).read_text())
        del record["summary"]["clipped"]
        (job / store.RUN_FILE).write_text(json.dumps(record))
    rows = json.loads(gradflow_cli("ls", old, "--json"))
    assert [r["clipped"] for r in rows] == [None, None]
    assert "clipped" not in gradflow_cli("ls", old, "--wide")


def test_run_says_how_many_updates_it_clipped(tmp_path):
    overrides = [o for o in CLIP_SWEEP if not o.startswith("train.grad_clip")]
    out = gradflow_cli("run", *overrides, "train.grad_clip=1", f"results={tmp_path}")
    (job,) = [p.parent for p in tmp_path.rglob(store.RUN_FILE)]
    metrics = pd.read_parquet(job / store.METRICS_FILE)
    share = opt_rows(metrics, "clipped")["value"].sum() / 60
    assert f"clipped {share:.0%} of updates (train.grad_clip=1)" in " ".join(out.split())
    out = gradflow_cli("run", *overrides, "train.grad_clip=0", "train.steps=5", f"results={tmp_path / 'b'}")
    assert "clipped" not in out


def test_runs_of_one_evaluation_window_say_why_they_are_dots(clip_sweep, tmp_path):
    # train.steps below train.eval_every: one window each, a dot per run and no word why the figure was empty
    more = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=2",
            "train.batch_size=32", "train.steps=6", "train.eval_every=100", "train.grad_clip=0,1"]
    gradflow_cli("sweep", *more, f"results={tmp_path}", "--name", "short")
    fig = figures.gradnorm(gradflow.load(tmp_path / "short", table="metrics"))
    said = "one evaluation window per run, no curve: lower train.eval_every (below train.steps)"
    assert said in " ".join(fig.get_suptitle().split())
    assert said not in " ".join(figures.gradnorm(gradflow.load(clip_sweep, table="metrics")).get_suptitle().split())


def test_a_gradnorm_axis_of_a_decade_or_two_reads_round_values_and_dots_keep_their_style(clip_sweep, plain_sweep):
    # the clipped run's norms span about a decade: its axis was labelled at powers of ten alone (1 and 10)
    df = gradflow.load(clip_sweep, table="metrics")
    fig = figures.gradnorm(df[df["train.grad_clip"] == 1])
    (ax,) = [a for a in fig.axes if a.get_gid() != "colorbar"]
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    assert hi / lo < 10**3
    shown = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi and t.get_text()]
    assert len(shown) >= 3 and any(text[0] in "25" for text in shown), shown
    # one evaluation window per run: each line is a dot, which shows no dashes: the style key's values get
    # a marker each, in the figure and in its legend (tanh's dots and relu's were alike; the activation now
    # colours, as in the set's profiles, and depth takes the style)
    one = gradflow.load(plain_sweep, table="metrics")
    one = one[one["step"] <= 2]  # (the first window)
    other = one.assign(**{"model.activation": "relu", "run": one["run"] + "-relu", "value": one["value"] * 3})
    fig = figures.gradnorm(pd.concat([one, other], ignore_index=True))
    (ax,) = [a for a in fig.axes if a.get_gid() != "colorbar"]
    drawn = {ln.get_gid(): ln.get_marker() for ln in ax.get_lines() if str(ln.get_gid()).startswith("series:")}
    assert len(set(drawn.values())) == 2, drawn
    legend = {t.get_text(): h.get_marker() for leg in fig.legends for t, h in zip(leg.get_texts(), leg.legend_handles)}
    assert {legend[k] for k in ("depth=3", "depth=4")} == set(drawn.values()), legend


def test_a_recorders_gradient_norm_is_labelled_as_its_loop_logged_it(tmp_path):
    # a Recorder's loop logs opt_grad_norm at every step it likes: its axis read "mean over each evaluation window",
    # gradflow's loop's, and a run of one value was told to lower train.eval_every, a key it does not have
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with gradflow.Recorder(model, tmp_path / "rec" / "run", every=1) as rec:
        for step in range(3):
            with rec.step(step):
                model(torch.randn(8, 4)).square().mean().backward()
            if step == 0:  # (one value: a dot, which gradflow's loop explains by its evaluation window)
                rec.log(step, opt_grad_norm=float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)))
            model.zero_grad()
    fig = figures.gradnorm(gradflow.load(tmp_path / "rec", "metrics"))
    assert fig.axes[0].get_ylabel() == "total gradient norm\n(opt_grad_norm as the loop logged it, log)"
    assert "train.eval_every" not in fig.get_suptitle()


def test_a_run_that_diverged_before_its_first_window_is_said_a_mark_alone(tmp_path):
    # the unclipped run of an exploding net diverged at step 2, before its first 100-step window ended: its mark
    # sat on the top edge beside the clipped runs' norms, read as one of them, and the title said nothing
    from gradflow.plots.labels import _visible_len

    more = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=2",
            "train.batch_size=32", "train.steps=20", "train.eval_every=10", "optim.momentum=0", "model.activation=relu",
            "optim.lr=0.05,1e6"]
    gradflow_cli("sweep", *more, f"results={tmp_path}", "--name", "early")
    metrics = gradflow.load(tmp_path / "early", table="metrics")
    assert set(metrics.loc[metrics["optim.lr"] > 1, "status"]) == {"diverged"}  # (before step 10: no window of its own)
    assert opt_rows(metrics[metrics["optim.lr"] > 1], "grad_norm").empty
    fig = figures.gradnorm(metrics)
    title = fig.get_suptitle()
    said = ("1 run diverged before its first evaluation window ended: a mark alone, no line; lower "
            "train.eval_every to see the rise")
    assert said in " ".join(title.split()), title
    # (a note longer than the figure is wide is broken between its words: it ran past both edges)
    assert max(_visible_len(line) for line in title.splitlines()) <= int(fig.get_figwidth() * 13)
    fine = figures.gradnorm(metrics[metrics["optim.lr"] < 1])
    assert "diverged before" not in fine.get_suptitle()


def test_a_lines_clipped_share_is_its_runs_mean():
    """A line of several seeds is labelled with the mean of their shares of clipped updates (the label read
    the largest: two seeds clipping 20% and 60% of their updates were "60% clipped"); a run that does not clip
    (no share) is left out of the mean."""
    from types import SimpleNamespace

    from gradflow.plots.gradnorm import _share

    shares = pd.Series({"a": 0.2, "b": 0.6})
    assert _share(SimpleNamespace(runs=["a", "b", "c"]), shares) == pytest.approx(0.4)
    assert np.isnan(_share(SimpleNamespace(runs=["c"]), shares))


def test_only_a_run_diverged_before_its_first_window_gets_a_mark_of_its_own():
    """A diverged run with no logged window gets one non-finite row at the step it diverged (its mark); a
    diverged run whose line is drawn gets none (its curve carries the divergence already: a second row put a
    NaN beside its last value at the same step)."""
    from gradflow.plots.gradnorm import _diverged_early

    metrics = pd.DataFrame({"run": ["a", "a", "a", "b"], "step": [0, 10, 10, 3],
                            "split": ["opt", "opt", "diverged", "diverged"],
                            "metric": ["grad_norm", "grad_norm", "grad_norm", "grad_norm"],
                            "value": [1.0, 2.0, np.inf, np.inf], "status": "diverged"})
    drawn = metrics[metrics["split"] == "opt"]
    out = _diverged_early(metrics, drawn)
    assert len(out) == len(drawn) + 1
    added = out.iloc[len(drawn):]
    assert added["run"].tolist() == ["b"] and added["step"].tolist() == [3] and added["value"].isna().all()
