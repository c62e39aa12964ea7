"""The command line's entry point: the `gradflow` command and `python -m gradflow`."""

import sys


def main() -> None:
    try:
        from gradflow import workers

        workers.allow_fork_server()  # this module, the main one, is safe to import again in a worker
        if (sys.argv[1:2] in (["sweep"], ["reproduce"]) and "hydra/launcher=joblib" in sys.argv[2:]
                and "--help" not in sys.argv):
            # a joblib sweep: start the fork server its workers come from before the command line's own
            # imports, so that its imports overlap them (planning would start it, ~0.5 s later)
            workers.start_fork_server()
        from gradflow.cli import main as cli
    except KeyboardInterrupt:  # Ctrl-C during the imports (~1 s), before any command could take it
        raise SystemExit(130) from None
    cli()


if __name__ == "__main__":
    main()
