"""Asset checks that are not produced by an asset itself."""

import datetime as dt

import dagster as dg

from iot_fed.defs.assets.models import local_model
from iot_fed.defs.resources import MongoDBResource, SettingsResource


@dg.asset_check(
    asset=local_model,
    name="device_models_fresh",
    description="every landed device has a local model younger than "
    "device_freshness_s (warning, not blocking)",
)
def device_models_fresh(
    context: dg.AssetCheckExecutionContext, mongodb: MongoDBResource, settings: SettingsResource
) -> dg.AssetCheckResult:
    from iot_fed.store import repository as repo
    from iot_fed.store.ingest_progress import landed_per_device

    s = settings.get()
    db = mongodb.db
    now = dt.datetime.now(dt.UTC)
    known = [str(m) for m in sorted(landed_per_device(db))]
    models = repo.latest_local_models(db, known)
    stale, missing = {}, []
    for device in known:
        doc = models.get(device)
        if doc is None:
            missing.append(device)
            continue
        created = doc["created_at"]
        created = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
        age = (now - created).total_seconds()
        if age > s.device_freshness_s:
            stale[device] = round(age)
    return dg.AssetCheckResult(
        passed=not stale and not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "devices": len(known),
            "stale_age_s": stale or "none",
            "without_model": missing or "none",
            "freshness_s": s.device_freshness_s,
        },
    )
