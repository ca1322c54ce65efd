"""Typed settings for iot_fed: every knob, its default and where it comes from.

Sources, highest priority first:

1. environment variables ``IOT_FED_<NAME>`` (e.g. ``IOT_FED_KAFKA_BOOTSTRAP``),
2. a ``.env`` file in the working directory (same names),
3. a YAML file: ``IOT_FED_CONFIG_FILE`` or ``./project_config.yaml`` (keys are the
   field names below, lower case, e.g. ``kafka_bootstrap: broker:9092``),
4. the defaults below (local services on 127.0.0.1).

Pointing ``kafka_bootstrap`` / ``mongodb_uri`` at an existing cluster needs no code
change; ``iot-fed services up`` then starts no local process for that service.
A bad value raises :class:`ConfigError` naming the setting (``IOT_FED_<NAME>``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "IOT_FED_"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting."""


def _project_root() -> Path:
    """The repository root when running from a checkout, else the working directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def _yaml_file() -> Path:
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG_FILE", "project_config.yaml"))


class Settings(BaseSettings):
    """All iot_fed settings. Field ``foo_bar`` is read from ``IOT_FED_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -----------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_topic: str = Field("iot_stream", description="topic carrying sensor readings")
    kafka_dlq_topic: str = Field("iot_stream_dlq", description="dead-letter topic")
    kafka_partitions: int = Field(3, ge=1, description="partitions when iot-fed creates topics")
    kafka_replication: int = Field(1, ge=1, description="replication factor for new topics")
    kafka_min_insync_replicas: int = Field(
        1, ge=1, description="min.insync.replicas of new topics (2 with replication 3)"
    )
    kafka_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=-1, description="topic retention")
    kafka_consumer_group: str = Field("iot_fed_ingest", description="ingestion consumer group")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = Field(None, description="CA bundle for SSL")
    kafka_max_message_bytes: int = Field(
        64 * 1024, ge=256, description="messages larger than this are dead-lettered"
    )

    # --- MongoDB ---------------------------------------------------------------
    mongodb_uri: str = Field("mongodb://127.0.0.1:27017/", description="MongoDB connection URI")
    mongodb_database: str = Field("iot_analytics", description="database name")
    mongodb_server: Literal["ferretdb", "mongo-java-server"] = Field(
        "mongo-java-server",
        description="which MongoDB-compatible server `iot-fed services` runs locally: "
        "mongo-java-server (H2 MVStore file; filtered reads ~30x faster, inserts ~5x slower) "
        "or FerretDB (SQLite; scans the whole collection for every filtered query)",
    )
    mongodb_server_heap_mb: int = Field(
        2048,
        ge=256,
        description="heap of the local mongo-java-server: it keeps its indexes and each "
        "query's whole result in memory (3 million readings ran 2,048 MB out)",
    )

    # --- Spark -----------------------------------------------------------------
    spark_master: str = Field("local[*]", description="spark.master for batch and streaming")
    spark_shuffle_partitions: int = Field(4, ge=1)
    spark_worker_python: str | None = Field(
        None,
        description="the executors' Python (spark.pyspark.python): the same locked environment "
        "as the driver's, at this path on every worker; default the driver's interpreter",
    )
    spark_java_options: str = Field(
        "-XX:TieredStopAtLevel=1",
        description="extra JVM options of the Spark driver (local mode: the whole Spark "
        "JVM); the default JITs with C1 only (bench/bench_scorer.py, bench/bench_spark.py)",
    )

    # --- data ------------------------------------------------------------------
    data_dir: Path = Field(default_factory=lambda: _project_root() / "assets_data")
    data_url: str = Field(
        "http://db.csail.mit.edu/labdata/data.txt.gz", description="Intel Lab readings"
    )
    data_sha256: str | None = Field(None, description="expected sha256 of the download")
    data_size: int | None = Field(None, description="expected size in bytes of the download")
    mote_locs_url: str = "http://db.csail.mit.edu/labdata/mote_locs.txt"
    data_file: Path | None = Field(None, description="local data.txt(.gz) used instead")
    mote_locs_file: Path | None = Field(None, description="local mote_locs.txt used instead")
    download_timeout_s: float = Field(10.0, gt=0)
    generator_seed: int = 7
    generator_motes: int = Field(54, ge=1)
    generator_days: float = Field(3.0, gt=0)
    generator_fault_rate: float = Field(
        0.002, ge=0, le=1, description="generator: share of readings with an injected spike"
    )
    generator_drop_rate: float = Field(
        0.2, ge=0, lt=1, description="generator: share of epochs missing (plus short outages)"
    )
    generator_low_voltage_fraction: float = Field(
        0.1, ge=0, le=1, description="generator: share of motes whose battery fails (wild values)"
    )
    mongodb_timeout_s: float = Field(
        5.0, gt=0, description="MongoDB server-selection / connect timeout in seconds"
    )
    mongodb_write_concern: str = Field(
        "1",
        pattern=r"^(\d+|majority)$",
        description="write concern `w` of every store write: a number or `majority` "
        "(use majority on a replica set)",
    )
    mongodb_journal: bool = Field(
        True, description="write concern `j`: acknowledge only journaled (durable) writes"
    )

    # --- producer --------------------------------------------------------------
    producer_rate: float = Field(10.0, gt=0, description="records per second (original: 10)")
    producer_outage_budget_s: float | None = Field(
        None,
        ge=0,
        description="how long `iot-fed stream` keeps retrying while Kafka accepts nothing "
        "(0 = forever); default forever with --loop, 300 s otherwise",
    )

    # --- Superset (dashboards; optional service) -------------------------------
    superset_port: int = Field(8088, ge=1, le=65535, description="Superset web UI on 127.0.0.1")
    superset_user: str | None = Field(None, description="Superset admin (generated when unset)")
    superset_password: SecretStr | None = Field(
        None, description="Superset admin password (generated once when unset)"
    )

    # --- model and training ----------------------------------------------------
    model_hidden: Annotated[tuple[int, ...], NoDecode] = Field(
        (32, 4, 32), description="hidden layer sizes (a narrow bottleneck: no identity)"
    )
    model_activation: Literal["relu", "tanh", "gelu", "silu"] = "relu"
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(50, ge=1)
    fedprox_mu: float = Field(0.0, ge=0)
    seed: int = 0

    # --- federation ------------------------------------------------------------
    aggregation_strategy: Literal["fedavg", "median", "trimmed_mean", "krum"] = "fedavg"
    trim_ratio: float = Field(0.1, ge=0, lt=0.5)
    dp_clip_norm: float | None = Field(None, gt=0, description="client update clip bound")
    dp_noise_multiplier: float = Field(0.0, ge=0)
    promotion_tolerance: float = Field(
        0.05, ge=0, description="max relative validation-loss increase to promote"
    )
    min_calibration_windows: int = Field(
        100, ge=0, description="held-out windows a version's threshold needs to be promoted"
    )
    promotion_replay_readings: int = Field(
        2000,
        ge=10,
        description="promotion replay: newest readings read per device (its held-out 10 % "
        "are replayed, the rest is their context)",
    )
    calibration_min_span_h: float = Field(
        24.0,
        ge=0,
        description="a device gets a threshold of its own (leaves the learning state) only "
        "once its held-out sample spans this much data time: a whole daily cycle (a model "
        "calibrated on night readings flagged 30-42 % of the morning's)",
    )
    promotion_alarm_factor: float = Field(
        3.0,
        gt=0,
        description="promotion replay refuses a version whose alarm rate on clean held-out "
        "readings exceeds false_alarms_per_device_day by this factor",
    )
    promotion_max_f1_drop: float = Field(
        0.2,
        ge=0,
        le=1,
        description="promotion replay refuses a version whose F1 on injected faults is more "
        "than this (absolute) below the promoted version's",
    )
    promotion_min_replay_readings: int = Field(
        1000,
        ge=0,
        description="held-out readings of calibrated devices the replay needs before it may "
        "refuse (fewer: too noisy for a per device-day rate; the check says it skipped)",
    )

    # --- orchestration ---------------------------------------------------------
    sensor_interval_s: int = Field(30, ge=1, description="Kafka sensor cadence")
    aggregation_interval_s: int = Field(
        300,
        ge=0,
        description="min seconds between global versions once one is promoted (each "
        "promoted version gets a Spark evaluation report)",
    )
    min_new_samples: int = Field(20, ge=1, description="new readings before a device trains")
    devices_per_shard: int = Field(
        1000,
        ge=1,
        description="devices per training shard (a local_model partition, one run per round); "
        "a device keeps the shard it got when it first landed",
    )
    round_deadline_s: int = Field(
        900,
        ge=0,
        description="seconds after a round's start after which it aggregates the shards that "
        "finished, recording the missing ones (0: wait for every shard run to end)",
    )
    training_run_max_runtime_s: int = Field(
        900, ge=10, description="a training run older than this is failed (and retried)"
    )
    training_window: int = Field(2000, ge=1, description="max readings per local training")
    model_window: int = Field(32, ge=3, description="readings in the detector's window")
    false_alarms_per_device_day: float = Field(
        1.0, gt=0, description="false-alarm target the thresholds are calibrated to"
    )
    readings_per_device_day: int = Field(2800, ge=1, description="a device's readings per day")
    ingesters: int = Field(
        1, ge=0, description="`iot-fed ingest` consumer-group members make run supervises"
    )
    ingest_max_messages: int = Field(50_000, ge=1, description="bounded consume: messages")
    ingest_max_seconds: float = Field(5.0, gt=0, description="bounded consume: seconds")
    ingest_write_strategy: Literal["insert", "upsert"] = Field(
        "insert", description="sensor_readings bulk write: insert_many+dup-key, or upsert"
    )
    ingest_chunk_size: int = Field(5000, ge=1, description="messages per consume/write chunk")
    device_freshness_s: int = Field(3600, ge=1, description="stale device model after this")

    # --- PostgreSQL (reporting store, Superset metadata, Dagster instance) -------
    postgres_uri: str = Field(
        "postgresql://iot_fed:iot_fed@127.0.0.1:5432/iot_fed",
        description="PostgreSQL URI (reporting schema); a local host means iot-fed runs it",
    )
    postgres_bin_dir: Path = Field(
        Path("/usr/lib/postgresql/15/bin"), description="PostgreSQL server binaries (Debian)"
    )
    reporting: bool = Field(
        True,
        description="the reporting store (PostgreSQL) and its Superset dashboards; false runs "
        "the pipeline without them on purpose (they are required otherwise)",
    )
    # --- live: streaming scorer and model API -----------------------------------
    api_port: int = Field(8000, ge=1, le=65535, description="model API (FastAPI) port")
    dagster_port: int = Field(3000, ge=1, le=65535, description="Dagster UI port (iot-fed run)")
    run_launcher: Literal["warm", "default"] = Field(
        "warm",
        description="run launcher of the dagster.yaml iot-fed writes: warm (forkserver, one "
        "host) or default (Dagster's stock launcher and queued coordinator)",
    )
    scorer_trigger_s: float = Field(1.0, gt=0, description="streaming scorer trigger interval")
    scorer_state_partitions: int = Field(
        1, ge=1, description="state partitions of a new scorer checkpoint (1 on one machine)"
    )
    scorer_buckets: int = Field(
        64,
        ge=1,
        description="mote buckets of a new scorer checkpoint: the stateful step's groups, "
        "each scored in one Python call (docs/performance.md)",
    )
    scorer_checkpoint: str | None = Field(
        None,
        description="root of the scorer's checkpoints: a local path or any Hadoop-compatible "
        "URI every executor reaches (hdfs://, s3a://, ...); default <data_dir>/checkpoints",
    )
    scorer_max_offsets_per_trigger: int = Field(
        100_000, ge=1, description="most Kafka records one scorer micro-batch reads"
    )
    scorer_state_store: Literal["rocksdb", "hdfs"] = Field(
        "rocksdb",
        description="state store provider of a new scorer checkpoint: RocksDB (state off the "
        "JVM heap) or Spark's HDFS-backed default",
    )
    scorer_max_lag_s: float = Field(60.0, gt=0, description="check fails when scorer is behind")
    incident_quiet_s: float = Field(
        1800.0, gt=0, description="data time without a flagged reading that closes an incident"
    )
    batch_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="niceness of Dagster under iot-fed run (training, batch Spark): the live "
        "path (scorer, API) keeps the CPU when the machine is short of it",
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        for hp in v.split(","):
            host, sep, port = hp.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v

    @field_validator("mongodb_uri")
    @classmethod
    def _check_mongo_uri(cls, v: str) -> str:
        if not v.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"expected a mongodb:// or mongodb+srv:// URI, got {v!r}")
        return v

    @field_validator("postgres_uri")
    @classmethod
    def _check_postgres_uri(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"expected a postgresql:// URI, got {v!r}")
        return v

    @field_validator("model_hidden", mode="before")
    @classmethod
    def _parse_hidden(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(int(x) for x in v.replace(" ", "").split(",") if x)
        return v

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=_yaml_file())
        return (init_settings, env_settings, dotenv_settings, yaml_source, file_secret_settings)

    # --- derived ---------------------------------------------------------------
    @property
    def kafka_is_local(self) -> bool:
        """True when every bootstrap broker is on this machine (we may start them: one
        broker, or a KRaft cluster of one node per listed port)."""
        hosts = [hp.rpartition(":")[0].strip("[]") for hp in self.kafka_bootstrap.split(",")]
        return all(h in LOCAL_HOSTS for h in hosts)

    @property
    def kafka_port(self) -> int:
        return self.kafka_ports[0]

    @property
    def kafka_ports(self) -> list[int]:
        """The bootstrap's ports, in order (a local cluster's node i listens on the i-th)."""
        return [int(hp.rpartition(":")[2]) for hp in self.kafka_bootstrap.split(",")]

    @property
    def mongodb_is_local(self) -> bool:
        u = urlparse(self.mongodb_uri)
        return u.scheme == "mongodb" and (u.hostname or "") in LOCAL_HOSTS and "," not in u.netloc

    @property
    def mongodb_port(self) -> int:
        return urlparse(self.mongodb_uri).port or 27017

    @property
    def postgres_is_local(self) -> bool:
        """True when the PostgreSQL URI names this machine (iot-fed may start the server)."""
        return (urlparse(self.postgres_uri).hostname or "") in LOCAL_HOSTS

    @property
    def postgres_port(self) -> int:
        return urlparse(self.postgres_uri).port or 5432

    @property
    def state_dir(self) -> Path:
        """Service binaries, data and PID files (git-ignored)."""
        return self.data_dir / "services"

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        from iot_fed.stream.kafka_config import client_config

        return client_config(self)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from all sources; raise :class:`ConfigError` naming a bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"][0] if err["loc"] else "settings"
            name = f"{ENV_PREFIX}{str(loc).upper()}"
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid iot_fed configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached). Tests call ``get_settings.cache_clear()``."""
    return load_settings()
