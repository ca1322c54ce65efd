"""Metrics agree with scikit-learn on small hand-made cases (ties, empty classes)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from iot_fed.evaluation.metrics import (
    average_ranks,
    binary_report,
    confusion,
    f1,
    per_fault_report,
    precision,
    recall,
    roc_auc,
)

CASES = [
    ([1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0]),
    ([0, 0, 0, 1], [0, 0, 0, 0]),  # nothing predicted: precision undefined (None)
    ([0, 0, 0, 0], [1, 0, 1, 0]),  # no positives: recall undefined (None)
    ([1, 1, 1], [1, 1, 1]),
    ([True, False, True, False, True], [True, True, True, False, False]),
]


@pytest.mark.parametrize(("y", "p"), CASES)
def test_precision_recall_f1_match_sklearn(y: list, p: list) -> None:
    """Where sklearn would need a zero_division choice we answer None (undefined)."""
    nan = {"zero_division": np.nan}
    for ours, theirs in ((precision, precision_score), (recall, recall_score), (f1, f1_score)):
        want = theirs(y, p, **nan)
        got = ours(y, p)
        assert (got is None) if np.isnan(want) else got == pytest.approx(want)


def test_average_precision_matches_sklearn() -> None:
    from sklearn.metrics import average_precision_score

    from iot_fed.evaluation.metrics import average_precision

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.2
    s = np.round(rng.random(300) + y * 0.3, 2)  # with ties
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_event_report_recall_and_delay() -> None:
    from iot_fed.evaluation.metrics import event_report

    flags = np.zeros(20, bool)
    flags[[3, 12]] = True
    events = [
        {"type": "bias", "position": 0, "length": 5},  # flagged at +3
        {"type": "bias", "position": 10, "length": 5},  # flagged at +2
        {"type": "spike", "position": 7, "length": 1},  # missed
    ]
    rep = event_report(flags, events, ["bias", "spike", "noise"])
    assert rep["bias"] == {
        "n_events": 2,
        "event_recall": 1.0,
        "median_delay": 2.5,
        "mean_delay": 2.5,
    }
    assert rep["spike"]["event_recall"] == 0.0 and rep["spike"]["median_delay"] is None
    assert rep["noise"]["event_recall"] is None


AUC_CASES = [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
    ([0, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]),  # all tied: 0.5
    ([1, 0, 1, 0, 1, 0, 0], [3, 2, 2, 2, 5, 1, 3]),  # ties across classes
    ([0, 0, 1], [0.9, 0.8, 0.1]),  # perfectly wrong: 0
    ([1, 0], [2.0, 1.0]),
]


@pytest.mark.parametrize(("y", "s"), AUC_CASES)
def test_roc_auc_matches_sklearn(y: list, s: list) -> None:
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_roc_auc_random_with_ties_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.2
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_roc_auc_single_class_is_nan_and_nan_scores_rank_top() -> None:
    assert np.isnan(roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert roc_auc([0, 1, 0], [0.5, np.nan, 0.7]) == 1.0


def test_average_ranks_match_scipy() -> None:
    x = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5])
    assert np.array_equal(average_ranks(x), rankdata(x))


def test_confusion_and_report() -> None:
    assert confusion([1, 0, 1, 0], [1, 1, 0, 0]) == (1, 1, 1, 1)
    rep = binary_report([1, 0, 1, 0], [1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2])
    assert rep["n_pos"] == 2 and rep["f1"] == 0.5 and rep["roc_auc"] == 0.5
    with pytest.raises(ValueError):
        confusion([1, 0], [1])


def test_per_fault_report_scopes_each_type_to_normal_plus_own_rows() -> None:
    ft = np.array(["", "", "spike", "bias", "", "bias"], dtype=object)
    pred = np.array([False, True, True, False, False, True])
    rep = per_fault_report(ft, pred, types=["spike", "bias"])
    # spike: rows 0,1,2,4 -> tp=1, fp=1 (row 1), fn=0 ; bias rows not counted
    assert (rep["spike"]["tp"], rep["spike"]["fp"], rep["spike"]["fn"]) == (1, 1, 0)
    assert (rep["bias"]["tp"], rep["bias"]["fp"], rep["bias"]["fn"]) == (1, 1, 1)
    assert rep["all"]["n_pos"] == 3 and rep["all"]["tp"] == 2
