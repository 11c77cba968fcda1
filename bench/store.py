"""The store on SQLite and on PostgreSQL, at 500 Deployments.

Three measurements, each with the embedded default (a SQLite file) and with a PostgreSQL server
(Debian's binaries, a throwaway cluster on a loopback port, started for the run):

- **Store operations per second**, in this process, through the store's own code: the writes the
  daemon makes (an incident with its three deliveries, an outbox row claimed and marked delivered,
  an action proposed and approved with its audit row, an Alertmanager notification received, a
  change recorded, one tick's upsert of error groups) and the two reads of the dashboard's
  overview (a page of incidents, the day's figures), over a history of 500 Deployments (two
  incidents, four changes and two audit rows each) that the writes then add to.
- **Tick cost**: bench.mass_rollout's run (500 Deployments idle, then all rolling at once with
  one bad, every feature on), the daemon built by ``main.build_detector`` on ``Store(target)``
  (BENCH_STORE_LAUNCHER below). CPU per tick of the daemon; with PostgreSQL also the database
  server's (its processes' CPU over the same ticks: the work the daemon hands it); wall time of
  a tick (its own ``duration_seconds``).
- **Resident memory of the SQLite default**: bench.footprint's ``--memory`` measurement (the
  daemon as a pod runs it, default settings), of this package and of the package before the
  store became its own floor (the parent of STORE_COMMIT, taken with ``git archive``), run by
  the same interpreter. And the PostgreSQL driver is not imported with a SQLite store.

PostgreSQL runs with its default durability (fsync, synchronous_commit, full_page_writes on), as
a production server does; the tests' throwaway cluster turns them off for speed, which would
flatter it here. SQLite runs as the store opens it (WAL, synchronous=NORMAL: a commit is not
fsynced, a checkpoint is). ``--no-fsync`` runs PostgreSQL as the tests do, to tell the disk's
share from the rest.

    python -m bench.store [--deployments N] [--ops N] [--only writes|ticks|memory ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from incident_detector.judge.triage import ErrorGroup
from incident_detector.model import Change, FieldChange, Priority
from incident_detector.run.outbox import CHANNEL_EVENT, CHANNEL_SLACK, CHANNEL_STDOUT
from incident_detector.sources.alerts import parse_webhook
from incident_detector.store import reads
from incident_detector.store.alerts import AlertInbox
from incident_detector.store.changes import ChangeLog
from incident_detector.store.journal import APPROVED, PROPOSED, Journal
from incident_detector.store.records import Store

from .dashboard import _rollout_record

DEPLOYMENTS = 500
OPS = 500
NAMESPACE = "bench"
# The commit that moved the store into store/ (its parent has the store of before), for the
# memory comparison.
STORE_COMMIT = "82472e1"
ERROR_GROUPS_PER_TICK = 10
ROOT = Path(__file__).resolve().parent.parent
TESTS_POSTGRES = ROOT / "tests" / "postgres.py"


# --------------------------------------------------------------------------------------------
# A PostgreSQL server for the run.

def _tests_postgres() -> ModuleType:
    """tests/postgres.py, loaded from its path.

    One way to make a throwaway cluster (finding Debian's binaries, running as the postgres user
    when root, a scram password, a free port) serves the tests and the benchmarks. Loaded by
    path, not imported: ``tests`` is no package and not on ``sys.path`` under ``python -m
    bench``; the benchmarks already read tests/fixtures, so they need the same checkout anyway.
    """
    spec = importlib.util.spec_from_file_location("_bench_tests_postgres", TESTS_POSTGRES)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {TESTS_POSTGRES}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Postgres:
    server: Any  # tests/postgres.py's PostgresServer
    durable: bool

    def new_url(self) -> str:
        """A URL whose tables land in a schema of their own: an empty store."""
        return self.server.new_schema()

    def cpu_seconds(self) -> float:
        """User+system time of the cluster's processes (the postmaster and its children)."""
        pid = int((self.server.data / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # a process that ended meanwhile
            if int(stat.parent.name) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


@contextmanager
def postgres(*, durable: bool = True) -> Iterator[Postgres | None]:
    """A running server, or None when PostgreSQL is not installed (the figures then say so)."""
    tests_pg = _tests_postgres()
    bindir = tests_pg.find_bindir()
    if bindir is None:
        yield None
        return
    server = tests_pg.PostgresServer(bindir)
    try:
        server.start()  # initdb, and the tests' settings (fsync off)
        if durable:
            # Started again with PostgreSQL's own defaults for durability.
            options = (f"-p {server.port} -k {server.base} -c listen_addresses=127.0.0.1"
                       " -c max_connections=200")
            server._run(str(bindir / "pg_ctl"), "-D", str(server.data), "-o", options,
                        "-l", str(server.base / "log"), "-w", "-t", "60", "restart")
        yield Postgres(server, durable)
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# Store operations per second.

def _key(index: int, deployments: int, revision: int) -> tuple[str, str, int, str]:
    return (NAMESPACE, f"svc-{index % deployments:04d}", revision, f"uid-d-{index % deployments}")


def _deliveries(record: dict) -> list[tuple[str, dict]]:
    """What the outbox queues for a rollout incident: the stdout line, Slack, the Event."""
    return [(CHANNEL_STDOUT, record),
            (CHANNEL_SLACK, {"text": record["summary"], "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": record["summary"]}}]}),
            (CHANNEL_EVENT, {"reason": "RolloutRegression", "note": record["summary"][:1024],
                             "type": "Warning"})]


def _change(index: int, deployments: int, at: datetime) -> Change:
    name = f"svc-{index % deployments:04d}"
    return Change(namespace=NAMESPACE, kind="Deployment", name=name, action="updated", at=at,
                  observed_at=at,
                  fields=(FieldChange(f"image {name}", f"registry.local/{name}:1.4.{index}",
                                      f"registry.local/{name}:1.4.{index + 1}"),),
                  manager="argocd-controller", operation="Apply", uid=f"uid-d-{index}",
                  resource_version=str(100_000 + index), revision=index + 2,
                  previous_revision=index + 1)


def _alert_body(index: int, at: datetime) -> bytes:
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "incident-detector",
        "groupKey": f'{{}}:{{alertname="HighErrorRate", deployment="svc-{index:04d}"}}',
        "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing", "fingerprint": f"{index:016x}",
                    "startsAt": at.isoformat().replace("+00:00", "Z"),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus:9090/graph",
                    "labels": {"alertname": "HighErrorRate", "namespace": NAMESPACE,
                               "deployment": f"svc-{index:04d}", "severity": "critical"},
                    "annotations": {"summary": "5xx above 5% for 5 minutes"}}],
    }).encode()


def _error_group(index: int, now: datetime) -> ErrorGroup:
    return ErrorGroup(namespace=NAMESPACE, fingerprint=f'level=error msg="request failed" id=<n> '
                      f"code={index}", example=f'level=error msg="request failed" id=1 '
                      f"code={index}", workloads=(f"svc-{index % 500:04d}",), count=index + 1,
                      first_seen=now - timedelta(minutes=5), last_seen=now,
                      priority=Priority.P3, rule=None)


def seed(store: Store, *, deployments: int, now: datetime) -> None:
    """The history of ``deployments`` Deployments over the last 20 hours: a rollout incident
    (delivered) and a notice each, four changes each, two audit rows each."""
    db = store.connection
    changes = ChangeLog(db, retention=timedelta(days=14), max_rows=100_000)
    journal = Journal(db)
    spread = timedelta(hours=20) / max(1, deployments)
    for i in range(deployments):
        at = now - timedelta(hours=20) + spread * i
        key = _key(i, deployments, 2)
        record = _rollout_record(i, NAMESPACE, key[1], at)
        store.record_incident(key=key, replicaset=record["replicaset"], detected_at=at,
                              record=record, deliveries=_deliveries(record))
        notice = f"errors/{NAMESPACE}/seed {i}"
        store.record_notice(key=notice, kind="error_group", namespace=NAMESPACE,
                            deployment=key[1], detected_at=at,
                            record={"event": "incident", "kind": "error_group", "priority": "P3",
                                    "summary": "x" * 600},
                            deliveries=[(CHANNEL_STDOUT, {})])
        changes.record([_change(i * 4 + k, deployments, at - timedelta(minutes=k))
                        for k in range(4)])
        for decision in ("requested", "approved"):
            journal.audit(at=at, who="slack:U0BENCH", action="rollback", target=key[1],
                          decision=decision, reason="bench history", dry_run=False)
    db.execute("UPDATE outbox SET delivered_at=created_at")


def measure_store(target: str, *, deployments: int = DEPLOYMENTS, ops: int = OPS,
                  now: datetime | None = None) -> dict[str, float]:
    """Operations per second of each kind on an empty store at ``target``, seeded first."""
    from incident_detector.run.triage import Triage

    now = now or datetime.now(timezone.utc)
    store = Store(target, owner="bench")
    db = store.connection
    try:
        seed(store, deployments=deployments, now=now)
        journal = Journal(db)
        inbox = AlertInbox(db)
        changes = ChangeLog(db, retention=timedelta(days=14), max_rows=100_000)
        triage = Triage(connection=db, loki=None,  # type: ignore[arg-type]  # never read here
                        sample_lines=500, max_groups=200,
                        prioritize=lambda line: (Priority.P3, None), notify_priorities=["P1"])
        base = 10 * deployments  # revisions and ids past the seeded ones
        outbox_ids: list[int] = []

        def record_incident(i: int) -> None:
            key = _key(i, deployments, base + i)
            record = _rollout_record(i, NAMESPACE, key[1], now)
            store.record_incident(key=key, replicaset=record["replicaset"], detected_at=now,
                                  record=record, deliveries=_deliveries(record))

        def claim_and_deliver(i: int) -> None:
            if not outbox_ids:
                outbox_ids.extend(row[0] for row in db.execute(
                    "SELECT id FROM outbox WHERE delivered_at IS NULL ORDER BY id"))
            item = outbox_ids.pop()
            if store.outbox.claim(item, now):
                store.outbox.mark_delivered(item, now)

        def journal_step(i: int) -> None:
            key = _key(i, deployments, base + i)
            entry = journal.propose(key=key, action="rollback", params={"to_revision": 1},
                                    precondition=str(100_000 + i), now=now)
            assert entry is not None
            journal.advance(entry.id, expected=[PROPOSED], to=APPROVED, now=now,
                            who="slack:U0BENCH")
            journal.audit(at=now, who="slack:U0BENCH", action="rollback", target=key[1],
                          decision="approved", reason="clicked Approve", dry_run=False,
                          action_id=entry.id)

        def alert_receive(i: int) -> None:
            inbox.receive(parse_webhook(_alert_body(base + i, now)), now=now)

        def change_record(i: int) -> None:
            changes.record([_change(base + i, deployments, now)])

        def error_groups(i: int) -> None:
            groups = [_error_group(i * ERROR_GROUPS_PER_TICK + k, now)
                      for k in range(ERROR_GROUPS_PER_TICK)]
            triage._write(groups, [], now=now)  # the one transaction a tick writes

        def incidents_page(i: int) -> None:
            reads.incidents(db)

        def stats(i: int) -> None:
            reads.stats(db, now=now)

        runs: list[tuple[str, Callable[[int], None]]] = [
            ("record_incident (3 deliveries)", record_incident),
            ("outbox: claim + mark_delivered", claim_and_deliver),
            ("journal: propose + advance + audit", journal_step),
            ("alert receive (1 alert)", alert_receive),
            ("change record (1 change)", change_record),
            (f"error groups: upsert {ERROR_GROUPS_PER_TICK} in a tick", error_groups),
            ("read: incidents page (newest 50)", incidents_page),
            ("read: stats (today's figures)", stats),
        ]
        rates: dict[str, float] = {}
        for label, run in runs:
            started = time.perf_counter()
            for i in range(ops):
                run(i)
            rates[label] = ops / (time.perf_counter() - started)
        return rates
    finally:
        store.close()


def writes_report(sqlite: dict[str, float], pg: dict[str, float] | None, *, deployments: int,
                  ops: int, durable: bool) -> str:
    lines = [f"Store operations per second, {ops} of each, over the history of {deployments} "
             "Deployments (this process, one connection)",
             f"{'operation':<40} {'SQLite ops/s':>12} {'PostgreSQL ops/s':>16}"]
    for label, rate in sqlite.items():
        other = f"{pg[label]:>16.0f}" if pg else f"{'not installed':>16}"
        lines.append(f"{label:<40} {rate:>12.0f} {other}")
    lines.append("(SQLite: a file, WAL, synchronous=NORMAL; PostgreSQL: loopback TCP, "
                 + ("fsync and synchronous_commit on, as PostgreSQL ships)" if durable
                    else "fsync and synchronous_commit off, as the tests run it)"))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Tick cost: bench.mass_rollout's daemon on a given store.

# ``python -m incident_detector`` as cli.main runs it, with the store made here and passed to
# build_detector: BENCH_STORE_TARGET, a SQLite path or a PostgreSQL URL (default STATE_PATH).
# Both backends start through this same launcher, so that they differ in the store alone.
BENCH_STORE_LAUNCHER = """
import asyncio, os, sys
import structlog
from incident_detector.config import load_settings
from incident_detector.logs import configure_logging
from incident_detector import main as wiring
from incident_detector.sources import kube
from incident_detector.store.records import Store

settings = load_settings()
configure_logging(level=settings.log_level, fmt=settings.log_format)

async def run():
    store = Store(os.environ.get("BENCH_STORE_TARGET") or settings.state_path,
                  owner=settings.pod_name)
    structlog.get_logger("bench").info("bench.store", dialect=store.dialect)
    try:
        async with wiring.build_detector(settings=settings, kube_api=kube.api_client_from_environment(),
                                         stdout=sys.stdout, store=store) as detector:
            stop = asyncio.Event()
            wiring.install_signal_handlers(stop)
            return await wiring.run_daemon(detector, settings, stop=stop)
    finally:
        store.close()

sys.exit(asyncio.run(run()))
"""


def measure_ticks(deployments: int, *, new_target: Callable[[], str] | None = None,
                  other_cpu: Callable[[], float] | None = None) -> list[dict]:
    """Idle, then rolling: bench.mass_rollout's two runs, each with the daemon on an empty store
    of its own, ``new_target()`` (None: a new SQLite file at STATE_PATH, as mass_rollout
    gives each run)."""
    from . import mass_rollout

    runs = []
    for rolling in (False, True):
        env = {"BENCH_STORE_TARGET": new_target()} if new_target else {}
        runs.append(mass_rollout.measure(deployments, rolling=rolling,
                                         command=["-c", BENCH_STORE_LAUNCHER], extra_env=env,
                                         other_cpu=other_cpu))
    return runs


def ticks_report(rows: dict[str, list[dict]], *, deployments: int) -> str:
    from .mass_rollout import POLL_INTERVAL, TICKS, WARMUP_TICKS

    lines = [f"Tick cost with {deployments} Deployments (bench.mass_rollout's run: every feature "
             f"on; {TICKS} ticks of {POLL_INTERVAL:g} s, CPU over the last "
             f"{TICKS - WARMUP_TICKS})",
             f"{'store':<11} {'case':<8} {'cpu ms/tick':>11} {'db cpu ms/tick':>14} "
             f"{'tick cpu ms':>11} {'tick wall ms':>12} {'wall max ms':>11} {'rss MB':>7}  "
             "incidents"]
    for store, runs in rows.items():
        for r in runs:
            db_cpu = r.get("other_cpu_ms_per_tick")
            ok = r["incidents"] == r["expected"]
            lines.append(
                f"{store:<11} {'rolling' if r['rolling'] else 'idle':<8} "
                f"{r['cpu_ms_per_tick']:>11.1f} "
                f"{(f'{db_cpu:.1f}' if db_cpu is not None else 'in-process'):>14} "
                f"{r['tick_cpu_ms_median']:>11.1f} {r['tick_wall_ms_median']:>12.1f} "
                f"{r['tick_wall_ms_max']:>11.1f} {r['rss_mb']:>7.1f}  "
                f"{len(r['incidents'])} {'as expected' if ok else 'WRONG'}")
    lines.append("(cpu ms/tick: the daemon process over the steady ticks; db cpu: the "
                 "PostgreSQL server's processes over the same ticks; tick cpu / wall: the median "
                 "tick's own, the first tick left out)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Resident memory of the SQLite default, before and after.

PSYCOPG_PROBE = """
import asyncio, json, sys, tempfile
from pathlib import Path
import kubernetes.client
from incident_detector.config import load_settings
from incident_detector.main import build_detector
from incident_detector.store.records import Store

async def build(path):
    settings = load_settings({"LOKI_URL": "http://127.0.0.1:1", "NAMESPACE": "bench",
                              "TARGET_DEPLOYMENT": "*", "STATE_PATH": path})
    store = Store(path)
    try:
        async with build_detector(settings=settings, kube_api=kubernetes.client.ApiClient(),
                                  stdout=sys.stdout, store=store):
            pass
    finally:
        store.close()

with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(build(str(Path(tmp) / "state.sqlite3")))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "psycopg")))
"""


def psycopg_imported_with_sqlite(python: str = sys.executable) -> list[str]:
    """The psycopg modules loaded by a fresh process that built the detector on a SQLite
    store (none, when the driver stays out of the default)."""
    done = subprocess.run([python, "-c", PSYCOPG_PROBE], capture_output=True, text=True,
                          check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(done.stdout.strip().splitlines()[-1])


def package_before(commit: str, into: Path) -> Path | None:
    """``incident_detector`` of ``commit``'s parent, unpacked into ``into`` (git archive: the
    repository's worktree list stays as it was); None outside a git checkout."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", f"{commit}^",
                                  "incident_detector"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return into


def measure_memory(deployments: int) -> dict:
    from . import footprint

    cases = footprint.memory_cases(deployments, datetime.now(timezone.utc))
    out: dict[str, Any] = {"after": [], "before": None, "psycopg": None, "daemon_psycopg": None}
    footprint.compile_package()
    for case in cases:
        out["after"].append(footprint.measure_memory(case, python=sys.executable))
    out["daemon_psycopg"] = sorted({m for r in out["after"] for m in (r["modules"] or [])
                                    if m.split(".")[0] == "psycopg"})
    out["psycopg"] = psycopg_imported_with_sqlite()
    with tempfile.TemporaryDirectory(prefix="bench-store-before-") as tmp:
        root = package_before(STORE_COMMIT, Path(tmp))
        if root is not None:
            footprint.compile_package(root)
            out["before"] = [footprint.measure_memory(case, python=sys.executable,
                                                      package_root=root) for case in cases]
    return out


def memory_report(m: dict) -> str:
    lines = [f"Resident memory of the SQLite default (bench.footprint --memory's run), this "
             f"package and the one before {STORE_COMMIT} (its parent)",
             f"{'case':<50} {'before MB':>9} {'after MB':>8} {'peak before':>11} "
             f"{'peak after':>10}"]
    for i, after in enumerate(m["after"]):
        before = m["before"][i] if m["before"] else None
        lines.append(f"{after['case']:<50} "
                     + (f"{before['rss_mb']:>9.1f} " if before else f"{'n/a':>9} ")
                     + f"{after['rss_mb']:>8.1f} "
                     + (f"{before['hwm_mb']:>11.1f} " if before else f"{'n/a':>11} ")
                     + f"{after['hwm_mb']:>10.1f}"
                     + ("  DEGRADED" if after["degraded"] or (before or {}).get("degraded")
                        else ""))
    lines.append("PostgreSQL driver with a SQLite store: "
                 + ("not imported" if not m["psycopg"] else f"IMPORTED ({', '.join(m['psycopg'])})")
                 + " after build_detector; "
                 + ("not imported" if not m["daemon_psycopg"]
                    else f"IMPORTED ({', '.join(m['daemon_psycopg'])})")
                 + " by the running daemon")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------

PARTS = ("writes", "ticks", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store",
        description="The store on SQLite and PostgreSQL: operations per second, tick cost, and "
                    "the resident memory of the SQLite default.")
    parser.add_argument("--deployments", type=int, default=DEPLOYMENTS,
                        help=f"Deployments (default {DEPLOYMENTS})")
    parser.add_argument("--ops", type=int, default=OPS,
                        help=f"operations of each kind for the store's table (default {OPS})")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run this part only (may be repeated)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="PostgreSQL with fsync and synchronous_commit off (as the tests)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    parts = args.only or list(PARTS)
    durable = not args.no_fsync
    with postgres(durable=durable) if {"writes", "ticks"} & set(parts) else _none() as pg:
        if "writes" in parts:
            with tempfile.TemporaryDirectory() as tmp:
                sqlite = measure_store(str(Path(tmp) / "state.sqlite3"),
                                       deployments=args.deployments, ops=args.ops)
            on_pg = measure_store(pg.new_url(), deployments=args.deployments, ops=args.ops) \
                if pg else None
            print(writes_report(sqlite, on_pg, deployments=args.deployments, ops=args.ops,
                                durable=durable))
            print()
        if "ticks" in parts:
            rows = {"SQLite": measure_ticks(args.deployments)}
            if pg:
                rows["PostgreSQL"] = measure_ticks(args.deployments, new_target=pg.new_url,
                                                   other_cpu=pg.cpu_seconds)
            print(ticks_report(rows, deployments=args.deployments))
            print()
    if "memory" in parts:
        print(memory_report(measure_memory(args.deployments)))
    return 0


@contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
