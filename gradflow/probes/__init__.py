"""Per-layer signals at probed steps.

    quantities.py   the registry: each quantity's name, where it applies, how it is computed,
                    its label and meaning (no torch: plots and `ls` read labels from it)
    core.py         Probes: hooks, the batched computation on device, one host fetch per step
    fused.py        numba kernels that take CPU tensors' statistics in the hooks (long runs)
    jacobian.py     input-output Jacobian spectra (torch.func)

Importing this package loads no torch; import Probes from gradflow.probes.core.
"""

from gradflow.probes.quantities import HIST_EDGES, HIST_KINDS, HIST_TENSORS, QUANTITIES, Quantity

__all__ = ["HIST_EDGES", "HIST_KINDS", "HIST_TENSORS", "QUANTITIES", "Quantity"]
