"""What a sweep worker needs before its first job, imported once by the fork server that joblib's
workers are forked from (`gradflow.workers`), then set aside from the garbage collector: collections
in a worker neither walk these objects nor copy the pages they sit on. Not for importing elsewhere:
importing it freezes the garbage collector's view of the importing process.

The server never takes a Ctrl-C (sent to the whole process group): it starts with SIGINT blocked
and drops one once its imports are done (`workers.start_fork_server`, `workers.serve_forks`); the
sweep's own process reports it, in one line. The workers forked afterwards hold a Ctrl-C until a
job starts (`workers.job`), so one that comes while they are starting up ends the sweep without a
traceback from their start-up code. Should an import ask whether CUDA is there, it asks NVML, which
leaves the CUDA driver uninitialized: a process that initialized it cannot hand CUDA to the
processes it forks.
"""

import gc
import os

from gradflow import workers

os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"

import torch._dynamo  # noqa: E402,F401  every torch optimizer's step() imports it
from hydra_plugins.hydra_joblib_launcher import _core  # noqa: E402,F401
from joblib.externals.loky import process_executor  # noqa: E402,F401
from scipy.optimize import brentq  # noqa: E402,F401  theory: the chaotic phase's fixed point

from gradflow import job, sweep, theory  # noqa: E402,F401

workers.FORKED = True  # in the server, so in every worker forked from it
del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
gc.collect()
gc.freeze()
workers.serve_forks()
