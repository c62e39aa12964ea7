"""What a process drawing a sweep's figures needs, imported once by the fork server it is forked from
(`gradflow.plots.standard.drawing_processes`); the forked processes then behave as a joblib sweep's do
(`gradflow.workers.serve_forks`): they leave with the command's process and say nothing of a Ctrl-C,
which that process reports. The server itself never takes a Ctrl-C (`workers.start_fork_server`)."""

import matplotlib

from gradflow import workers
from gradflow.plots import standard  # noqa: F401

matplotlib.use("Agg")  # a drawing process shows nothing; Agg writes png, pdf and svg alike
workers.serve_forks(sweep=False)  # (SIGTERM ends a drawing process: its pool's way to end the rest)
