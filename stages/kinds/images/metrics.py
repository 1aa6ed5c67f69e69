"""How classifiers are scored beyond accuracy (evaluate, plot): an edit here re-scores, and retrains nothing."""

import numpy as np


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts; row = actual class, column = predicted class."""
    return np.bincount(np.asarray(actual) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)
