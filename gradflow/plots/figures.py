"""Every figure of a gradient-flow study in one namespace, each drawn from the result tables
(never from a live model) and returned as a `Drawing` (a matplotlib Figure that keeps the numbers
it drew in `.data`):

    profile   per-layer quantity against layer index at one step       plots/profiles.py
    heatmap   one run's per-layer quantity over layer x step           plots/profiles.py
    curves    train/test loss and accuracy against step                plots/curves.py
    gradnorm  the gradient norm before clipping against step           plots/gradnorm.py
    ratio     first/last-layer gradient or signal ratio against depth  plots/curves.py
    grid      a per-run summary over two swept keys                    plots/curves.py
    hist      one run's per-layer histograms                           plots/distributions.py
    spectrum  singular values of the input-output Jacobian             plots/distributions.py

`save` writes one (plots/save.py); `standard_set` draws the set that fits the data (plots/standard.py).
Labels live in plots/labels.py, colours and axes in plots/style.py.
"""

from gradflow.plots.curves import curves, grid, ratio
from gradflow.plots.distributions import hist, spectrum
from gradflow.plots.gradnorm import gradnorm
from gradflow.plots.profiles import heatmap, profile
from gradflow.plots.save import save
from gradflow.plots.standard import standard_set

__all__ = ["profile", "heatmap", "curves", "gradnorm", "ratio", "grid", "hist", "spectrum", "save", "standard_set"]
