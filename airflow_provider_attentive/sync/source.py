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
    """The model without the statement terminators that would break it as a subquery.

    A ``;`` is dropped even when comments follow it (``SELECT ...;`` then a ``-- end of model`` line). The
    comments themselves stay: they are harmless inside the newline-delimited wrappers and may tag the query in
    the warehouse's history.
    """
    text = sql.strip()
    while True:
        end = _code_end(text)
        if end == 0:
            raise SyncConfigError("sql is empty")
        if end is None:
            # Quoting we cannot read with certainty: only a terminator at the very end is safe to remove.
            if not text.endswith(";"):
                return text
            end = len(text)
        elif text[end - 1] != ";":
            return text
        text = (text[: end - 1].rstrip() + text[end:]).strip()


_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def _code_end(sql: str) -> int | None:
    """Index just past the last character of ``sql`` that is not whitespace or part of a comment.

    Standard SQL doubles a quote inside a string while MySQL (and PostgreSQL ``E''`` strings) also accept a
    backslash escape. The text is read both ways and an answer is trusted only when both agree, so that a ``--``
    or ``;`` inside a string literal is not taken for a comment or a terminator whatever the dialect. ``None``
    when the two disagree or the text ends inside a string or a comment.
    """
    ends = {_scan_code_end(sql, backslash_escapes=b) for b in (False, True)}
    return ends.pop() if len(ends) == 1 else None


def _scan_code_end(sql: str, *, backslash_escapes: bool) -> int | None:
    end = 0
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            if close < 0:
                return None
            i = close + 2
        elif ch in "'\"`":
            j = i + 1
            while j < n:
                if backslash_escapes and sql[j] == "\\":
                    j += 2
                elif sql[j] == ch:
                    if sql.startswith(ch, j + 1):  # a doubled quote stands for one quote
                        j += 2
                    else:
                        break
                else:
                    j += 1
            if j >= n:
                return None
            i = end = j + 1
        elif ch == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            tag = _DOLLAR_QUOTE.match(sql, i)
            if tag is None:
                i = end = i + 1
            else:
                close = sql.find(tag.group(), tag.end())
                if close < 0:
                    return None
                i = end = close + len(tag.group())
        else:
            if not ch.isspace():
                end = i + 1
            i += 1
    return end


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
            sql = f"SELECT {quote_identifier(column, self.conn)} FROM {self._subquery()}"
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
                _rollback(self.conn)
                raise SyncConfigError(
                    "could not run the model: the sql must be a single SELECT that can be used as a subquery "
                    f"({type(exc).__name__}: {str(exc)[:300]})"
                ) from exc
            return _columns(cur)
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
