"""The command line's entry point: the `gradflow` command and `python -m gradflow`."""

import os
import signal
import sys
import threading


def main() -> None:
    # Ctrl-C during the imports (~1 s, before any command could take it) is held until they are done, then
    # exits 130: raised inside the import machinery it can land in a module lock's weakref callback, where
    # Python prints it as "Exception ignored ... KeyboardInterrupt" and drops it, and the command ran on
    held: list[int] = []
    holding = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (not where SIGINT is ignored)
    if holding:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        from gradflow import workers

        workers.allow_fork_server()  # this module, the main one, is safe to import again in a worker
        if (sys.argv[1:2] in (["sweep"], ["reproduce"]) and "hydra/launcher=joblib" in sys.argv[2:]
                and "--help" not in sys.argv):
            # a joblib sweep: start the fork server its workers come from before the command line's own
            # imports, so that its imports overlap them (planning would start it, ~0.5 s later)
            workers.start_fork_server()
        from gradflow.cli import main as cli
    finally:
        if holding:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise SystemExit(130)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # (not where it is ignored or already taken)
        signal.signal(signal.SIGTERM, _terminated)
    code: int | str | None = 1  # (an error Typer did not turn into an exit status)
    piped = not _to_devnull()
    try:
        cli()
    except SystemExit as e:
        code = e.code
        if code == 1 and piped and _to_devnull():
            # a console of Typer's (a help page) found its reader gone and exited 1, pointing standard output
            # at /dev/null first (rich's on_broken_pipe): 141, as gradflow's own commands say it
            from gradflow.cli.console import PIPE_CLOSED_EXIT

            code = PIPE_CLOSED_EXIT
            raise SystemExit(code) from None
        raise
    finally:
        _leave_on_ctrl_c(0 if code is None else code if isinstance(code, int) else 1)


def _to_devnull() -> bool:
    """Whether standard output goes to /dev/null."""
    try:
        return os.path.samestat(os.fstat(1), os.stat(os.devnull))
    except OSError:
        return False


def _leave_on_ctrl_c(status: int) -> None:
    """From here on a Ctrl-C leaves at once with the command's own exit `status`: the command has ended
    (its results written, its last line printed) and the interpreter is shutting down (a joblib pool's
    exit, torch's), where a Ctrl-C printed a KeyboardInterrupt traceback as "Exception ignored", or
    ended the process by SIGINT (status -2, no line) after every run had finished. (Here, not in
    gradflow.cli.main, which a test may call: the process is the command line's own.)"""
    def leave(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # (a closed pipe)
                pass
        os._exit(status)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, leave)


def _terminated(signum, frame) -> None:
    """SIGTERM (`kill PID`, `timeout`, a scheduler's time limit) is taken as Ctrl-C is: the run in flight
    is marked interrupted with its tables up to there (killed outright, it lost them), one line, exit
    130. A second SIGTERM ends the command at once. It goes on as a SIGINT to this process, so that whatever
    Ctrl-C does at this moment it does (waits for run.json, or for a replacement's swap: workers.ctrl_c_waits),
    unless SIGINT is ignored here (a background job's) or this is a sweep's worker: raised at once there."""
    from gradflow import workers

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # (a sweep's worker, which may have inherited this handler, holds Ctrl-C between its jobs: raised there)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN or workers.in_worker():
        raise KeyboardInterrupt
    workers.terminating()  # (inside ctrl_c_waits, where a background job's SIGINT was ignored before it: not lost)
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    main()
