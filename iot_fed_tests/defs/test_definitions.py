"""The Definitions: what the README lists, settings as typed fields, nothing read at import."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from iot_fed.analytics.session import DAEMON_MODULE, driver_java_options
from iot_fed.config import Settings, load_settings
from iot_fed.definitions import defs
from iot_fed.defs.resources import SettingsResource

README = Path(__file__).resolve().parents[2] / "README.md"
HEAVY = ("pandas", "jax", "pyspark", "matplotlib", "pandera", "pymongo", "confluent_kafka")


def readme_lists() -> dict[str, dict[str, list[str]]]:
    """``{"Assets": {group: [names]}, "Asset checks": {asset: [names]}, "Sensors": ...}``."""
    text = README.read_text()
    block = text[text.index("<!-- definitions:start -->") : text.index("<!-- definitions:end -->")]
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for item in re.split(r"\n(?=\*\*|- )", block):
        if m := re.match(r"\*\*([\w ]+)\*\*(,|:)", item):
            section = m.group(1)
            out[section] = {}
            if m.group(2) == ":":  # a one-line list
                out[section][""] = re.findall(r"`(\w+)`", item)
        elif m := re.match(r"- `(\w+)`: (.*)", item, re.S):
            rest = re.sub(r"\([^)]*\)", "", m.group(2))  # descriptions may name other things
            out[section][m.group(1)] = re.findall(r"`(\w+)`", rest)
    return out


def test_readme_lists_what_definitions_register():
    lists = readme_lists()
    d = defs()
    graph = d.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    listed = {a: g for g, names in lists["Assets"].items() for a in names}
    assert listed == groups

    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    listed_checks = {(a, c) for a, names in lists["Asset checks"].items() for c in names}
    assert listed_checks == checks
    blocking = {
        (k.asset_key.to_user_string(), k.name)
        for k in graph.asset_check_keys
        if graph.get_check_spec(k).blocking
    }
    readme = README.read_text()
    for asset, check in checks:
        assert (f"`{check}` (blocking" in readme) == ((asset, check) in blocking), check

    assert lists["Sensors"][""] == [s.name for s in d.sensors]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in d.sensors)
    jobs = {j.name for j in d.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert set(lists["Jobs"][""]) == jobs


def test_import_reads_no_setting_and_no_heavy_module():
    code = (
        "import json, sys, iot_fed.definitions as m\n"
        f"heavy = [n for n in {HEAVY!r} if n in sys.modules]\n"
        "try:\n    m.defs(); err = None\n"
        "except Exception as e:\n    err = str(e)\n"
        "print(json.dumps({'heavy': heavy, 'err': err}))\n"
    )
    env = {"IOT_FED_SENSOR_INTERVAL_S": "soon", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [], "imported at import time of iot_fed.definitions"
    assert "IOT_FED_SENSOR_INTERVAL_S" in got["err"], "the bad setting fails the load, named"


def test_definitions_load_without_the_warm_launcher():
    """``WarmRunLauncher`` is an optional speed-up that only a dagster.yaml names: loading
    the code location (what any run launcher's run worker does) never imports it."""
    code = (
        "import sys, iot_fed.definitions as m\n"
        "m.defs()\n"
        "print('iot_fed.defs.launcher' in sys.modules)\n"
    )
    cmd = [sys.executable, "-W", "ignore", "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_sensor_cadences_come_from_settings_at_load(monkeypatch):
    monkeypatch.setenv("IOT_FED_SENSOR_INTERVAL_S", "7")
    monkeypatch.setenv("IOT_FED_AGGREGATION_INTERVAL_S", "11")
    d = defs()
    # one second under the cadence: the daemon's 5 s loop would otherwise skip every other
    # tick by milliseconds (a 5 s cadence ticking every 10 s)
    assert d.get_sensor_def("iot_stream_sensor").minimum_interval_seconds == 6
    assert d.get_sensor_def("aggregation_sensor").minimum_interval_seconds == 10


def test_settings_resource_has_a_typed_field_per_setting_but_no_secret():
    fields = SettingsResource.model_fields
    secrets = {"kafka_sasl_password", "superset_password"}
    assert set(fields) == set(Settings.model_fields) - secrets
    assert "IOT_FED_LEARNING_RATE" in fields["learning_rate"].description
    assert SettingsResource(learning_rate=0.5).get().learning_rate == 0.5
    assert SettingsResource().get().learning_rate == Settings().learning_rate
    with pytest.raises(ValueError, match="sensor_interval_s"):
        SettingsResource(sensor_interval_s=0)


def test_pyspark_is_dagster_pysparks_resource_with_the_settings_spark_config(monkeypatch, tmp_path):
    """Without starting Spark: a master from the environment, the project's JVM options
    (Derby home under a path with a space stays one option, C1 only) and worker daemon."""
    from dagster_pyspark import PySparkResource

    spaced = tmp_path / "my projects" / "assets_data"
    monkeypatch.setenv("IOT_FED_SPARK_MASTER", "spark://spark-head:7077")
    monkeypatch.setenv("IOT_FED_SPARK_SHUFFLE_PARTITIONS", "24")
    monkeypatch.setenv("IOT_FED_DATA_DIR", str(spaced))
    with dg.build_resources({"pyspark": defs().resources["pyspark"]}) as built:
        pyspark = built.pyspark
    assert isinstance(pyspark, PySparkResource)
    conf = pyspark.spark_config
    assert conf["spark.master"] == "spark://spark-head:7077"
    assert conf["spark.sql.shuffle.partitions"] == "24"
    assert "spark.driver.host" not in conf  # 127.0.0.1 is for local masters only
    assert conf["spark.driver.extraJavaOptions"] == driver_java_options(load_settings())
    opts = shlex.split(conf["spark.driver.extraJavaOptions"])
    assert opts == [f"-Dderby.system.home={spaced / 'spark' / 'derby'}", "-XX:TieredStopAtLevel=1"]
    assert conf["spark.python.daemon.module"] == DAEMON_MODULE
    assert "spark.jars" not in conf  # none installed under this data dir
    assert pyspark._spark_session is None  # the session starts on first use, not at setup


def test_pyspark_defaults_to_a_local_master():
    with dg.build_resources({"pyspark": defs().resources["pyspark"]}) as built:
        conf = built.pyspark.spark_config
    assert conf["spark.master"] == load_settings().spark_master
    if conf["spark.master"].startswith("local"):
        assert conf["spark.driver.bindAddress"] == "127.0.0.1"
