"""Reading the model: stream rows in chunks from any DB-API connection, and check its primary key first.

``fetchmany`` on a cursor keeps memory bounded whatever the model's size. PostgreSQL drivers buffer a whole
result client-side unless asked for a server-side (named) cursor, so we ask for one there.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from airflow_provider_attentive.sync.errors import SourceDataError, SyncConfigError, WarehouseReadError
from airflow_provider_attentive.sync.sql_text import strip_sql
from airflow_provider_attentive.sync.values import mask_key

__all__ = ["RowConverter", "SqlSource", "database_error", "is_database_error", "quote_identifier"]

RowConverter = Callable[[Sequence[Any]], Sequence[Sequence[Any]]]
_cursor_names = itertools.count(1)


def _driver(conn: Any) -> str:
    return type(conn).__module__.split(".")[0].lower()


def quote_identifier(name: str, conn: Any) -> str:
    """Quote a column name for the source's dialect (MySQL uses backticks unless ANSI_QUOTES is on)."""
    if "mysql" in _driver(conn):
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


class SqlSource:
    """A SQL model read through a DB-API connection.

    :param conn: open DB-API connection to the warehouse.
    :param sql: one SELECT statement (templated by Airflow before it gets here); a second one is refused
        (:func:`~airflow_provider_attentive.sync.sql_text.strip_sql`).
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
        if _server_side(self.conn):
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
            sql = f"SELECT {quote_identifier(column, self.conn)} FROM {self._subquery()}"
        cur = self._cursor()
        read = 0
        try:
            first = True
            while True:
                try:
                    if first:
                        self._execute(cur, sql)
                    rows = cur.fetchmany(self.chunk_size)
                    if self.convert is not None and rows:
                        rows = list(self.convert(rows))
                except Exception as exc:
                    raise _read_error(exc, read, self.chunk_size) from None
                columns = _columns(cur)
                read += len(rows)
                if rows or first:
                    yield columns, list(rows)
                first = False
                if not rows:
                    break
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def _subquery(self) -> str:
        # Newlines around the model: a trailing ``-- comment`` would otherwise swallow the closing parenthesis.
        return f"(\n{self.sql}\n) attentive_src"

    def columns(self) -> list[str]:
        """The model's column names, without reading its rows.

        This is the model's first run, so a model that cannot run at all (a misspelt table, a syntax error) is
        reported here as :class:`SyncConfigError`: retrying the task would not fix it.
        """
        cur = self.conn.cursor()
        try:
            try:
                self._execute(cur, f"SELECT * FROM {self._subquery()} WHERE 1 = 0")
                cur.fetchall()
            except Exception as exc:
                raise self._model_error("could not run the model", exc) from exc
            return _columns(cur)
        finally:
            cur.close()

    def count_rows(self) -> int:
        """How many rows the model has (one ``COUNT(*)`` in the warehouse, no row read)."""
        cur = self.conn.cursor()
        try:
            try:
                self._execute(cur, f"SELECT COUNT(*) FROM {self._subquery()}")
                row = cur.fetchone()
            except Exception as exc:
                raise self._model_error("could not count the model's rows", exc) from exc
            return int(row[0]) if row else 0
        finally:
            cur.close()

    def check_primary_key(self, column: str, *, sample: int = 5) -> None:
        """Fail before anything is sent when the key column has NULLs or duplicates (checked in the warehouse).

        One query finds both: GROUP BY puts every NULL key in one group, sorted first.
        """
        col = quote_identifier(column, self.conn)
        check = (
            f"SELECT {col}, COUNT(*) FROM {self._subquery()} GROUP BY {col} "
            f"HAVING COUNT(*) > 1 OR {col} IS NULL ORDER BY CASE WHEN {col} IS NULL THEN 0 ELSE 1 END"
        )
        cur = self.conn.cursor()
        try:
            try:
                self._execute(cur, check)
                found = cur.fetchmany(sample + 1)
                more = cur.fetchmany(1000)
            except Exception as exc:
                raise self._model_error("could not check the primary key", exc) from exc
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

    def _model_error(self, doing: str, wrapped: Exception) -> SyncConfigError:
        """The configuration error for a wrapped model that failed, blaming the model's own text when it can.

        The error of the wrapper points past the model (a typo in ``SELEC a FROM t`` is reported near the
        wrapper's ``FROM``), so the model is run once more as written: when it fails alone, that error names
        the right word; only a model that runs alone but not wrapped is told about subqueries.
        """
        _rollback(self.conn)  # PostgreSQL refuses every statement after an error until the rollback
        alone = self._run_alone()
        if alone is not None:
            return SyncConfigError(f"{doing}: the database rejects the sql ({_describe(alone)})")
        return SyncConfigError(
            f"{doing}: the sql runs alone but not as a subquery, which the sync wraps it in; it must be a single "
            f"SELECT that can be used as a subquery ({_describe(wrapped)})"
        )

    def _run_alone(self) -> Exception | None:
        """Run the model as written without fetching a row: its error, or None when it runs.

        On PostgreSQL a server-side cursor only declares the query, so nothing is computed or sent; other
        drivers start the query, which costs one more run only when the model runs alone but fails wrapped.
        """
        server_side = _server_side(self.conn)
        try:
            cur = self.conn.cursor(name=f"attentive_probe_{next(_cursor_names)}") if server_side else self.conn.cursor()
        except Exception as exc:
            return exc
        try:
            self._execute(cur, self.sql)
        except Exception as exc:
            return exc
        finally:
            with contextlib.suppress(Exception):
                cur.close()
            _rollback(self.conn)
        return None


def _server_side(conn: Any) -> bool:
    """Whether the driver takes named (server-side) cursors: the PostgreSQL ones."""
    return _driver(conn) in ("psycopg2", "psycopg")


def _describe(exc: Exception) -> str:
    # The driver's message quotes the sql, never a row: no row is fetched before an error is described.
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _show(value: Any) -> str:
    return repr(mask_key(str(value)))


def _columns(cur: Any) -> list[str]:
    if not cur.description:
        return []
    return [d[0] if isinstance(d[0], str) else str(d[0]) for d in cur.description]


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.rollback()


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_LONG_NUMBER = re.compile(r"\+?\d[\d\s().-]{4,}\d")
_EMAIL = re.compile(r"[^\s@\"']+@[^\s@\"']+")


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a DB-API driver (every driver's errors derive from its ``DatabaseError``)."""
    return any(klass.__name__ in ("DatabaseError", "InterfaceError") for klass in type(exc).__mro__)


def database_error(exc: BaseException, where: str) -> SourceDataError | WarehouseReadError:
    """A driver error told without the values it may quote.

    Drivers put the offending value in their message (``invalid input syntax for type bigint: "+1415..."``):
    quoted text, long numbers and email addresses are blanked out, and the rows are named by position.
    """
    first_line = (str(exc).strip().splitlines() or [""])[0]
    shown = _EMAIL.sub("<email>", _LONG_NUMBER.sub("<number>", _QUOTED.sub('"..."', first_line)))[:200]
    column = getattr(getattr(exc, "diag", None), "column_name", None)
    where += f", column {column!r}" if column else ""
    names = {klass.__name__ for klass in type(exc).__mro__}
    if names & {"DataError", "IntegrityError", "ProgrammingError", "ValueError", "TypeError"}:
        # The data itself: a retry reads the same value and fails the same way.
        return SourceDataError(
            f"the database could not go on at {where} ({type(exc).__name__}: {shown}); values are not shown, as "
            "they may be personal data: run the model in the warehouse to see the row"
        )
    return WarehouseReadError(f"the database failed at {where} ({type(exc).__name__}: {shown})")


def _read_error(exc: Exception, read: int, chunk: int) -> SourceDataError | WarehouseReadError:
    return database_error(exc, f"rows {read + 1}-{read + chunk} of the model")
