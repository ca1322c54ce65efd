"""The Spark JVM's options: ``spark_java_options`` reach the JVM that Spark runs in, and
the class-data-sharing archive is built once and maps in a JVM with Spark's class path."""

from __future__ import annotations

import shlex
import subprocess

from iot_fed.analytics.jvm_archive import archive_option, build_archive, java_binary
from iot_fed.analytics.session import driver_java_options, spark_config


def test_java_options_follow_the_derby_home(settings, tmp_path):
    s = settings.model_copy(update={"data_dir": tmp_path})  # no class archive built there
    opts = spark_config(s, with_jars=False)["spark.driver.extraJavaOptions"].split()
    assert opts[0] == f"-Dderby.system.home={tmp_path / 'spark' / 'derby'}"
    assert opts[1:] == ["-XX:TieredStopAtLevel=1"]  # the default: C1 only
    none = s.model_copy(update={"spark_java_options": ""})
    assert len(spark_config(none, with_jars=False)["spark.driver.extraJavaOptions"].split()) == 1


def test_a_project_path_with_a_space_stays_one_java_option(settings, tmp_path):
    """Spark splits ``extraJavaOptions`` on blanks outside quotes (as a POSIX shell does)."""
    spaced = tmp_path / "my projects" / "assets_data"
    s = settings.model_copy(update={"data_dir": spaced})
    opts = shlex.split(spark_config(s, with_jars=False)["spark.driver.extraJavaOptions"])
    assert opts == [f"-Dderby.system.home={spaced / 'spark' / 'derby'}", "-XX:TieredStopAtLevel=1"]


def test_the_running_spark_jvm_jits_with_c1_only(spark):
    jvm = spark.sparkContext._jvm
    mx = jvm.java.lang.management.ManagementFactory
    diag = mx.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert diag.getVMOption("TieredStopAtLevel").getValue() == "1"
    assert "-XX:TieredStopAtLevel=1" in list(mx.getRuntimeMXBean().getInputArguments())


def test_the_class_archive_is_built_once_and_maps_in_a_jvm_with_sparks_class_path(
    spark, settings, tmp_path
):
    s = settings.model_copy(update={"data_dir": tmp_path})
    assert archive_option(s) == ""  # not built: Spark JVMs start without one
    stale = tmp_path / "spark" / "cds" / "spark-0123456789abcdef.jsa"  # another JDK's
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    path = build_archive(s)
    assert not stale.exists()
    assert path.parent == tmp_path / "spark" / "cds" and path.stat().st_size > 10_000_000
    assert archive_option(s) == f"-XX:SharedArchiveFile={path}"
    assert f"-XX:SharedArchiveFile={path}" in driver_java_options(s).split()
    assert "SharedArchiveFile" not in driver_java_options(s, archive=False)
    built = path.stat().st_mtime_ns
    assert build_archive(s) == path and path.stat().st_mtime_ns == built  # kept

    # -Xshare:on: the JVM refuses to start unless it maps the archive
    java = str(java_binary())
    class_path = spark.sparkContext._jvm.System.getProperty("java.class.path")
    share = [java, "-Xshare:on", f"-XX:SharedArchiveFile={path}"]
    ok = subprocess.run([*share, "-cp", class_path, "-version"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    if not any(c.isspace() for c in class_path):  # JDK 17 does not check such a path (seen)
        other = subprocess.run([*share, "-cp", str(tmp_path), "-version"], capture_output=True)
        assert other.returncode != 0  # another class path: the archive does not apply
