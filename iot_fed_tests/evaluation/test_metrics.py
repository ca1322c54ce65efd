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
    ([0, 0, 0, 1], [0, 0, 0, 0]),  # nothing predicted: precision 0 (zero_division=0)
    ([0, 0, 0, 0], [1, 0, 1, 0]),  # no positives: recall 0
    ([1, 1, 1], [1, 1, 1]),
    ([True, False, True, False, True], [True, True, True, False, False]),
]


@pytest.mark.parametrize(("y", "p"), CASES)
def test_precision_recall_f1_match_sklearn(y: list, p: list) -> None:
    kw = {"zero_division": 0}
    assert precision(y, p) == pytest.approx(precision_score(y, p, **kw))
    assert recall(y, p) == pytest.approx(recall_score(y, p, **kw))
    assert f1(y, p) == pytest.approx(f1_score(y, p, **kw))


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
