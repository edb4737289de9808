"""Honest evaluation: metrics with CIs, confusion, bias audit, calibration, mistakes.

Intervals: every single proportion (accuracy, a class's recall or precision, a group's accuracy, the value of an
operating point, accuracy on the most usual share, unknown images rejected) gets a 95 % Wilson interval
(:func:`.bootstrap.wilson_ci`, the one function for it), which does not collapse to 100-100 % at 50 of 50.
A seeded percentile bootstrap over test images is kept for what is not a single proportion: differences
between classes or groups, ROC AUC, average precision, and paired comparisons of two models.
:data:`CI_METHODS` lists which is which; ``EvaluationResult.settings["ci_methods"]`` carries it.
"""

from ._evaluate import (
    CI_METHODS,
    EvaluationResult,
    PairedDifference,
    compare_models,
    evaluate,
    evaluate_predictions,
    expected_calibration_error,
    paired_difference,
)

__all__ = ["evaluate", "evaluate_predictions", "EvaluationResult", "expected_calibration_error", "paired_difference",
           "PairedDifference", "compare_models", "CI_METHODS"]
