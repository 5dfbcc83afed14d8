"""Reading the model: stream rows in chunks from any DB-API connection, and check its primary key first.

``fetchmany`` on a cursor keeps memory bounded whatever the model's size. PostgreSQL drivers buffer a whole
result client-side unless asked for a server-side (named) cursor, so we ask for one there.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from airflow_provider_attentive.sync.errors import SourceDataError, SyncConfigError
from airflow_provider_attentive.sync.values import mask_key

RowConverter = Callable[[Sequence[Any]], Sequence[Sequence[Any]]]
_cursor_names = itertools.count(1)


def _driver(conn: Any) -> str:
    return type(conn).__module__.split(".")[0].lower()


def quote_identifier(name: str, conn: Any) -> str:
    """Quote a column name for the source's dialect (MySQL uses backticks unless ANSI_QUOTES is on)."""
    if "mysql" in _driver(conn):
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def strip_sql(sql: str) -> str:
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise SyncConfigError("sql is empty")
    return text


class SqlSource:
    """A SQL model read through a DB-API connection.

    :param conn: open DB-API connection to the warehouse.
    :param sql: one SELECT statement (templated by Airflow before it gets here).
    :param parameters: bind parameters for ``sql``.
    :param chunk_size: rows per ``fetchmany``.
    :param convert: optional per-chunk row converter (``DbApiHook._make_common_data_structure``) for drivers
        whose rows are not plain tuples.
    """

    def __init__(
        self,
        conn: Any,
        sql: str,
        parameters: Sequence[Any] | dict[str, Any] | None = None,
        *,
        chunk_size: int = 1000,
        convert: RowConverter | None = None,
    ) -> None:
        self.conn = conn
        self.sql = strip_sql(sql)
        self.parameters = parameters
        self.chunk_size = max(1, int(chunk_size))
        self.convert = convert

    def _execute(self, cur: Any, sql: str) -> None:
        if self.parameters is None:
            cur.execute(sql)
        else:
            cur.execute(sql, self.parameters)

    def _cursor(self) -> Any:
        if _driver(self.conn) in ("psycopg2", "psycopg"):
            # Named cursors stream from the server; without one the driver loads the whole result in memory.
            # WITH HOLD: the state store may share this connection and commits between chunks, and a commit
            # closes a plain server-side cursor ("named cursor isn't valid anymore").
            cur = self.conn.cursor(name=f"attentive_stream_{next(_cursor_names)}", withhold=True)
            cur.itersize = self.chunk_size
            return cur
        return self.conn.cursor()

    def stream(self, column: str | None = None) -> Iterator[tuple[list[str], list[Sequence[Any]]]]:
        """Yield ``(columns, rows)`` chunks; the first chunk may be empty when the model is empty.

        :param column: read only this column of the model (``SELECT column FROM (sql)``): a columnar warehouse
            then scans one column instead of all of them.
        """
        sql = self.sql
        if column is not None:
            sql = f"SELECT {quote_identifier(column, self.conn)} FROM ({self.sql}) attentive_src"
        cur = self._cursor()
        try:
            self._execute(cur, sql)
            first = True
            while True:
                rows = cur.fetchmany(self.chunk_size)
                if self.convert is not None and rows:
                    rows = list(self.convert(rows))
                columns = _columns(cur)
                if rows or first:
                    yield columns, list(rows)
                first = False
                if not rows:
                    break
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def columns(self) -> list[str]:
        """The model's column names, without reading its rows."""
        cur = self.conn.cursor()
        try:
            self._execute(cur, f"SELECT * FROM ({self.sql}) attentive_src WHERE 1 = 0")
            cur.fetchall()
            return _columns(cur)
        finally:
            cur.close()

    def check_primary_key(self, column: str, *, sample: int = 5) -> None:
        """Fail before anything is sent when the key column has NULLs or duplicates (checked in the warehouse).

        One query finds both: GROUP BY puts every NULL key in one group, sorted first.
        """
        col = quote_identifier(column, self.conn)
        check = (
            f"SELECT {col}, COUNT(*) FROM ({self.sql}) attentive_src GROUP BY {col} "
            f"HAVING COUNT(*) > 1 OR {col} IS NULL ORDER BY CASE WHEN {col} IS NULL THEN 0 ELSE 1 END"
        )
        cur = self.conn.cursor()
        try:
            try:
                self._execute(cur, check)
                found = cur.fetchmany(sample + 1)
                more = cur.fetchmany(1000)
            except Exception as exc:
                _rollback(self.conn)
                raise SyncConfigError(
                    "could not check the primary key: the sql must be a single SELECT that can be used as a "
                    f"subquery ({type(exc).__name__}: {str(exc)[:300]})"
                ) from exc
        finally:
            cur.close()
        nulls = sum(int(r[1] or 0) for r in found if r[0] is None)
        dupes = [r for r in found if r[0] is not None][:sample]
        problems = []
        if nulls:
            problems.append(f"{nulls} row(s) have a NULL {column}")
        if dupes:
            shown = ", ".join(f"{_show(r[0])} ({r[1]} rows)" for r in dupes)
            total = len(found) - (1 if nulls else 0) + len(more)
            problems.append(f"{total}{'+' if len(more) == 1000 else ''} duplicate {column} value(s), e.g. {shown}")
        if problems:
            raise SourceDataError(
                f"primary key {column!r} must be unique and non-null; nothing was sent: " + "; ".join(problems)
            )


def _show(value: Any) -> str:
    return repr(mask_key(str(value)))


def _columns(cur: Any) -> list[str]:
    if not cur.description:
        return []
    return [d[0] if isinstance(d[0], str) else str(d[0]) for d in cur.description]


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.rollback()
