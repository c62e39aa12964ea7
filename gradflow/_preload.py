"""What a sweep worker needs before its first job, imported once by the fork server that joblib's
workers are forked from (`gradflow.workers`), then set aside from the garbage collector: collections
in a worker neither walk these objects nor copy the pages they sit on. Not for importing elsewhere:
importing it freezes the garbage collector's view of the importing process.

While it imports, Ctrl-C (sent to the whole process group) is ignored: the sweep's own process
reports it, in one line. The workers forked afterwards hold a Ctrl-C until a job starts
(`workers.job`), so one that comes while they are starting up ends the sweep without a traceback
from their start-up code. Should an
import ask whether CUDA is there, it asks NVML, which leaves the CUDA driver uninitialized: a
process that initialized it cannot hand CUDA to the processes it forks.
"""

import gc
import os
import signal
import sys

signal.signal(signal.SIGINT, signal.SIG_IGN)
os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"

import torch._dynamo  # noqa: E402,F401  every torch optimizer's step() imports it
from hydra_plugins.hydra_joblib_launcher import _core  # noqa: E402,F401
from joblib.externals.loky import process_executor  # noqa: E402,F401
from scipy.optimize import brentq  # noqa: E402,F401  theory: the chaotic phase's fixed point

from gradflow import job, sweep, theory, workers  # noqa: E402,F401

workers.FORKED = True  # in the server, so in every worker forked from it
os.register_at_fork(after_in_child=workers.leave_with_sweep)  # from its first moment, not its first job
del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
gc.collect()
gc.freeze()
# the handler the workers start with (the server itself ignores Ctrl-C from here on: forkserver.main)
signal.signal(signal.SIGINT, workers.hold_interrupt)
sys.excepthook = workers.quiet_when_interrupted
