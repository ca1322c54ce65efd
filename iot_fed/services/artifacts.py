"""Fetch service artifacts into ``<state_dir>/artifacts``.

Kafka jars come from Maven Central (via ``mvn``); the MongoDB-compatible server is the
repository's ``mongo-server/`` Maven module, built with ``mvn package`` into one jar;
FerretDB is built from the Go module proxy. Each install is cached and idempotent.
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
MONGO_JAVA_SERVER_VERSION = "1.47.0"  # keep in step with mongo-server/pom.xml
MONGO_JAVA_SERVER_MAIN = "iotfed.mongo.MongoServerMain"
# the server's Maven module, next to the package in the repository (an editable install)
MONGO_SERVER_MODULE = Path(__file__).resolve().parents[2] / "mongo-server"
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


def mongo_server_sources(module: Path = MONGO_SERVER_MODULE) -> list[Path]:
    """What the server jar is built from: the module's pom.xml and src/main, in order."""
    if not (module / "pom.xml").is_file():
        raise ServiceError(f"the mongo-server module is not at {module} (needs a source checkout)")
    main = sorted(p for p in (module / "src" / "main").rglob("*") if p.is_file())
    return [module / "pom.xml", *main]


def mongo_server_digest(module: Path = MONGO_SERVER_MODULE) -> str:
    """Digest of the module's build inputs (file names and bytes)."""
    h = hashlib.sha256()
    for path in mongo_server_sources(module):
        h.update(path.relative_to(module).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def mongo_java_server_jar(state_dir: Path) -> Path:
    """The server built from this checkout's module: one jar with its dependencies.

    Keyed by the sources' digest: a changed source builds a new jar, so a server already
    running from (or another checkout using) the old one is never disturbed.
    """
    return artifacts_dir(state_dir) / "mongo-server" / f"mongo-server-{mongo_server_digest()}.jar"


def mongo_java_server_classpath(state_dir: Path) -> str:
    return str(mongo_java_server_jar(state_dir))


def kafka_installed(state_dir: Path) -> bool:
    return (kafka_libs(state_dir) / ".complete").exists()


def ferretdb_installed(state_dir: Path) -> bool:
    return ferretdb_binary(state_dir).exists()


def mongo_java_server_installed(state_dir: Path) -> bool:
    return mongo_java_server_jar(state_dir).exists()


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
    """Build the ``mongo-server`` module (``mvn package``, tests skipped: ``make test`` runs
    them) from a copy of its sources into the digest-keyed jar; cached."""
    jar = mongo_java_server_jar(state_dir)
    if jar.exists():
        return jar
    mvn = require_tool("mvn", "to build the mongo-server module (Maven)")
    require_tool("java", "to run the mongo-server module")
    t0 = time.monotonic()
    work = jar.with_name(f"build-{os.getpid()}")  # a copy: the checkout stays clean
    shutil.rmtree(work, ignore_errors=True)
    for src in mongo_server_sources():
        dst = work / src.relative_to(MONGO_SERVER_MODULE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    log.info("building the mongo-server module with Maven into %s", jar)
    try:
        run_checked(
            [mvn, "-q", "-B", "package", "-DskipTests"], "building mongo-server (mvn package)", work
        )
        # rename is atomic: a concurrent build of the same digest leaves the same bytes
        (work / "target" / "mongo-server.jar").replace(jar)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("mongo-server ready in %.0fs", time.monotonic() - t0)
    return jar
