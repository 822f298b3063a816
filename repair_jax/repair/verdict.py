"""The one "repaired" verdict of 000_92ecc981581ec3ed.txt Sec. 2.2.3, used by the study and every analysis.

A method repairs a target against the orig-ft baseline when it cuts the target error by at least
lambda1 (relative), loses at most ``allowed_loss`` accuracy (absolute; see
:func:`accuracy_loss_allowed`), and - where a significance test applies - its error differs from
orig-ft's with p < alpha.
"""

from __future__ import annotations


def accuracy_loss_allowed(lambda2: float, orig_ft_accuracy: float, relative: bool = False) -> float:
    """lambda2 as an accuracy difference: absolute (default, 1 point = 0.01) or, with ``relative``, a
    fraction of orig-ft's mean accuracy (000 Sec. 2.2.3: "1% of the original accuracy")."""
    return lambda2 * orig_ft_accuracy if relative else lambda2


def within_thresholds(error_reduction: float, accuracy_change: float, lambda1: float,
                      allowed_loss: float) -> bool:
    """Error cut by >= lambda1 (relative to orig-ft) and accuracy change >= -allowed_loss (000 Sec. 2.2.3)."""
    return bool(error_reduction >= lambda1 and accuracy_change >= -allowed_loss)


def is_repaired(error_reduction: float, accuracy_change: float, p_value: float | None, *, lambda1: float,
                allowed_loss: float, alpha: float = 0.05) -> bool:
    """The verdict: :func:`within_thresholds` and, when a test applies (``p_value`` not None), p < alpha.

    ``error_reduction`` = (e_orig_ft - e) / e_orig_ft; ``accuracy_change`` = acc - acc_orig_ft.
    ``p_value=None`` means no test could be applied (e.g. too few runs); callers must say so in
    their report rather than pass a made-up p.
    """
    ok = within_thresholds(error_reduction, accuracy_change, lambda1, allowed_loss)
    return bool(ok and (p_value is None or p_value < alpha))
