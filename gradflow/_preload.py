"""What a sweep worker needs before its first job, imported once by the fork server that joblib's
workers are forked from (`gradflow.workers`), then set aside from the garbage collector: collections
in a worker neither walk these objects nor copy the pages they sit on. Not for importing elsewhere:
importing it freezes the garbage collector's view of the importing process."""

import gc

import torch._dynamo  # noqa: F401  every torch optimizer's step() imports it
from hydra_plugins.hydra_joblib_launcher import _core  # noqa: F401
from joblib.externals.loky import process_executor  # noqa: F401
from scipy.optimize import brentq  # noqa: F401  theory: the chaotic phase's fixed point

from gradflow import job, sweep, theory  # noqa: F401

gc.collect()
gc.freeze()
