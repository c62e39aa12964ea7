"""What the training loop's accuracy means for each kind of task: a leaf (no torch), so that the figures
say it in the words the loop measures it by (gradflow.train.loss_and_accuracy)."""

from __future__ import annotations

from typing import Iterable

# a regression prediction (the adding problem, a Gaussian teacher's regression task) within this of its
# target counts as correct: "accuracy" there is the share of such predictions
REGRESSION_TOLERANCE = 0.04


def is_regression(data_name: object, data_task: object = None) -> bool:
    """Whether a run of this dataset (and data.task, where the dataset has one) is a regression task."""
    return data_name == "adding" or data_task == "regression"


def accuracy_label(regression: Iterable[bool]) -> str:
    """The accuracy axis's label for runs of which these are regression tasks: plain "accuracy" where
    none is; what it counts where all or some are."""
    flags = list(regression)
    within = f"|error| < {REGRESSION_TOLERANCE:g}"
    if not any(flags):
        return "accuracy"
    return f"accuracy ({within})" if all(flags) else f"accuracy (regression runs: {within})"
