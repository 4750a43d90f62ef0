"""`patrol`: the command line (SPEC section 2).

Exit status: 0 success, 2 invalid config or arguments, 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.site import ConfigError, Site, SiteConfig, load_site
from agent.yamldoc import load_yaml
from api.notify import cli as notify_cli
from api.notify.routing import lint
from common.vocabulary import ROLES

EXIT_FAILURE = 1
EXIT_INVALID = 2

log = logging.getLogger("patrol")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.log_format)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except RuntimeError as exc:  # e.g. the database cannot be opened: one clear line
        log.error("%s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patrol", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="text (default: one readable line per record) or json (one "
                        "object per line, for journald or a log shipper)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: object, help_text: str,
                config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("-c", "--config", type=Path, required=True, help="site.yaml")
        p.set_defaults(handler=handler)
        return p

    command("run", _run, "single box: agent + API in one process")
    command("agent", _agent, "edge agent only: NC events go to forward.url")
    command("api", _api, "API server only")
    check = command("check", _check, "validate config and standards")
    check.add_argument("--explain-modbus", action="store_true",
                       help="print the planned Modbus requests of each device")
    check.add_argument("--no-secrets", action="store_true",
                       help="do not require *_env / *_file secrets to be readable here")
    check.add_argument("--connect", action="store_true",
                       help="also try every peer once: each Modbus device's first read, the "
                       "broker and its subscriptions, a TSDB write, a heartbeat to the "
                       "central API (or the NC database); exit 1 if one fails")
    demo = command("demo", _demo, "simulated plant room + patrol run, no external service",
                   config=False)
    demo.add_argument("--dir", type=Path, help="working directory (default: a new temp dir)")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                      help="MQTT broker to use if it answers; else an embedded one starts")
    simulate = command("simulate", _simulate, "the plant-room simulator alone",
                       config=False)
    simulate.add_argument("-c", "--config", type=Path, help="sim.yaml (default: built in)")
    command("schema", _schema, "JSON Schema of site.yaml", config=False)
    command("status", _status, "one screen: sources, buffer, TSDB lag, the API, open NCs")
    saving = command("backup", _backup, "copy the buffer and a SQLite NC database (online, "
                     "beside a running patrol) into a new folder")
    saving.add_argument("--to", type=Path, required=True, help="a new or empty folder")
    putting = command("restore", _restore, "put a backup back (patrol stopped)")
    putting.add_argument("--from", dest="source", type=Path, required=True,
                         help="a folder `patrol backup` wrote")
    putting.add_argument("--force", action="store_true", help="replace existing files")

    notify = sub.add_parser("notify", help="notifications").add_subparsers(required=True,
                                                                            metavar="ACTION")
    routes = notify.add_parser("routes", help="which routes and channels an NC with these "
                               "fields reaches", description="which routes and channels an "
                               "NC with these fields reaches, grouped how, reminded when, "
                               "muted or not")
    routes.add_argument("-c", "--config", type=Path, required=True, help="site.yaml")
    notify_cli.add_routes_arguments(routes)
    routes.set_defaults(handler=_notify_routes)
    test = notify.add_parser("test", help="send a test message through one channel",
                             description="send a test message through one channel now "
                             "(outside the outbox): proves its address, secret and format")
    test.add_argument("-c", "--config", type=Path, required=True, help="site.yaml")
    test.add_argument("--channel", required=True, metavar="NAME", help="a notify.channels name")
    test.set_defaults(handler=_notify_test)

    token = sub.add_parser("token", help="API tokens").add_subparsers(required=True,
                                                                        metavar="ACTION")
    create = token.add_parser("create", help="create a token; prints it once")
    create.add_argument("-c", "--config", type=Path, required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True)
    create.add_argument("--site", action="append", metavar="ID",
                        help="a site the token reaches (repeatable; required for agent "
                             "tokens); without it, every site")
    create.set_defaults(handler=_token_create)
    listing = token.add_parser("list", help="list tokens (never their values)")
    listing.add_argument("-c", "--config", type=Path, required=True)
    listing.set_defaults(handler=_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("-c", "--config", type=Path, required=True)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--name")
    which.add_argument("--id", type=int)
    revoke.set_defaults(handler=_token_revoke)

    init = sub.add_parser("init", help="write a commented starter site.yaml and standards",
                          description="write a commented starter site.yaml and standards "
                          "file into DIR (default: here); refuses to overwrite them")
    init.add_argument("dir", nargs="?", type=Path, default=Path("."))
    init.add_argument("--site-id", default="my-site", help="the site's id ([a-z0-9-]+)")
    init.add_argument("--data-dir", type=Path, help="where the buffer lives (the units' "
                      "writable directory, /var/lib/patrol); default data/ beside the site")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(handler=_init)

    user = sub.add_parser("user", help="people who sign in to the console").add_subparsers(
        required=True, metavar="ACTION")
    add = user.add_parser("add", help="add a user; the password is read from standard "
                          "input (one line), or asked twice on a terminal")
    add.add_argument("-c", "--config", type=Path, required=True)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("engineer", "quality", "tracker",
                                                       "admin"))
    add.add_argument("--site", action="append", metavar="ID",
                     help="a site the user reaches (repeatable); without it, every site")
    add.add_argument("--language", choices=("en", "zh-CN"), default="en")
    add.set_defaults(handler=_user_add)
    for action, text in (("list", "list users (never their passwords)"),
                         ("passwd", "set a user's password (read as for add); ends their "
                          "sessions and lifts a lock-out"),
                         ("disable", "disable a user; ends their sessions"),
                         ("enable", "enable a user again")):
        p = user.add_parser(action, help=text, description=text)
        p.add_argument("-c", "--config", type=Path, required=True)
        if action != "list":
            p.add_argument("name")
        p.set_defaults(handler=_user_action, action=action)
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, and the exception's
    traceback when there is one. Messages are the same as in text: no secret is ever
    formatted into them (urls go through common.urls.url_for_log)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime  # type: ignore[assignment]
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("pymodbus", "amqtt", "transitions", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _check(args: argparse.Namespace) -> int:
    site = load_site(args.config, secrets=not args.no_secrets)
    config = site.config
    points = sum(len(d.points) for d in config.modbus.devices) if config.modbus else 0
    subs = len(config.mqtt.subscriptions) if config.mqtt else 0
    print(f"{site.path.name}: ok: site {site.id}, {len(config.assets)} assets, "
          f"{points} Modbus points, {subs} MQTT subscriptions, {len(site.standards)} standards")
    if args.explain_modbus and config.modbus:
        from collector.modbus.plan import explain

        print(explain(config.modbus))
    if config.notify is not None:  # legal but probably not meant: warn, still exit 0
        doc = load_yaml(site.path)
        for line, warning in sorted((doc.line_of(w.loc), str(w)) for w in lint(config.notify)):
            print(f"warning: {doc.name}:{line}: {warning}", file=sys.stderr)
    if args.connect:
        from agent.connect import probe_all

        probes = probe_all(site)
        for probe in probes:
            print(probe.line(), flush=True)
        if not all(probe.ok for probe in probes):
            return EXIT_FAILURE
    return 0


def _status(args: argparse.Namespace) -> int:
    from agent.status import status_lines

    print("\n".join(status_lines(load_site(args.config, secrets=False))))
    return 0


def _backup(args: argparse.Namespace) -> int:
    from agent.backup import BackupError, backup

    try:
        print("\n".join(backup(load_site(args.config, secrets=False), args.to)))
    except BackupError as exc:
        print(f"patrol backup: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _restore(args: argparse.Namespace) -> int:
    from agent.backup import BackupError, restore

    try:
        print("\n".join(restore(load_site(args.config, secrets=False), args.source,
                                force=args.force)))
    except BackupError as exc:
        print(f"patrol restore: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _notify_routes(args: argparse.Namespace) -> int:
    site = load_site(args.config, secrets=False)
    timezone = site.config.site.timezone
    lines = notify_cli.describe_routes(site.config.notify, notify_cli.fields_from(args, site.id),
                                       args.event or notify_cli.DEFAULT_EVENTS,
                                       notify_cli.resolve_at(args.at, timezone), timezone)
    print("\n".join(lines))
    return 0


def _notify_test(args: argparse.Namespace) -> int:
    from api.notify.dispatch import SiteContext, send_test

    site = load_site(args.config)
    notify = site.config.notify
    names = [c.name for c in notify.channels] if notify else []
    if notify is None or args.channel not in names:
        print(f"{args.config}: notify.channels: no channel named {args.channel!r} "
              f"(channels: {', '.join(names) or 'none'})", file=sys.stderr)
        return 2
    info = site.config.site
    outcome = asyncio.run(send_test(notify, args.channel, SiteContext(
        name=info.name or info.id, timezone=info.timezone, locale=info.locale,
        public_url=site.config.server.public_url), mqtt=site.config.mqtt))
    if outcome.ok:
        print(f"sent a test message through {args.channel}")
        return 0
    print(f"{args.channel}: not delivered: {outcome.error}"
          + (" (retrying would not help)" if outcome.permanent else ""), file=sys.stderr)
    return 1


def _serve(site: Site, mode: str) -> int:
    from agent.runtime import TaskFailed, install_stop_signals, run_site

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)

        def ready(url: str) -> None:
            if url:
                print(f"Patrol API on {url}/api/v1 (OpenAPI at {url}/docs)", flush=True)

        await run_site(site, mode=mode, stop=stop, on_ready=ready)

    try:
        asyncio.run(main())
    except TaskFailed:  # its one error line is in the log already
        return EXIT_FAILURE
    except (OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return int(exc.code or EXIT_FAILURE)
    return 0


def _run(args: argparse.Namespace) -> int:
    return _serve(load_site(args.config), "run")


def _agent(args: argparse.Namespace) -> int:
    site = load_site(args.config)
    if site.config.forward is None:
        print(f"{site.path}: forward: section is required for patrol agent",
              file=sys.stderr)
        return EXIT_INVALID
    return _serve(site, "agent")


def _api(args: argparse.Namespace) -> int:
    return _serve(load_site(args.config), "api")


def _token_create(args: argparse.Namespace) -> int:
    from api.auth import SITE_ID, create_token
    from api.store import open_database

    if args.role == "agent" and not args.site:
        print("an agent token needs --site ID (repeatable): the sites whose events it may "
              "post", file=sys.stderr)
        return EXIT_INVALID
    bad = [site for site in args.site or () if not SITE_ID.match(site)]
    if bad:
        print(f"--site {bad[0]!r} is not a site id (lower-case letters, digits and '-', at "
              "most 64)", file=sys.stderr)
        return EXIT_INVALID
    site = load_site(args.config, secrets=False)
    database = open_database(site.config.server)
    try:
        with database.write() as session:
            token = create_token(session, name=args.name, role=args.role, sites=args.site)
    finally:
        database.close()
    reach = f"sites {', '.join(sorted(set(args.site)))}" if args.site else "every site"
    print(f"created {args.role} token {args.name!r} for {reach}; it is shown only once:",
          file=sys.stderr)
    print(token)
    return 0


STARTER = ("site.yaml", "standards/plant-room.yaml")
"""The files `patrol init` writes, from agent/starter/."""
STARTER_BUFFER = "data/buffer.sqlite"
"""The starter site.yaml's `buffer.path`, which `--data-dir` replaces."""


def _init(args: argparse.Namespace) -> int:
    from importlib.resources import files

    from api.auth import SITE_ID

    if not SITE_ID.match(args.site_id):
        print(f"--site-id {args.site_id!r} is not a site id (lower-case letters, digits and "
              "'-', at most 64)", file=sys.stderr)
        return EXIT_INVALID
    targets = [args.dir / name for name in STARTER]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.force:
        print(f"{', '.join(existing)} exists: not overwritten (--force overwrites)",
              file=sys.stderr)
        return EXIT_INVALID
    starter = files("agent") / "starter"
    for name, target in zip(STARTER, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (starter / name).read_text(encoding="utf-8").replace("__SITE_ID__", args.site_id)
        if args.data_dir is not None:
            text = text.replace(f"path: {STARTER_BUFFER}",
                                f"path: {args.data_dir.absolute() / 'buffer.sqlite'}")
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    print(f"next: edit the lines marked EDIT, then patrol check -c {targets[0]}")
    return 0


def _read_password() -> str:
    """One line of standard input, or asked twice on a terminal (SPEC 7.4)."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _users(args: argparse.Namespace, work: Callable[[Any], str]) -> int:
    """`work(session)` on the site's database in one transaction; prints its answer, or
    the refusal and EXIT_INVALID."""
    from api.errors import PatrolError
    from api.store import open_database

    site = load_site(args.config, secrets=False)
    database = open_database(site.config.server)
    try:
        with database.write() as session:
            answer = work(session)
            session.commit()
    except (PatrolError, ValueError) as exc:
        print(f"patrol user: {exc}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        database.close()
    print(answer)
    return 0


def _with_password(args: argparse.Namespace, work: Callable[[Any, str], str]) -> int:
    """`_users` with a password read first (before the transaction: a person types it)."""
    try:
        password = _read_password()
    except ValueError as exc:
        print(f"patrol user: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return _users(args, lambda session: work(session, password))


def _user_add(args: argparse.Namespace) -> int:
    from api.console.users import add_user

    reach = f"sites {', '.join(sorted(set(args.site)))}" if args.site else "every site"

    def add(session: Any, password: str) -> str:
        add_user(session, name=args.name, password=password, role=args.role,
                 sites=args.site, language=args.language)
        return f"added {args.role} {args.name!r} for {reach}"

    return _with_password(args, add)


def _user_action(args: argparse.Namespace) -> int:
    from api.console import users

    if args.action == "list":
        return _users(args, lambda session: "\n".join(
            f"{u.name}\t{u.role}\t{', '.join(u.sites) if u.sites else 'every site'}\t"
            f"{u.language}\t{'disabled' if u.disabled else 'enabled'}"
            for u in users.list_users(session)) or "no users")
    if args.action == "passwd":
        def passwd(session: Any, password: str) -> str:
            users.set_password(session, args.name, password)
            return f"password of {args.name!r} set; their sessions are ended"

        return _with_password(args, passwd)

    def switch(session: Any) -> str:
        users.set_disabled(session, args.name, args.action == "disable")
        return f"{args.name!r} {args.action}d"

    return _users(args, switch)


def _token_list(args: argparse.Namespace) -> int:
    from api.auth import describe_sites, list_tokens
    from api.store import open_database

    database = open_database(load_site(args.config, secrets=False).config.server)
    try:
        with database.session() as session:
            rows = list_tokens(session)
    finally:
        database.close()
    print(f"{'ID':>4}  {'ROLE':<9} {'CREATED':<20} {'REVOKED':<20} {'SITES':<20} NAME")
    for row in rows:
        revoked = row.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.revoked_at else "-"
        print(f"{row.id:>4}  {row.role:<9} {row.created_at:%Y-%m-%dT%H:%M:%SZ} "
              f"{revoked:<20} {describe_sites(row):<20} {row.name}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from api.auth import revoke_token
    from api.store import open_database

    database = open_database(load_site(args.config, secrets=False).config.server)
    try:
        with database.write() as session:
            rows = revoke_token(session, name=args.name, token_id=args.id)
    finally:
        database.close()
    if not rows:
        print(f"no live token {args.name or args.id!r}", file=sys.stderr)
        return EXIT_FAILURE
    for row in rows:
        print(f"revoked token {row.id} ({row.role}) {row.name!r}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(SiteConfig.model_json_schema(by_alias=True), indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        print(f"--broker {args.broker!r} is not HOST:PORT", file=sys.stderr)
        return EXIT_INVALID
    return run_demo(workdir=args.dir, port=args.port, broker=(host, int(port)))


def _simulate(args: argparse.Namespace) -> int:
    from agent.simulate import run_simulator

    return run_simulator(args.config)


if __name__ == "__main__":
    sys.exit(main())
