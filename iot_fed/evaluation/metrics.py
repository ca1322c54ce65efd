"""Binary detection metrics in numpy: precision, recall, F1, ROC-AUC (rank-based).

Conventions follow scikit-learn: a ratio with a zero denominator is 0 (``zero_division=0``);
ROC-AUC is the Mann-Whitney statistic with average ranks for ties (equal to
``roc_auc_score``), NaN when only one class is present. Non-finite scores rank highest
(NaN is treated as +inf, matching :func:`iot_fed.fl.scoring.flag`, which flags them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _bool(a: Any) -> np.ndarray:
    return np.asarray(a).astype(bool).reshape(-1)


def confusion(y_true: Any, y_pred: Any) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of boolean labels and predictions."""
    t, p = _bool(y_true), _bool(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch: {t.shape} vs {p.shape}")
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    return tp, fp, fn, int(t.size - tp - fp - fn)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def precision(y_true: Any, y_pred: Any) -> float:
    tp, fp, _, _ = confusion(y_true, y_pred)
    return _ratio(tp, tp + fp)


def recall(y_true: Any, y_pred: Any) -> float:
    tp, _, fn, _ = confusion(y_true, y_pred)
    return _ratio(tp, tp + fn)


def f1(y_true: Any, y_pred: Any) -> float:
    tp, fp, fn, _ = confusion(y_true, y_pred)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def average_ranks(x: Any) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (as scipy's rankdata)."""
    x = np.asarray(x, np.float64).reshape(-1)
    x = np.where(np.isnan(x), np.inf, x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.ones(xs.size, dtype=bool)
    new[1:] = xs[1:] != xs[:-1]
    first = np.flatnonzero(new)
    counts = np.diff(np.append(first, xs.size))
    avg = first + (counts + 1) / 2.0  # mean of 1-based ranks first+1 .. first+count
    ranks = np.empty(xs.size, np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve (probability a positive outranks a negative, ties 1/2)."""
    t = _bool(y_true)
    s = np.asarray(scores, np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"shape mismatch: {t.shape} vs {s.shape}")
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(s)
    return float((r[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_report(y_true: Any, y_pred: Any, scores: Any | None = None) -> dict[str, Any]:
    """Counts, precision, recall, F1 and (with scores) ROC-AUC in one dict."""
    tp, fp, fn, tn = confusion(y_true, y_pred)
    out: dict[str, Any] = {
        "n_pos": tp + fn,
        "n_neg": fp + tn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    if scores is not None:
        out["roc_auc"] = roc_auc(y_true, scores)
    return out


def per_fault_report(
    fault_type: Any, y_pred: Any, scores: Any | None = None, types: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Metrics for each fault type on (normal rows + rows of that type), and ``all``.

    ``fault_type[i]`` is the row's fault type, or ``""`` / None for a normal row. Restricting
    each type's evaluation to normal rows plus its own rows keeps the other types' rows
    from counting as false positives.
    """
    ft = np.asarray(fault_type, dtype=object).reshape(-1)
    ft = np.where(ft == None, "", ft)  # noqa: E711 (elementwise)
    pred = _bool(y_pred)
    sc = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
    normal = ft == ""
    if types is None:
        types = sorted({str(t) for t in ft[~normal]})
    out = {}
    for t in types:
        sel = normal | (ft == t)
        out[t] = binary_report(ft[sel] == t, pred[sel], None if sc is None else sc[sel])
    out["all"] = binary_report(~normal, pred, sc)
    return out
