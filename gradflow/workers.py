"""The worker processes of parallel launchers: how joblib's start, what every worker sets aside,
when it leaves, and when joblib's pool is shut down.

A loky worker is a fresh interpreter: before its first job it imports torch, torch's compiler stack
(every optimizer's `step()` imports `torch._dynamo`), Hydra and gradflow, ~3 s of CPU, as long as a
short run. On Linux, gradflow's command line instead starts a fork server for a joblib sweep
(`start_fork_server`, from the entry point or from planning): one process that imports all of that
once (`gradflow._preload`) while this process is still planning, and from which loky then forks
each worker, warm. The server is Python's own (`multiprocessing.forkserver`, which Python 3.14
makes the default start method on Linux) and a start method loky supports; it has run no torch
kernel and initialized no CUDA driver, so a forked worker starts as clean as a fresh one. A forked
worker imports the main module again, which gradflow's entry point allows (`allow_fork_server`); a
user's own script that launches sweeps, and macOS and Windows, keep loky's own workers. `gradflow
plot` and `report` fork the processes that draw a big sweep's figures from a fork server too, one
that imports the plotting modules instead (`gradflow.plots.preload`).
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

SWEEP_PID = "GRADFLOW_SWEEP_PID"  # set for workers: the process whose sweep they serve
PRELOAD = ["__main__", "gradflow._preload"]  # what the fork server imports before forking a worker
FORKED = False  # set in the fork server (gradflow._preload), so True in the workers forked from it


def owner() -> int:
    """The pid of the sweep this process works for; 0 outside a sweep worker's environment."""
    return int(os.environ.get(SWEEP_PID, "0") or 0)


def process_token(pid: int) -> str:
    """A process told apart from a later one of the same pid (a container's sweep is pid 1 every time): its pid
    and, where /proc has it, its start time (clock ticks since boot, field 22 of /proc/PID/stat)."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return str(pid)
    return f"{pid}:{start}"


def in_worker() -> bool:
    """Whether this process is a parallel launcher's worker (not the sweep's own process)."""
    return owner() not in (0, os.getpid())


@contextmanager
def environment(name: str, value: str):
    """os.environ[name] = value for a with block, then as it was before (absent, or its old value)."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextmanager
def serving():
    """While this process runs a sweep: workers started now find it in their environment."""
    with environment(SWEEP_PID, str(os.getpid())):
        yield


_server = False  # whether this process has started the fork server
_allowed = False  # set by `allow_fork_server`


def allow_fork_server() -> None:
    """Let this process's joblib sweeps use the fork server: its main module must be safe to import
    again (every worker imports it, as `__mp_main__`), as gradflow's own entry point is. A user's
    script that launches sweeps itself keeps loky's own workers, which do not import it."""
    global _allowed
    _allowed = True


def start_fork_server(preload: list[str] = PRELOAD) -> bool:
    """On Linux, start the fork server joblib's workers (or the processes drawing a sweep's figures,
    with their own `preload`) are forked from, once per process (if allowed); it imports in the
    background (a second core's worth), and forks the first worker once it has. Whether one runs."""
    global _server
    if _server or not _allowed or sys.platform != "linux":
        return _server
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    multiprocessing.set_forkserver_preload(preload)
    # Ctrl-C is sent to the whole process group, and the command's own process reports it. The server
    # must not take one from its first instruction (a KeyboardInterrupt in its start-up is a traceback),
    # and this process must not lose one meanwhile: SIGINT is blocked in this thread while the server is
    # spawned, so the server starts with it blocked (a signal mask survives exec) and drops one that
    # came then once its imports are done (`serve_forks`), while this process takes it on unblocking.
    # (The server's start starts the resource tracker first, unless it runs, and that start unblocks
    # SIGINT when it ends, whatever the mask was: so it goes first, outside.)
    resource_tracker.ensure_running()
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with serving():  # the server's environment is its workers'
            forkserver.ensure_running()
    except OSError:  # no server where its socket cannot be made (a TMPDIR too long for an AF_UNIX path,
        return False  # ~100 characters): loky's own workers, or drawing in this process
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
    _server = True
    atexit.register(stop_fork_server)
    return True


def stop_fork_server() -> None:
    """End this process's fork server now (SIGKILL), as the process ends: it is no more use, and left to
    notice the end itself it went on importing where it had not finished (a sweep with nothing left to
    run; a bad point's error), then tore down its interpreter (~0.2 s): a core held, and a command piped
    into another (`gradflow sweep ... | tee log`), which waits for every holder of its output, held
    that long after the command's last line. It has forked every process it will; those go on."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001  (no public handle)
    if _server and pid:
        with suppress(OSError):  # (gone already)
            os.kill(pid, signal.SIGKILL)  # (it ignores SIGTERM: `serve_forks`; it has nothing to clean up)


@contextmanager
def ctrl_c_taken_by(handler):
    """`handler` takes Ctrl-C (SIGINT) during a with block, Python's own handler again after it. Only
    where Python's own handler is in place, in the main thread (elsewhere, in a worker holding Ctrl-C
    in its own way, the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def ctrl_c_waits(seen: int = 0):
    """Ctrl-C during the block waits for its end, then goes to the handler in place before it (Python's
    raises KeyboardInterrupt, over an error the block raised; a sweep worker's ignores all but a job's
    first): what the block writes is not cut short halfway. In the command's own process a second
    Ctrl-C, counting the `seen` ones that came before the block, raises at once (the user insists); in a
    worker none does (its sweep's process decides when to leave). Main thread only (elsewhere the block
    runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []  # the Ctrl-Cs taken: True where one raised at once

    def hold(signum, frame):
        held.append(seen + len(held) >= 1 and not in_worker())
        if held[-1]:
            raise KeyboardInterrupt

    global _terminating
    _terminating = False  # (before `hold` takes Ctrl-C: a SIGTERM's that came between would be forgotten)
    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and not any(held) and previous is not signal.SIG_IGN:
            (previous if callable(previous) else signal.default_int_handler)(signal.SIGINT, None)
        elif held and not any(held) and _terminating:  # a SIGTERM's, where Ctrl-C is ignored (a background
            signal.default_int_handler(signal.SIGINT, None)  # job's): dropped as one, the run went on to exit 0


_terminating = False  # a SIGTERM came during a ctrl_c_waits block, sent on as its Ctrl-C (see `terminating`)


def terminating() -> None:
    """Say that the Ctrl-C about to come is a SIGTERM's (gradflow.__main__'s handler sends it on as one):
    `ctrl_c_waits` holds it and then raises it also where SIGINT itself is ignored, as in a background job
    of a script (`gradflow sweep ... &`), whose own Ctrl-Cs it drops."""
    global _terminating
    _terminating = True


@contextmanager
def interrupts_outside_imports():
    """Ctrl-C raises KeyboardInterrupt as ever, except while this thread imports a module: Python's
    import machinery is not safe against it (raised in a module lock's weakref callback it is printed
    as "Exception ignored" and lost, and the command ran on to exit 0; raised elsewhere there it can
    leave the import lock held, and the drawing pool's thread, importing next, waited forever). There
    it is sent again 20 ms later, until the import is done."""
    with ctrl_c_taken_by(lambda signum, frame: raise_outside_imports(frame)):
        yield


def raise_outside_imports(frame) -> None:
    """A Ctrl-C handler's end: KeyboardInterrupt, unless `frame` is inside the import machinery, where the
    signal is sent again 20 ms later, until the import is done (see `interrupts_outside_imports`)."""
    if _importing(frame):
        threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT)).start()
        return
    raise KeyboardInterrupt


def _importing(frame) -> bool:
    """Whether `frame` or one it was called from is the import machinery's."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextmanager
def forked(launcher: str):
    """joblib's workers for this sweep come from the fork server, when this process started one."""
    if launcher != "joblib" or not _server:
        yield
        return
    from joblib.externals.loky.backend import context

    saved = context.get_start_method()
    context.set_start_method("forkserver", force=True)
    try:
        yield
    finally:
        context.set_start_method(saved, force=True)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a SLURM job's allocation, taskset's), else the
    machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def more_than_cores(threads: int, given: str) -> str | None:
    """The warning for `threads` intra-op threads (`given`: how the user wrote them, threads=64 or --threads 64)
    where they are more than the cores this process may use (`usable_cores`), else None: taking turns on the
    cores, each spins while it waits, slower, not faster."""
    if threads <= (cores := usable_cores()):
        return None
    return (f"{given} is more than the {cores} CPU cores this run may use: torch's threads take turns on them, "
            "slower, not faster")


def default_threads(torch_own: int) -> int:
    """The intra-op threads of a run that leaves them to torch (threads=0): torch's own count
    `torch_own`, except in a worker forked from the fork server, where it is the worker's share of the
    cores, as joblib gives the workers loky starts itself (through OMP_NUM_THREADS and the like, which
    loky cannot pass to a fork server's workers)."""
    if not FORKED:
        return torch_own
    import joblib
    from hydra.core.hydra_config import HydraConfig

    return max(1, (os.cpu_count() or 1) // joblib.effective_n_jobs(HydraConfig.get().launcher.n_jobs))


def settle() -> None:
    """After a process's first job of a sweep (a worker's, or the sweep's own under the basic launcher): set
    what is alive by now (torch, its compiler stack, Hydra, gradflow) aside from the garbage collector.
    Without psutil, joblib's workers collect garbage after every job, and walking those millions of
    import-time objects took ~0.3 s each time; in the sweep's own process (basic launcher) the 12-run
    MNIST-1D sweep's machinery is 6.2-6.6% of its training with this, 8.5-8.8% without. Once a process: a
    process of several sweeps (a reproduction's arms, `bench --sweep`) keeps what its first sweep's first
    job left alive (its plan and caches, a bounded amount) out of the collector's reach; letting go at
    each sweep's end cost each next sweep a full collection (8.1%). (A forked worker's imports were set
    aside by the server already.)"""
    global _settled
    if _settled:
        return
    gc.collect()
    gc.freeze()
    _settled = True


_settled = False


@contextmanager
def job(folder: Path):
    """Around each job in a worker: once Ctrl-C has reached a worker, its sweep is ending, and the jobs
    joblib had queued behind the interrupted one start nothing (not even their run.json; the empty
    `folder` Hydra made for the job goes again). In a job the
    first Ctrl-C raises KeyboardInterrupt and any more are ignored (`take_interrupt_once`): the sweep's
    process passes its Ctrl-C on to its workers (`finish_interrupted_jobs`), which the terminal may
    have sent one already, and a second one must not cut short the recording of the run the first
    stopped. Outside its jobs a worker holds Ctrl-C (`hold_interrupt`) once it has run one (a worker
    forked from the fork server from the start). SIGTERM is taken as Ctrl-C is: sent to the sweep's
    process group (`timeout`, a scheduler's time limit) it reaches the workers too, which it killed
    outright, their runs left `running` without their tables."""
    global _interrupted
    if not in_worker():
        yield
        return
    signal.signal(signal.SIGINT, take_interrupt_once)
    signal.signal(signal.SIGTERM, _as_ctrl_c)
    try:
        if _interrupted:
            with suppress(OSError):  # (not empty: an earlier, interrupted run's files stay for ls to show)
                folder.rmdir()
            raise KeyboardInterrupt
        yield
    except KeyboardInterrupt:
        _interrupted = True
        raise
    finally:
        signal.signal(signal.SIGINT, hold_interrupt)
        signal.signal(signal.SIGTERM, hold_interrupt)


def take_interrupt_once(signum, frame) -> None:
    """A worker's Ctrl-C handler in a job (a SIGTERM comes to it too: `_as_ctrl_c`): the first raises
    KeyboardInterrupt (noted in `_interrupted`, which the training loop checks at every step should Python
    swallow the exception); the rest of the job ignores Ctrl-C (the sweep's process passes its own on)."""
    global _interrupted
    _interrupted = True
    # a handler that does nothing, not SIG_IGN: a Ctrl-C that came while this one was handled (the
    # terminal's and the one the sweep's process passes on) is still pending, and Python raises OSError
    # ("Signal 2 ignored due to race condition") for a pending signal whose handler is SIG_IGN by then, in
    # place of this KeyboardInterrupt, while the run recorded itself: it stayed `running`, without its tables
    signal.signal(signal.SIGINT, _ignore)
    raise KeyboardInterrupt


def _as_ctrl_c(signum, frame) -> None:
    """A worker's SIGTERM handler in a job: once, a Ctrl-C to itself, so that whatever Ctrl-C does at
    this moment it does (the training loop's handler stops at the step's end and records the run)."""
    signal.signal(signal.SIGTERM, _ignore)
    os.kill(os.getpid(), signal.SIGINT)


def _ignore(signum, frame) -> None:
    """A signal handler that does nothing (see `take_interrupt_once`)."""


def stopping() -> bool:
    """In a worker: whether Ctrl-C has reached it (its job is to stop and record what it has)."""
    return _interrupted and in_worker()


def serve_forks(sweep: bool = True) -> None:
    """In a fork server, once its imports are done: the processes it forks leave when the process they
    serve does (`leave_with_sweep`), hold a Ctrl-C while not in a job (`hold_interrupt`; the server
    itself ignores it, `forkserver.main`), and stay quiet about a start-up cut short by its end
    (`quiet_when_interrupted`). `sweep`: a joblib sweep's server, which outlives a SIGTERM, its workers
    holding one between jobs (`_forked`); not the figures' (`gradflow.plots.preload`), whose pool, where
    a process of it dies, ends the others by SIGTERM and waits for them (held, it waited for ever)."""
    os.register_at_fork(after_in_child=_forked if sweep else leave_with_sweep)  # from its first moment
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # drops a Ctrl-C held since the start (`start_fork_server`)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # so the processes it forks can take one
    signal.signal(signal.SIGINT, hold_interrupt)
    if sweep:
        # the server outlives a SIGTERM to the process group (`timeout`, a scheduler's time limit): its death
        # closed the pipes by which the sweep's pool watches its workers, and the pool, taking them for dead,
        # killed them outright while their runs were recording themselves (`stop_fork_server` ends it)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = quiet_when_interrupted


def _forked() -> None:
    """In a process the fork server forked: it leaves with the sweep, and holds SIGTERM as it holds
    Ctrl-C until a job takes them (`job`)."""
    signal.signal(signal.SIGTERM, hold_interrupt)
    leave_with_sweep()


def hold_interrupt(signum, frame) -> None:
    """The Ctrl-C handler of a worker forked from the fork server while it runs no job: starting up,
    or waiting for one. It raises nothing there (a KeyboardInterrupt in loky's start-up code is a
    traceback on the user's terminal); the worker's next job starts nothing instead."""
    global _interrupted
    _interrupted = True


def quiet_when_interrupted(kind, value, tb) -> None:
    """sys.excepthook of the workers forked from the fork server, which reports a worker that failed
    to start: nothing once Ctrl-C has reached the worker or its sweep has ended (within a couple of
    seconds), e.g. when a sweep's Ctrl-C released the pool's semaphores while the worker was still
    unpacking them. That says nothing the sweep's own line does not."""
    from gradflow import store

    deadline = time.monotonic() + 2.0
    while not _interrupted and store.pid_alive(owner()):
        if time.monotonic() > deadline:
            sys.__excepthook__(kind, value, tb)
            return
        time.sleep(0.05)


_interrupted = False
_watchdog: threading.Thread | None = None


def leave_with_sweep() -> None:
    """In a worker process: exit as soon as the sweep's process is gone (killed, or Ctrl-C'd), so no
    worker outlives its sweep (loky and submitit workers otherwise live on)."""
    global _watchdog
    if not in_worker() or _watchdog is not None:
        return
    sweep_pid = owner()

    from gradflow import store

    def watch() -> None:
        while store.pid_alive(sweep_pid):
            time.sleep(0.5)
        os._exit(1)

    _watchdog = threading.Thread(target=watch, daemon=True, name="gradflow-parent-watch")
    _watchdog.start()


_keep = False  # set by `kept`


@contextmanager
def kept():
    """Keep joblib's worker pool from one sweep to the next (the sweeps of a reproduction's arms), so
    that each new sweep does not start its workers again; shut it down at the end."""
    global _keep
    saved, _keep = _keep, True
    try:
        yield
    finally:
        _keep = saved
        if not saved:
            stop()


def sweep_ended(root: Path) -> None:
    """A sweep's end, as it propagates however it ended: its pool is shut down unless kept for the next
    sweep (`kept`); after a Ctrl-C it is shut down kept or not, its runs in flight first getting to record
    themselves (`stop`): a reproduction's Ctrl-C between its calls into joblib otherwise reached the kept
    pool's end in `kept`, which knows no sweep folder to wait for, and killed the runs it was recording."""
    if not _keep or isinstance(sys.exc_info()[1], KeyboardInterrupt):
        stop(root)


def _pool():
    """joblib's reusable worker pool (loky's executor), if this process has made one."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    return getattr(loky, "_executor", None) if loky else None


def exit_now(code: int) -> None:
    """Leave at once with `code` (os._exit: no exit handlers, after Ctrl-C), deleting multiprocessing's
    temporary folder first (/tmp/pymp-*, where the fork server's socket lives): its own exit handler,
    skipped here, is the only one that would, and each Ctrl-C'd sweep or plot left one behind."""
    import shutil
    from multiprocessing import process

    folder = process.current_process()._config.get("tempdir")  # noqa: SLF001  (set once one was made)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    stop_fork_server()
    os._exit(code)


GRACE = 60.0  # seconds the runs in flight get to record themselves after Ctrl-C (~1 s is usual)
_since = 0.0  # when the joblib sweep began (time.time()): the runs it may wait for were begun since
_waited = False  # whether its Ctrl-C went through joblib's abort, which waited for them (stop() then does not)


@contextmanager
def finish_interrupted_jobs(root: Path | None = None):
    """During a joblib sweep: Ctrl-C in this process makes joblib kill the workers at once (its abort),
    while the runs in flight were writing their tables after the same Ctrl-C, which left them `running`
    with half their tables. Here that abort first passes Ctrl-C on to the workers (when it came to this
    process alone: `kill -INT`, SIGTERM), then waits up to GRACE seconds for the jobs to end, each run
    recorded `interrupted` with what it measured; a second Ctrl-C stops the wait. `root`: the sweep's folder,
    whose runs a worker is still recording (run.json `running`, the worker's pid) are waited for too."""
    from joblib._parallel_backends import LokyBackend

    global _since, _waited
    abort = LokyBackend.abort_everything
    _since, _waited = time.time(), False

    def abort_everything(self, ensure_ready=True):
        global _waited
        if isinstance(sys.exc_info()[1], KeyboardInterrupt) and self._workers is not None:
            _waited = True  # (a second Ctrl-C, which stops this wait, must not start stop()'s)
            _interrupt_and_wait(self._workers, root)
        return abort(self, ensure_ready=ensure_ready)

    LokyBackend.abort_everything = abort_everything
    try:
        yield
    finally:
        LokyBackend.abort_everything = abort


def _interrupt_and_wait(executor, root: Path | None = None) -> None:
    """Ctrl-C to each worker, then a wait for the jobs in flight to record themselves. Jobs still queued
    are cancelled, not waited for: where Ctrl-C came while the workers were still being forked (the fork
    server importing torch), no worker would ever take them, and the command waited out all of GRACE.
    A job a worker had just begun can still read as queued (its future cancelled though it had written its
    run.json): the runs under `root` that a worker is recording are waited for by their run.json, which
    the pool's end left `running`, without tables (one Ctrl-C in five, 6 s into a joblib sweep)."""
    from concurrent.futures import wait

    futures = [item.future for item in list(getattr(executor, "_pending_work_items", {}).values())]
    workers = _interrupt_workers(executor)
    if not workers:  # no job in flight
        return
    deadline = time.monotonic() + GRACE
    wait([f for f in futures if not f.cancel()], timeout=GRACE)  # (cancel: False for a job a worker has)
    if root is not None:
        _wait_for_recording(Path(root), set(workers), deadline)


def _wait_for_recording(root: Path, pids: set[int], deadline: float) -> None:
    """Until `deadline`, while a run under `root` reads `running` in run.json with a live pid among `pids`, on
    this host, begun since the sweep did (`_since`), the last such run of its worker (one a worker left
    `running` when its job raised, the worker gone on to others, or an earlier sweep's whose pid a worker has
    now, is none a worker records: the sweep waited out GRACE for it)."""
    import socket

    from gradflow import store

    host = socket.gethostname()

    def running_pid(path: Path) -> int | None:
        rec = store.read_run(path.parent)
        if not (rec and rec.get(store.STATUS) == store.RUNNING and rec.get("pid") in pids
                and rec.get("host", host) == host and store.pid_alive(rec["pid"])):  # (a worker gone: nothing comes)
            return None
        return rec["pid"]

    latest: dict[int, tuple[float, Path]] = {}  # each worker's most recently begun run that reads running
    for path in root.glob(f"*/{store.RUN_FILE}"):
        try:
            begun = path.stat().st_mtime
        except OSError:
            continue
        if begun >= _since - 1 and (pid := running_pid(path)) is not None and begun >= latest.get(pid, (0,))[0]:
            latest[pid] = (begun, path)
    waiting = [path for _, path in latest.values()]
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = [p for p in waiting if running_pid(p) is not None]


def stop(root: Path | None = None) -> None:
    """Shut down joblib's reusable worker pool (it otherwise idles for minutes after the sweep). After a
    Ctrl-C that did not come through joblib's abort (`finish_interrupted_jobs`: one that reached the sweep's
    process between its calls into joblib), the runs under `root` its workers are recording first get to
    end: the pool's end killed them, `running` without tables."""
    executor = _pool()
    if executor is None:
        return
    if root is not None and isinstance(sys.exc_info()[1], KeyboardInterrupt) and not _waited:
        _wait_for_recording(Path(root), set(_interrupt_workers(executor)), time.monotonic() + GRACE)
    executor.shutdown(wait=True, kill_workers=True)


def _interrupt_workers(executor) -> list[int]:
    """Ctrl-C to each worker of joblib's pool; their pids."""
    workers = list(getattr(executor, "_processes", {}))
    for pid in workers:
        with suppress(OSError):  # (gone already)
            os.kill(pid, signal.SIGINT)
    return workers


def drop_pool_folders() -> None:
    """Delete the temporary folder joblib's pool made for its memory maps, as its exit handler would:
    for a command that leaves at once after Ctrl-C (os._exit, no exit handlers), so that loky's
    resource tracker finds no folder left to clean and warn about as "leaked" on the terminal."""
    manager = getattr(_pool(), "_temp_folder_manager", None)
    if manager is not None:
        try:
            manager._clean_temporary_resources(force=True)  # noqa: SLF001  (joblib's own clean-up)
        except Exception:  # leaving anyway: the tracker deletes what is left, with its warning
            pass
