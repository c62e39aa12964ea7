"""gradflow gradcheck: backprop agrees with central differences in float64 for every family at a tiny size,
and a deliberately wrong backward is caught."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

from gradflow.config import compose
from gradflow.gradcheck import check_model, gradcheck

BOUND = 1e-6  # the backprop-vs-fd claim: max relative error in float64

FAMILIES = {
    "mlp": ["data=mnist1d", "model=mlp", "model.depth=3", "model.width=16"],
    "cnn": ["data=mnist1d", "model=cnn", "model.depth=3", "model.channels=4"],
    "resnet": ["data=mnist1d", "model=resnet", "model.depth=7", "model.widths=[4,8,8]"],
    "rnn": ["data=adding", "data.T=10", "model=rnn", "model.hidden=8"],
    "lstm": ["data=adding", "data.T=10", "model=lstm", "model.hidden=8"],
    "transformer": ["data=chars", "model=transformer", "model.depth=1", "model.d_model=16", "model.heads=2"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_backprop_matches_finite_differences(family):
    r = gradcheck(compose([*FAMILIES[family], "threads=1"]), entries=6)
    assert r.max_rel < BOUND, [(p.name, p.max_rel) for p in r.params]
    assert r.unresolved() == "" and r.resolved >= 0.75 * len(r.params), [(p.name, p.resolved) for p in r.params]
    # every parameter tensor is checked, and the counts add up
    assert r.n_params == sum(p.size for p in r.params) and all(p.checked == min(6, p.size) for p in r.params)
    assert r.fd_full_s == pytest.approx(r.fd_entry_s * r.n_params) and r.grad_s > 0 and r.mode == "reverse"


class ScaledGrad(torch.autograd.Function):
    """Identity forward, a backward that is wrong by a factor 1.5."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return 1.5 * g


class Wrong(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(5, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.second(torch.tanh(ScaledGrad.apply(self.first(x))))


def test_a_wrong_backward_is_caught():
    torch.manual_seed(0)
    model = Wrong().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    r = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=10)
    err = {p.name: p for p in r.params}
    # below the wrong function every gradient is 1.5x too large: |1.5 g - g| / 1.5 |g| = 1/3
    assert err["first.weight"].median_rel == pytest.approx(1 / 3, rel=1e-4)
    assert err["first.bias"].max_rel == pytest.approx(1 / 3, rel=1e-4)
    # above it backprop is right
    assert err["second.weight"].max_rel < BOUND and err["second.bias"].max_rel < BOUND
    assert r.max_rel > 0.3
    assert r.kinks == 0  # (a tanh net has none: a wrong entry is no kink because a one-sided error is smaller)


def test_one_wrong_entry_of_a_tensor_is_its_largest_error():
    """A backward wrong in one entry of a bias (twice its gradient), right in the other seven: the tensor's
    max_rel is that entry's (1/2), its median right, and the check fails (a median passed it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    model[0].bias.register_hook(lambda g: torch.cat([g[:3], 2 * g[3:4], g[4:]]))
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    r = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=8)
    bias = next(p for p in r.params if p.name.endswith("bias") and p.size == 8)
    assert bias.checked == 8 and bias.max_rel == pytest.approx(1 / 2, rel=1e-4) and bias.median_rel < BOUND
    assert r.max_rel == pytest.approx(1 / 2, rel=1e-4)


class DeadUnit(nn.Module):
    """A ReLU net whose second layer's first unit has weights and bias 0, as a dead channel's: its input is
    exactly 0 for every example, on ReLU's kink, and stays on one side of it for a step of its bias or of
    a weight (the units below are ReLUs too, >= 0)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.first, self.second, self.third = nn.Linear(5, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.scale = scale
        with torch.no_grad():
            self.second.weight[0] = 0.0
            self.second.bias[0] = 0.0

    def forward(self, x):
        h = self.first(x)
        h = torch.relu(ScaledGrad.apply(h) if self.scale != 1.0 else h)
        return self.third(torch.relu(self.second(h)))


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_a_kink_at_the_weights_is_judged_by_the_one_sided_difference(mode):
    """The dead unit's bias: the central difference averages ReLU's two slopes (half the right one), while
    backprop, as forward mode, takes relu'(0) = 0, the left one: an error of 1 that failed a correct
    backward. Judged against the one-sided difference it agrees, counted as a kink (its weights too); a
    wrong backward below the ReLU is still off by 1/3."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    r = check_model(DeadUnit().double(), lambda m: nn.functional.cross_entropy(m(x), y), entries=16, mode=mode)
    p = {p.name: p for p in r.params}
    assert r.max_rel < BOUND and p["second.bias"].kinks == 1 and p["second.weight"].kinks >= 1, \
        [(q.name, q.max_rel, q.kinks) for q in r.params]
    assert r.kinks == p["second.bias"].kinks + p["second.weight"].kinks  # (nowhere else: the loss is smooth)
    if mode == "reverse":
        wrong = check_model(DeadUnit(1.5).double(), lambda m: nn.functional.cross_entropy(m(x), y), entries=16)
        assert {p.name: p for p in wrong.params}["first.bias"].max_rel == pytest.approx(1 / 3, rel=1e-4)


def test_an_entry_whose_steps_cross_kinks_is_judged_on_the_pieces_at_the_weights():
    """Two ReLU inputs 0.5e-6 above and 0.2e-6 below 0: a step of eps = 1e-6 of their bias crosses a kink on
    each side, so the central difference reads 3.15 and the one-sided ones 3.7 and 2.75 for backprop's
    right 3 (the default CNN's conv6.bias failed so, at 0.0096). With each unit held on the piece it has at
    the weights the loss is smooth, and its difference is 3: the entry agrees, counted as crossed. A bias
    gradient wrong by any factor (10, -1, 1.5) disagrees with that difference too, and fails."""
    def net(scale: float = 1.0, tensor: str = "weight") -> nn.Module:
        model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).double()
        with torch.no_grad():
            for layer in (model[0], model[2]):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
        if scale != 1.0:
            getattr(model[0], tensor).register_hook(lambda g: scale * g)
        return model

    x = torch.tensor([[0.5e-6], [-0.2e-6], [1.0], [2.0]], dtype=torch.float64)
    r = check_model(net(), lambda m: m(x).sum(), entries=1)
    p = {p.name: p for p in r.params}
    assert p["0.bias"].crossed == 1 and p["0.bias"].checked == 1 and r.crossed == 1, [vars(q) for q in r.params]
    assert p["0.bias"].max_rel < BOUND and r.max_rel < BOUND and p["0.bias"].resolved == 1
    wrong = check_model(net(1.5), lambda m: m(x).sum(), entries=1)  # (the weight's: no kink crossed, judged plainly)
    assert wrong.max_rel == pytest.approx(1 / 3, rel=1e-4) and wrong.crossed == 1
    for scale in (10.0, -1.0, 1.5):
        wrong = check_model(net(scale, "bias"), lambda m: m(x).sum(), entries=1)
        bias = {p.name: p for p in wrong.params}["0.bias"]
        assert bias.crossed == 0 and bias.max_rel > 0.1, (scale, vars(bias))
    # a net without piecewise-linear modules (functional relu) keeps the plain differences' verdict
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = net()[0], net()[2]

        def forward(self, h):
            return self.b(torch.relu(self.a(h)))

    plain = check_model(Functional(), lambda m: m(x).sum(), entries=1)
    assert plain.crossed == 0 and plain.max_rel > 0.01


def test_the_cli_passes_a_cnn_with_dead_channels_and_names_where_the_kinks_are(cli):
    """A small ReLU CNN whose third block has dead channels (their biases' inputs exactly 0) failed with a
    max relative error of ~1 on a correct backward; it passes, and says which tensor sits on a kink."""
    out = cli("gradcheck", "model=cnn", "model.depth=3", "model.channels=3", "seed=1", "threads=1")
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    kinks = re.search(r"(\d+) entr(?:y sits|ies sit) at a kink of the activation .*?: (conv\d\.bias) \1\)", text)
    assert kinks and int(kinks.group(1)) >= 1, text
    assert text.endswith("at a kink, with a one-sided difference)") and "ok: backprop agrees" in text, text


def test_the_floor_is_relative_to_the_loss():
    """Errors are taken against at least 1e-3 |L|: the same net with its loss scaled by 1e-6 resolves the
    same entries and agrees as closely (an absolute floor of 1e-3 left every entry of the scaled loss below
    it, so that any backward would agree)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    plain = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=10)
    scaled = check_model(model, lambda m: 1e-6 * nn.functional.cross_entropy(m(x), y), entries=10)
    assert [p.resolved for p in scaled.params] == [p.resolved for p in plain.params] and plain.resolved == 4
    assert scaled.loss == pytest.approx(1e-6 * plain.loss) and scaled.max_rel < BOUND


def test_forward_mode_without_a_forward_formula_is_one_line():
    """An op with no forward-mode formula (here a custom Function without jvp; on CUDA, the fused LSTM
    cell) is named in a GradflowError, not a traceback."""
    from gradflow.errors import GradflowError

    model = Wrong().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(GradflowError, match=r"^gradcheck.mode=forward: .*jvp.*try device=cpu\)$"):
        check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=2, mode="forward")


def test_cli_table_and_bad_override(cli):
    out = cli("gradcheck", "data=mnist1d", "model.depth=2", "model.width=8", "threads=1",
              "--entries", "3")
    assert out.exit_code == 0, out.output
    assert "linear0.weight" in out.output and "head.bias" in out.output and "x the cost" in out.output
    out = cli("gradcheck", "model.depth=abc")
    assert out.exit_code == 1 and "model.depth" in out.output and "Traceback" not in out.output


def test_cli_checks_a_training_set_smaller_than_train_batch_size(cli):
    # the check never reads train.batch_size (--batch is its batch): data.n_train=50 was refused over the
    # default 128; one given explicitly is still the user's to fit
    out = cli("gradcheck", "data=gaussian", "data.n_train=50", "model.depth=2", "model.width=8", "threads=1",
              "--entries", "2", "--batch", "100")
    assert out.exit_code == 0 and "--batch 100 is more than the 50 training examples: the loss is on all 50" in \
        " ".join(out.output.split()), out.output
    # one example: the check runs (its advice was train.batch_size=1, a key it refuses); with batch norm, one line
    out = cli("gradcheck", "data=gaussian", "data.n_train=1", "model.depth=2", "model.width=4", "threads=1",
              "--entries", "2", "--batch", "1")
    assert out.exit_code == 0, out.output
    out = cli("gradcheck", "data=gaussian", "data.n_train=1", "model.depth=2", "model.width=4", "norm=batchnorm")
    assert out.exit_code == 1 and out.stderr.strip() == "error: a net with batch normalization needs 2 or more " \
        "training examples (the batch variance of one is 0): give the data 2 or more", out.output
    out = cli("gradcheck", "data=gaussian", "data.n_train=50", "train.batch_size=100")
    assert out.exit_code == 1 and out.stderr.strip() == (
        "error: train.batch_size=100 does not apply to `gradflow gradcheck`, which trains nothing and writes no "
        "run: it reads model, data, init, norm, seed, device, threads and gradcheck.mode (its batch is --batch)")


SMALL = ["data=gaussian", "data.n_train=256", "data.n_test=64", "data.dim=8", "model.depth=2", "model.width=4",
         "threads=1"]


@pytest.mark.parametrize("option, value, needle", [
    ("--eps", "0", "--eps 0 is not allowed"),  # was a ZeroDivisionError traceback
    ("--eps", "nan", "--eps nan is not allowed"),  # was "max relative error 0": a pass
    ("--eps", "-1", "--eps -1 is not allowed"),
    ("--eps", "inf", "--eps inf is not allowed"),
    ("--batch", "0", "--batch 0 is not allowed: batch must be a positive integer"),
    ("--entries", "-2", "--entries -2 is not allowed: entries must be a positive integer"),
    ("--tol", "0", "--tol 0 is not allowed"),  # nothing could pass
    ("--tol", "nan", "--tol nan is not allowed"),  # everything would fail, NaN errors included
    ("--tol", "1", "--tol 1 is not allowed"),  # a gradient of 0 against a real one, an error of 1, would pass
    ("--tol", "2", "--tol 2 is not allowed"),  # a backward of the wrong sign (an error of 2, just under) passed
])
def test_bad_numeric_options_are_one_line(cli, option, value, needle):
    out = cli("gradcheck", *SMALL, f"{option}={value}")
    assert out.exit_code == 1, (out.exit_code, out.output[-2000:])
    err = out.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in out.output, err
    assert needle in err, err
    if option == "--eps":
        assert "finite number > 0" in err, err
    if option == "--tol":
        assert "must be a number between 0 and 1" in err and "so 1 or more passes a wrong gradient" in err, err
    assert "max relative error" not in out.stdout


def test_the_exit_status_is_the_verdict(cli):
    """0 where backprop agrees, 1 where its error is not below --tol or too few tensors are resolved for
    the agreement to mean anything (weights at 1e-6: every gradient far below the floor), the reason last."""
    args = [*SMALL, "--entries", "2"]
    out = cli("gradcheck", *args)
    assert out.exit_code == 0, out.output
    assert " ".join(out.stdout.split()[-11:]).startswith("ok: backprop agrees"), out.output
    out = cli("gradcheck", *args, "--tol", "1e-14")  # float64 differences resolve ~1e-9: above this
    last = " ".join(out.output.split()).rsplit("FAIL: ", 1)[-1]
    assert out.exit_code == 1 and re.fullmatch(r"max relative error \S+ is not below --tol 1e-14", last), out.output
    # a step far from the default: the quotient's own error may be what fails, and the verdict says so
    out = cli("gradcheck", *args, "--tol", "1e-14", "--eps", "1e-3")
    last = " ".join(out.output.split()).rsplit("FAIL: ", 1)[-1]
    assert out.exit_code == 1 and last.endswith(
        "is not below --tol 1e-14 (with --eps 0.001 the difference quotient's own error, ~eps² from the curvature "
        "and ~1e-16/eps from rounding, may be what exceeds it; the default 1e-06 keeps both below ~1e-10)"), last
    out = cli("gradcheck", *args, "init.gain=1e-6")
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and "warning: " in text and text.endswith(
        "FAIL: too few tensors resolved for the agreement to mean anything (warning above); a net whose gradients "
        "are mostly tiny (vanishing with depth: sigmoid, or relu under Xavier, whose init=kaiming_normal keeps "
        "them; or dead units) resolves more with fewer layers, an init that keeps them, more width or channels, "
        "or another seed"), out.output
    # a Fixup net leaves the weights before its zero layers no gradient by design: another init would not help
    out = cli("gradcheck", *SMALL, "model.variant=fixup", "model.skip=residual", "model.branch_layers=2",
              "model.depth=5", "--entries", "2")
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and text.endswith(
        "model.variant=fixup starts its branches' last layers and its head at 0, which leaves the weights before "
        "them no gradient at initialization; model.variant=standard checks the same blocks' backward"), out.output


def test_a_non_finite_loss_is_an_error_not_a_pass(cli):
    """Weights so large that the forward pass overflows: every error would compare as 0 or NaN, so the
    check says the loss is not finite (one line, exit 1) instead of printing a table of zeros."""
    out = cli("gradcheck", *SMALL, "model.activation=relu", "init.gain=1e200", "--entries", "2")
    err = out.stderr.strip()
    assert out.exit_code == 1 and err.startswith("error: the loss is ") and len(err.splitlines()) == 1, out.output
    assert re.match(r"error: the loss is (inf|nan) at these weights: there is no gradient to check", err), err
    assert "max relative error" not in out.stdout and "Traceback" not in out.output


def test_check_model_refuses_a_step_that_measures_nothing():
    from gradflow.errors import GradflowError

    model = Wrong().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    for eps in (0.0, float("nan"), -1e-6, float("inf")):
        with pytest.raises(GradflowError, match=r"^eps=\S+ is not allowed: .*finite number > 0"):
            check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=2, eps=eps)


def test_a_batch_beyond_the_training_set_is_reported_as_used(cli):
    out = cli("gradcheck", *SMALL, "--entries", "2", "--batch", "100000")
    assert out.exit_code == 0, out.output
    title, text = out.stdout.splitlines()[0], " ".join(out.output.split())
    assert title.endswith("batch 256)"), out.output  # the batch the loss is on, not the one asked for
    assert "--batch 100000 is more than the 256 training examples: the loss is on all 256" in text, out.output
    r = gradcheck(compose(SMALL), entries=2, batch=100_000)
    assert r.batch == 256 and gradcheck(compose(SMALL), entries=2, batch=5).batch == 5


def test_batchnorm_is_checked_in_train_mode_on_the_batchs_statistics():
    # the loss checked is the training loss, batchnorm normalizing with the batch's own statistics (in eval
    # mode, with its running ones, the check passes just as well, of another function than training's)
    from gradflow.job import prepare
    from gradflow.train import loss_and_accuracy

    cfg = compose([*SMALL, "norm=batchnorm", "threads=1"])
    r = gradcheck(cfg, entries=2, batch=16)
    _, data, model = prepare(cfg)
    model = model.double().train()
    torch.manual_seed(cfg.seed)
    loss = loss_and_accuracy(model(data.x_train[:16].double()), data.y_train[:16], data.task)[0].item()
    model.eval()
    running = loss_and_accuracy(model(data.x_train[:16].double()), data.y_train[:16], data.task)[0].item()
    assert r.loss == pytest.approx(abs(loss), rel=1e-12) and abs(loss - running) > 1e-3, (r.loss, loss, running)


def _gradcheck_piped(columns: int, *args: str) -> list[str]:
    """The real command, piped (stdout is not a terminal), at `columns` columns: its lines."""
    from tests.commands import real

    out = real("gradcheck", *args, columns=columns)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _rows(lines: list[str]) -> list[list[str]]:
    """The table's body rows (below its rule, above the summary), split on runs of spaces."""
    start = next(i for i, ln in enumerate(lines) if set(ln) == {"─"}) + 1
    end = next(i for i, ln in enumerate(lines) if ln.startswith(("max relative error", "not shown")))
    return [ln.split() for ln in lines[start:end]]


def test_table_at_80_columns_piped_keeps_names_whole():
    from gradflow.gradcheck import shown_names
    from gradflow.job import prepare

    overrides = ["data=chars", "model=transformer", "model.depth=1", "model.d_model=16", "model.heads=2",
                 "data.n_train=64", "threads=1"]
    names = shown_names(prepare(compose([*overrides, "train.batch_size=8"]))[2])
    # the probe points' tensors by the points' names (`run`'s, `ls`'s), the others' by their module path, a
    # block's in the points' words (blocks.0.norm1 beside b0.attn.qkv left the reader to find its block)
    assert {"tok_emb.weight", "b0.attn.qkv.weight", "b0.norm1.weight", "head.weight"} <= set(names), names
    assert not any(n.startswith("blocks.") for n in names), names
    resnet = shown_names(prepare(compose(["model=resnet20", "data=mnist1d", "train.batch_size=8"]))[2])
    assert resnet[:7] == ["stem.weight", "stem_norm.weight", "stem_norm.bias", "s1.b1.conv1.weight",
                          "s1.b1.norm1.weight", "s1.b1.norm1.bias", "s1.b1.conv2.weight"], resnet
    assert len(set(resnet)) == len(resnet) and not any(n.startswith("blocks.") for n in resnet), resnet
    lines = _gradcheck_piped(80, *overrides, "--entries", "2")
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]  # characters, not bytes
    # every name whole on one line (the old table folded hidden.0.layers.0.layer.w / eight)
    whole = [n for n in names if any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", ln) for ln in lines)]
    assert whole == names, "\n".join(lines)
    rows = _rows(lines)
    # one row per tensor, its whole name first, then its size, resolved/checked, max and median relative error
    assert [r[0] for r in rows] == names and all(len(r) == 5 for r in rows), lines
    assert all(re.fullmatch(r"[0-2]/2", r[2]) for r in rows), rows
    assert "not shown" not in "\n".join(lines)
    # no word of the output is a piece of a name: nothing wraps onto a line of its own
    assert not any(ln.strip() in ("eight", "weight", "bias", "ght") for ln in lines), lines

    # narrower than the names: they keep both ends around an ellipsis, the max relative error stays, and
    # the note names the columns left out (in this process: the text is the subject, and the real pipe's
    # width is the one above)
    from tests.commands import piped

    lines = piped("gradcheck", *overrides, "--entries", "2", columns=26).stdout.splitlines()
    assert all(len(ln) <= 26 for ln in lines), [ln for ln in lines if len(ln) > 26]
    rows = _rows(lines)
    assert len(rows) == len(names) and all(len(r) == 2 for r in rows), lines
    for (cell, _), name in zip(rows, names):
        if cell != name:
            head, tail = cell.split("…")
            assert name.startswith(head) and name.endswith(tail) and head and tail, (cell, name)
    assert any("…" in r[0] for r in rows)
    note = " ".join(" ".join(lines).split())
    assert "not shown (26 columns): size, resolved, median rel err;" in note, lines


def test_a_wrong_backward_below_the_floor_is_flagged():
    # the same wrong backward under a head whose weights are 1e-9: the gradients below it are ~1e-9 |L|,
    # where errors are judged against 1e-3 |L| and the factor 1.5 no longer shows in the error
    torch.manual_seed(0)
    model = Wrong().double()
    with torch.no_grad():
        model.second.weight.mul_(1e-9)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    r = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=10)
    assert r.max_rel < BOUND  # what the check alone would have called agreement
    resolved = {p.name: p.resolved for p in r.params}
    assert resolved["first.weight"] == resolved["first.bias"] == 0 and resolved["second.bias"] == 3, resolved
    assert r.resolved == 2 and r.unresolved().startswith("2 of 4 parameter tensors"), r.unresolved()


def test_three_of_four_tensors_resolved_is_enough_and_two_is_not():
    # RESOLVED = 0.75 of the tensors, at the bound included: 3 of 4 read as unresolved left a claim on the
    # check's agreement with no value
    from gradflow.gradcheck import GradCheck, ParamCheck

    def check(resolved):
        return GradCheck([ParamCheck(f"p{i}", 1, 1, 0.0, 0.0, resolved=r) for i, r in enumerate(resolved)], 4,
                         "reverse", 1.0, 1.0)

    assert check((1, 1, 1, 0)).unresolved() == ""
    assert check((1, 1, 0, 0)).unresolved().startswith("2 of 4 parameter tensors")


def test_forward_mode_names_itself_in_the_table_the_timing_and_the_verdict(cli):
    # the title, the cost line and the verdict each said "backprop" whatever gradcheck.mode computed
    out = cli("gradcheck", *SMALL, "gradcheck.mode=forward", "--entries", "2")
    text = " ".join(out.stdout.split())
    assert out.exit_code == 0, out.output
    assert text.startswith("forward mode vs central differences (float64"), text
    assert re.search(r"forward mode: \S+ s for the full gradient \(one JVP per entry, projected\)", text), text
    assert re.search(r"ok: forward mode agrees with central differences \(max relative error below 1e-06\)$",
                     text), text
    assert "backprop" not in text.replace("the one-sided difference backprop takes", ""), text


NAN_GRADIENT = '''
import torch
import torch.nn as nn


class NanGradient(nn.Module):
    """A finite loss whose backprop gradient is NaN in one tensor (d sqrt(z^2)/dz at z = 0: 0 / 0), though
    its central difference is finite (0: the loss does not change)."""
    def __init__(self, d_in=8, n_out=10):
        super().__init__()
        self.first = nn.Linear(d_in, 8)
        self.second = nn.Linear(8, n_out)
        self.z = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.second(torch.tanh(self.first(x))) + 0 * torch.sqrt(self.z ** 2)
'''


def test_a_nan_error_fails_the_check(cli, tmp_path, monkeypatch):
    """A gradient that is NaN: its relative error is NaN, which compares as below any --tol (`nan >= tol` is
    false), so the verdict must be read as "not below" for it to fail."""
    import sys

    name = f"nan_gradient_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(NAN_GRADIENT)
    monkeypatch.chdir(tmp_path)
    try:
        data = [o for o in SMALL if not o.startswith("model.")]
        out = cli("gradcheck", *data, "model=custom", f"model.target={name}:NanGradient", "--entries", "4")
    finally:
        sys.modules.pop(name, None)
    text = " ".join(out.output.split())
    assert "max relative error nan over" in text, text  # (the NaN reached the verdict)
    assert out.exit_code == 1 and text.endswith("FAIL: max relative error nan is not below --tol 1e-06 (a gradient or a difference "
                                                "quotient is not finite)"), text


def test_a_nan_gradient_with_a_nan_difference_quotient_is_no_agreement():
    """d sqrt(z)/dz at z = 0: backprop's gradient is NaN (0 * inf) and so is the central difference (the loss
    at z - eps is NaN). Their error was 0 (max() took the NaN quotient as the scale, and "scale > 0" was false),
    so `gradflow gradcheck` said ok for a NaN gradient."""
    import math

    class SqrtAtZero(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(5, 3)
            self.z = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.first(x) + 0 * torch.sqrt(self.z)

    torch.manual_seed(0)
    model = SqrtAtZero().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    r = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=4)
    errors = {p.name: p.max_rel for p in r.params}
    assert math.isnan(errors["z"]) and errors["first.weight"] < BOUND, errors
    assert not r.max_rel < BOUND, r.max_rel  # the CLI's verdict: FAIL


def test_a_nan_error_in_a_later_tensor_than_a_finite_one_fails_the_check():
    """The check's max over the tensors took Python's max(), which keeps a finite error seen before a NaN:
    a NaN gradient in a submodule's tensor, after the model's own finite ones, passed (the verdict said ok)."""
    import math

    class NanInSecond(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))  # (the model's own tensor comes first, and is finite)
            self.inner = nn.Linear(5, 3)

        def forward(self, x):
            w = self.inner.weight
            return self.scale * self.inner(x) + 0 * torch.sqrt(w - w).sum()  # (d sqrt(0): NaN for the weight)

    torch.manual_seed(0)
    model = NanInSecond().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    r = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=4)
    errors = {p.name: p.max_rel for p in r.params}
    assert list(errors)[0] == "scale" and errors["scale"] < BOUND and math.isnan(errors["inner.weight"]), errors
    assert math.isnan(r.max_rel), r.max_rel  # (not the scale's finite error: the CLI's verdict is FAIL)
