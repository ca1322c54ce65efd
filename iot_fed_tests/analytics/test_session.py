"""The Spark JVM's options (``spark_java_options``) reach the JVM that Spark runs in."""

from __future__ import annotations

from iot_fed.analytics.session import spark_config


def test_java_options_follow_the_derby_home(settings):
    opts = spark_config(settings, with_jars=False)["spark.driver.extraJavaOptions"].split()
    assert opts[0].startswith("-Dderby.system.home=")
    assert opts[1:] == ["-XX:TieredStopAtLevel=1"]  # the default: C1 only
    none = settings.model_copy(update={"spark_java_options": ""})
    assert len(spark_config(none, with_jars=False)["spark.driver.extraJavaOptions"].split()) == 1


def test_the_running_spark_jvm_jits_with_c1_only(spark):
    jvm = spark.sparkContext._jvm
    mx = jvm.java.lang.management.ManagementFactory
    diag = mx.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert diag.getVMOption("TieredStopAtLevel").getValue() == "1"
    assert "-XX:TieredStopAtLevel=1" in list(mx.getRuntimeMXBean().getInputArguments())
