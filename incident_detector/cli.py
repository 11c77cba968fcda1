"""Command line: ``incident-detector [--once]``, ``incident-detector demo``,
``incident-detector replay``, ``incident-detector store copy``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from datetime import datetime, timezone
from importlib import metadata

import structlog

from .config import ConfigError, load_settings
from .logs import configure_logging

EXIT_CONFIG = 2


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def version() -> str:
    try:
        return metadata.version("incident-detector")
    except metadata.PackageNotFoundError:
        return "dev"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-detector",
        description="Detect Kubernetes rollouts that caused an error spike, and say what to do.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--once", action="store_true",
                        help="run a single tick, deliver its notifications and exit "
                             "(exit code 1 when a source failed)")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run the detector on a bundled bad rollout, no cluster needed")
    demo.add_argument("--scenario", help="scenario file (default: the bundled bad rollout)")
    demo.add_argument("--speed", type=float, default=10.0,
                      help="simulated seconds per real second (default 10)")
    demo.add_argument("--hold", type=float, default=0.0,
                      help="keep serving /status this many seconds after the incident")
    replay = sub.add_parser("replay", help="replay a recorded scenario on a simulated clock")
    replay.add_argument("scenario", help="path to a scenario file (see tests/scenarios/)")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    store = sub.add_parser(
        "store", help="store copy --from STATE_PATH --to DATABASE_URL: move the history "
                      "(incidents, audit, approvals...) into PostgreSQL, keeping its ids")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    copy = store_sub.add_parser(
        "copy", help="copy a store (a SQLite STATE_PATH) into another (a DATABASE_URL)",
        description="Copy every table of a store into another, keeping ids (links such as "
                    "/incidents/r12 and audit ids stay the same), idempotently: rows already "
                    "there are left as they are, so running it again copies only what is new. "
                    "Supported: SQLite to PostgreSQL (the migration), PostgreSQL to PostgreSQL, "
                    "PostgreSQL to SQLite and SQLite to SQLite (--to sqlite:PATH). An older "
                    "SQLite file is migrated first, as at the detector's start. Stop the "
                    "detector before the last run: rows already copied are not updated.",
        epilog="exit codes: 0 copied, 1 a database could not be reached or refused, "
               "2 bad arguments")
    copy.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                      help="a SQLite file (STATE_PATH) or a postgresql:// URL")
    copy.add_argument("--to", dest="destination", required=True, metavar="DESTINATION",
                      help="a postgresql:// or postgres:// URL (DATABASE_URL; libpq options such"
                           " as sslmode in its query), or sqlite:PATH")
    copy.add_argument("--batch", type=int, default=500, metavar="ROWS",
                      help="rows per read and per write transaction (default 500)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        return run_demo(scenario_path=args.scenario, speed=args.speed, hold=args.hold)
    if args.command == "replay":
        from .sim.replay import replay_main
        return replay_main(args.scenario, as_json=args.json)
    if args.command == "store":
        from .store.copy import copy_main
        return copy_main(args.source, args.destination, batch_rows=args.batch)

    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    structlog.get_logger("incident_detector").info(
        "starting", version=version(), once=args.once, settings=settings.public())
    if settings.rules_file is not None:
        # An invalid rules file stops the start like an invalid variable, before any client
        # is made (the daemon loads it again when it builds the detector).
        from .judge.rules import RulesError
        from .run.rules_file import RulesFile

        try:
            RulesFile(settings.rules_file, clock=_utcnow)
        except RulesError as exc:
            print(f"invalid configuration: RULES_FILE: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if settings.llm_base_url is not None:
        # So does an invalid LLM_PROMPT_FILE, when the LLM analysis is on.
        from .judge.analysis import PromptError, load_prompt

        try:
            load_prompt(settings.llm_prompt_file)
        except PromptError as exc:
            print(f"invalid configuration: LLM_PROMPT_FILE: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if settings.change_grpc_port:
        # The gRPC feed needs the grpc extra: say so at once, not after the first tick.
        from .feed import GrpcExtraMissing

        try:
            importlib.import_module(".feed.grpc_server", __package__)
        except GrpcExtraMissing as exc:
            print(f"invalid configuration: CHANGE_GRPC_PORT: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    from .main import main_async
    return asyncio.run(main_async(settings, once=args.once))
