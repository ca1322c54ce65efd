"""One loader of the promoted model (:func:`iot_fed.federation.bundles.load_promoted`) for the
rounds, the scorers and the API; each keeps its own caching, and none changes the bundle
the loader shares with every caller in the process."""

from __future__ import annotations

from pymongo.database import Database

from iot_fed.analytics.live_state import ExecutorModel
from iot_fed.analytics.models import load_global_model
from iot_fed.analytics.readings import MongoTarget
from iot_fed.federation.bundles import load_promoted
from iot_fed.federation.local_round import starting_point
from iot_fed.serving.app import ModelCache
from iot_fed.store import init_database, save_global_model
from iot_fed_tests.analytics.helpers import make_bundle, make_readings


def test_every_caller_reads_the_promoted_model_through_one_loader(
    settings, mongo_db: Database
) -> None:
    init_database(mongo_db)
    assert load_promoted(mongo_db) is None
    bundle = make_bundle(make_readings(2, 40), seed=1)
    blob_threshold = float(bundle.threshold)
    judged_by = blob_threshold * 2  # the document's threshold differs from the blob's
    version = save_global_model(mongo_db, bundle.to_bytes(), threshold=judged_by, promoted=True)[
        "version"
    ]
    doc, shared = load_promoted(mongo_db)
    assert doc["version"] == version and shared.threshold == blob_threshold
    assert load_promoted(mongo_db, version)[1] is shared  # decoded once per process
    assert load_promoted(mongo_db, version + 1) is None

    assert load_global_model(mongo_db).threshold == judged_by  # batch scoring
    api = ModelCache(ttl_s=60.0)
    assert api.get(mongo_db)[0] == version and api.get(mongo_db)[1].threshold == judged_by
    scorer = ExecutorModel(MongoTarget(settings.mongodb_uri, mongo_db.name), refresh_s=0.0)
    assert scorer.current()[0] == version and scorer.current()[1].threshold == judged_by
    start = starting_point(mongo_db, shared.spec, seed=0)  # the rounds' warm start
    assert start.version == version and start.bundle is shared
    assert shared.threshold == blob_threshold  # no caller changed the shared bundle
