"""Published depth experiments: run their sweeps, draw the paper-style figures, check the claims.

An experiment is data, not code: `experiments/reproduce/<name>.yaml` names the paper, the arms
(each one sweep, run through the same machinery as `gradflow sweep`, so it resumes and works on
any launcher), what each scale changes, the figures, and the claims. A claim says which measure
to compute from the results on disk (a function in MEASURES, with its arguments), the paper's
value, and the test the measured value must pass. Results go to results/reproduce/<name>[-scale]/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from gradflow import store
from gradflow.config import EXPERIMENTS_DIR
from gradflow.errors import GradflowError

SPEC_DIR = EXPERIMENTS_DIR / "reproduce"
SCALES = ("quick", "default", "paper")


# --- the spec ---------------------------------------------------------------------------------------
@dataclass
class Spec:
    name: str
    paper: str  # authors, year, title, figure/table followed
    summary: str  # the claim in one line
    runtime: str  # measured CPU time of the default scale, by hand
    base: list[str]  # overrides every arm shares
    arms: dict[str, list[str]]  # arm -> its sweep overrides
    scales: dict[str, dict[str, list[str]]]  # scale -> {"all" or arm: overrides}
    scaled: dict[str, str]  # scale -> what was scaled down and why
    claims: list[dict]
    figures: list[dict] = field(default_factory=list)
    notes: str = ""

    @classmethod
    def load(cls, name: str) -> "Spec":
        path = SPEC_DIR / f"{name}.yaml"
        if not path.exists():
            raise GradflowError(f"reproduce {name!r} is not a known experiment; choices: {', '.join(names())}, all")
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        raw.setdefault("name", name)
        lists = [("base", raw.get("base", []))] + [(f"arms.{a}", v) for a, v in raw.get("arms", {}).items()]
        lists += [(f"scales.{sc}.{a}", v) for sc, arms in (raw.get("scales") or {}).items() for a, v in arms.items()]
        for where, items in lists:
            bad = [o for o in items if not isinstance(o, str) or "=" not in o]
            if bad:
                raise GradflowError(f"{path}: {where} has {bad[0]!r}, not a key=value override "
                                    "(quote comma lists in YAML flow lists: ['model.depth=10,60'])")
        for key in ("base", "figures", "notes", "scaled", "scales"):
            raw.setdefault(key, {} if key in ("scaled", "scales") else [] if key != "notes" else "")
        return cls(**raw)

    def overrides(self, arm: str, scale: str, user: list[str]) -> list[str]:
        """The arm's sweep overrides at a scale, with the user's overrides replacing same-key ones."""
        layers = [self.base, self.arms[arm], self.scales.get(scale, {}).get("all", []),
                  self.scales.get(scale, {}).get(arm, []), user]
        merged: dict[str, str] = {}
        for layer in layers:
            for o in layer:
                merged[_key(o)] = o
        return list(merged.values())


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def names() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def root_for(name: str, scale: str, results: str = "results") -> Path:
    return Path(results) / "reproduce" / (name if scale == "default" else f"{name}-{scale}")


# --- reading one arm's results ------------------------------------------------------------------------
class Arm:
    """One arm's results, loaded lazily, restricted to the runs of its current plan (so runs left over
    from an earlier grid in the same folder never mix in), with `where` filters on config columns."""

    def __init__(self, root: Path, runs: list[str] | None = None):
        self.root = root
        self.only = set(runs) if runs is not None else None
        self._tables: dict[str, pd.DataFrame] = {}

    def load(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            if name == "runs":
                from gradflow.summary import runs_table

                df = runs_table(self.root)
            else:
                df = store.load(self.root, name)
            if self.only is not None and "run" in df.columns:
                df = df[df["run"].isin(self.only)]
            self._tables[name] = df
        return self._tables[name]

    def table(self, name: str, where: dict | None) -> pd.DataFrame:
        df = self.load(name)
        if "run" not in df.columns or df.empty:
            runs = self.load("runs")
            failed = runs[runs["status"] == "failed"] if "status" in runs else runs
            why = f": {failed['error'].iloc[0]}" if len(failed) and "error" in failed else ""
            raise GradflowError(f"no {name} rows in {self.root} ({len(failed)} failed runs{why})")
        for key, value in (where or {}).items():
            if key not in df.columns:
                raise GradflowError(f"claim filter {key}={value!r}: no such column in {self.root}")
            col = df[key]
            df = df[np.isclose(col.astype(float), float(value)) if _numeric(value) and _numeric_col(col)
                    else col.astype(str) == str(value)]
        if df.empty:
            raise GradflowError(f"claim filter {where} matches no run in {self.root}")
        return df


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric_col(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col)


# --- measures: results -> one number per run (then aggregated over runs, i.e. seeds) -------------
@dataclass
class Measured:
    value: float  # the aggregate (mean over runs, or a count)
    per_run: list[float]
    note: str = ""  # why there is no value

    def spread(self) -> str:
        if self.note:
            return self.note
        finite = [v for v in self.per_run if np.isfinite(v)]
        if len(finite) < 2:
            return ""
        return f"[{fmt_number(min(finite))}, {fmt_number(max(finite))}] over {len(self.per_run)} runs"


MEASURES: dict[str, Callable[..., Measured]] = {}


def measure(fn: Callable[..., Measured]) -> Callable[..., Measured]:
    MEASURES[fn.__name__] = fn
    return fn


def _per_run(df: pd.DataFrame, fn: Callable[[pd.DataFrame], float]) -> Measured:
    values = [fn(g) for _, g in df.groupby("run", sort=True)]
    return Measured(float(np.mean(values)) if values else math.nan, values)


def _profile(g: pd.DataFrame, quantity: str, step: int) -> pd.Series:
    rows = g[(g["quantity"] == quantity) & (g["step"] == step)]
    return rows.set_index("layer")["value"].sort_index()


def _layer(index: int, layers: pd.Index) -> int:
    return int(layers[index]) if index < 0 else index


@measure
def layer_factor(arm: Arm, where=None, quantity="signal_norm", step=0, trim=3, squared=False) -> Measured:
    """Per-layer factor of a quantity towards the input: exp(-slope) of log(value) against layer over
    the bulk layers (`trim` dropped at each end); squared=True gives the factor of value^2 (chi_1)."""
    def one(g):
        p = _profile(g, quantity, step)
        p = p[(p.index >= p.index.min() + trim) & (p.index <= p.index.max() - trim)]
        p = p[np.isfinite(p) & (p > 0)]
        if len(p) < 2:
            return math.nan
        slope = np.polyfit(p.index.to_numpy(float), np.log(p.to_numpy()), 1)[0]
        return float(np.exp(-slope * (2 if squared else 1)))
    return _per_run(arm.table("layers", where), one)


@measure
def layer_ratio(arm: Arm, where=None, quantity="signal_norm", step=0, num=0, den=-1) -> Measured:
    """value[num] / value[den] at a step; negative indices count from the output (-1 = the head)."""
    def one(g):
        p = _profile(g, quantity, step)
        return float(p.loc[_layer(num, p.index)] / p.loc[_layer(den, p.index)])
    return _per_run(arm.table("layers", where), one)


@measure
def final(arm: Arm, where=None, metric="train_loss") -> Measured:
    """A final metric from run.json: train_loss, train_acc, test_loss, test_acc."""
    runs = arm.table("runs", where)
    values = runs[f"final.{metric}"].astype(float).tolist()
    return Measured(float(np.mean(values)), values)


@measure
def fraction_of_initial(arm: Arm, where=None, metric="loss", split="train") -> Measured:
    """Final value of a metric divided by its value at step 0 (non-finite counts as no progress: inf)."""
    def one(g):
        m = g[(g["split"] == split) & (g["metric"] == metric)].sort_values("step")["value"].to_numpy()
        if len(m) < 2 or not np.isfinite(m[0]):
            return math.inf
        return float(m[-1] / m[0]) if np.isfinite(m[-1]) else math.inf
    return _per_run(arm.table("metrics", where), one)


@measure
def reach(arm: Arm, where=None, metric="loss", split="train", below=1.0) -> Measured:
    """How many runs bring a metric below `below` at some evaluation (value = the count)."""
    def one(g):
        m = g[(g["split"] == split) & (g["metric"] == metric)]["value"]
        return float((m < below).any())
    per = _per_run(arm.table("metrics", where), one)
    return Measured(float(np.sum(per.per_run)), per.per_run)


@measure
def status_count(arm: Arm, where=None, status="diverged") -> Measured:
    runs = arm.table("runs", where)
    hits = (runs["status"] == status).astype(float).tolist()
    return Measured(float(np.sum(hits)), hits)


@measure
def lag_ratio(arm: Arm, where=None, k=100, quantity="signal_norm", step=0) -> Measured:
    """Recurrent nets: ||dL/dh_(T-k)|| / ||dL/dh_(T-1)||, time steps being layers 0..T-1 (head = T)."""
    def one(g):
        p = _profile(g, quantity, step)
        T = int(p.index.max())  # the head's index = number of time steps
        return float(p.loc[T - k] / p.loc[T - 1])
    return _per_run(arm.table("layers", where), one)


@measure
def lag_rate(arm: Arm, where=None, kmax=100, quantity="signal_norm", step=0) -> Measured:
    """Recurrent nets: the least-squares slope of log(||dL/dh_(T-k)|| / ||dL/dh_(T-1)||) over k = 1..kmax
    (per time step; below 0 means exponential decay with the lag)."""
    def one(g):
        p = _profile(g, quantity, step)
        T = int(p.index.max())
        k = np.arange(1, kmax + 1)
        r = np.log(p.loc[T - k].to_numpy() / p.loc[T - 1])
        ok = np.isfinite(r)
        return float(np.polyfit(k[ok], r[ok], 1)[0]) if ok.sum() > 2 else math.nan
    return _per_run(arm.table("layers", where), one)


@measure
def jacobian_stat(arm: Arm, where=None, stat="mean_s", scope="input_output", layer=None, step=0) -> Measured:
    """Jacobian singular values s pooled over the probed examples: mean_s, var_s2 (variance of s^2)."""
    def one(g):
        rows = g[(g["scope"] == scope) & (g["step"] == step)]
        if layer is not None:
            rows = rows[rows["layer"] == layer]
        s = rows["value"].to_numpy()
        return float(s.mean() if stat == "mean_s" else np.var(s**2))
    return _per_run(arm.table("jacobian", where), one)


@measure
def chi1_error(arm: Arm, where=None, trim=3) -> Measured:
    """|chi1_measured / chi1_theory - 1| per run: how far the measured per-layer growth is from theory."""
    runs = arm.table("runs", where)
    values = (runs["chi1_measured"] / runs["chi1_theory"] - 1).abs().astype(float).tolist()
    return Measured(float(np.mean(values)), values)


@measure
def jacobian_free_probability(arm: Arm, where=None, moment="var", scope="input_output", step=0) -> Measured:
    """Measured moment of s^2 (s: singular values of the input-output Jacobian d h_L / d x, pooled over a
    run's probed inputs) over its free-probability prediction (Pennington, Schoenholz & Ganguli 2017):
    moment="var" gives var(s^2) / sigma^2, "mean" gives mean(s^2) / m1; 1 is agreement.

    J J^T is the free product over the L hidden layers of W_l^T D_l^2 W_l, D_l = diag phi'(h_l). A layer
    has mean sw2 mu1 and normalized variance mu2 / mu1^2 - 1 - s1, mu_k(q) = E[phi'(sqrt(q) z)^(2k)],
    s1 = 0 for orthogonal weights, -1 for i.i.d. ones (Marchenko-Pastur). S-transforms multiply, so
    m1 = prod_l sw2 mu1(q_l) and sigma^2 = m2 - m1^2 = m1^2 sum_l (mu2 / mu1^2 - 1 - s1): at the fixed
    point (q_l = q*) the paper's m1 = chi1^L, sigma^2 = L m1^2 (mu2 / mu1^2 - 1 - s1). q_l follows the
    length map from the first layer's q_1 = sw2 E[x^2] + sb2, so inputs away from q* are predicted too.
    Needs an MLP without norm/skip on data=gaussian with data.dim = model.width (square weights).
    """
    from gradflow import theory
    from gradflow.activations import get as activation

    df = arm.table("jacobian", where)
    keys = [c for c in df.columns if "." in c]

    def predicted(cfg: dict) -> float:
        if theory.predict(cfg) is None:
            raise GradflowError(f"{arm.root}: no mean-field prediction for this run (an MLP without norm or skip "
                                "connections is needed)")
        if cfg.get("data.name") != "gaussian" or int(cfg["data.dim"]) != int(cfg["model.width"]):
            raise GradflowError(f"{arm.root}: the free-probability prediction needs square weights on known inputs: "
                                "data=gaussian with data.dim equal to model.width")
        act = str(cfg["model.activation"])
        sw2, sb2 = theory.equivalent_sw2(cfg, act)
        s1 = 0.0 if cfg["init.name"] in ("orthogonal", "delta_orthogonal") else -1.0
        second_moment = 1.0 / 3.0 if cfg.get("data.distribution") == "uniform01" else 1.0
        dphi, V = activation(act).dphi, theory._moments(act).V
        scale = 1.0 if cfg.get("data.scale") is None else float(cfg["data.scale"])
        q = sw2 * scale**2 * second_moment + sb2  # the first layer's q_1
        m1, spread = 1.0, 0.0
        for _ in range(int(cfg["model.depth"])):  # layer by layer along the length map
            mu1 = float(theory._expect(lambda u: dphi(u) ** 2, q))
            mu2 = float(theory._expect(lambda u: dphi(u) ** 4, q))
            m1 *= sw2 * mu1
            spread += mu2 / mu1**2 - 1.0 - s1
            q = sw2 * float(V(q)) + sb2
        return m1 if moment == "mean" else m1**2 * spread

    def one(g):
        s2 = g[(g["scope"] == scope) & (g["step"] == step)]["value"].to_numpy() ** 2
        cfg = {k: theory._value(g.iloc[0], k) for k in keys}
        return float((s2.mean() if moment == "mean" else np.var(s2)) / predicted(cfg))

    if moment not in ("mean", "var"):
        raise GradflowError(f"jacobian_free_probability: moment={moment!r} is not allowed; choices: mean, var")
    return _per_run(df, one)


@measure
def growth_factor(arm: Arm, where=None, quantity="act_std", step=0, trim=3, squared=False) -> Measured:
    """Per-layer factor of a quantity towards the output: exp(slope) of log(value) against layer over the
    bulk layers (`trim` dropped at each end), the inverse of layer_factor's; for a forward signal such as
    act_std, whose growth runs from the input to the output. squared=True gives the factor of value^2."""
    towards_input = layer_factor(arm, where, quantity, step, trim, squared)
    per = [1.0 / v if v > 0 else math.nan for v in towards_input.per_run]
    return Measured(float(np.mean(per)) if per else math.nan, per)


@measure
def last_value(arm: Arm, where=None, metric="loss", split="batch") -> Measured:
    """The last logged value of a metric per run; split=batch is the mean training-minibatch value (train
    mode) over the last eval window, what training curves such as He et al. 2016's Fig. 6 show, whereas
    `final` reads the eval-mode value (with batchnorm's running statistics) from run.json."""
    def one(g):
        m = g[(g["split"] == split) & (g["metric"] == metric)].sort_values("step")["value"].to_numpy()
        return float(m[-1]) if len(m) else math.nan
    return _per_run(arm.table("metrics", where), one)


# --- more measures: add new ones above this line, each with @measure and a docstring ---------------


def compute(spec_measure: dict, arms: dict[str, Arm]) -> Measured:
    """Evaluate {fn: NAME, arm: ARM, ...args} or a combination {fn: difference|min_difference, a:, b:}."""
    m = dict(spec_measure)
    fn = m.pop("fn")
    if fn in ("difference", "min_difference", "ratio"):
        a = compute(m["a"], arms)
        bs = [compute(b, arms) for b in (m["b"] if isinstance(m["b"], list) else [m["b"]])]
        if fn == "ratio":
            return Measured(a.value / bs[0].value, [])
        diffs = [a.value - b.value for b in bs]
        return Measured(min(diffs), diffs)
    if fn not in MEASURES:
        raise GradflowError(f"claim measure fn={fn!r} is not known; choices: {', '.join(MEASURES)}, difference, "
                            "min_difference, ratio")
    arm = m.pop("arm")
    if arm not in arms:
        raise GradflowError(f"claim measure arm={arm!r} is not an arm; choices: {', '.join(arms)}")
    return MEASURES[fn](arms[arm], **m)


# --- claims ---------------------------------------------------------------------------------------------
@dataclass
class ClaimResult:
    text: str
    paper: str
    measured: Measured
    test: str
    passed: bool
    qualitative: bool = False


def passes(value: float, expect: dict) -> tuple[bool, str]:
    """Check a value against {lt|le|gt|ge: x} or {between: [lo, hi]} or {approx: v, tol: t}."""
    if not np.isfinite(value) and "approx" in expect:
        return False, f"{expect['approx']} ± {expect['tol']}"
    ops = {"lt": ("<", lambda v, x: v < x), "le": ("≤", lambda v, x: v <= x), "gt": (">", lambda v, x: v > x),
           "ge": ("≥", lambda v, x: v >= x)}
    for op, (sign, f) in ops.items():
        if op in expect:
            return bool(f(value, expect[op])), f"{sign} {fmt_number(expect[op])}"
    if "between" in expect:
        lo, hi = expect["between"]
        return bool(lo <= value <= hi), f"in [{fmt_number(lo)}, {fmt_number(hi)}]"
    if "approx" in expect:
        v, tol = expect["approx"], expect["tol"]
        return bool(abs(value - v) <= tol), f"{fmt_number(v)} ± {fmt_number(tol)}"
    raise GradflowError(f"claim expect={expect} is not understood; use lt, le, gt, ge, between or approx+tol")


def expand(claims: list[dict]) -> list[dict]:
    """A claim with `for_each: {key: [values]}` becomes one claim per value ({key} in its text)."""
    out = []
    for c in claims:
        if "for_each" not in c:
            out.append(c)
            continue
        (key, values), = c["for_each"].items()
        for v in values:
            one = {k: val for k, val in c.items() if k != "for_each"}
            one["text"] = c["text"].replace("{" + key + "}", str(v))
            one["measure"] = {**c["measure"], "where": {**c["measure"].get("where", {}), key: v}}
            out.append(one)
    return out


def arms_of(spec: Spec, root: Path, jobs: dict[str, list[str]] | None = None) -> dict[str, Arm]:
    """The spec's arms under `root`; `jobs` (arm -> run names of the current plan) restricts each."""
    return {arm: Arm(root / arm, (jobs or {}).get(arm)) for arm in spec.arms}


def check(spec: Spec, root: Path, jobs: dict[str, list[str]] | None = None) -> list[ClaimResult]:
    arms = arms_of(spec, root, jobs)
    results = []
    for c in expand(spec.claims):
        try:
            measured = compute(c["measure"], arms)
        except GradflowError as e:  # e.g. every run of the arm failed: the claim cannot hold
            measured = Measured(math.nan, [], note=str(e))
        ok, test = passes(measured.value, c["expect"])
        results.append(ClaimResult(c["text"], str(c.get("paper", "")), measured, test, ok,
                                   bool(c.get("qualitative", False))))
    return results


# --- figures and the report -------------------------------------------------------------------------
def draw(spec: Spec, root: Path, jobs: dict[str, list[str]] | None = None, fmt: str = "png") -> list[Path]:
    from gradflow.plots import figures
    from gradflow.plots.figures import save

    arms = arms_of(spec, root, jobs)
    out = []
    for i, f in enumerate(spec.figures):
        f = dict(f)
        kind, arm, title = f.pop("kind"), f.pop("arm"), f.pop("file", None)
        table = {"profile": "layers", "heatmap": "layers", "curves": "metrics", "ratio": "runs", "grid": "runs",
                 "hist": "hist", "spectrum": "jacobian"}[kind]
        df = arms[arm].table(table, f.pop("where", None))
        fig = getattr(figures, kind)(df, **f)
        out.append(save(fig, root / store.FIGURES_DIR / f"{title or f'{i}-{kind}-{arm}'}.{fmt}"))
    return out


def fmt_number(x: float) -> str:
    if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    return f"{x:.3g}"


def claims_markdown(results: list[ClaimResult]) -> str:
    lines = ["| claim | paper | measured | test | result |", "|---|---|---|---|---|"]
    for r in results:
        spread = r.measured.spread()
        measured = fmt_number(r.measured.value) + (f" ({spread})" if spread else "")
        verdict = ("PASS" if r.passed else "FAIL") + (" (qualitative)" if r.qualitative else "")
        lines.append(f"| {r.text} | {r.paper} | {measured} | {r.test} | **{verdict}** |")
    return "\n".join(lines)


def write_report(spec: Spec, root: Path, scale: str, results: list[ClaimResult], figures_: list[Path],
                 overrides: dict[str, list[str]], wall_time: float) -> Path:
    parts = [f"# Reproduction: {spec.name}", "", f"**Paper:** {spec.paper}", "", f"**Claim:** {spec.summary}", "",
             f"**Scale:** `{scale}`. {spec.scaled.get(scale, '')}", "",
             f"Run on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} in {wall_time:.0f} s "
             f"(results reused where already finished).", "", "## Claims", "", claims_markdown(results), ""]
    if spec.notes:
        parts += ["## Notes", "", spec.notes.strip(), ""]
    if figures_:
        parts += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(root).as_posix()})" for p in figures_] + [""]
    parts += ["## How it was run", ""]
    for arm, ov in overrides.items():
        parts.append(f"- `{arm}`: `gradflow sweep {' '.join(ov)}`")
    path = root / "REPORT.md"
    store.write_text(path, "\n".join(parts) + "\n")
    return path
