"""Detection-quality evaluation: fault injection, metrics, baselines, the benchmark.

No Dagster imports. Modules:

* :mod:`~iot_fed.evaluation.faults` — ``inject_faults`` (labelled, exact, seeded)
* :mod:`~iot_fed.evaluation.metrics` — precision / recall / F1 / ROC-AUC (numpy)
* :mod:`~iot_fed.evaluation.baselines` — rolling z-score and rolling MAD per device
* :mod:`~iot_fed.evaluation.benchmark` — ``run_detection_benchmark(config)``
"""

from iot_fed.evaluation.faults import FAULT_TYPES, FaultConfig, Injection, inject_faults
from iot_fed.evaluation.metrics import (
    binary_report,
    f1,
    per_fault_report,
    precision,
    recall,
    roc_auc,
)

__all__ = [
    "FAULT_TYPES",
    "FaultConfig",
    "Injection",
    "binary_report",
    "f1",
    "inject_faults",
    "per_fault_report",
    "precision",
    "recall",
    "roc_auc",
]
