"""`gradflow bench`: the structure of its tables and that its ratios are sane (never timings)."""

from __future__ import annotations

import copy
import math
import re
import statistics

import numpy as np
import pytest

from gradflow import bench


def test_every_loop_is_timed_against_the_bare_loop_in_every_round():
    t = bench.measure("reference", threads=1, steps=12, rounds=2, extra=["model.depth=2", "model.width=8",
                                                                        "data.n_train=256"])
    assert list(t.ms) == list(bench.LOOPS) and all(len(v) == 2 for v in t.ms.values())
    assert t.ratios("bare") == [1.0, 1.0]
    for loop in bench.LOOPS:
        lo, hi = t.spread(loop)
        assert all(math.isfinite(r) and r > 0 for r in t.ratios(loop))
        assert 0 < lo <= t.round_ratio(loop) <= hi
        assert t.median_ms(loop) > 0 and t.ratio(loop) == pytest.approx(t.median_ms(loop) / t.median_ms("bare"))
        # every timed step kept: steps 2..11 of each round's 12 (step 1 is the first turn's warm-up), probed and not
        assert sum(map(len, t.gaps[loop])) == 2 * 10
        assert (len(t.gaps[loop][0]) > 0) == (loop not in {*bench.BARE, "off"})  # (off probes step 1: a warm-up step)


def test_the_loops_take_turns_of_a_few_steps_and_time_none_of_a_turns_first_steps():
    """Three loops of 40 steps run TURN (13) steps at a time, one loop after the other: steps 0-12 of the
    bare loop, of probes off, of every step, then steps 13-25 of each, ... (their clocks' stamps interleave
    so); none of a turn's first WARM steps is timed (each loop's 1, 13, 14, 26, 27 and 39), so no timed step
    spans another loop's turn."""
    from gradflow.config import compose
    from gradflow.job import prepare

    base = [*bench.WORKLOADS["reference"], "model.depth=2", "model.width=8", "data.n_train=256", "train.steps=40",
            "train.eval_every=40"]
    loops = ["bare", "off", "every step"]
    cfgs = {loop: compose([*base, *(bench.LOOPS[loop] or [])]) for loop in loops}
    _, data, model = prepare(cfgs["bare"])
    runs = [bench.Timed(copy.deepcopy(model), data, cfgs[loop], loop) for loop in loops]
    bench.in_turns(runs)
    stamps = sorted((stamp, j, t) for j, run in enumerate(runs) for t, stamp in enumerate(run.stamps))
    assert [(j, t) for _, j, t in stamps] == [(j, t) for start in range(0, 41, bench.TURN) for j in range(3)
                                              for t in range(start, min(start + bench.TURN, 41))]
    assert all(run.cold == {0, 1, 13, 14, 26, 27, 39, 40} for run in runs)
    probed, other = runs[2].times()
    assert (len(probed), len(other)) == (39 - 6, 0)
    # the gaps are the steps' own: no timed gap spans a hand-over (the other loops' turns)
    gaps = {t: 1e3 * (b - a) for t, (a, b) in enumerate(zip(runs[0].stamps, runs[0].stamps[1:]), start=1)}
    assert sorted(runs[0].times()[1]) == pytest.approx(sorted(gaps[t] for t in range(1, 40) if t not in runs[0].cold))


def test_the_ratio_pools_every_rounds_steps_so_a_slow_spell_does_not_fall_on_one_loop():
    """A loop that costs 1.1x the bare step, timed while the machine slows to half speed for a while: the
    spell starts halfway through round 0's probed loop and ends halfway through round 1's bare loop. Each
    round's own ratio is the spell's (1.65 and 0.73; their median 1.19); the median over every round's
    steps is the loop's own 1.1."""
    n = 20  # steps per run
    bare = [[10.0] * n, [20.0] * (n // 2) + [10.0] * (n // 2)]
    loop = [[11.0] * (n // 2) + [22.0] * (n // 2), [11.0] * n]
    t = bench.Timing("reference", 1, {"bare": [bench.weighted_median(([], b)) for b in bare],
                                      "every step": [bench.weighted_median((g, [])) for g in loop]},
                     {"bare": ([], sum(bare, [])), "every step": (sum(loop, []), [])})
    assert [round(r, 2) for r in t.ratios("every step")] == [1.65, 0.73]
    assert round(t.round_ratio("every step"), 2) == 1.19
    assert t.ratio("every step") == pytest.approx(1.1) and t.median_ms("bare") == 10.0
    assert t.spread("every step") == pytest.approx((11 / 15, 1.65))


def test_every_family_has_a_workload_that_builds():
    from gradflow.config import compose
    from gradflow.job import prepare

    assert {"mlp", "cnn", "resnet20", "lstm", "transformer"} <= set(bench.FAMILIES)
    for name in bench.FAMILIES:
        _, data, model = prepare(compose(bench.WORKLOADS[name]))
        assert model.probe_points, name


def test_the_cli_prints_the_reference_table_and_rejects_unknown_workloads(cli, monkeypatch):
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)  # a terminal of 80 columns, whatever runs the tests
    out = cli("bench", "--workload", "reference", "--steps", "12", "--rounds", "1", "--clock", "cpu")
    assert out.exit_code == 0, out.output
    for loop in bench.LOOPS:
        assert bench.LOOP_TITLES[loop] in out.output
    assert [line for line in out.output.splitlines() if line != line.rstrip()] == []  # (a table title was padded)
    flat = " ".join(out.output.split())
    # 12 steps (and step 0) are one turn of 13: each loop runs whole, none takes turns with another
    assert "medians over 1 round of 12 steps, each loop run whole in one turn (its first 2 steps untimed)" in flat
    # the line as each workload finishes breaks between its loops, not inside one's words (and of one round
    # says no round's own ratio, the same number again)
    for loop in list(bench.LOOPS)[1:]:
        assert re.search(rf"{loop} [\d.]+(,|\n|$)", out.output), (loop, out.output)
    assert "(rounds" not in out.output
    assert flat.endswith("note: 1 round only: its ratios move by 0.1 or more between runs on a busy machine; "
                         "--rounds 5 or more for numbers to compare"), flat[-300:]
    bad = cli("bench", "--workload", "vit")
    assert bad.exit_code == 1 and "choices: reference, deep, mlp" in bad.output and "Traceback" not in bad.output
    bad = cli("bench", "--clock", "sundial")
    assert bad.exit_code == 1 and "choices: wall, cpu" in bad.output


def test_time_per_step_weighs_the_medians_of_probed_and_other_steps():
    """Steps 1..9 of 10 (0 and the last evaluate): unprobed steps take 10 ms, one of them 1 s (another
    process's burst), the probed steps 3 and 6 take 30 ms. The mean would make it ~130 ms."""
    step_ms = {t: 10.0 for t in range(11)} | {3: 30.0, 6: 30.0, 8: 1000.0}
    stamps = list(np.cumsum([step_ms[t] for t in range(11)]))
    assert bench.weighted_median(bench.split_steps(stamps, {0, 3, 6, 10})) == pytest.approx((7 * 10 + 2 * 30) / 9)
    assert bench.weighted_median(bench.split_steps(stamps, set())) == pytest.approx(10.0)  # one kind of step


def test_a_ratio_outside_its_rounds_own_ratios_is_flagged():
    """Two rounds whose speeds differ (a slow spell in the second round's probed steps): the ratio over
    every round's steps, 1.3, is outside the rounds' own 1.0-1.05 as printed; a warning names the loop and
    both. A ratio inside its rounds' (or one round, no spread) says nothing."""
    def timing(bare, probed):  # ms per step of each round's steps: (probed steps, others) pooled over rounds
        t = bench.Timing("reference", 1, {"bare": [statistics.median(b) for b in bare],
                                          "off": [statistics.median(p) for p in probed]})
        t.gaps = {"bare": ([], [x for b in bare for x in b]), "off": ([], [x for p in probed for x in p])}
        return t

    apart = timing([[10, 10, 10], [20, 20, 20]], [[10, 10, 10], [20, 21, 21]])
    assert apart.spread("off") == (1.0, 1.05) and apart.ratio("off") == 1.0  # (inside: the medians pool alike)
    assert bench.outside_rounds([apart]) == []
    skewed = timing([[10, 10, 10], [20, 20, 20]], [[10, 13, 13], [20, 20, 20]])  # pooled: 16.5 / 15
    assert skewed.ratio("off") == pytest.approx(1.1) and skewed.spread("off") == (1.0, 1.3)
    assert bench.outside_rounds([skewed]) == []
    outside = timing([[10, 10, 10], [10, 20, 20]], [[13, 13, 13], [21, 21, 21]])  # pooled: 17 / 10
    assert outside.spread("off") == pytest.approx((1.05, 1.3)) and outside.ratio("off") == pytest.approx(1.7)
    (line,) = bench.outside_rounds([outside])
    assert line.startswith("reference, 1 thr, off: 1.70 over every round's steps, outside its rounds' own "
                           "ratios (1.05-1.30)"), line
    assert bench.outside_rounds([timing([[10, 10, 10]], [[30, 30, 30]])]) == []  # one round: no spread


def test_a_thread_count_that_sped_the_bare_loop_up_too_little_is_flagged():
    """The bare loop at 2 threads barely faster than at 1 (a second core busy with other work): a warning
    naming the workload, the thread count and both times; a real speed-up, one thread count, or another
    workload's rows say nothing."""
    def timing(name, threads, bare):
        return bench.Timing(name, threads, {"bare": bare, "every step": [b * 1.1 for b in bare]})

    one = timing("reference", 1, [23.0, 23.24, 23.5])
    busy = bench.busy_cores([one, timing("reference", 2, [22.0, 22.21, 25.0]), timing("mlp", 1, [5.0])])
    assert len(busy) == 1 and busy[0].startswith("reference: ") and "22.21 ms at 2 threads" in busy[0] \
        and "23.24 ms at 1" in busy[0], busy
    assert bench.busy_cores([one, timing("reference", 2, [15.6, 16.0, 16.4])]) == []  # 1.45x faster
    assert bench.busy_cores([one, timing("reference", 2, [21.3, 21.2, 21.1])]) != []  # 1.096x
    assert bench.busy_cores([one, timing("reference", 2, [21.1, 21.0, 20.9])]) == []  # 1.107x
    assert bench.busy_cores([one, timing("mlp", 2, [30.0])]) == []
    # slower at more threads says so (it read "less than 1.1x faster" of a step 3.75x slower)
    [slow] = bench.busy_cores([one, timing("reference", 2, [87.0, 87.15, 88.0])])
    assert "87.15 ms at 2 threads and 23.24 ms at 1, 3.75x slower: other work held the cores" in slow, slow
    # more threads than the cores: their own warning says why they are slower, not other work
    from gradflow.workers import usable_cores

    assert bench.busy_cores([one, timing("reference", usable_cores() + 1, [87.0, 87.15, 88.0])]) == []


def test_every_10_above_every_step_is_flagged_as_too_few_probed_steps():
    """every 10 does a subset of every step's work: reading above it (1.47 against 1.27 at --steps 12, one
    probed step) is noise, said under the tables; within 0.05, or below, nothing."""
    def timing(every10, every):
        return bench.Timing("reference", 1, {"bare": [10.0], "every 10": [every10], "every step": [every]})

    [line] = bench.subset_above([timing(14.7, 12.7), timing(10.5, 12.0), timing(12.4, 12.0)])
    assert line.startswith("reference, 1 thr: every 10 reads 1.47, above every step's 1.27"), line


def test_the_sweep_tables_timings_read_in_their_units():
    """`bench --sweep`'s cells: a job's seconds in ms, a share of training in percent, a speed-up as a factor;
    each row's verdict by its unit's direction (a speed-up is met at or above its target, a time at or below)."""
    from gradflow import benchsweep
    from gradflow.cli.bench import _measured

    assert _measured(0.0012, "per job") == "1.2 ms per job"
    assert _measured(0.0012, "per job", named=False) == "1.2 ms"
    assert _measured(4.5, "total") == "4.5 s total"
    assert _measured(0.061, "of training") == "6.1% of training"
    assert _measured(1.714, benchsweep.SPEEDUP) == "1.71x faster"
    assert benchsweep.Timing("joblib", 1.7, benchsweep.SPEEDUP, 1.6).met
    assert not benchsweep.Timing("joblib", 1.5, benchsweep.SPEEDUP, 1.6).met
    assert benchsweep.Timing("per job", 0.04, "per job", 0.05).met
    assert not benchsweep.Timing("per job", 0.06, "per job", 0.05).met


@pytest.mark.parametrize("args, named", [
    (["--steps", "50"], "--steps"), (["--rounds", "2"], "--rounds"), (["--threads", "2"], "--threads"),
    (["--clock", "cpu"], "--clock"), (["--device", "cpu"], "--device"),
    (["--steps", "50", "--rounds", "2"], "--steps, --rounds do not apply")])
def test_options_bench_sweep_would_ignore_are_refused_before_it_runs(cli, args, named):
    out = cli("bench", "--sweep", *args)
    assert out.exit_code == 1 and "apply to --sweep" in out.output and named in out.output, out.output
    assert "200 tiny runs" not in out.output and "sweep machinery" not in out.output


@pytest.mark.parametrize("args, said", [
    (["--steps", "99999999999"], "error: --steps 99999999999 is too many: at most 1e+09 (train.steps' limit)"),
    (["--threads", "3000000000"], "error: --threads 3000000000 is too many: at most 2147483647"),
    # CPU time counts every thread's, spinning ones' too: a 2-thread step read 746x the bare one
    (["--threads", "1", "--threads", "2", "--clock", "cpu"],
     "error: --clock cpu with --threads 2: the process's CPU time counts every thread's, torch's threads spinning "
     "while they wait too, so its ratios mean nothing; give --clock cpu with --threads 1, or the wall clock on an "
     "idle machine")])
def test_too_large_steps_or_threads_are_refused_by_their_option_before_anything_loads(cli, args, said):
    # --steps said `train.steps=99999999999 must be <= 1e+09` after 10 s loading the fused kernels, and --threads
    # ended in torch's traceback, "ValueError: Overflow when unpacking long"
    out = cli("bench", "--workload", "mlp", *args)
    assert out.exit_code == 1 and " ".join(out.output.split()) == said, out.output
    assert "kernels" not in out.output and "Traceback" not in out.output


def test_more_threads_than_cores_are_warned_of_as_gradflow_run_warns(cli, monkeypatch):
    # `gradflow run threads=64` warns on a 2-core machine; bench timed --threads 64 without a word, its bare
    # step 20x slower
    from gradflow.cli.console import console
    from gradflow.workers import usable_cores

    monkeypatch.setattr(console, "width", 200)
    n, cores = usable_cores() + 1, usable_cores()
    out = cli("bench", "--workload", "mlp", "--threads", "1", "--threads", str(n), "--steps", "12", "--rounds", "1")
    assert out.exit_code == 0, out.output
    warned = [line for line in out.output.splitlines() if "CPU cores" in line]
    assert warned == [f"warning: --threads {n} is more than the {cores} CPU cores this run may use: torch's threads "
                      "take turns on them, slower, not faster"], out.output


@pytest.mark.parametrize("width, threads", [(80, (1, 2, 4)), (60, (1, 2))])
def test_the_tables_keep_every_spread_whole_on_a_narrow_terminal(monkeypatch, width, threads):
    """Three thread counts at 80 columns, or two at 60, cut the spreads ("(1.00-1…"), and the families table,
    kept to one line a cell, cut them ("1.05-…"): each spread now goes under its ratio, whole, in every column."""
    from rich.console import Console

    from gradflow.cli import bench as bench_cli

    def timing(name, n):
        return bench.Timing(name, n, {loop: [10.0 * (1 + 0.013 * i + 0.02 * k) for k in range(2)]
                                      for i, loop in enumerate(bench.LOOPS)})

    narrow = Console(width=width, file=None, force_terminal=False, color_system=None)
    monkeypatch.setattr(bench_cli, "console", narrow)
    spread = "{:.2f}-{:.2f}".format(*timing("reference", 1).spread("every step"))
    tables = [(bench_cli._loop_table([timing("reference", n) for n in threads], "t"), len(threads))]
    if width >= 80:  # (the five families' columns need 80)
        tables.append((bench_cli._family_table([timing(f, 1) for f in bench.FAMILIES], "f"), len(bench.FAMILIES)))
    for table, columns in tables:
        with narrow.capture() as out:
            narrow.print(table)
        text = out.get()
        assert "…" not in text and max(map(len, text.splitlines())) <= width, text
        assert text.count(spread) == columns, text  # (one per column: the last was cropped at the edge)
