"""``homeserver`` command line: ``serve``, ``migrate`` and ``admin`` (CONTRACT sections 1 and 3).

Every command works on the configured store: the SQLite file in the data
directory, or PostgreSQL when ``[cluster] database_url`` is set.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from conf import ConfigError, Settings, load
from homeserver import app
from homeserver.clock import system_ms
from homeserver.identity.auth import check_password, hash_password
from homeserver.media import blobs
from homeserver.observe import logs
from protocol import ids
from protocol.errors import ApiError
from storage import db, migrate
from storage import participants as pstore
from storage import sessions as session_store
from storage.db import atomic
from storage.errors import NotFound, StorageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homeserver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    _common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--dev", action="store_true", default=None, help="open registration (development only)"
    )
    mig = sub.add_parser(
        "migrate", help="apply the numbered schema migrations to the store (SQLite or PostgreSQL)"
    )
    _common(mig)
    admin = sub.add_parser("admin", help="administrative commands")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    cp = admin_sub.add_parser("create-participant", help="create a participant")
    _common(cp)
    cp.add_argument("name", help="username (login name)")
    cp.add_argument(
        "--password",
        action="store_true",
        help="set a password (asked for, or read from HOMESERVER_ADMIN_PASSWORD)",
    )
    cp.add_argument("--type", default="human", choices=sorted(ids.PARTICIPANT_TYPES))
    cp.add_argument("--display-name")
    cp.add_argument("--admin", action="store_true", help="an admin of its tenant")
    cp.add_argument(
        "--tenant", default=None, help="tenant id (default: the server's tenant_id, ten_default)"
    )
    ck = admin_sub.add_parser("create-key", help="create an API key for a participant")
    _common(ck)
    ck.add_argument("name", help="username of the key's owner")
    ck.add_argument("--key-name", default="cli", help="a label for the key")
    dp = admin_sub.add_parser(
        "deactivate-participant",
        help="deactivate a participant: revoke every token and API key, refuse logins, "
        "close their open streams",
    )
    _common(dp)
    dp.add_argument("participant", help="participant id (or username)")
    gc = admin_sub.add_parser(
        "media-gc", help="remove media that no event references any more (and its files)"
    )
    _common(gc)
    gc.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    gc.add_argument(
        "--min-age",
        type=int,
        default=blobs.GC_MIN_AGE_SECONDS,
        metavar="SECONDS",
        help="only media uploaded at least this long ago (default: %(default)s)",
    )
    ps = admin_sub.add_parser(
        "purge-session", help="hard-delete a session and its messages (even a soft-deleted one)"
    )
    _common(ps)
    ps.add_argument("session_id", help="the session id (sess_...)")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--data-dir")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    for key in ("host", "port", "dev"):
        overrides[key] = getattr(args, key, None)
    return load(args.config or os.environ.get("HOMESERVER_CONFIG"), overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"homeserver: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        try:
            trio.run(_serve, settings)
        except Exception as exc:
            cause = _startup_failure(exc)
            if cause is None:
                raise
            print(
                f"homeserver: cannot start on {settings.host}:{settings.port} "
                f"with data dir {settings.data_dir}: {cause}",
                file=sys.stderr,
            )
            return 1
        return 0
    try:
        if args.command == "migrate":
            return _migrate(settings)
        return _ADMIN[args.admin_command](settings, args)
    except NotFound as exc:
        print(f"homeserver: no such session {exc}", file=sys.stderr)
        return 1
    except (ApiError, StorageError, sqlite3.Error, OSError, LookupError) as exc:
        print(f"homeserver: {exc}", file=sys.stderr)
        return 1
    finally:
        while _opened:
            _opened.pop().close()


def _startup_failure(exc: BaseException) -> BaseException | None:
    """The environment error (port taken, data dir unusable, schema too new) behind ``exc``.

    Trio wraps it in single-exception groups; anything else is a real crash
    and keeps its traceback.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError | sqlite3.Error | StorageError) else None


# Young collections stay at CPython's defaults (a few ms each); a full collection waits for
# 1,000 middle-generation ones instead of 10. Under load (300 ScaiBot streams) full
# collections came every ~3 s, found almost nothing (0-64 objects) and each paused the loop
# 40-90 ms: the `start` p99 (bench/RESULTS.md, "Collector"). Now one comes every few
# minutes, so cyclic garbage that outlives two young collections waits that long.
FULL_COLLECTION_EVERY = 1000


def settle_collector() -> None:
    """Freeze the start-up heap and make full collections rare (called once by ``serve``)."""
    # Everything built so far (modules, the service graph) lives as long as the process:
    # move it out of the collector's sight, so a full collection scans only what was
    # allocated since. Without this, full collections of the start-up heap paused the
    # loop for 100+ ms (p99 SSE gaps, bench/RESULTS.md).
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


async def _serve(settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            running = await nursery.start(app.run, settings)
            settle_collector()
            # One line on stdout that scripts (and tests) can wait for (the last one).
            if running.metrics_port:
                print(
                    f"homeserver metrics on http://{running.host}:{running.metrics_port}/metrics",
                    flush=True,
                )
            print(f"homeserver listening on {running.base_url}", flush=True)
            async for signum in signals:
                logging.getLogger("homeserver").info(
                    "received %s, shutting down", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break


def _connect(settings: Settings) -> Any:
    if settings.cluster.enabled:
        from storage import pg

        return pg.as_sqlite(
            pg.connect(settings.cluster.database_url, synchronous=settings.db_synchronous)
        )
    return db.connect(app.prepare_data_dir(settings), synchronous=settings.db_synchronous)


_opened: list[Any] = []  # the admin command's connection, closed when it ends


def _open(settings: Settings) -> Any:
    conn = _connect(settings)
    _opened.append(conn)
    migrate.migrate(conn)
    return conn


def _migrate(settings: Settings) -> int:
    conn = _connect(settings)
    try:
        before = migrate.current_version(conn)
        after = migrate.migrate(conn)
    finally:
        conn.close()
    engine = "postgresql" if settings.cluster.enabled else "sqlite"
    print(f"schema version {after} ({engine}; was {before})")
    return 0


def _create_participant(settings: Settings, args: argparse.Namespace) -> int:
    username = args.name.strip().lower()
    if not ids.USERNAME_RE.match(username):
        raise LookupError(f"invalid username {args.name!r}")
    tenant = args.tenant or settings.tenant_id
    if not ids.TENANT_RE.fullmatch(tenant):
        raise LookupError(f"invalid tenant id {tenant!r} (1-64 of A-Z, a-z, 0-9, '_', '.', '-')")
    hashed = None
    if args.password:
        password = os.environ.get("HOMESERVER_ADMIN_PASSWORD") or getpass.getpass("Password: ")
        check_password(password)
        hashed = hash_password(password)
    conn = _open(settings)
    with atomic(conn):
        p = pstore.create_participant_txn(
            conn,
            participant_id=ids.participant_id(args.type),
            username=username,
            display_name=args.display_name or args.name,
            participant_type=args.type,
            password_hash=hashed,
            is_admin=args.admin,
            now_ms=system_ms(),
            tenant_id=tenant,
        )
    print(
        f"participant_id={p.participant_id} username={p.username} "
        f"type={p.participant_type} admin={str(p.is_admin).lower()} tenant={p.tenant_id}"
    )
    return 0


def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    conn = _open(settings)
    owner = pstore.get_participant_by_username(conn, args.name.strip().lower())
    if owner is None:
        raise LookupError(f"no participant named {args.name!r}")
    if owner.deactivated_at_ms is not None:
        raise LookupError(f"participant {args.name!r} is deactivated")
    secret = ids.secret_token(ids.API_KEY)
    with atomic(conn):
        key = pstore.create_api_key_txn(
            conn,
            key_id=ids.random_id(ids.API_KEY_ID),
            secret=secret,
            participant_id=owner.participant_id,
            name=args.key_name,
            now_ms=system_ms(),
            expires_at_ms=None,
        )
    print(f"key_id={key.key_id} participant_id={owner.participant_id} key={secret}")
    return 0


def _deactivate(settings: Settings, args: argparse.Namespace) -> int:
    """A running server sees the revocation log and closes their streams (4001)."""
    conn = _open(settings)
    name = args.participant.strip()
    found = pstore.get_participant(conn, name) or pstore.get_participant_by_username(
        conn, name.lower()
    )
    if found is None:
        raise LookupError(f"no participant {name!r}")
    with atomic(conn):
        done = pstore.deactivate_participant_txn(conn, found.participant_id, system_ms())
    state = "deactivated" if done else "already deactivated"
    print(f"participant_id={found.participant_id} {state}")
    return 0


def _media_gc(settings: Settings, args: argparse.Namespace) -> int:
    conn = _open(settings)
    store = blobs.BlobStore(Path(settings.data_dir) / "media", fsync=False)
    report = blobs.collect_garbage(
        conn,
        store,
        now_ms=system_ms(),
        min_age_ms=max(0, args.min_age) * 1000,
        dry_run=args.dry_run,
    )
    verb = "would remove" if report.dry_run else "removed"
    for item in report.removed:
        kind = f"thumbnail {item.thumb_kind} of {item.parent_id}" if item.parent_id else "original"
        print(f"{verb} {item.media_id} {item.mime_type} {item.size} bytes ({kind})")
    print(
        f"{verb} {len(report.removed)} media item(s), {len(report.files)} file(s), "
        f"{report.bytes_freed} bytes"
    )
    return 0


def _purge_session(settings: Settings, args: argparse.Namespace) -> int:
    conn = _open(settings)
    with atomic(conn):
        removed = session_store.purge_session_txn(conn, args.session_id)
    print(f"purged session {args.session_id} and {removed} message(s)")
    return 0


_ADMIN = {
    "create-participant": _create_participant,
    "create-key": _create_key,
    "media-gc": _media_gc,
    "deactivate-participant": _deactivate,
    "purge-session": _purge_session,
}


if __name__ == "__main__":
    sys.exit(main())
