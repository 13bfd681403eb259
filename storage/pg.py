"""PostgreSQL connections that the storage ``*_txn`` functions use as they use SQLite's.

``connect`` returns a :class:`PgConnection`: the subset of ``sqlite3.Connection``
the storage code calls (``execute``, ``executemany``, ``in_transaction``,
``journal``, ``close``), on a psycopg 3 **sync** connection in autocommit mode
(transactions are explicit, as with SQLite: ``BEGIN``, ``SAVEPOINT``, ``COMMIT``).

- SQL goes through :func:`storage.dialect.to_postgres` (placeholders, ``INSERT OR
  IGNORE``, ``LIKE``).
- Rows are :class:`Row`: indexed by position and by column name, like ``sqlite3.Row``.
- Parameters are bound server-side, and a statement run a few times on a
  connection is prepared (psycopg's automatic prepared statements; twice as fast as
  client-side binding for the append path). Strings go untyped, so PostgreSQL
  gives them the column's type as SQLite would; a ``bool`` is bound as ``1``/``0``
  (flags are integer columns on both engines).
- ``numeric`` results (``SUM`` of integers) load as ``int`` (``float`` when fractional).
- psycopg's errors are raised as the ``sqlite3`` ones the callers already catch:
  a constraint or trigger violation is ``sqlite3.IntegrityError``, anything else
  ``sqlite3.OperationalError``; the PostgreSQL message is kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Loader
from psycopg.rows import RowMaker
from psycopg.types.numeric import Int8Dumper

from storage.dialect import to_postgres

DIALECT = "postgres"


class Row:
    """One result row: ``row[0]``, ``row["name"]``, ``row.keys()``, unpacking, ``dict(row)``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row{self._values!r}"

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> RowMaker[Row]:
    desc = cursor.description or []
    index: dict[str, int] = {}
    for i, column in enumerate(desc):
        index.setdefault(column.name, i)

    def make(values: Sequence[Any]) -> Row:
        return Row(values, index)

    return make


class _BoolAsInt(Int8Dumper):
    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _NumericAsNumber(Loader):
    def load(self, data: Any) -> Any:
        text = bytes(data).decode()
        if "." in text or "e" in text.lower() or text in ("NaN", "Infinity", "-Infinity"):
            return float(text)
        return int(text)


def _translate_error(exc: psycopg.Error) -> sqlite3.Error:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.IntegrityError | psycopg.errors.RaiseException):
        return sqlite3.IntegrityError(message)
    return sqlite3.OperationalError(message)


class PgCursor:
    """The result of one ``execute``: ``fetchone``, ``fetchall``, iteration, ``rowcount``."""

    __slots__ = ("_cur", "lastrowid")

    def __init__(self, cur: psycopg.Cursor[Row]) -> None:
        self._cur = cur
        self.lastrowid: int | None = None

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        return self._cur.description

    def fetchone(self) -> Row | None:
        if self._cur.description is None:
            return None
        return self._cur.fetchone()

    def fetchall(self) -> list[Row]:
        if self._cur.description is None:
            return []
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection with the ``sqlite3.Connection`` surface storage uses."""

    dialect = DIALECT

    def __init__(self, raw: psycopg.Connection[Row]) -> None:
        self.raw = raw
        self.journal: list[Any] | None = None

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgCursor:
        cur = self.raw.cursor(row_factory=_row_factory)
        try:
            cur.execute(to_postgres(sql), tuple(params) if params is not None else ())
        except psycopg.Error as exc:
            raise _translate_error(exc) from exc
        return PgCursor(cur)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> PgCursor:
        cur = self.raw.cursor(row_factory=_row_factory)
        try:
            cur.executemany(to_postgres(sql), [tuple(p) for p in seq])
        except psycopg.Error as exc:
            raise _translate_error(exc) from exc
        return PgCursor(cur)

    def executescript(self, sql: str) -> None:
        """Several statements, no parameters, exactly as written (migrations)."""
        try:
            self.raw.execute(sql.encode())
        except psycopg.Error as exc:
            raise _translate_error(exc) from exc

    def close(self) -> None:
        self.raw.close()


def connect(url: str, *, synchronous: str = "full", readonly: bool = False) -> PgConnection:
    """Open one connection. ``synchronous`` "full" waits for the WAL flush at commit
    (``synchronous_commit = on``); "normal" does not (``off``: a crash of the machine
    may lose the last commits, never corrupt). ``readonly`` connections refuse writes."""
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
    except psycopg.Error as exc:
        raise _translate_error(exc) from exc
    raw.prepared_max = 512  # the storage layer has a few hundred distinct statements
    raw.adapters.register_dumper(bool, _BoolAsInt)
    raw.adapters.register_loader("numeric", _NumericAsNumber)
    conn = PgConnection(raw)
    conn.execute(f"SET synchronous_commit = {'on' if synchronous == 'full' else 'off'}")
    if readonly:
        conn.execute("SET default_transaction_read_only = on")
    return conn


def as_sqlite(conn: PgConnection) -> sqlite3.Connection:
    """``conn`` typed as what the storage functions are annotated with."""
    return conn  # type: ignore[return-value]
