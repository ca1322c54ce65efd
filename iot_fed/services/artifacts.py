"""Fetch service artifacts into ``<state_dir>/artifacts``.

Kafka jars and mongo-java-server jars come from Maven Central (via ``mvn``), FerretDB is
built from the Go module proxy. Each install is cached and idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

from iot_fed.services.process import ServiceError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
MONGO_JAVA_SERVER_VERSION = "1.47.0"  # keep in step with mongo-java-server-pom.xml
MONGO_JAVA_SERVER_MAIN = "MongoServerMain"
INSTALL_TIMEOUT_S = 1800


def require_tool(tool: str, purpose: str) -> str:
    """Absolute path of ``tool`` on PATH, or a clear error naming what needs it."""
    found = shutil.which(tool)
    if not found:
        raise ServiceError(f"{tool!r} not found on PATH; it is needed {purpose}")
    return found


def run_checked(cmd: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> str:
    try:
        res = subprocess.run(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{what}: timed out after {INSTALL_TIMEOUT_S}s") from None
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise ServiceError(f"{what} failed (exit {res.returncode}):\n{tail}")
    return res.stdout


def artifacts_dir(state_dir: Path) -> Path:
    return state_dir / "artifacts"


def kafka_libs(state_dir: Path) -> Path:
    return artifacts_dir(state_dir) / f"kafka-{KAFKA_VERSION}" / "libs"


def ferretdb_binary(state_dir: Path) -> Path:
    return artifacts_dir(state_dir) / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"


def mongo_java_server_home(state_dir: Path) -> Path:
    """``libs/`` (jars), ``classes-<digest>/`` (compiled entry points) and ``.complete``."""
    return artifacts_dir(state_dir) / f"mongo-java-server-{MONGO_JAVA_SERVER_VERSION}"


def _packaged(name: str) -> bytes:
    return resources.files("iot_fed.services").joinpath(name).read_bytes()


def mongo_java_server_classes(state_dir: Path) -> Path:
    """The entry point compiled from this checkout's source, keyed by its digest.

    A changed ``MongoServerMain.java`` compiles into a new directory, so a server already
    running from (or another checkout using) the old classes is never disturbed.
    """
    digest = hashlib.sha256(_packaged(f"{MONGO_JAVA_SERVER_MAIN}.java")).hexdigest()[:16]
    return mongo_java_server_home(state_dir) / f"classes-{digest}"


def mongo_java_server_classpath(state_dir: Path) -> str:
    home = mongo_java_server_home(state_dir)
    return f"{mongo_java_server_classes(state_dir)}{os.pathsep}{home / 'libs' / '*'}"


def kafka_installed(state_dir: Path) -> bool:
    return (kafka_libs(state_dir) / ".complete").exists()


def ferretdb_installed(state_dir: Path) -> bool:
    return ferretdb_binary(state_dir).exists()


def _mongo_java_server_libs_ready(state_dir: Path) -> bool:
    return (mongo_java_server_home(state_dir) / ".complete").exists()


def mongo_java_server_installed(state_dir: Path) -> bool:
    classes = mongo_java_server_classes(state_dir)
    main_class = classes / f"{MONGO_JAVA_SERVER_MAIN}.class"
    return _mongo_java_server_libs_ready(state_dir) and main_class.exists()


def _maven_copy_dependencies(pom: str, staging: Path, what: str) -> None:
    """Copy the dependencies of the packaged ``pom`` into ``staging`` (``mvn``)."""
    mvn = require_tool("mvn", f"to fetch {what} from Maven Central")
    work = staging.parent
    (work / "pom.xml").write_text(resources.files("iot_fed.services").joinpath(pom).read_text())
    run_checked(
        [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
        f"fetching {what} jars (mvn dependency:copy-dependencies)",
        cwd=work,
    )


def install_kafka(state_dir: Path) -> Path:
    """Copy the broker's runtime jars from Maven Central (via ``mvn``); cached."""
    libs = kafka_libs(state_dir)
    if kafka_installed(state_dir):
        return libs
    require_tool("mvn", "to fetch the Kafka broker from Maven Central")
    require_tool("java", "to run the Kafka broker")
    t0 = time.monotonic()
    work = libs.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    staging = work / "libs"
    log.info("fetching Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
    _maven_copy_dependencies("kafka-pom.xml", staging, "the Kafka broker")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    shutil.rmtree(work, ignore_errors=True)
    (libs / ".complete").write_text(f"kafka {KAFKA_VERSION}\n")
    log.info("Kafka jars ready in %.0fs", time.monotonic() - t0)
    return libs


def install_ferretdb(state_dir: Path) -> Path:
    """Build FerretDB from the Go module proxy (with its version file filled in); cached.

    A plain ``go install ...@v1.24.2`` builds a binary that panics at start because the
    module ships without ``build/version/version.txt``, so we build from a copy.
    """
    binary = ferretdb_binary(state_dir)
    if ferretdb_installed(state_dir):
        return binary
    go = require_tool("go", "to build FerretDB (MongoDB-compatible server)")
    t0 = time.monotonic()
    env = {"GOFLAGS": "-buildvcs=false -mod=readonly", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    log.info("downloading %s@%s from the Go module proxy", FERRETDB_MODULE, FERRETDB_VERSION)
    info = json.loads(
        run_checked(
            [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
            "downloading FerretDB (go mod download)",
            env=env,
        )
    )
    src = binary.parent / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(info["Dir"], src)
    for root, dirs, files in os.walk(src):
        for name in dirs + files:
            p = Path(root, name)
            p.chmod(p.stat().st_mode | 0o200)
    (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    log.info("building FerretDB %s (takes a minute or two)", FERRETDB_VERSION)
    staging = binary.with_suffix(".tmp")
    run_checked(
        [go, "build", "-trimpath", "-o", str(staging), "./cmd/ferretdb"],
        "building FerretDB (go build)",
        cwd=src,
        env=env,
    )
    staging.replace(binary)
    shutil.rmtree(src, ignore_errors=True)
    log.info("FerretDB ready in %.0fs", time.monotonic() - t0)
    return binary


def install_mongo_java_server(state_dir: Path) -> Path:
    """mongo-java-server + H2 jars from Maven Central and our compiled entry point; cached."""
    home = mongo_java_server_home(state_dir)
    if mongo_java_server_installed(state_dir):
        return home
    what = f"mongo-java-server {MONGO_JAVA_SERVER_VERSION}"
    javac = require_tool("javac", f"to compile the {what} entry point (needs a JDK)")
    require_tool("java", f"to run {what}")
    t0 = time.monotonic()
    if not _mongo_java_server_libs_ready(state_dir):
        require_tool("mvn", f"to fetch {what} from Maven Central")
        work = home.with_name(home.name + ".build")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log.info("fetching %s jars with Maven into %s", what, home)
        _maven_copy_dependencies("mongo-java-server-pom.xml", work / "libs", what)
        pom_digest = hashlib.sha256(_packaged("mongo-java-server-pom.xml")).hexdigest()[:16]
        (work / ".complete").write_text(
            f"mongo-java-server {MONGO_JAVA_SERVER_VERSION} {pom_digest}\n"
        )
        shutil.rmtree(home, ignore_errors=True)
        work.rename(home)
    classes = mongo_java_server_classes(state_dir)
    staging = classes.with_name(f"{classes.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    source = staging / "src" / f"{MONGO_JAVA_SERVER_MAIN}.java"
    source.parent.mkdir(parents=True)
    source.write_bytes(_packaged(source.name))
    run_checked(
        [javac, "-nowarn", "-d", str(staging), "-cp", str(home / "libs" / "*"), str(source)],
        f"compiling {source.name} (javac)",
    )
    shutil.rmtree(staging / "src")
    try:
        staging.rename(classes)
    except OSError:  # compiled concurrently by another process: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s ready in %.0fs", what, time.monotonic() - t0)
    return home
