"""Spark fixtures: ONE local[2] SparkSession for the whole test session, per-test settings
pointing at the test's fresh MongoDB database and a temporary data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.database import Database

from iot_fed.analytics.jars import install_spark_jars
from iot_fed.analytics.session import build_session
from iot_fed.config import Settings
from iot_fed.store import init_database
from iot_fed_tests.analytics.spark_cluster import SparkCluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A local[2] SparkSession with the connector jars (fetched once, cached)."""
    install_spark_jars(settings)
    scratch = tmp_path_factory.mktemp("spark")
    session = build_session(
        settings,
        "iot_fed_tests",
        **{
            "spark.master": "local[2]",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.local.dir": str(scratch / "tmp"),
            "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        },
    )
    yield session
    session.stop()


@pytest.fixture
def analytics_settings(settings: Settings, mongo_db: Database, tmp_path: Path) -> Settings:
    """Settings for one test: its own initialised database and data dir."""
    init_database(mongo_db)
    return settings.model_copy(
        update={"mongodb_database": mongo_db.name, "data_dir": tmp_path / "assets_data"}
    )


@pytest.fixture
def spark_cluster(tmp_path: Path) -> Iterator[SparkCluster]:
    """A Spark standalone master and 2 workers (1 core each) on 127.0.0.1."""
    cluster = SparkCluster(tmp_path / "spark_cluster")
    try:
        yield cluster.start(2)
    finally:
        cluster.stop()
