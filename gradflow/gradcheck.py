"""Backpropagation against finite differences: is every gradient right, and what does reverse mode save?

Central differences need two forward passes per parameter, (L(w + eps e_i) - L(w - eps e_i)) / 2 eps,
while one backward pass gives all of them for about the cost of one forward and one backward. In
float64 with eps = 1e-6 the central difference is accurate to ~eps^2 (truncation) plus
~1e-16 |L| / eps (rounding), so a correct backward agrees to ~1e-9 relative on entries near |L| and
~1e-7 on those near the floor below, and a wrong one (a scaled, a missing or a transposed term) is off
by O(1).

Every parameter tensor of the model is checked (the probe points' weights, their biases, and the
weights of recurrent cells and norms) on a random sample of its entries. The relative error of an
entry is |g - fd| / max(|g|, |fd|, FLOOR |L|): the difference quotient resolves a gradient only to
its rounding level ~1e-16 |L| / eps ~ 1e-10 |L|, so an entry far smaller than the loss (a dead ReLU's
exact 0, a weight the loss barely depends on) is judged against 1e-3 |L|, where that rounding stays
below 1e-6 relative. A wrong backward still shows: a gradient of 1e-5 |L| off by a factor 2 gives 1e-2.
eps is small because ReLU kinks are not differentiable: a step across one is off by O(1) for that unit.
A kink can also sit exactly at the weights (a dead channel's bias, its input all zeros: the unit's input
is exactly 0 at every eps), where the central difference averages the left and right derivatives and
backprop gives one of them (PyTorch's relu'(0) = 0). An entry whose central error is above TOL is
therefore also compared with the two one-sided differences, each second order in eps
((-3 L(w) + 4 L(w +- eps) - L(w +- 2 eps)) / (+-2 eps)), and where one agrees (to TOL) keeps it: `kinks` counts the
entries so judged. An entry whose one-sided differences do not agree with it either keeps its central
error and is no kink. Where the loss is smooth all three agree to O(eps^2), so a wrong backward still
disagrees with each.
The floor also means that a net whose gradients all lie far below 1e-3 |L| (weights initialized at
1e-6) would agree whatever its backward computed: such a check says so (GradCheck.unresolved) where
fewer than RESOLVED of its parameter tensors have a checked entry at or above the floor.

mode="forward" computes the checked entries by forward-mode AD instead, one JVP per entry, and projects
the cost of the full gradient from them as the finite-difference cost is projected: exact like backprop,
but one pass per parameter like finite differences, so the cost ratio falls to O(1). It is the negative
control of the backprop-vs-fd reproduction's cost claim.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradflow.config import GRADCHECK_MODES
from gradflow.errors import GradflowError, one_line, run_error, shorten

EPS = 1e-6  # the finite-difference step in float64
FLOOR = 1e-3  # relative errors are taken against at least this fraction of the loss
# the largest max relative error `gradflow gradcheck` passes by default: the backprop-vs-fd reproduction's bound
# (float64 differences resolve ~1e-9; a wrong term is off by O(1))
TOL = 1e-6
# the share of parameter tensors that must have a checked entry at or above the floor for the agreement to
# mean anything (a threshold of ours): 93-100% have one in backprop-vs-fd's arms at default and --quick
# scale (the one without, of the CNN's 14, a conv weight whose 8 sampled entries all fell below); 4-20% with every
# weight at init.gain=1e-6 or init.sw2=1e-12, where one or two tensors next to the output are left
RESOLVED = 0.75


@dataclass
class ParamCheck:
    name: str  # the parameter's name in the model, e.g. "hidden.3.layers.0.layer.weight"
    size: int  # its number of entries
    checked: int  # entries compared
    max_rel: float
    median_rel: float
    resolved: int = 0  # entries whose gradient (backprop's or the difference quotient's) reaches the floor
    kinks: int = 0  # entries that agree with a one-sided difference only: a kink at the weights
    crossed: int = 0  # entries judged with their units held on the pieces they have at the weights (`_Pieces`)


@dataclass
class GradCheck:
    params: list[ParamCheck]
    n_params: int  # entries of every parameter tensor
    mode: str  # how the checked gradient was computed: reverse (backprop) | forward (one JVP per entry)
    grad_s: float  # seconds for the full gradient: reverse, one forward + backward (median of repeats);
    #                forward, the seconds per JVP (mean over the checked entries) times n_params
    fd_entry_s: float  # seconds per finite-difference entry: two forward passes (mean)
    batch: int | None = None  # training examples in the loss (gradcheck: at most the training set's size)
    loss: float = math.nan  # |L|, the loss's magnitude: errors are relative to at least FLOOR of it

    @property
    def max_rel(self) -> float:
        """The largest error over the parameters; NaN where any is NaN (Python's max() kept whichever came first,
        so a NaN error of a tensor after a finite one was dropped, and the check passed)."""
        return float(np.max([p.max_rel for p in self.params])) if self.params else math.nan

    @property
    def kinks(self) -> int:
        """Checked entries judged by a one-sided difference: a kink of the activation at the weights."""
        return sum(p.kinks for p in self.params)

    @property
    def crossed(self) -> int:
        """Checked entries judged with the activations' units held on their pieces at the weights (`_Pieces`):
        within eps of them some unit's input crosses a kink."""
        return sum(p.crossed for p in self.params)

    @property
    def resolved(self) -> int:
        """Parameter tensors with a checked entry whose gradient reaches FLOOR |L|."""
        return sum(p.resolved > 0 for p in self.params)

    def unresolved(self) -> str:
        """Why the agreement says little, or "": fewer than RESOLVED of the tensors have a checked gradient
        at or above FLOOR |L|, below which any error, a wrong backward's too, is judged against that floor."""
        if self.resolved >= RESOLVED * len(self.params):
            return ""
        return (f"{self.resolved} of {len(self.params)} parameter tensors have a checked gradient of at least "
                f"{FLOOR:g} |L| ({RESOLVED:.0%} needed): below that floor any backward agrees")

    @property
    def fd_full_s(self) -> float:
        """Projected seconds for the full gradient by central differences."""
        return self.fd_entry_s * self.n_params

    @property
    def cost_ratio(self) -> float:
        """Finite differences over the checked mode (backprop by default) for the full gradient."""
        return self.fd_full_s / self.grad_s


def check_arguments(entries: int, batch: int | None, eps: float, cli: bool = False, tol: float = TOL) -> None:
    """Raise a GradflowError naming the first bad argument: `entries` and `batch` must be positive integers,
    `eps` a finite number > 0 (0 divides by zero, nan compares as "no error", a negative or infinite step
    measures nothing), and so must `tol`, the error that passes. cli=True names them as the options of
    `gradflow gradcheck` (--eps 0), else as arguments (eps=0)."""
    def named(key: str, value) -> str:
        shown = f"{value:g}" if isinstance(value, (float, np.floating)) else shorten(value, 40)
        return f"--{key} {shown}" if cli else f"{key}={shown}"

    for key, value in (("entries", entries), ("batch", batch)):
        if value is None and key == "batch":  # check_model takes no batch
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise GradflowError(f"{named(key, value)} is not allowed: {key} must be a positive integer (1 or more)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not math.isfinite(eps) or eps <= 0:
        raise GradflowError(f"{named('eps', eps)} is not allowed: eps (the central-difference step) must be a "
                            f"finite number > 0, e.g. {EPS:g}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) \
            or not math.isfinite(tol) or not 0 < tol < 1:
        # (the error |g - fd| / max(|g|, |fd|, floor) is 1 where one side is 0 and 2 where the signs differ: a
        # tol of 1 or more passed a backward of the wrong sign)
        raise GradflowError(f"{named('tol', tol)} is not allowed: tol (the largest max relative error that passes) "
                            f"must be a number between 0 and 1, e.g. {TOL:g}: the error is 1 where one side is 0 "
                            "and 2 where the signs differ, so 1 or more passes a wrong gradient")


class _Loss(nn.Module):
    """The loss as a module of no inputs, so that functional_call can put a dual tensor in place of any
    parameter of the model."""

    def __init__(self, model: nn.Module, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self) -> torch.Tensor:
        return self.loss()


def _reverse(model: nn.Module, loss, named, sample, repeats: int) -> tuple[float, dict, float]:
    """The loss, the sampled entries of one backprop gradient, and its seconds (median of `repeats`)."""
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        value = loss()
        value.backward()
        if value.is_cuda:  # the backward kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(value.device)
        times.append(time.perf_counter() - start)
    entries = {n: [p.grad.view(-1)[i].item() if p.grad is not None else 0.0 for i in sample[n]] for n, p in named}
    model.zero_grad(set_to_none=True)
    return value.item(), entries, float(np.median(times))


def _forward(model: nn.Module, loss, named, sample) -> tuple[float, dict, float]:
    """The loss, the sampled entries by one JVP each (tangent e_i), and the seconds per JVP (mean)."""
    wrapped = _Loss(model, loss)

    def jvp(name: str, p: torch.Tensor, i: int) -> tuple[float, float]:
        tangent = torch.zeros_like(p)
        tangent.view(-1)[i] = 1.0
        out = functional_call(wrapped, {f"model.{name}": fwAD.make_dual(p, tangent)}, ())
        primal, derivative = fwAD.unpack_dual(out)
        return primal.item(), derivative.item()

    # fused attention kernels and cuDNN's RNNs have no forward-mode formulas; the math kernel and the
    # native RNN compute the same functions
    with (torch.no_grad(), fwAD.dual_level(), sdpa_kernel(SDPBackend.MATH),
          torch.backends.cudnn.flags(enabled=False)):
        try:
            value, _ = jvp(*named[0], sample[named[0][0]][0])  # warm-up, untimed: backprop's timing is warm too
            entries, elapsed = {}, 0.0
            for name, p in named:
                entries[name] = []
                for i in sample[name]:
                    start = time.perf_counter()
                    entries[name].append(jvp(name, p, i)[1])
                    elapsed += time.perf_counter() - start
        except NotImplementedError as e:  # e.g. CUDA's fused LSTM and GRU cells
            raise GradflowError(f"gradcheck.mode=forward: {str(e).splitlines()[0]} (the CPU has more forward-mode "
                                "formulas: try device=cpu)") from None
    return value, entries, elapsed / max(sum(map(len, sample.values())), 1)


def shown_names(model: nn.Module) -> list[str]:
    """The names of the model's trainable parameter tensors, in order, as the table shows them: a probe
    point's as `run`, `ls` and the plots name the point (`linear0.weight`, `b0.attn.qkv.bias`), others by
    their module path, in the points' words where a point's module shares its block (`s1.b1.norm1.weight`
    beside `s1.b1.conv1.weight`, where `blocks.0.norm1.weight` left it to the reader which block that was)."""
    path = {m: n for n, m in model.named_modules()}
    points, blocks = {}, {}
    for point in getattr(model, "probe_points", []):
        points |= {id(p): f"{point.name}.{attr}" for attr, p in point.layer.named_parameters(recurse=False)}
        mod, name = path.get(point.layer, "").split("."), point.name.split(".")
        k = next((i for i in range(min(len(mod), len(name))) if mod[-1 - i] != name[-1 - i]), min(len(mod), len(name)))
        if 0 < k < min(len(mod), len(name)):  # (blocks.0.conv1 is s1.b1.conv1: blocks.0 is s1.b1)
            blocks.setdefault(".".join(mod[:-k]), ".".join(name[:-k]))

    def shown(n: str) -> str:
        parts = n.split(".")
        head = next((i for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in blocks), None)
        return n if head is None else ".".join([blocks[".".join(parts[:head])], *parts[head:]])

    names = [points.get(id(p)) or shown(n) for n, p in model.named_parameters() if p.requires_grad]
    plain = [points.get(id(p), n) for n, p in model.named_parameters() if p.requires_grad]
    return names if len(set(names)) == len(names) else plain  # (never two tensors of one name)


def check_model(model: nn.Module, loss_fn, entries: int = 8, eps: float = EPS, seed: int = 0,
                repeats: int = 3, mode: str = "reverse") -> GradCheck:
    """Compare `model`'s gradient of `loss_fn(model)` (a scalar), by backprop (mode="reverse") or by
    forward-mode AD (mode="forward"), with central differences.

    The model should be in float64. The RNG is reseeded before every evaluation, so a model with
    dropout sees the same mask in each. `entries` random entries per parameter tensor (all if fewer).
    A tensor of a probe point is named as the point is elsewhere (`linear0.weight`), others by their path.
    """
    if mode not in GRADCHECK_MODES:
        raise GradflowError(f"gradcheck.mode={mode!r} is not allowed; choices: {', '.join(GRADCHECK_MODES)}")
    check_arguments(entries, None, eps)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_params = sum(p.numel() for _, p in named)

    def loss() -> torch.Tensor:
        torch.manual_seed(seed)
        return loss_fn(model)

    shown = dict(zip((id(p) for _, p in named), shown_names(model)))
    rng = np.random.default_rng(seed)
    sample = {n: rng.choice(p.numel(), size=min(entries, p.numel()), replace=False).tolist() for n, p in named}
    if mode == "reverse":
        value, grads, grad_s = _reverse(model, loss, named, sample, repeats)
    else:
        value, grads, jvp_s = _forward(model, loss, named, sample)
        grad_s = jvp_s * n_params
    if not math.isfinite(value):  # (every error would compare as NaN or as 0: a check that measures nothing)
        raise GradflowError(f"the loss is {value:g} at these weights: there is no gradient to check (the forward "
                            "pass overflowed or made a NaN)")
    floor = FLOOR * abs(value)

    # central differences on the same entries, timed
    def at(flat: torch.Tensor, i: int, value: float) -> float:
        flat[i] = value
        return loss().item()

    def error(fd: float, g: float) -> float:
        if math.isnan(fd) or math.isnan(g):  # no agreement (max() below took a NaN difference quotient as the
            return math.nan  # scale, and the entry as an error of 0: a NaN gradient passed)
        scale = max(abs(fd), abs(g), floor)
        return abs(fd - g) / scale if scale > 0 else 0.0

    checks, fd_time, fd_count = [], 0.0, 0
    pieces = _Pieces(model)
    with torch.no_grad():
        for name, p in named:
            flat, errors, resolved, kinks, crossed = p.view(-1), [], 0, 0, 0
            for i, g in zip(sample[name], grads[name]):
                start = time.perf_counter()
                orig = flat[i].item()
                up, down = at(flat, i, orig + eps), at(flat, i, orig - eps)
                flat[i] = orig
                fd_time += time.perf_counter() - start
                fd_count += 1
                fd = (up - down) / (2.0 * eps)
                err = error(fd, g)
                if err > TOL:  # (untimed: the cost projected is the central difference's)
                    here, up2, down2 = at(flat, i, orig), at(flat, i, orig + 2 * eps), at(flat, i, orig - 2 * eps)
                    flat[i] = orig
                    right, left = (-3 * here + 4 * up - up2) / (2 * eps), (3 * here - 4 * down + down2) / (2 * eps)
                    one_sided = min(error(right, g), error(left, g))
                    if one_sided <= TOL:  # (agrees: a kink; a wrong backward, off by 1/3, stays the central's)
                        err, kinks = one_sided, kinks + 1
                    elif (held := pieces.difference(lambda v: at(flat, i, v), orig, eps)) is not None and \
                            error(held, g) <= TOL:  # units crossed kinks within the steps: the pieces at the weights
                        err, crossed = error(held, g), crossed + 1
                    flat[i] = orig
                resolved += max(abs(fd), abs(g)) >= floor
                errors.append(err)
            checks.append(ParamCheck(shown.get(id(p), name), flat.numel(), len(errors),  # (none judged: no error)
                                     float(np.max(errors)), float(np.median(errors)), resolved, kinks, crossed))
    return GradCheck(checks, n_params, mode, grad_s, fd_time / max(fd_count, 1), loss=abs(value))


PIECEWISE = (nn.ReLU, nn.LeakyReLU, nn.Hardtanh)  # the activation modules `_piece` holds (ReLU6 is a Hardtanh)


def _piece(m: nn.Module, x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Module `m`'s (one of PIECEWISE) function of input `x` on the linear piece each unit had at input `at`
    (the weights' own): ReLU x (where at > 0), LeakyReLU x or slope x, Hardtanh x or its bound. Its derivative
    is what backprop takes at `at` wherever no unit sits exactly on a kink."""
    if isinstance(m, nn.ReLU):
        return x * (at > 0)
    if isinstance(m, nn.LeakyReLU):
        return torch.where(at > 0, x, m.negative_slope * x)
    lo, hi = float(m.min_val), float(m.max_val)
    return torch.where(at < lo, torch.full_like(x, lo), torch.where(at > hi, torch.full_like(x, hi), x))


class _Pieces:
    """The loss with each of the model's piecewise-linear activation modules (`_piece`) held on the piece its
    units have at the weights, read by forward hooks registered only while `difference` runs (the timed
    differences run without them). A bias shifts a whole channel, 32 examples x 40 positions of it: in a deep
    ReLU net under Xavier, whose units' inputs are small, some sat within eps of a kink on both sides of the
    weights, and the central and both one-sided differences missed a right backprop (a CNN's conv6.bias:
    0.0096). On the pieces held, the loss is smooth about the weights, and its central difference is the
    derivative backprop computes there: a wrong backward still disagrees with it."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, PIECEWISE)]

    def difference(self, at_value, orig: float, eps: float) -> float | None:
        """The central difference of the loss at orig +- eps (`at_value(v)` evaluates the loss there) with every
        unit on the piece it has at orig; None where the model has no such module, or a call of one is not
        repeated alike (its inputs change shape)."""
        if not self.modules:
            return None
        seen: list[torch.Tensor] = []
        held = {"on": False, "k": 0, "ok": True}

        def hook(module, args, out):
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is None:
                return None
            if not held["on"]:
                seen.append(x.detach().clone())
                return None
            k, held["k"] = held["k"], held["k"] + 1
            if k >= len(seen) or seen[k].shape != x.shape:
                held["ok"] = False
                return None
            return _piece(module, x, seen[k].to(x.device))

        handles = [m.register_forward_hook(hook) for m in self.modules]
        try:
            at_value(orig)
            held["on"] = True
            values = []
            for v in (orig + eps, orig - eps):
                held["k"] = 0
                values.append(at_value(v))
        finally:
            for h in handles:
                h.remove()
        return (values[0] - values[1]) / (2.0 * eps) if held["ok"] else None


def gradcheck(cfg, entries: int = 8, batch: int = 32, eps: float = EPS) -> GradCheck:
    """Build the model and data of a run config, in float64, and check its training loss's gradient
    on the first `batch` training examples (all of them when the training set is smaller: the result's
    `batch` says how many; train mode: batchnorm uses the batch's statistics), computed as cfg's
    gradcheck.mode says (a config saved before that key existed: reverse)."""
    from omegaconf import OmegaConf

    from gradflow.job import prepare
    from gradflow.train import loss_and_accuracy

    check_arguments(entries, batch, eps)
    _, data, model = prepare(cfg)
    model = model.double().train()
    x, y = data.x_train[:batch], data.y_train[:batch]
    if x.is_floating_point():
        x = x.double()
    if y.is_floating_point():
        y = y.double()
    try:
        r = check_model(model, lambda m: loss_and_accuracy(m(x), y, data.task)[0], entries, eps, seed=cfg.seed,
                        mode=OmegaConf.select(cfg, "gradcheck.mode", default="reverse"))
    except GradflowError:
        raise
    except (Exception, SystemExit) as e:  # the model's own error, in float64 or at --batch, which its run never
        # met (a float32 tensor made in forward): one line, not a traceback
        raise GradflowError(f"the model failed in the check, which runs it in float64 on {len(x)} examples "
                            f"(--batch): {one_line(run_error(e))}") from e
    r.batch = len(x)
    return r
