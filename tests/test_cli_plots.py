"""`gradflow plot` and `gradflow compare` on real tiny sweeps made with the CLI.

Made once per module, a few steps each on gaussian data: a plain depth x activation sweep with
Jacobian spectra (jacobian.parquet), one run with `probe=full` (hist.parquet too), a batch-normalized
twin of half the sweep, and a sweep at lr = 1e6 in which one run diverges.
"""

from __future__ import annotations

import math
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import gradflow
from gradflow import store
from gradflow.cli import app
from gradflow.compare import comparison, match_keys, pooled_keys, source_labels, unmatched
from gradflow.fmt import fmt as number
from tests.commands import piped, terminal_width

SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=8", "train.steps=4",
         "train.batch_size=32", "train.eval_every=2"]
GRID = ["model.depth=2,4", "model.activation=tanh,relu"]
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


def _sweep(results: Path, name: str, *overrides: str) -> Path:
    out = invoke("sweep", *SMALL, *overrides, f"results={results}", "--name", name)
    assert out.exit_code == 0, out.output
    return results / name


@pytest.fixture(scope="module")
def plain(results) -> Path:
    return _sweep(results, "plain", *GRID, "probe.jacobian=true")


@pytest.fixture(scope="module")
def full(results) -> Path:
    """One run with every probe: histograms and Jacobian spectra."""
    out = invoke("run", *SMALL, "model.depth=3", "model.activation=relu", "probe=full", f"results={results}",
                 "name=full")
    assert out.exit_code == 0, out.output
    (job,) = store.find_runs(results / "full")
    return job


@pytest.fixture(scope="module")
def batchnorm(results) -> Path:
    """The batch-normalized twin, tanh only: its runs match half of plain's."""
    return _sweep(results, "batchnorm", "model.depth=2,4", "model.activation=tanh", "norm=batchnorm")


@pytest.fixture(scope="module")
def diverging(results) -> Path:
    """lr = 1e6: depth 2 diverges (non-finite loss), depth 3 ends with dead ReLUs (zero gradients)."""
    root = _sweep(results, "diverging", "optim.lr=1e6", "optim.momentum=0", "model.activation=relu",
                  "model.depth=2,3", "train.steps=6", "train.check_every=1", "probe=full")
    assert "diverged" in set(gradflow.load(root, table="runs")["status"])
    return root


@pytest.fixture(scope="module")
def plain_drawn(plain):
    """`gradflow plot SWEEP` of plain alone, into its figures folder: the standard set, drawn once for the
    tests that read it."""
    out = invoke("plot", plain)
    assert out.exit_code == 0, out.output
    return out


@pytest.fixture(scope="module")
def plain_set(plain_drawn) -> list[str]:
    """The names of the figures `gradflow plot SWEEP` draws of plain alone, in the order printed: what its
    set drawn within a folder of studies is compared with."""
    return [p.name for p in printed_paths(plain_drawn)]


def printed_paths(out) -> list[Path]:
    """The figures' paths (CliRunner mixes stderr in: its notes, wrapped at 80 columns, left out)."""
    return [Path(line) for line in out.output.splitlines() if line.endswith((".png", ".pdf", ".svg"))]


# --- plot ----------------------------------------------------------------------------------------
def test_plot_default_writes_the_standard_set(plain, plain_drawn):
    out = plain_drawn
    paths = printed_paths(out)
    names = [p.name for p in paths]
    assert names[:7] == ["profile-grad_norm-step0.png", "profile-grad_norm-last.png", "profile-signal_norm-step0.png",
                         "profile-signal_norm-last.png", "curves.png", "ratio-init.png", "ratio-signal_norm-init.png"]
    assert names[7:] == ["spectrum-step0.png", "spectrum-last.png"]  # no hist: the sweep has no hist.parquet
    for p in paths:
        assert p.parent == plain / "figures" and p.read_bytes()[:8] == PNG
    # figures live beside the runs without becoming runs: the sweep still loads 4
    assert gradflow.load(plain, table="runs")["run"].nunique() == 4


def test_a_sweep_over_inits_with_different_keys_is_still_a_depth_sweep(results):
    # init=standard has no init.gain, xavier_normal has one: that key varies only with the init, so it
    # is no third axis (which made the runs look like an incomplete grid: no ratio figures, one legend
    # entry per run, and ratio legends naming depths that no line had)
    from gradflow.plots import figures
    from gradflow.keys import swept_keys

    path = _sweep(results, "inits", "model.depth=2,4", "init=standard,xavier_normal")
    out = invoke("plot", path)
    assert out.exit_code == 0, out.output
    names = [p.name for p in printed_paths(out)]
    assert "ratio-init.png" in names and "ratio-signal_norm-init.png" in names
    layers, runs = gradflow.load(path), gradflow.load(path, table="runs")
    assert swept_keys(runs) == ["model.depth", "init.name"]
    assert swept_keys(runs, implied=True) == ["model.depth", "init.name", "init.gain"]
    def legend(fig):
        return [t.get_text() for lg in fig.legends for t in lg.get_texts()]

    texts = legend(figures.profile(layers, "signal_norm", step=0))  # init, what the study varies, is the colour
    assert "standard" in texts and "xavier_normal" in texts and not any("gain" in t for t in texts)
    texts = legend(figures.ratio(layers, "init", quantity="signal_norm"))
    assert texts[:2] == ["standard", "xavier_normal"], texts  # one entry per line drawn, then the theory's
    # compared with a sweep of init=meanfield's sigma_w^2, runs without that key (standard, xavier) are
    # labelled so, not `σ_w²=-` (panel titles and legends share the label)
    from gradflow import compare as matching
    from gradflow.plots.labels import short_key

    roots = [path, _sweep(results, "meanfield", "model.depth=2,4", "init=meanfield", "init.sw2=1,2")]
    runs = matching.load_runs(roots, ["inits", "meanfield"])
    both = matching.overlay_table(roots, ["inits", "meanfield"], runs, "layers",
                                  list(matching.differing_keys(runs, ["inits", "meanfield"])))
    sw2 = short_key("init.sw2")
    fig = figures.profile(both, "signal_norm", step=0, facet="init.sw2")  # (with the init, which no line shows)
    assert sorted(ax.get_title() for ax in fig.axes if ax.get_title()) == [
        f"{sw2} not set, init=standard", f"{sw2} not set, init=xavier_normal", f"{sw2}=1, init=meanfield",
        f"{sw2}=2, init=meanfield"]
    fig = figures.ratio(both, "init", quantity="signal_norm", by="init.sw2")  # its colorbar's grey says so too
    (bar,) = [ax for ax in fig.axes if ax.get_gid() == "colorbar"]
    assert bar.get_xlabel() == f"grey:\n{sw2}\nnot set"


def test_a_sweep_cut_short_is_drawn_by_its_keys(results, tmp_path):
    # depth 2 under two inits and depth 4 under one (the fourth run not yet done) is no full grid: its figures
    # drew one legend entry per run, by its folder name, and no ratio against depth, until the sweep ended
    from gradflow.plots.kinds import Options, draw, load_table

    cut = tmp_path / "cut"
    shutil.copytree(_sweep(results, "whole", "model.depth=2,4", "init=standard,xavier_normal"), cut)
    shutil.rmtree(cut / "init=xavier_normal,model.depth=4")
    shutil.rmtree(cut / "figures", ignore_errors=True)
    out = invoke("plot", cut)
    assert out.exit_code == 0, out.output
    assert {"ratio-init.png", "ratio-signal_norm-init.png"} <= {p.name for p in printed_paths(out)}, out.output
    fig, _ = draw("profile", load_table(cut, "layers"), Options(quantity="signal_norm", step=0))
    texts = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    titles = [lg.get_title().get_text() for lg in fig.legends]
    assert texts[:2] == ["standard", "xavier_normal"] and "depth=4" in texts, texts
    assert not any("," in t for t in texts) and "run" not in titles, (texts, titles)
    # the report page draws it so too (its own reading of the tables had no ratio figures)
    from gradflow import report

    names = [name for name, _ in report.figures([cut], gradflow.load(cut, table="runs"))[0]]
    assert {"ratio-init", "ratio-signal_norm-init"} <= set(names), names
    # runs of no sweep (a folder of single runs) are still one entry each
    for name in ("init=standard,model.depth=2", "init=xavier_normal,model.depth=4"):
        shutil.copytree(cut / name if (cut / name).exists() else results / "whole" / name, tmp_path / "loose" / name)
    fig, _ = draw("profile", load_table(tmp_path / "loose", "layers"), Options(quantity="signal_norm", step=0))
    assert [lg.get_title().get_text() for lg in fig.legends] == ["run"]


@pytest.mark.parametrize("args, name", [
    (["--kind", "profile", "--step", "0", "--color", "model.depth", "--facet", "model.activation",
      "--quantity", "signal_norm"], "profile-signal_norm-step0-color-model.depth-facet-model.activation.png"),
    (["--kind", "heatmap", "--run", "model.activation=tanh,model.depth=4", "--quantity", "act_std"],
     "heatmap-act_std-model.activation=tanh,model.depth=4.png"),
    (["--kind", "curves", "--color", "model.activation"], "curves-color-model.activation.png"),
    (["--kind", "ratio", "--step", "last"], "ratio-final.png"),
    (["--kind", "ratio", "--quantity", "signal_norm"], "ratio-signal_norm-init.png"),
    (["--kind", "grid", "--x", "model.activation", "--y", "model.depth", "--value", "final.train_acc"],
     "grid-final.train_acc-model.activation-model.depth.png"),
    (["--kind", "hist", "--step", "last"], "hist-last.png"),
    (["--kind", "spectrum", "--color", "model.activation"], "spectrum-step0-color-model.activation.png"),
    # keys by the short names ls shows them under
    (["--kind", "profile", "--color", "depth", "--facet", "activation"],
     "profile-grad_norm-step0-color-model.depth-facet-model.activation.png"),
    (["--kind", "grid", "--x", "activation", "--y", "depth", "--value", "final.train_acc"],
     "grid-final.train_acc-model.activation-model.depth.png"),
    # --value by the header ls shows (the signal ratio, which vanishes where the weight gradient's may not)
    (["--kind", "grid", "--x", "activation", "--y", "depth", "--value", "signal ratio"],
     "grid-signal_ratio.init-model.activation-model.depth.png"),
    (["--kind", "grid", "--x", "activation", "--y", "depth", "--value", "chi1 meas"],
     "grid-chi1_measured-model.activation-model.depth.png"),
    # a run by its items in another order: the same run, its file named as the folder is
    (["--kind", "heatmap", "--run", "model.depth=4,model.activation=tanh", "--quantity", "act_std"],
     "heatmap-act_std-model.activation=tanh,model.depth=4.png"),
    # ... by the short names and numbers as ls shows them (depth=4.0 is depth 4)
    (["--kind", "heatmap", "--run", "depth=4.0,activation=tanh", "--quantity", "act_std"],
     "heatmap-act_std-model.activation=tanh,model.depth=4.png"),
])
def test_plot_each_kind(plain, full, tmp_path, args, name):
    out = invoke("plot", full if "hist" in args else plain, *args, "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert printed_paths(out) == [tmp_path / name]
    assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_plot_formats(plain, tmp_path, fmt, magic):
    out = invoke("plot", plain, "--kind", "ratio", "--format", fmt, "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert (tmp_path / f"ratio-init.{fmt}").read_bytes().startswith(magic)


def test_out_may_name_the_file_of_one_figure(plain, batchnorm, tmp_path):
    # --out fig.pdf made a folder named fig.pdf with the figure inside; a folder that is not there is refused,
    # not made (a mistyped path took the figure out of sight, as `report --out` refused it)
    out = invoke("plot", plain, "--kind", "ratio", "--out", tmp_path / "deep" / "fig.pdf")
    assert out.exit_code == 1 and f"--out {tmp_path / 'deep' / 'fig.pdf'}: the folder {tmp_path / 'deep'} does " \
        "not exist; create it first" in " ".join(out.output.split()) and not (tmp_path / "deep").exists(), out.output
    (tmp_path / "deep").mkdir()
    out = invoke("plot", plain, "--kind", "ratio", "--out", tmp_path / "deep" / "fig.pdf")
    assert out.exit_code == 0, out.output
    assert printed_paths(out) == [tmp_path / "deep" / "fig.pdf"]
    assert (tmp_path / "deep" / "fig.pdf").read_bytes().startswith(b"%PDF")  # the suffix sets the format
    out = invoke("compare", plain, batchnorm, "--out", tmp_path / "both.svg")
    assert out.exit_code == 0 and (tmp_path / "both.svg").read_bytes().startswith(b"<?xml"), out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.svg", "deep"]
    for args, message in ((["--out", tmp_path / "x.png"], "--out {} names a .png file, and the standard set is "
                                                          "several figures: give a folder, or --kind KIND"),
                          (["--kind", "ratio", "--out", tmp_path / "x.svg", "--format", "png"],
                           "--out {} names a .svg file but --format is png: give one of them")):
        out = invoke("plot", plain, *args)
        assert out.exit_code == 1 and out.output.startswith("error:"), out.output
        assert message.format(args[args.index("--out") + 1]) in " ".join(out.output.split()), out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.svg", "deep"]
    # a folder that is there already stays a folder, whatever its name; an image format gradflow does not
    # write is refused (it made a folder named fig.jpg)
    (tmp_path / "figs.png").mkdir()
    out = invoke("plot", plain, "--kind", "ratio", "--out", tmp_path / "figs.png")
    assert out.exit_code == 0 and printed_paths(out) == [tmp_path / "figs.png" / "ratio-init.png"], out.output
    out = invoke("plot", plain, "--kind", "ratio", "--out", tmp_path / "fig.jpg")
    assert out.exit_code == 1 and "names a .jpg file; figures are png, pdf, svg" in " ".join(out.output.split())
    assert not (tmp_path / "fig.jpg").exists()
    # nor a file no figure goes in (plot, compare and theory each made a folder named notes.txt or run.json)
    for command in (["plot", plain, "--kind", "profile"], ["compare", plain, plain.parent / "full"],
                    ["theory", "-a", "tanh", "phase"]):
        for name in ("notes.txt", "run.json"):
            out = invoke(*command, "--out" if command[0] != "theory" else "-o", tmp_path / name)
            assert out.exit_code == 1 and f"names a .{name.split('.')[1]} file; figures are png, pdf, svg" in \
                " ".join(out.output.split()), (command, out.output)
            assert not (tmp_path / name).exists()


def test_a_run_not_found_lists_the_nearest_runs_first(plain):
    """The choices are cut at 8: the runs sharing most items with the one asked for come first."""
    out = invoke("plot", plain, "--kind", "heatmap", "--run", "model.depth=4,model.activation=sigmoid")
    assert out.exit_code == 1
    choices = out.output.split("choices: ")[1]
    assert choices.startswith("model.activation=relu,model.depth=4") or \
        choices.startswith("model.activation=tanh,model.depth=4"), out.output
    # a number that no run has: the runs with the nearest value first (depth=5 listed depth=2 first)
    out = invoke("plot", plain, "--kind", "heatmap", "--run", "depth=5")
    assert out.output.split("choices: ")[1].startswith("model.activation=relu,model.depth=4, "
                                                       "model.activation=tanh,model.depth=4"), out.output


def test_runs_of_a_folder_of_sweeps_are_named_and_ranked_past_their_study():
    # run ids there carry their study's folder (mlps/model.depth=20,seed=0): a full key matched none of them,
    # so `--run model.depth=20,seed=0` was "not a run" and the choices came in folder order; a run that lacks
    # the key asked for (a custom model's) came first, at distance 0
    from gradflow.plots.series import named_run, nearest_runs

    runs = ["tied/model.target=m_Tied", "mlps/model.depth=2,seed=0", "mlps/model.depth=5,seed=0",
            "mlps/model.depth=20,seed=0", "mlps/model.depth=20,seed=1"]
    assert named_run("model.depth=20,seed=0", runs) == "mlps/model.depth=20,seed=0"
    assert named_run("depth=20,seed=1", runs) == "mlps/model.depth=20,seed=1"
    assert nearest_runs("model.depth=21", runs, 3) == ("mlps/model.depth=20,seed=0, mlps/model.depth=20,seed=1, "
                                                       "mlps/model.depth=5,seed=0, ...")
    assert nearest_runs("depth=4", runs, 5).endswith("tied/model.target=m_Tied")


def test_a_list_value_in_a_run_name_is_one_item():
    # optim.betas=[0.9,0.99] is named optim.betas=_0.9,0.99_: its own comma split it into two items, a bogus
    # '0.99_' with no key, so the run named by the list as typed was "not a run" and dropping its depth
    # item from the name left the list cut
    import pandas as pd

    from gradflow.overrides import job_name, name_items, without_item
    from gradflow.plots.series import _items, named_run
    from gradflow.summary import matches

    overrides = ["optim.betas=[0.9,0.99]", "model.depth=4", "model.widths=[8,16,8]"]
    name = job_name(overrides)
    assert name_items(name) == ["model.depth=4", "model.widths=_8,16,8_", "optim.betas=_0.9,0.99_"]
    assert [k for k, _ in _items(name)] == ["model.depth", "model.widths", "optim.betas"]
    assert without_item(f"s/{name}", "model.depth") == "s/model.widths=_8,16,8_,optim.betas=_0.9,0.99_"
    assert without_item(f"s/{name}", "model.widths") == "s/model.depth=4,optim.betas=_0.9,0.99_"
    other = job_name(["optim.betas=[0.9,0.999]", "model.depth=4", "model.widths=[8,16,8]"])
    assert named_run("optim.betas=[0.9,0.99]", [other, name]) == name
    assert named_run("betas=[0.9,0.999],depth=4", [other, name]) == other
    # a nested list closes all it opened; a name cut and hashed keeps its hash apart (it was glued to the item
    # before, so that item no longer matched); "default" is one item (as none, it matched every run)
    assert name_items(job_name(["model.widths=[[1,2],[3,4]]", "seed=1"])) == ["model.widths=__1,2_,_3,4__", "seed=1"]
    hashed = job_name([f"model.k{i}=[1,{i}]" for i in range(9)] + [f"train.key{i}={i}" for i in range(9)])
    assert len(hashed) < 170 and all(i.startswith(("model.", "train.")) for i in name_items(hashed)[:-1])
    assert not name_items(hashed)[-1].startswith(("model.", "train.")) or "=" not in name_items(hashed)[-1]
    assert name_items("default") == ["default"] and name_items("tag=_x,seed=1") == ["tag=_x", "seed=1"]
    assert named_run("default", ["s1/default", "s1/model.depth=2,train.steps=10"]) == "s1/default"
    assert named_run("default", ["s1/model.depth=2,train.steps=10"]) is None
    # a value typed matches a folder name's form of it (a list, a quoted text with a comma, my:Net), and a
    # config's value only as itself (x/y and x_y are two values there)
    from gradflow.plots.series import _config_value_is, _same_value

    assert _same_value("_0.9,0.99_", "[0.9,0.99]", named=True) and not _config_value_is("x_y", "x/y")
    assert named_run("model.activation=my:Net,model.depth=4", ["model.activation=my_Net,model.depth=4",
                                                                "model.activation=relu,model.depth=4"]) \
        == "model.activation=my_Net,model.depth=4"
    assert name_items('+tag="x,y",seed=1') == ['+tag="x,y"', "seed=1"]
    assert named_run('+tag="x,y"', ["+tag=_x,y_", "+tag=x"]) == "+tag=_x,y_"
    assert _config_value_is("[0.9, 0.99]", "[.9,.99]")  # (a runs table's list cell is its text)
    # --where with a list as typed keeps the runs whose config holds it (ls shows it as [0.9, 0.99]): item by
    # item, numbers as numbers, or as the folder's name writes it (as --run takes it)
    betas = pd.Series([[0.9, 0.99], [0.9, 0.999], [1e-3, 0.1]])
    cells = betas.map(str)  # (a runs table's cells: the lists' text, '[0.9, 0.99]', as run.json's flat config)
    assert matches(cells, "[0.9,0.99]").tolist() == matches(cells, "_0.9,0.99_").tolist() == [True, False, False]
    assert matches(cells, "[1e-3,0.1]").tolist() == [False, False, True]
    assert matches(pd.Series(["['a', 'b']"]), "[a,b]").tolist() == [True]
    assert matches(betas, "[0.9,0.99]").tolist() == [True, False, False]
    assert matches(betas, "[0.9, 0.999]").tolist() == [False, True, False]
    assert matches(betas, "[.9,.99]").tolist() == matches(betas, "_0.9,0.99_").tolist() == [True, False, False]
    assert matches(betas, "[1e-3,0.1]").tolist() == [False, False, True]
    assert not matches(betas, "[0.9]").any() and not matches(pd.Series(["_x_"]), "_y_").any()
    # a point not run yet, named by its list: counted by --where with the list as typed
    from gradflow.summary import _job_matches

    assert _job_matches("model.depth=3,optim.betas=_0.9,0.99_", "optim.betas", "[0.9,0.99]")
    assert not _job_matches("model.depth=3,optim.betas=_0.9,0.99_", "optim.betas", "[0.9,0.999]")


def _recorded(folder: Path, frozen: bool = False, steps: int = 20, model=None) -> Path:
    """A Recorder's run of a small tanh MLP, every step probed; frozen: all but its head (requires_grad=False)."""
    import torch

    torch.manual_seed(0)
    model = model or torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                         torch.nn.Tanh(), torch.nn.Linear(16, 3))
    if frozen:
        for p in model[:-1].parameters():
            p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    with gradflow.Recorder(model, folder, every=1) as rec:
        for step in range(steps):
            with rec.step(step):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
            rec.log(step, train_loss=loss)
            opt.step()
            opt.zero_grad()
    return folder


def test_compare_beside_a_loop_that_probed_no_step_says_curves_compare_the_losses(tmp_path):
    # a Recorder whose loop logged its losses and probed no step: compare's default profile said only that the
    # folder "has no layers rows", not that the losses it holds compare
    import torch

    probed = _recorded(tmp_path / "probed" / "run0", steps=3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    with pytest.warns(UserWarning, match="no step was recorded"), \
            gradflow.Recorder(model, tmp_path / "logged" / "run0") as rec:
        for step in range(3):
            rec.log(step, train_loss=1.0 / (step + 1))
    for kind in ("profile", "ratio"):
        out = invoke("compare", probed.parent, tmp_path / "logged", "--kind", kind, "--out", tmp_path / "figs")
        assert out.exit_code == 1 and "logged has no layers rows; --kind curves compares the losses" in out.output
        assert len(out.output.strip().splitlines()) == 1, out.output
    out = invoke("compare", probed.parent, tmp_path / "logged", "--kind", "curves", "--out", tmp_path / "figs")
    assert out.exit_code == 0, out.output


def test_a_grid_of_runs_that_logged_no_test_accuracy_names_its_default_value(tmp_path):
    # a loop of the user's own logs a train loss alone: the grid's default cells, the final test accuracy, were
    # refused as "value='final.test_acc' is not a column", a value the user never typed
    import torch

    for lr in (0.1, 0.2):
        for width in (4, 8):
            model = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))
            with gradflow.Recorder(model, tmp_path / f"lr{lr}-w{width}", steps=2,
                                   config={"lr": lr, "width": width}) as rec:
                for step in range(2):
                    with rec.step(step):
                        loss = torch.nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.zeros(16).long())
                        loss.backward()
                    rec.log(step, train_loss=loss)
    out = invoke("plot", tmp_path, "--kind", "grid", "--x", "lr", "--y", "width", "--out", tmp_path / "figs")
    assert out.exit_code == 1 and out.output.startswith(
        "error: --value (its default) 'final.test_acc' is not a column of "), out.output
    assert "final.train_loss" in out.output and len(out.output.strip().splitlines()) == 1
    out = invoke("plot", tmp_path, "--kind", "grid", "--x", "lr", "--y", "width", "--value", "final.train_loss",
                 "--out", tmp_path / "figs")
    assert out.exit_code == 0, out.output
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["grid-final.train_loss-lr-width.png"]


def _plot_piped(path: Path, width: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(width), "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "gradflow", "plot", str(path)], capture_output=True, text=True,
                          timeout=300, env=env)


# a Recorder's run of a frozen backbone drew its curves alone: the profiles and the heatmap were left out without a
# word (its gradients are the head's alone); what the set leaves out is said, a line for each reason, stdout the paths
def test_plot_says_which_figures_of_the_set_it_left_out_and_why(tmp_path):
    import torch

    frozen = _recorded(tmp_path / "frozen" / "run", frozen=True)
    out = invoke("plot", frozen)  # (CliRunner: 80 columns)
    assert out.exit_code == 0, out.output
    assert [p.name for p in printed_paths(out)] == ["curves.png"]
    line = "profile-*, heatmap not drawn: only layer 2 has a value (0-1 frozen)"
    assert out.output.splitlines()[1:] == [line], out.output
    real = _plot_piped(frozen)
    assert real.returncode == 0 and real.stdout == f"{frozen / 'figures' / 'curves.png'}\n", real
    assert real.stderr.splitlines() == [line], real.stderr
    # asked for by --kind, the same reason, not a figure of one dot
    out = invoke("plot", frozen, "--kind", "profile")
    assert out.exit_code == 1 and out.output.strip() == "error: no profile of grad_norm to draw: only layer 2 has a " \
        "value (0-1 frozen)", out.output
    assert invoke("plot", frozen, "--kind", "profile", "--quantity", "weight_norm").exit_code == 0  # (every layer's)
    # one probed layer (a linear model); one step (step 0 alone)
    linear = _recorded(tmp_path / "linear" / "run", model=torch.nn.Sequential(torch.nn.Linear(8, 3)))
    out = invoke("plot", linear)
    assert out.output.splitlines()[1:] == ["profile-*, heatmap not drawn: one probed layer (0); a profile needs two"]
    once = _recorded(tmp_path / "once" / "run", steps=1)
    out = invoke("plot", once)
    assert [p.name for p in printed_paths(out)] == ["profile-grad_norm-step0.png", "profile-signal_norm-step0.png"]
    assert out.output.splitlines()[2:] == ["profile-*-last, heatmap, curves not drawn: step 0 alone recorded"]
    # asked for by --kind, the same reason (a figure of one dot per panel, a heatmap of one column, exit 0)
    out = invoke("plot", once, "--kind", "curves")
    assert out.exit_code == 1 and " ".join(out.output.split()) == (
        "error: no curves to draw: step 0 alone recorded (a run of train.steps=0 evaluates its initialization "
        "alone); --kind profile draws it"), out.output
    out = invoke("plot", once, "--kind", "heatmap")
    assert out.exit_code == 1 and " ".join(out.output.split()) == (
        "error: no heatmap of grad_norm to draw: step 0 alone recorded, and a heatmap is layers over steps; --kind "
        "profile draws that step"), out.output
    assert not (once / "figures" / "curves.png").exists() and not list((once / "figures").glob("heatmap*"))
    assert invoke("plot", whole_run := _recorded(tmp_path / "two" / "run"), "--kind", "heatmap").exit_code == 0
    assert invoke("plot", whole_run, "--kind", "curves").exit_code == 0
    shutil.rmtree(whole_run.parent)
    # nothing left to draw says why, not "no probed layers and no metrics"
    lone = _recorded(tmp_path / "lone" / "run", model=torch.nn.Sequential(torch.nn.Linear(8, 3)), steps=1)
    out = invoke("plot", lone)
    assert out.exit_code == 1 and " ".join(out.output.split()) == (
        f"error: {lone}: nothing to draw: profile-*, heatmap not drawn: one probed layer (0); a profile needs two; "
        "curves not drawn: step 0 alone recorded"), out.output
    shutil.rmtree(lone.parent)
    # the whole set drawn: no line
    whole = _recorded(tmp_path / "whole" / "run")
    out = invoke("plot", whole)
    assert out.exit_code == 0 and len(printed_paths(out)) == 6 and "not drawn" not in out.output, out.output
    # a folder of several studies: each line names its study
    out = invoke("plot", tmp_path)
    assert f"{tmp_path / 'frozen'}: {line}" in " ".join(out.output.split()), out.output
    # the report page says them too, under its figures (it drew the curves alone without a word)
    from html import escape

    from gradflow import report

    assert f"<p class=note>{escape(line)}</p>" in report.build([frozen])
    assert "not drawn" not in report.build([whole])
    assert f"<p class=note>{escape(f'{frozen.parent}: {line}')}</p>" in report.build([tmp_path])


def test_plot_names_the_figures_an_earlier_drawing_left_beside_the_set_and_removes_none(tmp_path):
    # a figure the set leaves out now (the gradient norm where no run clips any more, a run's profiles where
    # its layers were frozen since) stayed in the figures folder from an earlier drawing, and read as current
    frozen = _recorded(tmp_path / "frozen" / "run", frozen=True)
    figures = frozen / "figures"
    assert [p.name for p in printed_paths(invoke("plot", frozen))] == ["curves.png"]
    stale = figures / "profile-grad_norm-step0.png"
    shutil.copy(figures / "curves.png", stale)
    (figures / "notes.txt").write_text("mine")  # (no figure: not named)
    out = invoke("plot", frozen)
    assert out.exit_code == 0 and [p.name for p in printed_paths(out)] == ["curves.png"], out.output
    said = [line for line in " ".join(out.output.split()).split("also in ")[1:]]
    assert said == [f"{figures}, not drawn by this command: profile-grad_norm-step0.png (from an earlier drawing; "
                    "one the set leaves out now may no longer apply)"], out.output
    assert stale.is_file() and (figures / "notes.txt").is_file()
    for name in "abcde":  # many: the first four, then how many more
        shutil.copy(stale, figures / f"{name}.png")
    flat = " ".join(invoke("plot", frozen).output.split())
    assert "not drawn by this command: a.png, b.png, c.png, d.png and 2 more (from" in flat, flat
    stale.unlink()
    for name in "abcde":
        (figures / f"{name}.png").unlink()
    assert "also in" not in invoke("plot", frozen).output  # (the set's own figures, redrawn: nothing said)


def test_plot_kind_names_the_figures_per_value_an_earlier_drawing_of_it_left(tmp_path):
    # curves drawn a figure per value of a key (curves-optim.lr=0.1.png), then of runs that split otherwise: the
    # earlier figures stayed beside the new ones without a word, read as current; named, and none removed
    run = _recorded(tmp_path / "study" / "run")
    figures = run / "figures"
    assert [p.name for p in printed_paths(invoke("plot", run, "--kind", "curves"))] == ["curves.png"]
    for name in ("curves-optim.lr=0.1.png", "curves-mine.png", "curves-where-seed=0.png", "gradnorm-seed=0.png"):
        shutil.copy(figures / "curves.png", figures / name)
    out = invoke("plot", run, "--kind", "curves")
    assert out.exit_code == 0 and [p.name for p in printed_paths(out)] == ["curves.png"], out.output
    said = " ".join(out.output.split()).split("also in ")[1:]
    assert said == [f"{figures}, not drawn by this command: curves-optim.lr=0.1.png (from an earlier drawing, "
                    "whose runs were split into figures otherwise; they may no longer apply)"], out.output
    assert (figures / "curves-optim.lr=0.1.png").is_file()
    # with --out FILE, its name's own
    (tmp_path / "fig-seed=1.png").write_bytes(b"")
    out = invoke("plot", run, "--kind", "curves", "--out", tmp_path / "fig.png")
    assert "not drawn by this command: fig-seed=1.png (" in " ".join(out.output.split()), out.output


def test_plot_one_run_folder(full):
    out = invoke("plot", full, "--kind", "heatmap")  # one run: no --run needed; into the run's own folder
    assert out.exit_code == 0, out.output
    assert printed_paths(out) == [full / "figures" / "heatmap-grad_norm.png"]


@pytest.mark.parametrize("args, message", [
    (["--kind", "nope"], "--kind 'nope' is not allowed; choices: standard, profile, heatmap, curves, gradnorm, "
                         "ratio, grid, hist, spectrum"),
    # the theory's phase diagram, drawn from no runs: said where it is (it read as any unknown kind)
    (["--kind", "phase"], "--kind 'phase' is not allowed: the phase diagram is mean-field theory's, drawn from no "
                          "runs: `gradflow theory phase --activation tanh`; choices: standard, profile,"),
    (["--kind", "Phase"], "--kind 'Phase' is not allowed: the phase diagram is mean-field theory's"),
    (["--kind", "profile", "--quantity", "nope"], "--quantity 'nope' is not in"),
    (["--kind", "profile", "--color", "model.nope"], "--color 'model.nope' is not a column"),
    (["--kind", "profile", "--facet", "data.dim"], "--facet 'data.dim' does not vary"),
    (["--kind", "grid", "--x", "nope", "--y", "model.depth"], "--x 'nope' is not a column"),
    (["--kind", "grid", "--x", "model.depth", "--y", "nope"], "--y 'nope' is not a column"),
    (["--kind", "grid", "--x", "model.depth", "--y", "model.activation", "--value", "nope"], "--value 'nope'"),
    (["--kind", "grid", "--x", "model.depth", "--y", "model.activation", "--theory", "6xi_c"],
     "--theory 6xi_c is drawn against init.sw2, so --x or --y must be init.sw2 (got --x model.depth --y "),
    # the x axis of a ratio plot, though swept, colours no line (it read "by='model.depth' is not a swept key")
    (["--kind", "ratio", "--color", "model.depth"], "--color model.depth is this plot's x axis: each line runs "
                                                    "along model.depth; choices: model.activation"),
    (["--kind", "ratio", "--color", "depth"], "--color model.depth is this plot's x axis"),
    (["--kind", "profile", "--step", "soon"], "--step 'soon' is not allowed; choices: a probed step number"),
    (["--kind", "profile", "--step", "99"], "--step 99 was not probed"),
    (["--kind", "heatmap"], "pass --run with one of"),
    # a key no run has is named (the nearest runs alone were listed, which item named nothing left to guess)
    (["--kind", "heatmap", "--run", "depth=2,actvation=tanh"], "--run 'depth=2,actvation=tanh': no run of "),
    (["--kind", "heatmap", "--run", "depth=2,actvation=tanh"], "has a key 'actvation' (did you mean activation?); "
                                                               "keys that vary: model.depth, model.activation; runs: "),
    (["--kind", "hist"], "no hist rows; run with probe=full"),
    (["--kind", "profile", "--x", "model.depth"], "--x does not apply to --kind profile (it applies to: grid)"),
    (["--format", "jpg"], "--format 'jpg' is not allowed; choices: png, pdf, svg"),
])
def test_plot_bad_options_are_one_red_line(plain, tmp_path, args, message):
    out = invoke("plot", plain, *args, "--out", tmp_path)
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1 and out.output.startswith("error:")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_folder_of_sweeps_gets_each_sweeps_own_set(plain, full, diverging, plain_set, tmp_path):
    """`gradflow plot results/`: each sweep's standard set, as `gradflow plot SWEEP` draws it, into its
    own figures folder (or --out/SWEEP). Drawn together, unrelated studies were one legended line per
    run: a hundred runs' legend left the axes a sliver. A sweep with nothing to draw is passed over,
    said on stderr (stdout stays the figures' paths)."""
    import shutil

    folder = tmp_path / "results"
    for study in (plain, full.parent, diverging):
        shutil.copytree(study, folder / study.name, ignore=shutil.ignore_patterns("figures"))
    (folder / "empty" / "run").mkdir(parents=True)
    (folder / "empty" / "run" / store.RUN_FILE).write_text("{}")  # a run that never wrote anything
    out = invoke("plot", folder)
    assert out.exit_code == 0, out.output
    paths = printed_paths(out)
    lines = out.output.splitlines()  # (CliRunner mixes stderr in: the passed-over note comes after the paths)
    assert max(i for i, line in enumerate(lines) if line.startswith("passed over: ")) > lines.index(str(paths[-1]))
    assert {p.parent for p in paths} == {folder / name / "figures" for name in ("plain", "full", "diverging")}
    drawn = sorted(p for p in paths if p.parent.parent.name == "plain")
    assert [p.name for p in drawn] == sorted(plain_set)
    assert "curves.png" in {p.name for p in paths if p.parent.parent.name == "diverging"}
    assert "heatmap-grad_norm.png" in {p.name for p in paths if p.parent.parent.name == "full"}  # one run's set

    out = invoke("plot", folder, "--out", tmp_path / "figs")
    assert out.exit_code == 0, out.output
    assert {p.parent for p in printed_paths(out)} == {tmp_path / "figs" / n for n in ("plain", "full", "diverging")}


def test_only_a_folder_of_separate_sweeps_is_drawn_sweep_by_sweep(tmp_path):
    # a folder whose runs sit beside a sweep's (its own, or a sweep below a sweep) is drawn whole: each
    # folder's set would hold the runs below it, the sweep's drawn twice
    from gradflow.plots.standard import studies

    def runs_at(*where):
        for w in where:
            (tmp_path / w).mkdir(parents=True)
            (tmp_path / w / store.RUN_FILE).write_text("{}")

    runs_at("a/r1", "a/r2", "b/r1")
    assert studies(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert studies(tmp_path / "a") == [tmp_path / "a"]
    (tmp_path / "b" / store.SWEEP_FILE).write_text("")
    assert studies(tmp_path / "b") == [tmp_path / "b"]
    runs_at("a/deeper/r1")
    assert studies(tmp_path) == [tmp_path]
    (tmp_path / "a" / "deeper").rename(tmp_path / "c")
    runs_at("r0")
    assert studies(tmp_path) == [tmp_path]


def test_a_figure_that_cannot_be_written_leaves_the_rest_of_the_set_drawn(plain, plain_set, tmp_path):
    """A folder where one figure's file goes (a user's `mkdir`): that figure is one line on stderr naming
    it and why, exit 1; every other figure of the set is drawn and printed, in a folder of studies too
    (it stopped the whole set, with a traceback, before)."""
    import shutil

    sweep = tmp_path / "results" / "plain"
    shutil.copytree(plain, sweep, ignore=shutil.ignore_patterns("figures"))
    alone = plain_set
    (sweep / "figures" / "curves.png" / "kept").mkdir(parents=True)
    out = invoke("plot", sweep)
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert [p.name for p in printed_paths(out)] == [n for n in alone if n != "curves.png"]
    (line,) = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert line == (f"error: curves not drawn: cannot write {sweep / 'figures' / 'curves.png'}: a folder is in "
                    "its place; write the figure elsewhere")
    assert (sweep / "figures" / "curves.png" / "kept").is_dir()  # (nothing of the user's removed)

    shutil.copytree(plain, tmp_path / "results" / "twin", ignore=shutil.ignore_patterns("figures"))
    out = invoke("plot", tmp_path / "results")  # the twin's set whole, plain's less its curves
    assert out.exit_code == 1, out.output
    assert sorted(p.name for p in printed_paths(out)) == sorted([n for n in alone if n != "curves.png"] + alone)
    assert f"error: curves not drawn: cannot write {sweep / 'figures' / 'curves.png'}" in out.output

    (sweep / "figures" / "ratio-init.png").unlink()  # (drawn above) a second folder in a figure's place: a line
    (sweep / "figures" / "ratio-init.png").mkdir()  # each, then a summary (a full disk fails every figure)
    out = invoke("plot", sweep)
    lines = out.output.splitlines()
    assert out.exit_code == 1 and lines[-1] == "error: 2 figures not drawn (each said above); the others are drawn"
    flat = " ".join(out.output.split())
    assert flat.count("not drawn: cannot write") == 2 and "ratio-init not drawn: cannot write" in flat, out.output
    assert [p.name for p in printed_paths(out)] == [n for n in alone if n not in ("curves.png", "ratio-init.png")]


def test_plot_where_counts_only_the_runs_it_keeps_among_those_with_nothing_to_draw(plain, tmp_path):
    # a run with nothing to draw that --where left out (another activation's, another study's) was still
    # counted under the figure of the runs it kept: "not drawn: 1 incomplete run" of a figure it was never in
    copy = tmp_path / "plain"
    shutil.copytree(plain, copy, ignore=shutil.ignore_patterns("figures"))
    (damaged,) = [p for p in copy.glob("*/run.json") if "depth=2" in p.parent.name and "tanh" in p.parent.name]
    damaged.write_text(damaged.read_text()[:40])
    said = {act: " ".join(invoke("plot", copy, "--kind", "profile", "--where", f"model.activation={act}", "--out",
                                 tmp_path / act).output.split()) for act in ("relu", "tanh")}
    assert "profile-" in said["relu"] and "not drawn" not in said["relu"], said["relu"]
    assert "not drawn: 1 incomplete run (a damaged or missing file)" in said["tanh"], said["tanh"]


def test_plot_says_which_runs_it_left_out_for_want_of_tables(plain, tmp_path):
    # a run killed before it wrote a table (kill -9, out of memory) and one still running were left out of the
    # figures without a word: a figure of 2 of a sweep's 8 runs read as the whole sweep
    copy = tmp_path / "plain"
    shutil.copytree(plain, copy, ignore=shutil.ignore_patterns("figures"))
    killed, live = sorted(p.parent for p in copy.glob("*/run.json"))[:2]
    for run, status in ((killed, "interrupted"), (live, "running")):
        rec = json.loads((run / "run.json").read_text())
        rec.update(status=status, files=["config.yaml"])
        rec.pop("pid", None)
        (run / "run.json").write_text(json.dumps(rec))
        for table in ("layers.parquet", "metrics.parquet"):
            (run / table).unlink()
    out = invoke("plot", copy, "--kind", "profile", "--out", tmp_path / "figs")
    assert out.exit_code == 0 and "not drawn: 1 run interrupted before writing a table (killed) and 1 run still " \
        f"running (tables are written at the end); gradflow ls {copy} says why" in " ".join(out.output.split()), \
        out.output


def test_a_folder_of_runs_killed_before_their_tables_says_so(plain, tmp_path):
    # every run killed before it wrote a table: plot said "nothing to draw (no probed layers and no metrics in its
    # runs)", where a folder of such runs beside others says they were interrupted (killed)
    one = tmp_path / "one"
    run = sorted(p.parent for p in plain.glob("*/run.json"))[0]
    shutil.copytree(run, one / run.name, ignore=shutil.ignore_patterns("figures", "*.parquet"))
    rec = json.loads((one / run.name / "run.json").read_text())
    rec.update(status="interrupted", files=["config.yaml"])
    (one / run.name / "run.json").write_text(json.dumps(rec))
    out = invoke("plot", one)
    assert out.exit_code == 1 and " ".join(out.output.split()) == (
        f"error: every run of {one} failed before its first step, is incomplete or was interrupted before it wrote a "
        f"table (killed), so there is nothing to draw; gradflow ls {one} says why"), out.output
    # beside one still running (this process, its writer), that too
    import socket

    live = sorted(p.parent for p in plain.glob("*/run.json"))[1]
    shutil.copytree(live, one / live.name, ignore=shutil.ignore_patterns("figures", "*.parquet"))
    rec = json.loads((one / live.name / "run.json").read_text())
    rec.update(status="running", files=["config.yaml"], pid=os.getpid(), host=socket.gethostname())
    (one / live.name / "run.json").write_text(json.dumps(rec))
    with store.lock(one, "gradflow run held-by-the-test"):  # (a live writer holds its study's lock)
        said = " ".join(invoke("plot", one).output.split())
    assert "was interrupted before it wrote a table (killed) or is still running, so there is nothing" in said, said


def test_a_run_still_running_is_said_to_have_no_tables_yet(tmp_path):
    # a Recorder's loop still at work: plot said "nothing to draw (no probed layers and no metrics in its runs)"
    (tmp_path / "live" / "a").mkdir(parents=True)
    (tmp_path / "live" / "a" / "run.json").write_text(json.dumps({"status": "running"}))
    tail = "; a run's tables are written when it ends (a Recorder's at close()): nothing to draw yet"
    for args in ([], ["--kind", "profile"]):
        out = invoke("plot", tmp_path / "live", *args)
        assert out.exit_code == 1 and " ".join(out.output.split()) == (
            f"error: the run of {tmp_path / 'live'} is still running{tail}"), out.output
    out = invoke("plot", tmp_path / "live" / "a")  # (the run's own folder)
    assert " ".join(out.output.split()) == f"error: {tmp_path / 'live' / 'a'} is still running{tail}", out.output
    # beside a run that failed before its first step: it said "has no layers rows"
    (tmp_path / "live" / "b").mkdir()
    (tmp_path / "live" / "b" / "run.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    out = invoke("plot", tmp_path / "live", "--kind", "profile")
    assert " ".join(out.output.split()) == (
        f"error: 1 run of {tmp_path / 'live'} is still running and the rest failed before their first step or are "
        f"incomplete{tail}"), out.output


def test_plot_a_folder_without_runs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = invoke("plot", empty)
    assert out.exit_code == 1 and "holds no runs" in out.output and len(out.output.strip().splitlines()) == 1


def test_runs_with_nothing_to_draw_are_named_and_a_folder_of_only_those_is_one_line(plain, tmp_path):
    """An incomplete run (run.json cut short) is left out of the figures with a line saying so (it was left out
    without a word); a folder whose every run has nothing to draw says that, for the standard set and one kind
    (the set drew a ratio figure of NaN crosses, --kind said "has no layers rows")."""
    copy = tmp_path / "plain"
    shutil.copytree(plain, copy, ignore=shutil.ignore_patterns("figures"))
    jobs = sorted(p.parent for p in copy.glob("*/run.json"))
    damaged = jobs[0] / "run.json"
    damaged.write_text(damaged.read_text()[:40])
    out = invoke("plot", copy)
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and f"not drawn: 1 incomplete run (a damaged or missing file); gradflow ls {copy} says why" in said
    for job in jobs[1:]:
        (job / "run.json").write_text("{")
    for args in ([], ["--kind", "ratio"], ["--kind", "profile"]):
        out = invoke("plot", copy, *args)
        said = " ".join(out.output.split())
        assert out.exit_code == 1 and f"every run of {copy} failed before its first step or is incomplete" in said, said


def test_a_run_that_failed_after_some_steps_still_has_something_to_draw():
    """A run that failed at step 5 wrote the metrics of its first steps: a folder of only such runs is drawn,
    not refused as "failed before its first step" (only one that failed with no step done is)."""
    failed = {store.STATUS: store.FAILED, "record": {"steps_done": 5}}
    assert not store.drew_nothing(failed)
    assert store.nothing_drawn_reason("f", [failed]) is None
    at_once = {store.STATUS: store.FAILED, "record": {"steps_done": 0}}
    assert store.drew_nothing(at_once) and "failed before its first step" in store.nothing_drawn_reason("f", [at_once])


def test_a_diverged_run_crashes_no_kind(diverging, tmp_path):
    runs = gradflow.load(diverging, table="runs")
    bad = runs.loc[runs["status"] == "diverged", "run"].iloc[0]
    # (curves and grid with a diverged run: tests/test_plots.py, on a fabricated sweep)
    for args in (["--kind", "profile", "--step", "last"], ["--kind", "heatmap", "--run", bad],
                 ["--kind", "ratio", "--step", "last"], ["--kind", "hist", "--run", bad, "--step", "last"],
                 ["--kind", "spectrum", "--step", "last"]):
        out = invoke("plot", diverging, *args, "--out", tmp_path)
        assert out.exit_code == 0, (args, out.output)
    assert len(list(tmp_path.glob("*.png"))) == 5


# --- compare -------------------------------------------------------------------------------------
def test_compare_two_sweeps_matches_configs(plain, batchnorm, tmp_path):
    out = invoke("compare", plain, batchnorm, "--kind", "profile", "--step", "0", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    (fig,) = tmp_path.iterdir()
    assert fig.name == "compare-profile-grad_norm-step0-plain-vs-batchnorm.png" and fig.read_bytes()[:8] == PNG
    text = out.output
    assert "plain" in text and "batchnorm" in text and "batchnorm vs plain" in text
    flat = " ".join(text.split())
    assert "matched on model.depth, model.activation" in flat
    assert "sources differ in norm.name (none | batchnorm)" in flat
    assert text.count("ratio init") == 4  # one block per config: depth 2, 4 x relu, tanh
    assert text.count("no run") == 2  # batchnorm has no relu runs
    assert "test acc" in text


def test_compare_where_keeps_the_runs_it_names_in_every_source_table_and_figure(plain, batchnorm, tmp_path):
    from gradflow import compare as matching

    out = invoke("compare", plain, batchnorm, "--where", "depth=4", "--kind", "profile", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    (fig,) = tmp_path.iterdir()
    assert fig.name == "compare-profile-grad_norm-step0-plain-vs-batchnorm-where-depth=4.png"
    assert fig.read_bytes()[:8] == PNG
    flat = " ".join(out.output.split())
    assert out.output.count("ratio init") == 2 and "matched on model.activation" in flat, out.output  # relu, tanh
    # the figure's rows are those runs' only (the table `compare` draws from)
    sources = ["plain", "batchnorm"]
    runs = matching.load_runs([plain, batchnorm], sources)
    layers = matching.overlay_table([plain, batchnorm], sources, runs[runs["model.depth"] == 4], "layers", [])
    assert set(layers["model.depth"]) == {4} and set(layers["source"]) == set(sources)
    assert layers["run"].nunique() == 3  # plain's tanh and relu, batchnorm's tanh
    # (the values the source has of the key: it said which source kept none, not what it holds)
    for args, message in [(["--where", "activation=relu"], "--where activation=relu keeps no run of batchnorm "
                                                           "(batchnorm: model.activation tanh); "
                                                           f"gradflow ls {batchnorm} shows their runs"),
                          # (of two keys, the combinations it has: each key's values alone read as a match)
                          (["--where", "activation=relu", "--where", "depth=2"], "keeps no run of batchnorm "
                           "(batchnorm: model.activation/model.depth tanh/2, tanh/4); "),
                          (["--where", "depth=9"], "--where depth=9 matches no run; model.depth here: 2, 4"),
                          (["--where", "deep=2"], "--where key 'deep' is not a column")]:
        out = invoke("compare", plain, batchnorm, *args, "--out", tmp_path)
        assert out.exit_code == 1 and message in " ".join(out.output.split()), out.output
        assert len(out.output.strip().splitlines()) <= 2  # (one line, folded at the terminal's width)
    # --where fixing every swept key the sources share: the one row is its doing, not a lack of common keys
    out = invoke("compare", plain, batchnorm, "--where", "depth=4", "--where", "activation=tanh", "--out", tmp_path)
    flat = " ".join(out.output.split())
    assert out.exit_code == 0 and "only the runs with depth=4 activation=tanh (--where): every run of a source in " \
        "one row" in flat and "no swept key in common" not in flat, out.output
    # sweeps of seeds alone have no key to match on (seeds are pooled): a --where that fixes no swept key
    # leaves the note as it was
    a = _sweep(tmp_path, "seeds-a", "seed=0,1", "train.steps=1", "model.depth=2")
    b = _sweep(tmp_path, "seeds-b", "seed=0,1", "train.steps=1", "model.depth=2", "model.activation=relu")
    out = invoke("compare", a, b, "--where", "depth=2", "--out", tmp_path / "figs")
    flat = " ".join(out.output.split())
    assert out.exit_code == 0 and "no swept key in common" in flat and "(--where)" not in flat, out.output


def test_compare_legend_names_what_sets_each_source_apart(plain, batchnorm, tmp_path):
    # the line-style legend read "source=plain" / "source=batchnorm": the folders' names, not what differs
    from gradflow import compare as matching
    from gradflow.plots import figures

    sources = ["plain", "batchnorm"]
    runs = matching.load_runs([plain, batchnorm], sources)
    differ = list(matching.differing_keys(runs, sources))
    assert "norm.name" in differ
    layers = matching.overlay_table([plain, batchnorm], sources, runs, "layers", differ)
    # (the choice first, what else differs after it: plain's fixture probes the Jacobian too)
    for color in (None, "source"):
        texts = [" ".join(t.get_text().split()) for lg in figures.profile(layers, step=0, color=color).legends
                 for t in lg.get_texts()]
        assert {"plain (norm=none, probe.jacobian=true)", "batchnorm (norm=batchnorm, probe.jacobian=false)"} \
            <= set(texts), texts
    # coloured by source, the ratio and the curves too (refused as "color='source' is not a swept key"); each
    # source named once, the line styles left to a key (the profile's markers, which took the source again)
    metrics = matching.overlay_table([plain, batchnorm], sources, runs, "metrics", differ)
    for fig in (figures.profile(layers, step=0, color="source"),
                figures.ratio(layers, "init", by="source", quantity="signal_norm"),
                figures.curves(metrics, color="source")):
        texts = [" ".join(t.get_text().split()) for lg in fig.legends for t in lg.get_texts()]
        assert texts.count("plain (norm=none, probe.jacobian=true)") == 1, texts
        assert texts.count("batchnorm (norm=batchnorm, probe.jacobian=false)") == 1, texts


def test_a_sources_legend_entry_names_first_the_keys_that_tell_it_from_each_other_source():
    """plain (tanh, xavier, no skip) beside relu (relu, kaiming) and resid (tanh, xavier, residual): the
    first two keys by the table's order were init and activation, the same for plain and resid, so their
    entries read alike; an init choice's own keys (init.gain) follow from it and are not named."""
    from gradflow.plots.style import Palette

    df = pd.DataFrame({"source": ["plain", "relu", "resid"], "model.depth": [3, 3, 3]})
    df.attrs["source_keys"] = {
        "plain": {"init.name": "xavier_normal", "init.gain": 1.0, "model.activation": "tanh", "model.skip": "none"},
        "relu": {"init.name": "kaiming_normal", "init.mode": "fan_in", "model.activation": "relu",
                 "model.skip": "none"},
        "resid": {"init.name": "xavier_normal", "init.gain": 1.0, "model.activation": "tanh",
                  "model.skip": "residual"}}
    palette = Palette(df, "source")
    assert [palette.label("source", s) for s in ("plain", "relu", "resid")] == [
        "plain (init=xavier_normal, model.skip=none, 1 more)", "relu (init=kaiming_normal, model.activation=relu, "
        "1 more)", "resid (init=xavier_normal, model.skip=residual, 1 more)"]
    # a choice's own key where nothing else tells two sources apart (both read init=xavier_normal)
    df.attrs["source_keys"] = {"plain": {"init.name": "xavier_normal", "init.gain": 1.0},
                               "relu": {"init.name": "xavier_normal", "init.gain": 2.0},
                               "resid": {"init.name": "kaiming_normal"}}
    palette = Palette(df, "source")
    assert [palette.label("source", s) for s in ("plain", "relu", "resid")] == [
        "plain (init=xavier_normal, init.gain=1)", "relu (init=xavier_normal, init.gain=2)", "resid (init=kaiming_normal)"]
    # a folder named by its override says it once: `gradflow run init=standard` beside the default run
    df = pd.DataFrame({"source": ["default", "init=standard", "x/init=standard,model.depth=4"], "model.depth": 3})
    df.attrs["source_keys"] = {"default": {"init.name": "xavier_normal"}, "init=standard": {"init.name": "standard"},
                               "x/init=standard,model.depth=4": {"init.name": "standard", "model.depth": 4,
                                                                 "model.width": 8}}
    palette = Palette(df, "source")
    assert [palette.label("source", s) for s in df["source"]] == [
        "default (init=xavier_normal)", "init=standard", "x/init=standard,model.depth=4 (model.width=8)"]
    # (a legend's entry names it so, not by its plain label, "source=init=standard")
    assert palette.label("source", "init=standard", "source=init=standard") == "init=standard"
    # the same setting however the folder's name spells it: by the group, the whole key or its last part, and
    # the value as the same number
    names = ["init.name=standard,optim.lr=1e-3", "lr=0.01,init.gain=1.0", "c"]
    df = pd.DataFrame({"source": names, "model.depth": 3})
    df.attrs["source_keys"] = {names[0]: {"init.name": "standard", "optim.lr": 0.001},
                               names[1]: {"optim.lr": 0.01, "init.gain": 1.0}, "c": {"optim.lr": 0.1}}
    palette = Palette(df, "source")
    assert [palette.label("source", s) for s in names] == [*names[:2], "c (optim.lr=0.1)"]


def _compare_at_80_columns(*args, out_dir: Path, width: int = 80, real: bool = False) -> tuple[str, list[str], str]:
    """`gradflow compare ARGS` piped at 80 (or `width`) columns: its output, its lines (each within the width
    but the figure's path) and the table's header line. In this process (`piped`, the same bytes as a pipe
    gets); real: through a real pipe from a process of its own."""
    if real:
        env = {**os.environ, "COLUMNS": str(width), "TERM": "dumb"}
        out = subprocess.run([sys.executable, "-m", "gradflow", "compare", *map(str, args), "--out", str(out_dir)],
                             capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr
    else:
        out = piped("compare", *args, "--out", out_dir, columns=width)
    lines = out.stdout.splitlines()
    assert all(len(ln) <= width for ln in lines if not ln.startswith(str(out_dir))), lines
    return out.stdout, lines, next(ln for ln in lines if ln.startswith("┃"))


@pytest.mark.parametrize("width", [62, 70])
def test_compare_names_the_columns_it_leaves_out_whole(plain, batchnorm, diverging, tmp_path, width):
    # a difference column's header is two lines ("diverging" over "vs plain"): the note broke inside the
    # name where the line was full ("... diverging" / "vs plain; ...")
    text, lines, _ = _compare_at_80_columns(plain, batchnorm, diverging, "--by", "depth", out_dir=tmp_path,
                                            width=width)
    note = " ".join(text.split())
    hidden = note[note.index("not shown"):].split(":", 1)[1].split(";")[0].split(", ")
    assert hidden and all(name.endswith(" vs plain") for name in hidden), note
    assert all(any(name in ln for ln in lines) for name in hidden), lines


def test_compare_of_three_at_80_columns_folds_no_number(plain, batchnorm, diverging, tmp_path):
    # the labels were "grad ratio first/last, init" and every column could fold: "first/la…", "1.9" over "6"
    # (--by depth: activation, fixed at tanh in batchnorm and relu in diverging, would be a key too)
    text, lines, header = _compare_at_80_columns(plain, batchnorm, diverging, "--by", "depth", out_dir=tmp_path,
                                                 real=True)  # (the one through a real pipe)
    assert header.split() == ["┃", "depth", "┃", "┃", "plain", "┃", "batchnorm", "┃", "diverging", "┃",
                              "batchnorm", "vs", "plain", "┃"], header  # its headers whole, on one line
    body = [ln for ln in lines if ln.startswith("│")]
    assert sum("ratio init" in ln for ln in body) == 3 and "…" not in text  # depth 2, 3 and 4
    for ln in body:  # a value on every row of a block's numbers: none carried onto a line of its own
        cells = [c.strip() for c in ln.strip("│").split("│")]
        assert cells[1] == "runs" or all(cells[2:]), ln
    assert "not shown (80 columns): diverging vs plain;" in " ".join(text.split())
    assert "ratio = ‖∂L/∂W‖ first layer / last layer" in text
    # each ratio the table shows is defined under it, as under ls (the signal ratio was left unexplained)
    assert "signal ratio" in " ".join(body) and "signal ratio = ‖∂L/∂z‖ first layer / last layer, at init" in text


def test_compare_puts_a_long_difference_header_on_two_lines_rather_than_drop_it(plain, batchnorm, tmp_path):
    """Two sources of ten letters: "batchnorms vs plain-tanh" on one line makes the table 81 columns wide
    and the differences, what a comparison is for, were dropped; on two lines they fit."""
    import shutil

    a, b = shutil.copytree(plain, tmp_path / "plain-tanh"), shutil.copytree(batchnorm, tmp_path / "batchnorms")
    text, lines, header = _compare_at_80_columns(a, b, out_dir=tmp_path / "figs")
    heads = [ln for ln in lines if ln.startswith("┃")]
    assert len(heads) == 2 and heads[0].split()[-2:] == ["batchnorms", "┃"], heads
    assert heads[1].split()[-3:] == ["vs", "plain-tanh", "┃"], heads
    assert "not shown" not in text and "ratios as ×(batchnorms / plain-tanh)" in " ".join(text.split())
    assert any("×" in ln for ln in lines if ln.startswith("│")), text


def test_compare_matched_on_many_keys_stacks_them_at_80_columns(plain, batchnorm, tmp_path):
    """Six matched keys as columns would fold every key and value mid-word at 80 columns: the table then
    has one config column of key=value lines (a group's choice as it is set: activation, data=gaussian),
    each whole, beside the block's rows, and the difference column still fits."""
    by = [a for k in ("model.depth", "model.activation", "model.width", "data.name", "train.steps", "optim.name")
          for a in ("--by", k)]
    text, lines, header = _compare_at_80_columns(plain, batchnorm, *by, out_dir=tmp_path)
    assert header.split() == ["┃", "config", "┃", "┃", "plain", "┃", "batchnorm", "┃", "batchnorm", "vs",
                              "plain", "┃"], header
    first = [c.strip() for c in lines[lines.index(header) + 2].strip("│").split("│")]
    assert first[:2] == ["depth=2", "runs"], first
    stacked = [[c.strip() for c in ln.strip("│").split("│")][0] for ln in lines if ln.startswith("│")]
    assert stacked[:6] == ["depth=2", "activation=relu", "width=8", "data=gaussian", "steps=4", "optim=sgd"]
    assert sum(c == "depth=4" for c in stacked) == 2 and "not shown" not in text


def test_compares_difference_is_the_second_source_against_the_first():
    # B / A and B - A, none where either is not finite (a diverged source's inf ratio read as x0 or -inf)
    from gradflow.compare import difference

    assert difference(2.0, 6.0, "ratio") == 3.0 and difference(2.0, 6.0, "diff") == 4.0
    for a, b in ((math.inf, 2.0), (2.0, math.inf), (math.nan, 2.0), (0.0, 2.0)):
        assert math.isnan(difference(a, b, "ratio")), (a, b)
    assert math.isnan(difference(math.inf, 2.0, "diff")) and math.isnan(difference(2.0, -math.inf, "diff"))


def test_compare_table_numbers_are_per_source_medians(plain, batchnorm):
    runs = pd.concat([gradflow.load(plain, table="runs").assign(source="plain"),
                      gradflow.load(batchnorm, table="runs").assign(source="batchnorm")], ignore_index=True)
    assert match_keys(runs, ["plain", "batchnorm"]) == ["model.depth", "model.activation"]
    table = comparison(runs, ["plain", "batchnorm"], ["model.depth"])  # plain's activations pooled: median of two
    assert list(table["cell"]) == [(2,), (2,), (4,), (4,)] and list(table["runs"]) == [2, 1, 2, 1]
    for column in ("grad_ratio.init", "final.train_loss"):  # (the training loss too: a Recorder may log no more)
        expected = runs.groupby(["source", "model.depth"])[column].median()
        for _, row in table.iterrows():
            assert row[column] == pytest.approx(expected[(row["source"], row["cell"][0])])
    out = invoke("compare", plain, batchnorm, "--by", "depth", "--kind", "ratio", "--out", plain.parent / "cmp")
    assert "matched on model.depth" in " ".join(out.output.split())  # --by takes the short name, as ls does
    # the note names what the pooled runs differ in (plain's two activations)
    assert out.exit_code == 0 and "medians over the runs in a cell, which differ in activation" in " ".join(
        out.output.split())
    assert pooled_keys(runs, ["model.depth"]) == ["model.activation"]
    assert pooled_keys(runs, ["model.depth", "model.activation"]) == []
    # a list-valued key (optim.betas) makes cells as comparison makes them (a plain groupby raised on it)
    betas = pd.DataFrame({"source": ["a", "a", "b"], "optim.betas": [[0.9, 0.99], [0.9, 0.99], [0.9, 0.999]],
                          "seed": [0, 1, 0], "status": ["ok"] * 3, "run": ["x", "y", "z"]})
    assert pooled_keys(betas, ["optim.betas"]) == ["seed"]
    table = comparison(betas, ["a", "b"], ["optim.betas"])
    assert sorted(zip(table["source"], table["runs"])) == [("a", 0), ("a", 2), ("b", 0), ("b", 1)]
    assert out.output.count("ratio init") == 2
    # a cell of three skewed seeds: the median, 2, not the mean, 11 (pools of two cannot tell them apart)
    skewed = pd.DataFrame({"source": ["a"] * 3, "run": ["x", "y", "z"], "seed": [0, 1, 2], "status": ["ok"] * 3,
                           "model.depth": [2] * 3, "final.train_loss": [1.0, 2.0, 30.0]})
    assert comparison(skewed, ["a"], ["model.depth"])["final.train_loss"].tolist() == [2.0]


def test_compare_marks_a_chi1_theory_that_is_only_the_q_star_zero_limits():
    # tanh under Xavier (sw2 = 1, sb2 = 0) read `chi1 theory 1` beside a measured ~0.9, unmarked, where ls and
    # the report mark it 1† and say why; kaiming's 1.21 is a fixed point's, unmarked
    from gradflow.cli.console import console
    from gradflow.cli.plots import show_comparison

    runs = pd.DataFrame({"source": ["a", "a", "b", "b"], "run": ["x", "k", "x", "k"], "status": ["ok"] * 4,
                         "model.name": ["mlp"] * 4, "model.activation": ["tanh"] * 4,
                         "init.name": ["xavier_normal", "kaiming_normal"] * 2,
                         "chi1_theory": [1.0, 1.2098, 1.0, 1.2098], "chi1_measured": [0.91, 1.2, 0.90, 1.22]})
    table = comparison(runs, ["a", "b"], ["init.name"])
    with terminal_width(80), console.capture() as cap:
        show_comparison(table, ["a", "b"], ["init.name"], {})
    rows = [" ".join(ln.replace("│", " ").split()) for ln in cap.get().splitlines() if "│ chi1 theory" in ln]
    assert rows == ["chi1 theory 1.21 1.21 +0", "chi1 theory 1† 1† +0"], cap.get()
    assert "†: chi1 theory's limit at q* = 0 (no bias)" in " ".join(cap.get().split())
    # --by model.activation pools the two into one cell: its median holds a limit's value, so it is marked †,
    # as ls marks the limit's run (marking only cells all of whose runs are limits left the median 1.1 unmarked)
    table = comparison(runs, ["a", "b"], ["model.activation"])
    assert table["chi1_limit"].tolist() == [True, True]
    with terminal_width(80), console.capture() as cap:
        show_comparison(table, ["a", "b"], ["model.activation"], {})
    rows = [" ".join(ln.replace("│", " ").split()) for ln in cap.get().splitlines() if "│ chi1 theory" in ln]
    assert rows == ["chi1 theory 1.1† 1.1† +0"], cap.get()


def test_compare_differences_of_chi1_are_differences_and_of_gradient_ratios_ratios():
    # chi1 (measured and theory) is a per-layer factor near 1, compared as b - a ("+0.1"); the gradient ratios
    # span decades, compared as b / a ("×0.5"); the losses and accuracies as b - a
    from gradflow import compare as matching
    from gradflow.cli.console import console
    from gradflow.cli.plots import show_comparison

    runs = pd.DataFrame({"source": ["a", "b"], "run": ["r", "r"], "status": ["ok"] * 2, "model.depth": [12, 12],
                         "grad_ratio.init": [2.0, 1.0], "chi1_measured": [1.1, 1.3]})
    table = comparison(runs, ["a", "b"], ["model.depth"])
    with terminal_width(80), console.capture() as cap:
        show_comparison(table, ["a", "b"], ["model.depth"], {})
    rows = {ln.split("│")[2].strip(): " ".join(ln.split("│")[3:]).split() for ln in cap.get().splitlines()
            if ln.count("│") > 3}
    assert rows["ratio init"] == ["2", "1", "×0.5"] and rows["chi1 meas"] == ["1.1", "1.3", "+0.2"], cap.get()
    assert {c: how for c, _, how in matching.COMPARED} == {
        "grad_ratio.init": "ratio", "signal_ratio.init": "ratio", "grad_ratio.final": "ratio",
        "chi1_measured": "diff", "chi1_theory": "diff", "final.train_loss": "diff", "final.train_acc": "diff",
        "final.test_acc": "diff"}


def test_compare_never_pools_a_swept_key_whose_values_the_sources_do_not_share(plain, diverging, tmp_path):
    """plain sweeps depth 2, 4; the other source is one run at depth 3. Leaving depth out of the match (no
    shared value) pooled plain's depths into one median set beside the depth-3 run: numbers of no
    configuration. Depth stays a key: no cell is shared, and the note says why."""
    runs = pd.concat([gradflow.load(plain, table="runs").assign(source="plain"),
                      gradflow.load(diverging / "model.depth=3", table="runs").assign(source="one")], ignore_index=True)
    by = match_keys(runs, ["plain", "one"])
    assert by == ["model.depth", "model.activation"]
    table = comparison(runs, ["plain", "one"], by)
    assert not (table[table["runs"] > 0].groupby("cell")["source"].nunique() > 1).any()
    assert unmatched(runs, ["plain", "one"], by) == {"model.depth": [[2, 4], [3]]}
    assert unmatched(runs, ["plain", "one"], ["model.activation"]) == {}  # relu is in both
    out = invoke("compare", plain, diverging / "model.depth=3", "--out", tmp_path)
    flat = " ".join(out.output.split())
    assert out.exit_code == 0 and "no configuration is in more than one source: model.depth 2/4 in A, 3 in B" in flat
    out = invoke("compare", plain, diverging / "model.depth=3", "--by", "activation", "--out", tmp_path)
    flat = " ".join(out.output.split())
    assert out.exit_code == 0 and "no configuration" not in flat and "which differ in depth" in flat, out.output


def test_a_cell_of_several_runs_is_their_median_over_the_finite_values():
    """Three seeds in a cell read their median (a mean of 1, 2 and 10 reads 4.33), an infinite one left
    out; a cell with no finite value shows what was logged."""
    runs = pd.DataFrame({"source": ["a"] * 4 + ["b"] * 2, "model.depth": [3] * 6, "seed": [0, 1, 2, 3, 0, 1],
                         "status": ["ok", "ok", "ok", "diverged", "ok", "ok"],
                         "grad_ratio.init": [1.0, 2.0, 10.0, math.inf, math.inf, math.nan]})
    table = comparison(runs, ["a", "b"], ["model.depth"]).set_index("source")
    assert table.loc["a", "grad_ratio.init"] == 2.0 and table.loc["a", "runs"] == 4
    assert table.loc["b", "grad_ratio.init"] == math.inf
    # its statuses counted, so that one seed of four diverging reads as one ("ok, diverged" read as half)
    assert table.loc["a", "status"] == "3× ok, diverged" and table.loc["b", "status"] == "2× ok"


def test_compare_two_runs_with_the_same_job_name(batchnorm, diverging, tmp_path):
    job = "model.depth=2"  # in both sweeps; the one at lr = 1e6 diverged
    assert source_labels([batchnorm / job, diverging / job]) == [f"batchnorm/{job}", f"diverging/{job}"]
    # a third run of another name has its study too (the two that needed theirs beside one that had none)
    assert source_labels([batchnorm / job, diverging / "model.depth=3", diverging / job]) == [
        f"batchnorm/{job}", "diverging/model.depth=3", f"diverging/{job}"]
    assert source_labels([batchnorm, diverging]) == ["batchnorm", "diverging"]
    out = invoke("compare", batchnorm / job, diverging / job, "--kind", "curves", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    flat = " ".join(out.output.split())
    assert f"diverging/{job}" in flat and "no swept key in common" in flat and "diverged" in flat
    assert len(list(tmp_path.glob("compare-curves-*.png"))) == 1
    # labels this long are letters in the table, each named whole on a line of its own (folded into the
    # columns they broke mid-name)
    lines = out.output.splitlines()
    assert lines[:3] == [f"A = batchnorm/{job}", f"B = diverging/{job}", "compare: A vs B"], out.output
    assert "B vs A" in out.output and "ratios as ×(B / A)" in flat
    assert not any(job in line for line in lines[3:-1])  # (the last line is the figure's path)


def test_compare_draws_the_mean_field_line_only_for_the_plain_mlps(plain, results):
    """compare leaves the keys its folders differ in out of the drawn table (the source names them): the
    theory still reads each line's whole config, so a residual twin (model.skip) gets no chi1 line though
    its activation has one, and plain MLPs beside a CNN (model.name) keep theirs."""
    from gradflow import compare as matching
    from gradflow.plots import figures

    def theory_sources(*roots):
        sources = [r.name for r in roots]
        runs = matching.load_runs(roots, sources)
        differ = list(matching.differing_keys(runs, sources))
        layers = matching.overlay_table(roots, sources, runs, "layers", differ)
        drawn = {"ratio": figures.ratio(layers, "init", quantity="signal_norm"),
                 "profile": figures.profile(layers, "signal_norm", step=0)}
        return {kind: sorted({line.split("/")[0] for line in fig.data["theory"]["line"]})
                if "theory" in fig.data else [] for kind, fig in drawn.items()}, differ

    drawn, differ = theory_sources(plain, _sweep(results, "residual", *GRID, "model.skip=residual"))
    assert "model.skip" in differ and drawn == {"ratio": ["plain"], "profile": ["plain"]}, drawn
    small = [o for o in SMALL if not o.startswith("model.width")]  # (a CNN has channels)
    out = invoke("sweep", *small, "model=cnn", *GRID, "model.channels=4", f"results={results}", "--name", "cnn")
    assert out.exit_code == 0, out.output
    drawn, differ = theory_sources(plain, results / "cnn")
    assert "model.name" in differ and drawn == {"ratio": ["plain"], "profile": ["plain"]}, drawn


def test_compare_at_step_0_of_sources_differing_only_in_update_keys_says_their_lines_coincide(plain, results):
    """Two sweeps alike but for the learning rate and clipping measure the same at step 0: their lines lay one
    on the other, the legend promising two markers and nothing saying why. The title says it; not at the
    last step, nor beside a source that differs in a key acting at step 0 (its norm)."""
    from gradflow import compare as matching
    from gradflow.plots import figures

    def title(*roots, step=0):
        sources = [r.name for r in roots]
        runs = matching.load_runs(roots, sources)
        layers = matching.overlay_table(roots, sources, runs, "layers", list(matching.differing_keys(runs, sources)))
        return " ".join(figures.profile(layers, "grad_norm", step=step).get_suptitle().split())

    faster = _sweep(results, "faster", *GRID, "probe.jacobian=true", "optim.lr=0.5", "train.grad_clip=1")
    said = "the sources differ only in optim.lr, train.grad_clip: no effect at step 0, their lines coincide"
    assert said in title(plain, faster)
    assert "coincide" not in title(plain, faster, step="last")
    shifted = _sweep(results, "shifted", *GRID, "probe.jacobian=true", "optim.lr=0.5", "seed=1")  # (other weights)
    assert "coincide" not in title(plain, shifted)


@pytest.mark.parametrize("args, message", [
    (["--kind", "heatmap"], "--kind 'heatmap' is not allowed; choices: profile, curves, gradnorm, ratio, spectrum"),
    (["--by", "model.nope"], "--by 'model.nope' is not a config key"),
    (["--kind", "spectrum"], "batchnorm has no jacobian rows; run with probe=full"),
    (["--kind", "ratio", "--panels"], "--panels does not apply to --kind ratio"),
    # only what compare has: plot's --facet and its hist kind were offered
    (["--kind", "curves", "--step", "3"], "--step does not apply to --kind curves (it applies to: profile, ratio, "
                                          "spectrum); --kind curves takes: --color"),
])
def test_compare_bad_options(plain, batchnorm, tmp_path, args, message):
    out = invoke("compare", plain, batchnorm, *args, "--out", tmp_path)
    assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    out = invoke("compare", plain, "--out", tmp_path)
    assert out.exit_code == 1 and "two or more folders" in out.output


@pytest.fixture(scope="module")
def skips(results) -> Path:
    """depth x skip (none, residual): model.alpha is read by the residual runs alone."""
    return _sweep(results, "skips", "model.depth=2,3", "model.skip=none,residual")


def test_a_where_figure_says_in_its_title_which_runs_it_kept(skips, batchnorm, tmp_path, monkeypatch):
    # --where skip=none of a skip sweep: titles leave a default (skip=none, norm=none) unsaid, so the figure read
    # as one of plain nets, with no word that the study swept skips or which of its runs were drawn
    import gradflow.cli.plots as plots

    titles = []
    real_save = plots.save

    def save(fig, *args, **kwargs):  # the real save, with the title the figure went out with
        titles.append(" ".join(fig.get_suptitle().split()))
        return real_save(fig, *args, **kwargs)

    monkeypatch.setattr(plots, "save", save)
    out = invoke("plot", skips, "--kind", "ratio", "--where", "skip=none", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert titles[-1].endswith("only the runs with skip=none (--where)") and "skip" not in titles[-1][:-40], titles
    out = invoke("compare", skips, batchnorm, "--kind", "profile", "--where", "depth=2", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert titles[-1].endswith("only the runs with depth=2 (--where)"), titles
    # without --where the title is as it was
    out = invoke("plot", skips, "--kind", "ratio", "--out", tmp_path)
    assert out.exit_code == 0 and "--where" not in titles[-1], titles


def test_seed_is_no_line_key_and_a_grid_needs_two_keys(results, plain):
    seeds = _sweep(results, "seeds", "model.depth=2", "seed=0,1")
    for option in ("--color", "--facet"):
        out = invoke("plot", seeds, "--kind", "profile", option, "seed")
        # seeds vary here: "does not vary" was false
        assert out.exit_code == 1 and "does not vary" not in out.output, out.output
        assert f"{option} seed: seeds are no line key" in " ".join(out.output.split())
    out = invoke("plot", plain, "--kind", "grid", "--x", "depth", "--y", "model.depth")
    assert out.exit_code == 1 and "--x and --y are both model.depth" in " ".join(out.output.split()), out.output
    # (one key as both: each panel held one colour, the other key's lines merged without a word)
    out = invoke("plot", plain, "--kind", "profile", "--color", "activation", "--facet", "model.activation")
    assert out.exit_code == 1 and "--color and --facet are both model.activation: each panel would hold one " \
        "colour; colour by another key: model.depth" in " ".join(out.output.split()), out.output


def test_where_draws_only_the_runs_it_keeps_under_a_name_of_its_own(plain, tmp_path):
    # a grid over two of three swept keys advised keeping one value of the third in Python only
    layers = gradflow.load(plain)
    out = invoke("plot", plain, "--kind", "profile", "--where", "activation=tanh", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    (path,) = printed_paths(out)
    assert path.name == "profile-grad_norm-step0-where-activation=tanh.png" and path.read_bytes()[:8] == PNG
    # the key it fixes is no axis any more (filtered before the options are checked)
    out = invoke("plot", plain, "--kind", "profile", "--facet", "activation", "--where", "activation=tanh",
                 "--out", tmp_path)
    assert out.exit_code == 1 and "--facet 'model.activation' does not vary in" in out.output, out.output
    assert "(the runs of --where activation=tanh); choices: model.depth" in " ".join(out.output.split())
    for args, message in [(["--where", "activation=sigmoid"],
                           "--where activation=sigmoid matches no run; model.activation here: relu, tanh"),
                          (["--where", "activaton=tanh"], "--where key 'activaton' is not a column (did you mean model.activation"),
                          (["--where", "tanh"], "--where 'tanh' must be KEY=VALUE")]:
        out = invoke("plot", plain, "--kind", "profile", *args, "--out", tmp_path)
        assert out.exit_code == 1 and message in " ".join(out.output.split()), out.output
        assert "a result by its header" not in out.output  # (results are columns of ls's table, not these)
    out = invoke("plot", plain, "--where", "seed=0")
    assert out.exit_code == 1 and "--where seed=0 needs --kind" in " ".join(out.output.split()), out.output
    # --run names a run by the items --where left to tell apart (depth=4 is two runs of the sweep, one of tanh)
    out = invoke("plot", plain, "--kind", "heatmap", "--run", "depth=4", "--out", tmp_path)
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and f"--run 'depth=4' matches 2 runs of {plain}; add a key=value that tells them " \
        "apart: model.activation=relu,model.depth=4; model.activation=tanh,model.depth=4" in said, said
    out = invoke("plot", plain, "--kind", "heatmap", "--run", "depth=5", "--out", tmp_path)
    assert out.exit_code == 1 and f"--run 'depth=5' is not a run of {plain}; choices: " in " ".join(out.output.split())
    out = invoke("plot", plain, "--kind", "heatmap", "--where", "activation=tanh", "--run", "depth=4", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert printed_paths(out)[0].name == "heatmap-grad_norm-model.activation=tanh,model.depth=4-where-activation=tanh.png"
    assert gradflow.load(plain).equals(layers)  # (nothing on disk changed)


RECURRENT = ["data=adding", "model.hidden=8", "train.steps=2", "data.n_train=64", "data.n_test=32",
             "train.batch_size=32"]


@pytest.fixture(scope="module")
def recurrent(results) -> Path:
    """rnn and lstm over data.T=4,8. It sets model.hidden, a key of the swept models and not of the default
    model=mlp: Hydra's own compose of the multirun applied it to the default and failed with its error."""
    return _sweep_only(results, "recurrent", "model=rnn,lstm", "data.T=4,8", *RECURRENT)


def _sweep_only(results: Path, name: str, *overrides: str) -> Path:
    out = invoke("sweep", *overrides, f"results={results}", "--name", name)
    assert out.exit_code == 0, out.output
    return results / name


def test_a_recurrent_sweep_over_sequence_length_plots_its_signal_ratio_along_t(recurrent):
    """An RNN's depth is in time: its ratio figure runs along data.T (no model.depth to vary)."""
    from gradflow.plots import figures

    root = recurrent
    assert all(store.read_run(job)["config"]["model.hidden"] == 8 for job in store.find_runs(root))
    out = invoke("plot", root)
    assert out.exit_code == 0, out.output
    names = [p.name for p in printed_paths(out)]
    # the signal's ratio; no weight-gradient one (a recurrent net's weights are shared by its time steps)
    assert "ratio-signal_norm-init.png" in names and "ratio-init.png" not in names, names
    layers = gradflow.load(root)
    fig = figures.ratio(layers, "init", quantity="signal_norm")
    lines = fig.data["lines"]
    assert sorted(lines["x"].unique()) == [4, 8] and lines["line"].nunique() == 2
    signal = layers[(layers["step"] == 0) & (layers["quantity"] == "signal_norm")].sort_values("layer")
    by_hand = {T: sorted(v[0] / v[-1] for v in g.groupby("model.name")["value"].agg(list)) for T, g in
               signal.groupby("data.T")}  # first time step / head
    drawn = {T: sorted(g) for T, g in lines.groupby("x")["y"]}
    assert drawn.keys() == by_hand.keys() and all(drawn[T] == pytest.approx(by_hand[T]) for T in drawn)
    assert fig.axes[0].get_xlabel() == "sequence length T (time steps) [data.T]"
    assert "vs sequence length" in fig.get_suptitle()
    out = invoke("plot", root / "data.T=4,model=rnn", "--kind", "ratio", "--quantity", "signal_norm")
    assert out.exit_code == 1 and "its depth in time, data.T, which does not vary" in " ".join(out.output.split())
    # ls: no weight-gradient ratio columns, every cell '-', pushing out the results these runs have
    out = invoke("ls", root)
    assert out.exit_code == 0 and "signal ratio" in out.output, out.output
    assert "ratio init" not in out.output and "ratio end" not in out.output and "‖∂L/∂W‖" not in out.output


def test_a_recurrent_nets_kinds_draw_its_signal_unless_asked_and_never_a_missing_ratio_as_diverged(
        recurrent, tmp_path):
    # a recurrent net's time steps have no weight of their own: its grad_norm is the head's alone, so its
    # ratio was NaN in every run, drawn as a diverged mark at the top edge over "no finite values to draw"
    from gradflow.plots.kinds import Options, draw

    layers = gradflow.load(recurrent)
    signal = layers[(layers["quantity"] == "signal_norm") & (layers["step"] == 0)]
    for kind in ("ratio", "profile"):
        out = invoke("plot", recurrent, "--kind", kind, "--out", tmp_path)
        assert out.exit_code == 0, out.output
        assert printed_paths(out)[0].name.startswith(f"{kind}-signal_norm"), out.output
        fig, _ = draw(kind, layers, Options())
        lines = fig.data["lines"]
        assert np.isfinite(lines["y"]).all() and len(lines) == {"ratio": 4, "profile": 5 + 9 + 5 + 9}[kind]
        assert not [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "nonfinite"]
        assert not any("NaN" in t.get_text() for lg in fig.legends for t in lg.get_texts())
    # the profile: each run over its every time step, head included (it was one dot per run at the head)
    fig, _ = draw("profile", layers, Options())
    spans = fig.data["lines"].groupby("line")["x"].agg(["min", "max"])
    assert sorted(map(tuple, spans.to_numpy())) == [(0, 4), (0, 4), (0, 8), (0, 8)]
    assert set(signal["layer"]) == set(range(9))
    # asked for by name: one line naming what has a ratio
    out = invoke("plot", recurrent, "--kind", "ratio", "--quantity", "grad_norm", "--out", tmp_path)
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and "no first and last probe point" in text and text.endswith("choices: signal_norm"), text
    assert len(out.output.strip().splitlines()) <= 2, out.output  # (one line, wrapped at the terminal's width)
    from gradflow.errors import GradflowError
    from gradflow.plots import figures

    with pytest.raises(GradflowError, match="no run has grad_norm at two probe points"):  # (not a NaN per run)
        figures.ratio(layers, "init", quantity="grad_norm")
    # the heatmap: a row per time step; grad_norm's one row is ticked at its time step, not 3.5, 3.6, ...
    out = invoke("plot", recurrent, "--kind", "heatmap", "--run", "model=lstm,data.T=4", "--out", tmp_path)
    assert out.exit_code == 0 and printed_paths(out)[0].name.startswith("heatmap-signal_norm"), out.output
    run = "data.T=4,model=lstm"
    fig, _ = draw("heatmap", layers, Options(run=run))
    assert sorted(fig.data["cells"]["layer"].unique()) == list(range(5))
    fig, _ = draw("heatmap", layers, Options(run=run, quantity="grad_norm"))
    ticks = [t for t in fig.axes[0].get_yticks() if 3.5 <= t <= 4.5]
    assert ticks == [4], ticks


def test_compare_of_an_lstm_and_an_rnn_draws_their_signal_along_time(recurrent, plain, batchnorm, tmp_path):
    # the sources differ in model.name, which the figure's table leaves to the sources: the default quantity
    # was grad_norm (the head's alone: "no profile of grad_norm to draw") and the axis read "layer index"
    from gradflow import compare as matching
    from gradflow.plots.kinds import Options, draw

    rnn, lstm = recurrent / "data.T=4,model=rnn", recurrent / "data.T=4,model=lstm"
    out = invoke("compare", lstm, rnn, "--out", tmp_path / "fig.png")
    assert out.exit_code == 0, out.output
    assert "sources differ in model.name (lstm | rnn)" in " ".join(out.output.split())
    roots, sources = [lstm, rnn], ["lstm", "rnn"]
    runs = matching.load_runs(roots, sources)
    layers = matching.overlay_table(roots, sources, runs, "layers", list(matching.differing_keys(runs, sources)))
    assert "model.name" not in layers.columns
    fig, _ = draw("profile", layers, Options())
    assert "time step" in fig.axes[0].get_xlabel() and "signal" in fig.get_suptitle().lower(), fig.get_suptitle()
    # --by: a key one source lacks is named with the keys every source has, not suggested back to itself
    out = invoke("compare", plain, rnn, "--by", "depth", "--out", tmp_path)
    assert out.exit_code == 1 and "--by 'model.depth' is not a config key of data.T=4,model=rnn;" in out.output
    assert "did you mean" not in out.output, out.output
    out = invoke("compare", plain, batchnorm, "--by", "depth", "--by", "model.depth", "--out", tmp_path)
    assert out.exit_code == 1, out.output
    assert "error: --by model.depth is given twice (depth, model.depth); give each key once" in out.output


def test_compare_of_recurrent_sweeps_draws_the_signal_and_splits_no_panels_by_a_key_only_the_sources_differ_in(
        recurrent, results, tmp_path):
    # an lstm with forget_bias=3 beside the sweep (forget_bias=0 for its lstm, unset for its rnn): the key
    # split the profile into panels forget_bias=0 / =3 / not set, and its grad_norm was one dot per run
    fb3 = _sweep_only(results, "fb3", "model=lstm", "data.T=8", "model.forget_bias=3", *RECURRENT)
    for kind in ("profile", "ratio"):
        out = invoke("compare", recurrent, fb3, "--kind", kind, "--out", tmp_path / f"{kind}.png")
        assert out.exit_code == 0, out.output
        # the ratio's points in time, as ls says them (it read "first layer / last layer")
        assert "signal ratio = ‖∂L/∂z‖ first time step / head, at init" in " ".join(out.output.split())
    from gradflow import compare as matching
    from gradflow.plots.kinds import Options, draw, overlay_facet

    roots = [recurrent, fb3]
    sources = [r.name for r in roots]
    runs = matching.load_runs(roots, sources)
    layers = matching.overlay_table(roots, sources, runs, "layers", list(matching.differing_keys(runs, sources)))
    for kind in ("profile", "ratio"):
        o = Options()
        o.facet = overlay_facet(layers, kind, o)
        assert o.facet != "model.forget_bias"
        fig, _ = draw(kind, layers, o)
        titles = [ax.get_title() for ax in fig.axes]
        assert not any("forget_bias" in t for t in titles), titles
        assert "the sources also differ in model.forget_bias" in fig.get_suptitle()
        # and each source's legend entry says its value (it read source=fb3)
        texts = {t.get_text() for lg in fig.legends for t in lg.get_texts()}
        assert {"recurrent (model.forget_bias=0)", "fb3 (model.forget_bias=3)"} <= texts, texts
        lines = fig.data["lines"]
        # every run's line (a ratio's: one per model and source, along T), fb3's lstm among them
        assert np.isfinite(lines["y"]).all() and lines["line"].nunique() == {"ratio": 3, "profile": 5}[kind]
    fig, _ = draw("profile", layers, Options(facet=overlay_facet(layers, "profile", Options())))
    assert fig.data["lines"].groupby("line")["x"].min().eq(0).all()  # every time step, not the head alone


def test_a_diverged_runs_last_profile_is_its_last_finite_step_marked_as_diverged_after(diverging):
    # depth 2 diverged at step 2, probed there all NaN: "last" drew it as NaN marks along the top at step 2
    from gradflow.plots import figures

    layers = gradflow.load(diverging)
    runs = gradflow.load(diverging, table="runs")
    bad = runs.loc[runs["status"] == "diverged", "run"].iloc[0]
    rows = layers[(layers["run"] == bad) & (layers["quantity"] == "grad_norm")]
    finite = rows[np.isfinite(rows["value"])]
    at = int(finite["step"].max())
    assert at < int(rows["step"].max())  # (the run was probed after it: all NaN there)
    fig = figures.profile(layers, "grad_norm", step="last")
    lines = fig.data["lines"]
    drawn = lines[lines["line"] == bad]
    by_hand = finite[finite["step"] == at].sort_values("layer")
    assert drawn["x"].tolist() == by_hand["layer"].tolist()
    assert drawn["y"].to_numpy() == pytest.approx(by_hand["value"].to_numpy())
    assert f"{bad} at step {at}, its last finite one (diverged after it" in " ".join(fig.get_suptitle().split())
    marks = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "nonfinite"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [by_hand["layer"].max()]  # one mark: diverged after


def test_a_run_that_diverged_in_its_loss_is_drawn_and_summarised_before_that_step(tmp_path):
    # a residual ReLU net at lr 0.05 whose loss went infinite at step 3 while that step's gradients stayed
    # finite (1e32-1e37): "last" drew those as its last step, unmarked, and ls's ratio end (10.37) came from them
    from gradflow.plots import figures
    from gradflow.summary import grad_ratio

    out = CliRunner().invoke(app, ["run", "data=gaussian", "model.width=64", "train.steps=30", "model.activation=relu",
                                   "model.depth=10", "model.skip=residual", "init=kaiming_normal",
                                   "train.eval_every=10", "train.check_every=1", f"results={tmp_path}", "name=d"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    (job,) = [p for p in (tmp_path / "d").iterdir() if p.is_dir()]
    rec = store.read_run(job)
    layers = gradflow.load(job)
    at = rec["diverged_step"]
    grads = layers[layers["quantity"] == "grad_norm"]
    assert rec["status"] == "diverged" and rec["diverged_in"] == "loss" and at == grads["step"].max()
    assert np.isfinite(grads.loc[grads["step"] == at, "value"]).all()  # (the case: finite probes at that step)
    assert set(layers[store.DIVERGED_AT]) == {at}
    assert rec["summary"]["grad_ratio.final"] == pytest.approx(grad_ratio(layers, at - 1))
    assert rec["summary"]["grad_ratio.final"] != pytest.approx(grad_ratio(layers, at))
    fig = figures.profile(layers, "grad_norm", step="last")
    assert set(fig.data["lines"]["x"]) == set(grads["layer"]) and len(fig.data["lines"]) == grads["layer"].nunique()
    drawn = grads[grads["step"] == at - 1].sort_values("layer")
    assert fig.data["lines"].sort_values("x")["y"].to_numpy() == pytest.approx(drawn["value"].to_numpy())
    assert f"at step {at - 1}, its last finite one (diverged after it" in " ".join(fig.get_suptitle().split())


def test_a_comparisons_sources_keep_the_order_they_were_given_in_its_figure(plain, batchnorm):
    # as the table letters them (A, B): the legend sorted them by name, so C came first
    from gradflow import compare as matching
    from gradflow.plots import figures

    for roots in ([plain, batchnorm], [batchnorm, plain]):
        sources = [r.name for r in roots]
        runs = matching.load_runs(roots, sources)
        layers = matching.overlay_table(roots, sources, runs, "layers", list(matching.differing_keys(runs, sources)))
        fig = figures.profile(layers, "grad_norm", step=0)  # overlaid: the sources' line styles
        texts = [t.get_text() for lg in fig.legends for t in lg.get_texts() if t.get_text().startswith(tuple(sources))]
        assert [t.split(" (")[0] for t in texts] == sources, texts  # ("plain (norm=none)": what sets it apart)
        fig = figures.profile(layers, "grad_norm", step=0, by_source=True)  # --panels: a panel each
        # (each titled as its legend entry: "plain (norm=none, ...)", where it was "source=plain")
        assert [ax.get_title().split(" (")[0] for ax in fig.axes if ax.get_title()] == sources


def test_compare_names_the_keys_only_some_sources_set_by_group_and_an_empty_value_as_quotes(tmp_path):
    # a Gaussian mean-field sweep beside an MNIST-1D Xavier one: each data and init choice sets keys the
    # other lacks (data.dim, init.sw2 | data.cache, init.gain), which the note listed one by one, 15 keys
    # at `(64 | -)` each, and the MNIST-1D cache's "" printed as nothing, `data.cache (- | )`
    def sweep(name: str, *overrides: str) -> Path:
        out = invoke("sweep", "model.width=8", "train.steps=2", "model.depth=2,3", *overrides,
                     f"results={tmp_path}", "--name", name)
        assert out.exit_code == 0, out.output
        return tmp_path / name

    ga = sweep("ga", "data=gaussian", "data.n_train=128", "data.n_test=32", "data.dim=8", "init=meanfield")
    mn = sweep("mn", "data=mnist1d", "init=xavier_normal")
    out = invoke("compare", ga, mn, "--out", tmp_path / "figs")
    assert out.exit_code == 0, out.output
    note = " ".join(out.output.split()).split("sources differ in ")[1]
    # (ga's ten by group; mn's two, few enough, by name and value)
    assert note.startswith("data.name (gaussian | mnist1d); data.seed (0 | 42); init.name (meanfield | "
                           "xavier_normal); the other keys of data and init, which only ga sets; data.cache='' and "
                           "init.gain=1, which only mn sets"), note
    assert "data.dim" not in note and "init.sw2" not in note
    # a key both set, one to "": shown as ''. (That cache folder starts with the session's dataset file in it:
    # the runs read it rather than make MNIST-1D again; what the note says of the key is the same.)
    from gradflow.data import cache_dir

    (tmp_path / "c").mkdir()
    for made in cache_dir().glob("mnist1d-*.npz"):
        shutil.copy(made, tmp_path / "c")
    cached = sweep("cached", "data=mnist1d", "init=xavier_normal", f"data.cache={tmp_path / 'c'}")
    note = " ".join(invoke("compare", mn, cached, "--out", tmp_path / "figs").output.split())
    assert f"sources differ in data.cache ('' | {tmp_path / 'c'})" in note, note


def test_compare_names_a_key_only_some_runs_read_by_its_value_where_they_read_it(skips, tmp_path):
    # model.alpha is read where model.skip=residual and unset where skip=none: a skip=none,residual sweep
    # at alpha 1 beside a residual one at alpha 0.5 counted the unset alpha as a second value, and the
    # note never said that the residual runs it matched differ in alpha
    a = shutil.copytree(skips, tmp_path / "a", ignore=shutil.ignore_patterns("figures"))
    b = _sweep(tmp_path, "b", "model.skip=residual", "model.alpha=0.5", "model.depth=2,3")
    alpha = {store.read_run(job)["config"].get("model.alpha") for job in store.find_runs(a)} - {None}
    assert len(alpha) == 1, alpha  # (its default, read by the residual runs alone)
    text, _, _ = _compare_at_80_columns(a, b, "--kind", "ratio", out_dir=tmp_path / "figs")
    note = " ".join(text.split())
    assert "matched on model.depth, model.skip" in note, note
    assert f"sources differ in model.alpha ({alpha.pop()} | 0.5)" in note, note
    # a source whose runs never read it (skip=none alone) is no difference: its runs match a's skip=none
    c = _sweep(tmp_path, "c", "model.depth=2,3")
    note = " ".join(_compare_at_80_columns(a, c, "--kind", "ratio", out_dir=tmp_path / "figs")[0].split())
    assert "alpha" not in note and "sources differ" not in note, note


def test_compare_names_the_few_keys_only_one_init_sets_and_says_differences_by_the_sources_letters(tmp_path):
    # init.gain (xavier_normal's) beside init.mode (kaiming_normal's) read `the other keys of init, which only
    # A sets; the other keys of init, which only B sets`, naming neither; and `differences: ratios as
    # ×(B / A), the rest as other − first` mixed the table's letters with words
    xa = _sweep(tmp_path, "xavier-normal-study", "init=xavier_normal", "model.depth=2,3")
    ka = _sweep(tmp_path, "kaiming-normal-study", "init=kaiming_normal", "model.depth=2,3")
    orth = _sweep(tmp_path, "orthogonal-study", "init=orthogonal", "model.depth=2,3")

    def config(root: Path, key: str):
        (value,) = {store.read_run(job)["config"][key] for job in store.find_runs(root)}
        return value

    gain, mode = config(xa, "init.gain"), config(ka, "init.mode")
    text, lines, _ = _compare_at_80_columns(xa, ka, out_dir=tmp_path / "figs")
    assert lines[:3] == ["A = xavier-normal-study", "B = kaiming-normal-study", "compare: A vs B"], lines
    note = " ".join(text.split())
    assert (f"sources differ in init.name (xavier_normal | kaiming_normal); init.gain={number(gain)}, which only "
            f"A sets; init.mode={mode}, which only B sets") in note, note
    assert "differences: ratios as ×(B / A), the rest as B − A" in note and "other" not in note, note
    # three sources: a key two of them set, and each difference column named
    assert config(orth, "init.gain") == gain
    note = " ".join(_compare_at_80_columns(xa, ka, orth, "--by", "depth", out_dir=tmp_path / "figs")[0].split())
    assert (f"init.gain={number(gain)}, which only A and C set; init.mode={mode}, which only B sets") in note, note
    assert "differences: ratios as ×(B / A) and ×(C / A), the rest as B − A and C − A" in note, note


# --- step 0: keys that act on the updates alone -----------------------------------------------------
STEP0_RUN = [*SMALL, "model.depth=3", "model.activation=tanh"]
# each key that acts on the updates alone (`style.update_only`) set away from its default, one run each
SCALARS = ["model.skip=residual", "model.alpha=learnable"]  # a net with a scalar parameter (optim.scalar_lr_factor's)
UPDATE_ONLY_RUNS = {
    "optim.lr": ["optim.lr=0.7"], "optim.momentum": ["optim.momentum=0"],
    "optim.weight_decay": ["optim.weight_decay=0.1"], "optim.warmup": ["optim.warmup=3"],
    "optim.schedule": ["optim.schedule=cosine"], "optim.scalar_lr_factor": [*SCALARS, "optim.scalar_lr_factor=0.1"],
    "optim.milestones": ["optim.schedule=step", "optim.milestones=[2]"],
    "optim.gamma": ["optim.schedule=step", "optim.milestones=[1]", "optim.gamma=0.5"],
    "optim.name": ["optim=adam"], "optim.betas": ["optim=adam", "optim.betas=[0.5,0.6]"],
    "train.steps": ["train.steps=7"], "train.eval_every": ["train.eval_every=1"],
    "train.check_every": ["train.check_every=1"], "train.grad_clip": ["train.grad_clip=1e-3"],
    "train.clip_value": ["train.clip_value=1e-4"], "probe.every": ["probe.every=1"], "probe.points": ["probe.points=2"],
}


def series_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("series:")]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in [*leg.get_texts(), leg.get_title()]]


def _step0(job: Path) -> pd.DataFrame:
    """A run's step-0 values, quantity x probe point."""
    rows = gradflow.load(job)
    return rows[rows["step"] == 0].pivot_table(index="quantity", columns="layer", values="value", aggfunc="first",
                                               dropna=False)


def test_the_keys_a_step0_figure_draws_as_one_change_nothing_measured_at_step_0(run_job):
    """The keys a figure of step 0 draws as not varying (`style.update_only`): each set away from its default
    measures at step 0 exactly what the default run does, every quantity but the update's (the same seed: the
    same weights and first batch; the loop clips after the probes read the gradients). The update itself
    (update_ratio) is what the learning rate, clipping and the optimizer change there, so its profile keeps
    them; the batch size and the seed change step 0, and are keys of it."""
    from gradflow.keys import config_columns
    from gradflow.plots.style import update_only
    from gradflow.probes.quantities import QUANTITIES, UPDATE

    base = run_job(*STEP0_RUN, name="base")
    before = _step0(base)
    of_update = [q for q in before.index if q in QUANTITIES and QUANTITIES[q].when == UPDATE]
    measured = [q for q in before.index if q not in of_update]
    assert of_update == ["update_ratio"] and {"grad_norm", "signal_norm", "act_std"} <= set(measured)
    keys = set()
    for key, overrides in UPDATE_ONLY_RUNS.items():
        model = [o for o in overrides if o in SCALARS]  # (the net the key applies to, measured without it too)
        assert all(update_only(o.split("=")[0]) or o.startswith("optim=") for o in overrides if o not in model)
        ref = _step0(run_job(*STEP0_RUN, *model, name=f"{key}-base")) if model else before
        job = run_job(*STEP0_RUN, *overrides, name=key)
        after = _step0(job)
        np.testing.assert_array_equal(after.loc[measured].to_numpy(), ref.loc[measured].to_numpy(), err_msg=key)
        keys |= {k for k in config_columns(gradflow.load(job)) if update_only(k)}
        if key in ("optim.lr", "optim.name", "train.grad_clip", "train.clip_value", "optim.weight_decay"):
            # (each did act at step 0: on the update, after the probes read the gradient)
            assert not np.allclose(after.loc[of_update].to_numpy(), ref.loc[of_update].to_numpy()), key
    assert keys <= set(UPDATE_ONLY_RUNS), keys - set(UPDATE_ONLY_RUNS)  # every such key a run has was tried
    for control in ("train.batch_size=16", "seed=3"):  # (keys that do change step 0)
        after = _step0(run_job(*STEP0_RUN, control, name=control.split("=")[0]))
        assert not np.allclose(after.loc["grad_norm"].to_numpy(), before.loc["grad_norm"].to_numpy()), control
        assert not update_only(control.split("=")[0])


@pytest.fixture(scope="module")
def lr_width(results) -> Path:
    """activation x lr x width, five lrs and five widths: more keys than colour, marker and panels show."""
    return _sweep(results, "lr-width", "model.depth=2", "train.steps=2", "model.activation=relu,tanh",
                  "optim.lr=0.001,0.01,0.1,0.3,1", "model.width=4,5,6,7,8")


def test_a_profile_at_step_0_draws_the_runs_that_differ_in_lr_alone_as_one_line(lr_width, tmp_path):
    """optim.lr changes nothing measured at step 0: an activation x lr x width sweep's step-0 profile was one
    figure per width, each a panel per lr, all five panels alike. Now one figure, a line per activation in
    a panel per width, each line the runs' step-0 values, its title saying why; the last step's profile
    still tells the lrs apart, and so does the profile of the update itself (update_ratio)."""
    from gradflow.plots.kinds import Options, draw, figure_parts
    from gradflow.plots.standard import plan

    layers = gradflow.load(lr_width)
    lrs, widths = [0.001, 0.01, 0.1, 0.3, 1.0], [4, 5, 6, 7, 8]
    at0 = layers[(layers["step"] == 0) & (layers["quantity"] == "grad_norm")]
    for (act, width), runs in at0.groupby(["model.activation", "model.width"]):
        per_lr = runs.pivot_table(index="optim.lr", columns="layer", values="value")
        assert list(per_lr.index) == lrs and (per_lr.nunique() == 1).all(), (act, width)  # the same measurement

    out = invoke("plot", lr_width, "--kind", "profile", "--step", "0", "--out", tmp_path / "p0.png")
    assert out.exit_code == 0, out.output
    assert printed_paths(out) == [tmp_path / "p0.png"] and "one figure per value" not in out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.png"]
    ((items, part),) = figure_parts("profile", layers, Options(step=0))
    fig, stem = draw("profile", part, Options(step=0))
    assert "optim.lr: no effect at step 0 (one line per value of the other keys)" in " ".join(
        fig.get_suptitle().split())
    panels = [ax for ax in fig.axes if ax.get_gid() != "colorbar"]
    assert [ax.get_title() for ax in panels] == [f"width={w}" for w in widths]
    assert [len(series_lines(ax)) for ax in panels] == [2] * len(widths)  # relu and tanh
    texts = legend_texts(fig)
    assert {"relu", "tanh"} <= set(texts) and not any("lr" in t for t in texts), texts
    drawn = fig.data["lines"]
    assert drawn["line"].nunique() == 2 * len(widths)
    for line, points in drawn.groupby("line"):
        first = at0[at0["run"] == line.split(" (+")[0]].iloc[0]
        runs = at0[(at0["model.activation"] == first["model.activation"])
                   & (at0["model.width"] == first["model.width"])]
        assert runs["optim.lr"].nunique() == len(lrs)
        for _, run in runs.groupby("run"):  # each of its runs: the line's points
            assert np.array_equal(points.sort_values("x")["y"].to_numpy(), run.sort_values("layer")["value"].to_numpy())
    # the standard set: one figure of step 0, the last step's a figure per lr
    names = [p.name for p in plan(layers, None, None) if p.name.startswith("profile-grad_norm")]
    assert names == ["profile-grad_norm-step0"] + [f"profile-grad_norm-last-optim.lr={number(lr)}" for lr in lrs]

    # the last step: the lrs told apart, a figure per width with a panel per lr, as before
    out = invoke("plot", lr_width, "--kind", "profile", "--step", "last", "--out", tmp_path / "last.png")
    assert out.exit_code == 0, out.output
    assert [p.name for p in printed_paths(out)] == [f"last-model.width={w}.png" for w in widths]
    parts = figure_parts("profile", layers, Options(step="last"))
    fig, _ = draw("profile", parts[0][1], Options(step="last"))
    assert [ax.get_title() for ax in fig.axes if ax.get_gid() != "colorbar"] == [f"lr={number(lr)}" for lr in lrs]
    assert "no effect" not in fig.get_suptitle()
    # the update at step 0 is the lr's own: update_ratio's profile keeps it
    parts = figure_parts("profile", layers, Options(step=0, quantity="update_ratio"))
    assert [items for items, _ in parts] == [[f"model.width={w}"] for w in widths]
    assert "no effect" not in draw("profile", parts[0][1], Options(step=0, quantity="update_ratio"))[0].get_suptitle()


def test_the_ratio_at_init_draws_the_runs_that_differ_in_lr_alone_as_one_line(results):
    """depth x activation x lr: the ratio at init drew a line per lr, all alike (their markers the only
    difference); now a line per activation, the title saying why. At the end the lrs differ, and are lines."""
    from gradflow.plots import figures

    root = _sweep(results, "depth-lr", "model.depth=2,3", "model.activation=relu,tanh", "optim.lr=0.01,1")
    layers = gradflow.load(root)
    fig = figures.ratio(layers, "init")
    assert "optim.lr: no effect at step 0" in " ".join(fig.get_suptitle().split())
    assert len(series_lines(fig.axes[0])) == 2 and not any("lr" in t for t in legend_texts(fig))
    ratios = fig.data["lines"]
    for line, points in ratios.groupby("line"):  # each line: both lrs' ratios, equal
        run = line.split(" (+")[0]
        act = layers.loc[layers["run"] == run, "model.activation"].iloc[0]
        at0 = layers[(layers["step"] == 0) & (layers["quantity"] == "grad_norm") & (layers["model.activation"] == act)]
        per_run = at0.sort_values("layer").groupby("run")["value"].agg(lambda v: v.iloc[0] / v.iloc[-1])
        depth = at0.groupby("run")["model.depth"].first()
        for d, y in zip(points["x"], points["y"]):
            assert np.allclose(per_run[depth == d].to_numpy(), y, rtol=1e-12), (line, d)
    fig = figures.ratio(layers, "final")
    assert len(series_lines(fig.axes[0])) == 4 and "no effect" not in fig.get_suptitle()


@pytest.fixture(scope="module")
def full_lr(results) -> Path:
    """activation x lr x seed with every probe: histograms and Jacobian spectra of runs alike but for lr."""
    return _sweep(results, "full-lr", "model.depth=3", "model.activation=relu,tanh", "optim.lr=0.01,1", "seed=0,1",
                  "probe=full")


def _per_lr(table: pd.DataFrame, step: int, points: list[str], value: str) -> pd.DataFrame:
    """Each run's values at `step`, a row per (activation, seed, lr), a column per point in the run."""
    rows = table[(table["step"] == step)]
    return rows.pivot_table(index=["model.activation", "seed", "optim.lr"], columns=points, values=value)


def test_the_spectrum_and_histograms_at_step_0_draw_the_runs_that_differ_in_lr_alone_as_one(full_lr, tmp_path):
    """optim.lr changes nothing measured at step 0: the spectrum of step 0 drew a line per lr, each legend entry
    the same mean s and var s^2, and the standard set a histogram figure per run, those of each lr alike. Now a
    line, and a figure, per distinct step-0 measurement, the title saying why; the last step keeps the lrs."""
    from gradflow.errors import GradflowError
    from gradflow.plots import figures
    from gradflow.plots.standard import plan

    jac = gradflow.load(full_lr, table="jacobian")
    jac = jac[jac["scope"] == "input_output"]
    hists = gradflow.load(full_lr, table="hist")
    lrs = [0.01, 1.0]
    for table, points, value in ((jac, ["sample", "index"], "value"),
                                 (hists, ["layer", "tensor", "kind", "lo"], "count")):
        at0, last = _per_lr(table, 0, points, value), _per_lr(table, int(table["step"].max()), points, value)
        for (act, seed), runs in at0.groupby(level=[0, 1]):  # the same measurement at step 0, each lr
            assert list(runs.index.get_level_values("optim.lr")) == lrs
            np.testing.assert_array_equal(runs.iloc[0].to_numpy(), runs.iloc[1].to_numpy(), err_msg=f"{act} {seed}")
        assert any(not np.array_equal(runs.iloc[0].to_numpy(), runs.iloc[1].to_numpy())  # (and not at the end)
                   for _, runs in last.groupby(level=[0, 1]))

    # the spectrum of step 0: a line per activation (its two seeds), each that of its runs of one lr
    fig = figures.spectrum(jac, step=0)
    title = " ".join(fig.get_suptitle().split())
    assert "optim.lr: no effect at step 0 (one line per value of the other keys)" in title and "lr 0.01" not in title
    one_lr = figures.spectrum(jac[jac["optim.lr"] == lrs[0]], step=0)
    drawn, alone = series_lines(fig.axes[0]), series_lines(one_lr.axes[0])
    assert [ln.get_gid() for ln in drawn] == ["series:activation=relu", "series:activation=tanh"]
    for ln, ref in zip(drawn, alone):
        np.testing.assert_array_equal(ln.get_ydata(), ref.get_ydata())
    texts = [t for t in legend_texts(fig) if t.startswith("activation=")]
    assert len(texts) == 2 and all("(2 runs)" in t and "lr" not in t for t in texts), texts
    assert texts == [t for t in legend_texts(one_lr) if t.startswith("activation=")]
    # the last step's spectrum, and one with the lr's colour asked for: a line per lr, no note
    for fig in (figures.spectrum(jac, step="last"), figures.spectrum(jac, step=0, color="optim.lr")):
        assert len(series_lines(fig.axes[0])) == 4 and "no effect" not in fig.get_suptitle()

    # the histograms of step 0: a figure per activation and seed, named without the lr
    runs = hists.drop_duplicates("run").set_index("run")
    names = [p.name for p in plan(None, None, None, hists=hists) if p.name.startswith("hist")]
    first = runs[runs["optim.lr"] == lrs[0]]
    assert names == [f"hist-step0-{run.replace(',optim.lr=0.01', '')}" for run in first.index], names
    fig = figures.hist(hists[hists["run"].isin(runs.index[runs["model.activation"].eq("relu") & runs["seed"].eq(0)])],
                       step=0)
    title = " ".join(fig.get_suptitle().split())
    assert "optim.lr: no effect at step 0 (one figure per value of the other keys)" in title and "lr 0.01" not in title
    ref = figures.hist(hists, run=first.index[0], step=0)
    for ax, ref_ax in zip(fig.axes, ref.axes):
        assert [ln.get_ydata().tolist() for ln in ax.get_lines()] == \
            [ln.get_ydata().tolist() for ln in ref_ax.get_lines()]
    # runs that differ in their seed measured differently: hist still asks for one of them
    with pytest.raises(GradflowError, match="hist draws one run"):
        figures.hist(hists[hists["model.activation"] == "relu"], step=0)
    # --kind hist of step 0: runs alike but in lr need no --run; at the last step they do, as runs that differ
    where = ["--where", "model.activation=relu", "--where", "seed=0"]
    out = invoke("plot", full_lr, "--kind", "hist", *where, "--out", tmp_path / "h.png")
    assert out.exit_code == 0 and printed_paths(out) == [tmp_path / "h.png"], out.output
    out = invoke("plot", full_lr, "--kind", "hist", "--step", "last", *where, "--out", tmp_path / "last.png")
    assert out.exit_code == 1 and "draws one run" in out.output and "optim.lr=1" in out.output, out.output


def test_a_figure_refused_for_want_of_the_runs_stale_says_they_were_left_out(cli, results):
    # a depth sweep cut down to one depth: the other depth's run is stale, left out, and the ratio figure said
    # model.depth "does not vary in this data (values: 2)" without a word of it or of --all
    for depths in ("2,3", "2"):
        out = cli("sweep", *SMALL, f"model.depth={depths}", f"results={results}", "--name", "cut")
        assert out.exit_code == 0, out.output
    out = cli("plot", str(results / "cut"), "--kind", "ratio")
    assert out.exit_code == 1
    line = " ".join(out.output.split())
    assert "does not vary in this data (values: 2); 1 stale run (of an earlier sweep spec) left out: --all draws it" \
        in line, out.output
    out = cli("plot", str(results / "cut"), "--kind", "ratio", "--all")
    assert out.exit_code == 0, out.output
    # beside the figure of the current runs, not over it (it took its name without a word), its title saying so
    [drawn] = [Path(line) for line in out.output.splitlines() if line.endswith(".png")]
    assert drawn.name == "ratio-init-all.png", out.output
    # not where --all cannot help: a quantity there is none of, a --where that keeps one depth
    for wrong in (["--kind", "profile", "--quantity", "bogus"], ["--kind", "ratio", "--where", "model.depth=2"]):
        out = cli("plot", str(results / "cut"), *wrong)
        assert out.exit_code == 1 and "stale" not in out.output, out.output
    # that --where said as the reason (one depth read as a sweep of one depth), in compare too
    assert "(values: 2): --where model.depth=2 kept only those runs" in " ".join(out.output.split()), out.output
    assert cli("sweep", *SMALL, "model.depth=2,3", f"results={results}", "--name", "other").exit_code == 0
    out = cli("compare", str(results / "cut"), str(results / "other"), "--kind", "ratio", "--where", "depth=2",
              "--out", str(results / "figs"))
    assert out.exit_code == 1 and "(values: 2): --where depth=2 kept only those runs" in " ".join(
        out.output.split()), out.output


def test_the_sources_differ_only_in_keys_each_holds_fixed():
    # source a sweeps data=gaussian,adding (data.n_train follows the choice: 1000, 1024), source b runs adding
    # alone: data.n_train varies within a, so it is not what the comparison is about (nor dropped from overlays)
    from gradflow.compare import differing_keys

    runs = pd.DataFrame({"source": ["a", "a", "b"], "run": ["g", "d", "d"], "status": ["ok"] * 3,
                         "data.name": ["gaussian", "adding", "adding"], "data.n_train": [1000, 1024, 1024],
                         "model.depth": [2, 2, 3]})
    assert differing_keys(runs, ["a", "b"]) == {"model.depth": [2, 3]}


def test_a_compared_cells_end_of_training_numbers_are_its_ok_runs_medians():
    # a cell of an ok run and a diverged one: the train loss was the ok run's alone (the diverged run has none),
    # while ratio end was the median of both, the diverged run's from its last finite step, no end
    from gradflow import compare as matching

    runs = pd.DataFrame([
        {"run": "a/x", "source": "a", "status": "ok", "model.depth": 4, "grad_ratio.init": 1.0,
         "grad_ratio.final": 2.0, "final.train_loss": 0.5},
        {"run": "a/y", "source": "a", "status": "diverged", "model.depth": 4, "grad_ratio.init": 3.0,
         "grad_ratio.final": 6.0, "final.train_loss": float("nan")},
        {"run": "b/x", "source": "b", "status": "diverged", "model.depth": 4, "grad_ratio.init": 5.0,
         "grad_ratio.final": 7.0, "final.train_loss": float("nan")},
    ])
    table = matching.comparison(runs, ["a", "b"], ["model.depth"]).set_index("source")
    assert table.loc["a", "grad_ratio.init"] == 2.0  # (at init: every run's)
    assert table.loc["a", "grad_ratio.final"] == 2.0 and table.loc["a", "final.train_loss"] == 0.5
    assert table.loc["b", "grad_ratio.final"] == 7.0  # (no run of it ended ok: what it has)


def test_plot_says_how_many_points_of_its_sweep_have_no_run_yet(tmp_path):
    """A sweep stopped before some points began: `ls` says `not run: 1`; plot drew the others without a word,
    a figure of 2 points read as the whole sweep."""
    root = _sweep(tmp_path, "early", "model.depth=2,3,4", "train.steps=2")
    shutil.rmtree(root / "model.depth=4")
    out = invoke("plot", root, "--kind", "ratio", "--out", tmp_path / "figs")
    assert out.exit_code == 0 and "not drawn: 1 point of the sweep not run yet" in " ".join(out.output.split()), \
        out.output
    out = invoke("plot", root, "--kind", "ratio", "--where", "model.depth=2", "--out", tmp_path / "figs")
    assert "not run yet" not in out.output, out.output  # (--where: the points it keeps are not counted)
