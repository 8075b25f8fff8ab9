#!/usr/bin/env python3
"""Conveyor's local stack: PostgreSQL and Apache Kafka (KRaft) on 127.0.0.1.

    python3 stack/stack.py up | down | status
    python3 stack/stack.py pg-restart [fast|immediate] | pg-stop [fast|immediate] | pg-start
    python3 stack/stack.py kafka-stop [--kill] | kafka-start | kafka-restart

Standard library only, so that it runs before the project's virtualenv exists.

* PostgreSQL: when nothing answers at CONVEYOR_DATABASE_URL, install Debian's
  ``postgresql`` package if it is missing, start (or create) its cluster listening on
  127.0.0.1 only, and create the role and database that the URL names.
* Kafka: resolve the real broker (``org.apache.kafka:kafka_2.13``) and its runtime
  dependencies from Maven Central with ``mvn dependency:copy-dependencies`` on
  ``stack/pom.xml`` into ``.stack/kafka/libs``, format the log directory once, start one
  combined broker + controller in the background (main class ``kafka.Kafka``), and wait
  until it answers a metadata request.

A second ``up`` is a no-op. ``down`` stops only what ``up`` started, by recorded PIDs.

The ``pg-*`` and ``kafka-*`` commands are for fault tests and drills: they restart, stop
or start the local services (PostgreSQL by ``pg_ctlcluster`` with the shutdown mode given,
Kafka by its recorded PID) and return once the service is up again (or down).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("CONVEYOR_STACK_DIR", ROOT / ".stack"))
KAFKA_DIR = STATE / "kafka"
PG_MARKER = STATE / "postgres.started"

DEFAULT_DB_URL = "postgresql+asyncpg://conveyor:conveyor@127.0.0.1:5432/conveyor"
DEFAULT_KAFKA = "127.0.0.1:9092"
KAFKA_HEAP = os.environ.get("CONVEYOR_KAFKA_HEAP", "768m")


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def run(cmd: list[str], check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload,no-any-return]


# --------------------------------------------------------------------------- PostgreSQL


class PgTarget:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = unquote(parts.username or "conveyor")
        self.password = unquote(parts.password or "")
        self.database = (parts.path or "/conveyor").lstrip("/") or "conveyor"


def pg_answers(t: PgTarget) -> bool:
    try:
        with socket.create_connection((t.host, t.port), timeout=1):
            return True
    except OSError:
        return False


def pg_can_login(t: PgTarget) -> bool:
    if shutil.which("psql") is None:
        return False
    env = dict(os.environ, PGPASSWORD=t.password, PGCONNECT_TIMEOUT="3")
    res = run(
        [
            "psql",
            "-h",
            t.host,
            "-p",
            str(t.port),
            "-U",
            t.user,
            "-d",
            t.database,
            "-Atc",
            "select 1",
        ],
        check=False,
        env=env,
    )
    return res.returncode == 0


def pg_wait_listening(t: PgTarget, failure: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not pg_answers(t):
        if time.monotonic() > deadline:
            raise SystemExit(failure)
        time.sleep(0.2)


def pg_versions() -> list[str]:
    base = Path("/usr/lib/postgresql")
    if not base.is_dir():
        return []
    return sorted((p.name for p in base.iterdir() if (p / "bin" / "postgres").exists()), key=int)


def pg_install() -> None:
    log("PostgreSQL is not installed: apt-get install postgresql")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        check=True,
        env=env,
    )


def as_postgres(sql: str, database: str = "postgres", port: int = 5432) -> str:
    res = run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-p",
            str(port),
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
        check=True,
        cwd="/tmp",
    )
    return res.stdout.strip()


def pg_up(t: PgTarget) -> None:
    if t.host not in ("127.0.0.1", "localhost", "::1"):
        if not pg_answers(t):
            raise SystemExit(
                f"PostgreSQL at {t.host}:{t.port} does not answer (not local: not managing it)"
            )
        return
    if pg_answers(t) and pg_can_login(t):
        log(f"PostgreSQL answers at {t.host}:{t.port} as {t.user}/{t.database}")
        return
    versions = pg_versions()
    if not versions:
        pg_install()
        versions = pg_versions()
        if not versions:
            raise SystemExit(
                "PostgreSQL installation did not produce a server under /usr/lib/postgresql"
            )
    version = versions[-1]
    clusters = run(["pg_lsclusters", "-h"], check=False).stdout.split("\n")
    mine = [line.split() for line in clusters if line.strip()]
    cluster = next((c for c in mine if c[0] == version and c[2] == str(t.port)), None)
    if cluster is None:
        log(f"creating PostgreSQL {version} cluster 'conveyor' on port {t.port}")
        run(["pg_createcluster", version, "conveyor", "-p", str(t.port)])
        cluster = [version, "conveyor", str(t.port), "down"]
    ver, name = cluster[0], cluster[1]
    # Loopback only; enough connections for concurrent tests and benchmarks.
    conf_d = Path("/etc/postgresql") / ver / name / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / "50-conveyor.conf").write_text(
        "# written by conveyor stack/stack.py\n"
        "listen_addresses = '127.0.0.1'\n"
        "max_connections = 300\n"
    )
    if not pg_answers(t):
        log(f"starting PostgreSQL {ver}/{name}")
        res = run(["pg_ctlcluster", ver, name, "start"], check=False)
        if res.returncode != 0:
            raise SystemExit(f"pg_ctlcluster start failed: {res.stderr.strip()}")
        PG_MARKER.parent.mkdir(parents=True, exist_ok=True)
        PG_MARKER.write_text(f"{ver} {name}\n")
    pg_wait_listening(t, "PostgreSQL did not start listening within 30 s")
    # A cluster that was already running (Debian's package starts it on install) has not
    # read our drop-in yet: restart it once so that it does.
    if as_postgres("show max_connections", port=t.port) != "300":
        log(f"restarting PostgreSQL {ver}/{name} to apply conf.d/50-conveyor.conf")
        res = run(["pg_ctlcluster", ver, name, "restart"], check=False)
        if res.returncode != 0:
            raise SystemExit(f"pg_ctlcluster restart failed: {res.stderr.strip()}")
        PG_MARKER.parent.mkdir(parents=True, exist_ok=True)
        PG_MARKER.write_text(f"{ver} {name}\n")
        pg_wait_listening(t, "PostgreSQL did not listen again within 30 s of a restart")
    # Role and database named by the URL (idempotent).
    user_q = t.user.replace('"', '""')
    pw_q = t.password.replace("'", "''")
    exists = as_postgres(f"select 1 from pg_roles where rolname = '{t.user}'", port=t.port)
    verb = "alter" if exists == "1" else "create"
    as_postgres(f"{verb} role \"{user_q}\" with login createdb password '{pw_q}'", port=t.port)
    if as_postgres(f"select 1 from pg_database where datname = '{t.database}'", port=t.port) != "1":
        as_postgres(f'create database "{t.database}" owner "{user_q}"', port=t.port)
    if not pg_can_login(t):
        raise SystemExit(f"cannot log in to PostgreSQL as {t.user} after set-up")
    log(f"PostgreSQL ready at {t.host}:{t.port} as {t.user}/{t.database}")


def pg_down() -> None:
    if not PG_MARKER.exists():
        log("PostgreSQL was not started by this stack: leaving it alone")
        return
    ver, name = PG_MARKER.read_text().split()
    log(f"stopping PostgreSQL {ver}/{name}")
    run(["pg_ctlcluster", ver, name, "stop"], check=False)
    PG_MARKER.unlink()


def pg_cluster(t: PgTarget) -> tuple[str, str]:
    """The local cluster serving ``t``'s port: the one ``up`` started, else by port."""
    if PG_MARKER.exists():
        ver, name = PG_MARKER.read_text().split()
        return ver, name
    for line in run(["pg_lsclusters", "-h"], check=False).stdout.split("\n"):
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(t.port):
            return fields[0], fields[1]
    raise SystemExit(f"no local PostgreSQL cluster on port {t.port}")


def pg_control(action: str, mode: str = "fast") -> None:
    """``pg_ctlcluster`` stop/start/restart of the local cluster; waits for the outcome."""
    if mode not in ("smart", "fast", "immediate"):
        raise SystemExit(f"unknown shutdown mode {mode!r}: smart, fast or immediate")
    t = PgTarget(os.environ.get("CONVEYOR_DATABASE_URL", DEFAULT_DB_URL))
    ver, name = pg_cluster(t)
    cmd = ["pg_ctlcluster", ver, name, action]
    if action in ("stop", "restart"):
        cmd += ["-m", mode]
    res = run(cmd, check=False)
    if res.returncode != 0:
        raise SystemExit(f"pg_ctlcluster {action} failed: {res.stderr.strip()}")
    if action == "stop":
        deadline = time.monotonic() + 30
        while pg_answers(t):
            if time.monotonic() > deadline:
                raise SystemExit("PostgreSQL still answers 30 s after stop")
            time.sleep(0.1)
        log(f"PostgreSQL {ver}/{name} stopped ({mode})")
        return
    pg_wait_listening(t, f"PostgreSQL did not listen within 30 s of {action}")
    log(f"PostgreSQL {ver}/{name} {action}ed" + (f" ({mode})" if action == "restart" else ""))


# --------------------------------------------------------------------------- Kafka


def kafka_address() -> tuple[str, int]:
    first = os.environ.get("CONVEYOR_KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA).split(",")[0]
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port or 9092)


def kafka_metadata_brokers(host: str, port: int, timeout: float = 2.0) -> int:
    """Send a Metadata v4 request; return how many brokers the cluster reports."""
    client = b"conveyor-stack"
    header = struct.pack(">hhih", 3, 4, 1, len(client)) + client
    body = struct.pack(">i?", 0, False)  # no topics, no auto-creation
    payload = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size_raw = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", size_raw)
        data = _recv_exact(sock, size)
    _correlation, _throttle, brokers = struct.unpack(">iii", data[:12])
    return int(brokers)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def kafka_ready() -> bool:
    host, port = kafka_address()
    try:
        return kafka_metadata_brokers(host, port) >= 1
    except (OSError, ConnectionError, struct.error):
        return False


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def kafka_fetch() -> Path:
    libs = KAFKA_DIR / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise SystemExit("Maven (mvn) is needed to fetch the Kafka broker")
    log("fetching Apache Kafka from Maven Central (mvn dependency:copy-dependencies)")
    tmp = KAFKA_DIR / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    res = run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(ROOT / "stack" / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(
            f"could not fetch Kafka with Maven:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}"
        )
    tmp.rename(libs)
    return libs


def kafka_config() -> Path:
    host, port = kafka_address()
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"Kafka at {host}:{port} is not local: not managing it")
    controller_port = port + 1
    conf_dir = KAFKA_DIR / "config"
    conf_dir.mkdir(parents=True, exist_ok=True)
    data = KAFKA_DIR / "data"
    (conf_dir / "server.properties").write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=3",
                "auto.create.topics.enable=true",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=24",
                "log.segment.bytes=67108864",
                "delete.topic.enable=true",
                "",
            ]
        )
    )
    (conf_dir / "log4j2.properties").write_text(
        "\n".join(
            [
                "status = warn",
                "appender.file.type = File",
                "appender.file.name = file",
                f"appender.file.fileName = {KAFKA_DIR / 'logs' / 'server.log'}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = file",
                "logger.kafka.name = kafka",
                "logger.kafka.level = INFO",
                "logger.apache.name = org.apache.kafka",
                "logger.apache.level = INFO",
                "",
            ]
        )
    )
    return conf_dir


def java_command(libs: Path, conf_dir: Path, main: str, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise SystemExit(
            "Java 17+ is needed to run Kafka (apt-get install openjdk-17-jre-headless)"
        )
    return [
        java,
        f"-Xms{KAFKA_HEAP}",
        f"-Xmx{KAFKA_HEAP}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={conf_dir / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def kafka_up() -> None:
    if kafka_ready():
        host, port = kafka_address()
        log(f"Kafka answers at {host}:{port}")
        return
    pid_file = KAFKA_DIR / "kafka.pid"
    pid = read_pid(pid_file)
    libs = kafka_fetch()
    conf_dir = kafka_config()
    if pid is None:
        data = KAFKA_DIR / "data"
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            log(f"formatting the Kafka log directory (cluster {cluster_id})")
            res = run(
                java_command(
                    libs,
                    conf_dir,
                    "kafka.tools.StorageTool",
                    "format",
                    # One argument: a random id may start with "-", which would
                    # otherwise be read as an option.
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(conf_dir / "server.properties"),
                    "--ignore-formatted",
                ),
                check=False,
            )
            if res.returncode != 0:
                raise SystemExit(f"kafka storage format failed:\n{res.stdout}\n{res.stderr}")
        (KAFKA_DIR / "logs").mkdir(parents=True, exist_ok=True)
        out = (KAFKA_DIR / "logs" / "kafka.out").open("ab")
        log("starting Kafka (KRaft, broker + controller)")
        proc = subprocess.Popen(
            java_command(libs, conf_dir, "kafka.Kafka", str(conf_dir / "server.properties")),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=KAFKA_DIR,
        )
        pid_file.write_text(f"{proc.pid}\n")
        pid = proc.pid
    deadline = time.monotonic() + 90
    while not kafka_ready():
        if read_pid(pid_file) is None:
            tail = (KAFKA_DIR / "logs" / "kafka.out").read_text(errors="replace")[-3000:]
            raise SystemExit(f"Kafka exited during start-up; see {KAFKA_DIR / 'logs'}:\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"Kafka (pid {pid}) did not answer metadata requests within 90 s")
        time.sleep(0.3)
    host, port = kafka_address()
    log(f"Kafka ready at {host}:{port} (pid {pid})")


def kafka_down(*, kill: bool = False, strict: bool = False) -> None:
    """Stop the broker this stack started (by its recorded PID). ``strict``: a broker that
    answers but was started by someone else is an error, not a silent no-op (a fault
    drill must not pass without its fault)."""
    pid_file = KAFKA_DIR / "kafka.pid"
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        if strict and kafka_ready():
            host, port = kafka_address()
            raise SystemExit(
                f"Kafka at {host}:{port} was not started by this stack (no recorded PID), "
                "so it will not stop it; stop that broker and run `stack.py up` here"
            )
        log("Kafka was not started by this stack (no live recorded PID)")
        return
    log(f"stopping Kafka (pid {pid}{', SIGKILL' if kill else ''})")
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + 30
    while read_pid(pid_file) is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if read_pid(pid_file) is not None:
        log("Kafka did not stop within 30 s: SIGKILL")
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --------------------------------------------------------------------------- main


def status() -> int:
    t = PgTarget(os.environ.get("CONVEYOR_DATABASE_URL", DEFAULT_DB_URL))
    pg = pg_answers(t) and pg_can_login(t)
    kafka = kafka_ready()
    host, port = kafka_address()
    print(f"postgresql  {t.host}:{t.port}  {'up' if pg else 'down'}")
    print(f"kafka       {host}:{port}  {'up' if kafka else 'down'}")
    return 0 if pg and kafka else 1


FAULT_COMMANDS = ("pg-restart", "pg-stop", "pg-start", "kafka-stop", "kafka-start", "kafka-restart")


def fault(command: str, option: str | None) -> int:
    if command == "pg-restart":
        pg_control("restart", option or "fast")
    elif command == "pg-stop":
        pg_control("stop", option or "fast")
    elif command == "pg-start":
        pg_control("start")
    elif command == "kafka-stop":
        kafka_down(kill=option == "--kill", strict=True)
    elif command == "kafka-start":
        kafka_up()
    else:
        kafka_down(strict=True)
        kafka_up()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] in FAULT_COMMANDS:
        STATE.mkdir(parents=True, exist_ok=True)
        return fault(argv[1], argv[2])
    if len(argv) != 2 or argv[1] not in ("up", "down", "status", *FAULT_COMMANDS):
        print(__doc__)
        return 2
    STATE.mkdir(parents=True, exist_ok=True)
    command = argv[1]
    if command in FAULT_COMMANDS:
        return fault(command, None)
    if command == "up":
        started = time.monotonic()
        pg_up(PgTarget(os.environ.get("CONVEYOR_DATABASE_URL", DEFAULT_DB_URL)))
        kafka_up()
        log(f"stack up in {time.monotonic() - started:.1f} s")
        return 0
    if command == "down":
        kafka_down()
        pg_down()
        return 0
    return status()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
