"""The `liandong` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from services import archive_cli, audit_cli, deadletter_cli, identity_cli, logs
from services.settings import Settings, SettingsError

# The `process` field of the log lines (docs/logging.md): the command, by its role.
_ROLES = {"outbox-relay": "relay"}


def _configure_logging(settings: Settings, command: str) -> None:
    logs.configure(
        _ROLES.get(command, command),
        settings.log_level,
        settings.log_format,
        secrets=(settings.token_secret, settings.master_key),
        dsns=(settings.database_url, settings.outbox_dsn),
    )


def _need_bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        raise SettingsError("LIANDONG_KAFKA_BOOTSTRAP is required (or use `liandong up`)")
    return settings.kafka_bootstrap


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from services.up import DemoOptions, run_up

    demo = DemoOptions(minutes=args.demo_minutes, seed=args.seed) if args.demo else None
    return run_up(settings, demo)


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from connectors.simulator.runner import Pace
    from services.simulate import SimulateOptions, run_simulate

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    try:
        pace = Pace.of(args.speed, args.duration_min, args.year)
    except ValueError as exc:
        print(f"参数错误 invalid option: {exc}", file=sys.stderr)
        return 2
    options = SimulateOptions(
        seed=args.seed,
        year=args.year,
        pace=pace,
        clock_file=path(args.clock_file),
        api_url=args.api,
        keys_file=path(args.keys_file),
        work_dir=path(args.work_dir),
        summary_file=path(args.summary),
        output=path(args.output),
        hub_metrics=args.hub_metrics,
    )
    return run_simulate(settings, options)


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from services.api.app import create_app

    app = create_app(settings, _need_bootstrap(settings))
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        # uvicorn applies its own logging config at start: ours, so its lines are JSON too.
        log_config=logs.dict_config("api", settings.log_level, settings.log_format),
    )
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust
    from prometheus_client import CollectorRegistry

    from services.worker.app import build_app, plan_worker

    plan = asyncio.run(plan_worker(settings, _need_bootstrap(settings)))
    app = build_app(settings, plan, CollectorRegistry())
    # override_logging=False: faust would replace our handler with its own (plain text on stdout).
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.spinner = None  # its terminal control codes would go to stdout, between the log lines
    worker.execute_from_commandline()
    return 0


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from services.store import migrate

    store_id = asyncio.run(migrate(settings))
    print(f"store migrated to head (instance {store_id}) at {settings.redacted_database_url()}")
    return 0


def _cmd_catalog_docs(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from events.catalog import Catalog
    from events.catalog_docs import render
    from events.mechanisms import Mechanisms

    text = render(Catalog.load(), Mechanisms.load())
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_connectors(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.spreadsheet.importer import CONNECTOR as SPREADSHEET
    from services.connectors_registry import connectors, delivery_health, outbox_health, recent_runs
    from services.store import with_engine

    infos = connectors(settings)
    if args.connectors_command == "list":
        for c in infos:
            mark = "✓" if c.configured else "·"
            print(f"{mark} {c.name:<20} {c.kind:<8} {c.what_zh} | {c.what_en} — {c.detail}")
        return 0
    health = asyncio.run(with_engine(settings, delivery_health))
    runs = asyncio.run(with_engine(settings, recent_runs))
    ok = True
    for c in infos:
        line = f"{c.name:<20} {'configured' if c.configured else 'not configured'}"
        if c.name in ("webhook", "email"):
            for target, counts in sorted(health.items()):
                if target in c.detail:
                    failed = counts.get("failed", 0)
                    ok = ok and failed == 0
                    line += f"\n    {target}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        if c.name == "spreadsheet-import":
            last = next((r for r in runs if r["connector"] == SPREADSHEET), None)
            if last is not None:
                line += f"\n    last run {last['finished_at']} {last['input']}: {last['detail']}"
        if c.name == "outbox-relay" and c.configured:
            status = asyncio.run(outbox_health(settings)) or {}
            ok = ok and "error" not in status
            line += "\n    " + ", ".join(f"{k} {v}" for k, v in status.items())
        print(line)
    return 0 if ok else 1


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.import_cli import run_import

    report = Path(args.report) if args.report else None
    return run_import(
        settings,
        Path(args.file),
        args.source,
        report,
        restart=args.restart,
        max_bytes=settings.import_max_bytes,
        max_rows=settings.import_max_rows,
    )


def _cmd_outbox_relay(settings: Settings, args: argparse.Namespace) -> int:
    from services.outbox_cli import run_relay

    return run_relay(settings, _need_bootstrap(settings))


def _cmd_projections(settings: Settings, args: argparse.Namespace) -> int:
    from services.shadow_rebuild import run_list, run_rebuild

    return run_list(settings) if args.projections_command == "list" else run_rebuild(settings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liandong", description="联动 Liandong enforcement hub")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run broker (embedded unless configured), worker and API")
    up.add_argument("--demo", action="store_true", help="also play a simulated year into the hub (联动演示)")
    up.add_argument("--demo-minutes", type=float, default=10.0, help="wall minutes for the simulated year")
    up.add_argument("--seed", type=int, default=2022, help="the demo's seed")
    up.set_defaults(run=_cmd_up)
    sim = sub.add_parser("simulate", help="play a simulated year of Panyu's enforcement traffic into the hub")
    sim.add_argument("--seed", type=int, default=2022, help="same seed, same events and ids")
    sim.add_argument("--year", type=int, default=2022)
    pace = sim.add_mutually_exclusive_group()
    pace.add_argument("--speed", default="max", help="simulated seconds per wall second, or 'max' (default)")
    pace.add_argument("--duration-min", type=float, help="play the whole year in this many wall minutes")
    sim.add_argument("--clock-file", help="write the simulated time here (for LIANDONG_TIME_SOURCE=file:...)")
    sim.add_argument("--api", help="the hub's API (default: LIANDONG_API_HOST and LIANDONG_API_PORT)")
    sim.add_argument("--keys-file", help="gateway keys by unit (JSON); missing keys are issued and added")
    sim.add_argument("--work-dir", help="where the spreadsheet exports go (default: <data dir>/simulator)")
    sim.add_argument("--summary", help="write a JSON summary of the run here")
    sim.add_argument(
        "--output", help="write the stream as JSON lines here ('-': stdout) instead of publishing"
    )
    sim.add_argument(
        "--hub-metrics",
        metavar="URL",
        help="the worker's /metrics: hold the clock until it projected the events",
    )
    sim.set_defaults(run=_cmd_simulate)
    sub.add_parser("api", help="run the HTTP API").set_defaults(run=_cmd_api)
    sub.add_parser("worker", help="run the stream worker").set_defaults(run=_cmd_worker)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(run=_cmd_migrate)
    identity_cli.add_commands(sub)  # keys issue|list|rotate|revoke, tokens issue
    imp = sub.add_parser("import", help="import a CSV/XLSX case list (粤执法 export) as case.filed.v1 events")
    imp.add_argument("file")
    imp.add_argument("--source", required=True, metavar="UNIT", help="the publishing unit")
    imp.add_argument("--report", help="where to write the row-by-row error report (CSV)")
    imp.add_argument("--restart", action="store_true", help="ignore the saved position and start over")
    imp.set_defaults(run=_cmd_import)
    # Listed for `liandong --help`; `main` hands `rebuild` to services.rebuild, which parses its own
    # options (argparse cannot pass `--help` on to a sub-command's remainder).
    sub.add_parser(
        "rebuild", help="replay every topic from the start into the configured database (best a new one)"
    )
    projections = sub.add_parser(
        "projections", help="the hub's projections (投影): list, rebuild"
    ).add_subparsers(dest="projections_command", required=True)
    projections.add_parser("list", help="each projection and the tables it writes").set_defaults(
        run=_cmd_projections
    )
    rebuild = projections.add_parser(
        "rebuild", help="replay the topics into shadow tables and swap a projection in, without downtime"
    )
    rebuild.add_argument("name", help="a projection (see `liandong projections list`), or 'all'")
    rebuild.add_argument("--batch", type=int, help="records per transaction (default 5000)")
    rebuild.add_argument(
        "--progress-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between progress lines (default: 0.2 on a terminal, 5 otherwise)",
    )
    rebuild.set_defaults(run=_cmd_projections)
    sub.add_parser(
        "outbox-relay", help="relay an agency's PostgreSQL outbox table (LIANDONG_OUTBOX_DSN) to the hub"
    ).set_defaults(run=_cmd_outbox_relay)
    conn = sub.add_parser("connectors", help="the hub's connectors")
    conn_sub = conn.add_subparsers(dest="connectors_command", required=True)
    conn_sub.add_parser("list", help="list connectors and their configuration").set_defaults(
        run=_cmd_connectors
    )
    conn_sub.add_parser("status", help="delivery health; exit 1 if any delivery failed").set_defaults(
        run=_cmd_connectors
    )
    catalog = sub.add_parser("catalog", help="the event catalog").add_subparsers(
        dest="catalog_command", required=True
    )
    docs = catalog.add_parser("docs", help="render the catalog as Markdown (docs/events.md)")
    docs.add_argument("--write", metavar="PATH", help="write to PATH instead of standard output")
    docs.set_defaults(run=_cmd_catalog_docs)
    audit_cli.add_commands(sub)  # audit verify|head, parties shred|erase
    archive_cli.add_commands(sub)  # archive export|check|restore
    deadletter_cli.add_commands(sub)  # deadletter list|replay
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rebuild"]:
        from services.rebuild import main as rebuild_main

        return rebuild_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        _configure_logging(settings, args.command)
        code: int = args.run(settings, args)
    except SettingsError as exc:
        print(f"配置错误 configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
