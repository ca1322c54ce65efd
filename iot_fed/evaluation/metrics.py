"""Binary detection metrics in numpy: precision, recall, F1, ROC-AUC (rank-based).

The one home of precision / recall / F1 in the project (``iot_fed.analytics.metrics``
re-uses :func:`prf`). Zero-division rule: a ratio that is undefined is ``None`` — precision
when nothing was flagged, recall when there is no fault — never a made-up 0 or 1; F1 is
``2 tp / (2 tp + fp + fn)``, which is defined (0) whenever there is a fault or a flag.
ROC-AUC is the Mann-Whitney statistic with average ranks for ties (equal to
``roc_auc_score``), NaN when only one class is present. Non-finite scores rank highest
(NaN is treated as +inf, as :mod:`iot_fed.fl.stream_scoring` flags non-finite scores).
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


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def prf(tp: float, fp: float, fn: float) -> tuple[float | None, float | None, float | None]:
    """``(precision, recall, F1)`` from counts, with the module's zero-division rule."""
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def precision(y_true: Any, y_pred: Any) -> float | None:
    tp, fp, fn, _ = confusion(y_true, y_pred)
    return prf(tp, fp, fn)[0]


def recall(y_true: Any, y_pred: Any) -> float | None:
    tp, fp, fn, _ = confusion(y_true, y_pred)
    return prf(tp, fp, fn)[1]


def f1(y_true: Any, y_pred: Any) -> float | None:
    tp, fp, fn, _ = confusion(y_true, y_pred)
    return prf(tp, fp, fn)[2]


def average_precision(y_true: Any, scores: Any) -> float:
    """PR-AUC as average precision (sklearn's ``average_precision_score``); NaN without
    positives. Ties are broken as one threshold (all tied rows flagged together)."""
    t = _bool(y_true)
    s = np.asarray(scores, np.float64).reshape(-1)
    s = np.where(np.isnan(s), np.inf, s)
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ts, ss = t[order], s[order]
    tp = np.cumsum(ts)
    last = np.append(ss[1:] != ss[:-1], True)  # end of each tie group
    tp_g, n_g = tp[last], np.flatnonzero(last) + 1
    prec = tp_g / n_g
    rec = tp_g / n_pos
    return float(np.sum(np.diff(np.concatenate([[0.0], rec])) * prec))


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
    p, r, f = prf(tp, fp, fn)
    out: dict[str, Any] = {
        "n_pos": tp + fn,
        "n_neg": fp + tn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": p,
        "recall": r,
        "f1": f,
    }
    if scores is not None:
        out["roc_auc"] = roc_auc(y_true, scores)
        out["pr_auc"] = average_precision(y_true, scores)
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


def event_report(
    flags: Any, events: Sequence[dict[str, Any]], types: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per fault type: event recall (an episode counts when any of its readings is
    flagged), delay in readings to the first flag (median and all), number of events.

    ``events``: ``{"type", "position", "length"}`` with positions into ``flags``.
    """
    fl = _bool(flags)
    out: dict[str, dict[str, Any]] = {}
    for t in types:
        ev = [e for e in events if e["type"] == t]
        delays = []
        for e in ev:
            hit = np.flatnonzero(fl[e["position"] : e["position"] + e["length"]])
            if hit.size:
                delays.append(int(hit[0]))
        out[t] = {
            "n_events": len(ev),
            "event_recall": _ratio(len(delays), len(ev)),
            "median_delay": float(np.median(delays)) if delays else None,
            "mean_delay": float(np.mean(delays)) if delays else None,
        }
    return out
