"""The one "repaired" verdict of Zhong et al. 2022, Sec. 2.2.3, used by the study and every analysis.

A method repairs a target against the orig-ft baseline when it cuts the target error by at least
lambda1 (relative), loses at most ``allowed_loss`` accuracy (absolute; see
:func:`accuracy_loss_allowed`), and its error differs from orig-ft's with p < alpha; where no test is
possible the verdict is "untested".
"""

from __future__ import annotations


def accuracy_loss_allowed(lambda2: float, orig_ft_accuracy: float, relative: bool = False) -> float:
    """lambda2 as an accuracy difference: absolute (default, 1 point = 0.01) or, with ``relative``, a
    fraction of orig-ft's mean accuracy (Zhong et al. 2022, Sec. 2.2.3: "1% of the original accuracy")."""
    return lambda2 * orig_ft_accuracy if relative else lambda2


def within_thresholds(error_reduction: float, accuracy_change: float, lambda1: float,
                      allowed_loss: float) -> bool:
    """Error cut by >= lambda1 (relative to orig-ft) and accuracy change >= -allowed_loss (Zhong et al. 2022, Sec. 2.2.3)."""
    return bool(error_reduction >= lambda1 and accuracy_change >= -allowed_loss)


def verdict(error_reduction: float, accuracy_change: float, p_value: float | None, *, lambda1: float,
            allowed_loss: float, alpha: float = 0.05) -> str:
    """``"yes"`` / ``"no"`` / ``"untested"``: :func:`within_thresholds` and p < alpha.

    ``error_reduction`` = (e_orig_ft - e) / e_orig_ft; ``accuracy_change`` = acc - acc_orig_ft.
    ``p_value=None`` means no significance test was possible (too few seeds, or orig-ft's runs all
    equal): a result within the thresholds is then ``"untested"``, never ``"yes"``.
    """
    if not within_thresholds(error_reduction, accuracy_change, lambda1, allowed_loss):
        return "no"
    if p_value is None:
        return "untested"
    return "yes" if p_value < alpha else "no"


def is_repaired(error_reduction: float, accuracy_change: float, p_value: float | None, *, lambda1: float,
                allowed_loss: float, alpha: float = 0.05) -> bool:
    """:func:`verdict` is ``"yes"`` (an untested result is not a repair)."""
    return verdict(error_reduction, accuracy_change, p_value, lambda1=lambda1, allowed_loss=allowed_loss,
                   alpha=alpha) == "yes"
