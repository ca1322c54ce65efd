"""Report metrics from summed counts: error means, anomaly rate, precision/recall/F1.

Spark aggregates sums per device (exactly mergeable); these pandas/numpy helpers turn
sums into rates for each device and for the whole fleet. A reading is a fault when its
label is not null; precision/recall/F1 are ``None`` when the data has no labels at all
or the ratio is undefined (nothing flagged / no faults).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from iot_fed.evaluation.metrics import prf as _prf

MODELS = ("global", "local")
SUM_COLUMNS = ("n", "n_faults", "sum_mse", "sum_mae", "n_flagged", "tp")


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def prf(
    tp: float, n_flagged: float, n_faults: float, labelled: bool
) -> tuple[float | None, float | None, float | None]:
    """(precision, recall, F1) from counts (the rule of :mod:`iot_fed.evaluation.metrics`)."""
    if not labelled:
        return None, None, None
    return _prf(tp, n_flagged - tp, n_faults - tp)


def rates(sums: dict[str, float], labelled: bool) -> dict[str, Any]:
    """Metrics of one model over one set of readings, from :data:`SUM_COLUMNS` sums."""
    n = int(sums["n"])
    p, r, f1 = prf(sums["tp"], sums["n_flagged"], sums["n_faults"], labelled)
    return {
        "n": n,
        "n_faults": int(sums["n_faults"]),
        "mse": _ratio(sums["sum_mse"], n),
        "mae": _ratio(sums["sum_mae"], n),
        "anomaly_rate": _ratio(sums["n_flagged"], n),
        "precision": p,
        "recall": r,
        "f1": f1,
    }


def per_device_table(
    sums: pd.DataFrame, local_versions: dict[int, int], labelled: bool
) -> pd.DataFrame:
    """One row per device: ``global_*`` and ``local_*`` metrics side by side.

    ``sums`` has ``moteid`` and ``<model>_<sum column>`` for each model in :data:`MODELS`.
    """
    rows = []
    for rec in sums.sort_values("moteid").to_dict("records"):
        row: dict[str, Any] = {"moteid": int(rec["moteid"])}
        for model in MODELS:
            part = {c: rec[f"{model}_{c}"] for c in SUM_COLUMNS}
            if model == "local":
                row["local_version"] = local_versions.get(int(rec["moteid"]))
                if not part["n"]:
                    row.update({f"local_{k}": None for k in rates(part, labelled)})
                    continue
            row.update({f"{model}_{k}": v for k, v in rates(part, labelled).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.astype({"local_version": "Int64"}) if len(table) else table


def fleet_summary(sums: pd.DataFrame, labelled: bool) -> dict[str, dict[str, Any]]:
    """Fleet-wide metrics: the global model on all readings, the local models on the
    readings they cover, and the global model on those same readings (fair comparison)."""

    def total(model: str, frame: pd.DataFrame) -> dict[str, float]:
        return {c: float(frame[f"{model}_{c}"].sum()) for c in SUM_COLUMNS}

    covered = sums[sums["local_n"] > 0]
    return {
        "global": rates(total("global", sums), labelled),
        "local": rates(total("local", covered), labelled),
        "global_on_local_devices": rates(total("global", covered), labelled),
    }
