"""The model's SQL text: one statement, its terminators removed so that it can be wrapped as a subquery.

The text is read with sqlparse's lexer, which knows string literals (with doubled quotes and backslash
escapes), quoted names, dollar quotes and comments, so a ``;`` or ``--`` inside any of them is left alone.
Only the lexer is used: sqlparse's grouping refuses statements of more than 10,000 tokens, which a generated
model (a long ``IN`` list) can reach, and its statement splitter keeps ``BEGIN ...;`` blocks together, while
in a model every ``;`` outside strings and comments ends a statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlparse import lexer
from sqlparse import tokens as T

from airflow_provider_attentive.sync.errors import SyncConfigError

__all__ = ["strip_sql"]

Token = tuple[Any, str]  # (sqlparse token type, text)
SHOWN_CHARS = 60
_QUOTES = frozenset("'\"`$")


def strip_sql(sql: str) -> str:
    """The model without the statement terminators that would break it as a subquery.

    A ``;`` is dropped even when comments follow it (``SELECT ...;`` then a ``-- end of model`` line). The
    comments themselves stay: they are harmless inside the newline-delimited wrappers and may tag the query in
    the warehouse's history.

    :raises SyncConfigError: the model is empty (only comments and terminators), or holds a second statement
        (``SELECT ...; DELETE FROM t``), refused before anything runs.
    """
    tokens: list[Token] = list(lexer.tokenize(sql))
    if _unclosed(tokens):
        # The text ends inside a string or comment, or the dialect reads a backslash differently (PostgreSQL's
        # 'C:\' is a whole string). Statement boundaries are then uncertain, so only terminators at the very
        # end are dropped and the database reports whatever else is wrong.
        text = sql.strip()
        while text.endswith(";"):
            text = text[:-1].rstrip()
        return text
    statements = [s for s in _statements(tokens) if any(_is_code(t) for t in s)]
    if not statements:
        raise SyncConfigError("sql is empty")
    if len(statements) > 1:
        raise SyncConfigError(
            f"the sql must be one SELECT statement, but a second statement follows a ';': {_start(statements[1])!r}"
        )
    kept: list[str] = []
    for token in tokens:
        if _is_terminator(token):
            while kept and kept[-1].isspace():
                kept.pop()  # "SELECT a FROM t ; -- end" keeps "SELECT a FROM t -- end"
        else:
            kept.append(token[1])
    return "".join(kept).strip()


def _unclosed(tokens: Sequence[Token]) -> bool:
    """A quote or a ``/*`` that sqlparse could not close (it then lexes the opener as loose characters)."""
    for i, (ttype, value) in enumerate(tokens):
        if ttype in T.Error and value in _QUOTES:
            return True
        if value == "/" and i + 1 < len(tokens) and tokens[i + 1][1].startswith("*"):
            return True
    return False


def _statements(tokens: Sequence[Token]) -> list[list[Token]]:
    """The tokens between terminators (comments stay with the statement they follow)."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if _is_terminator(token):
            statements.append([])
        else:
            statements[-1].append(token)
    return statements


def _is_terminator(token: Token) -> bool:
    return token[0] in T.Punctuation and token[1] == ";"


def _is_code(token: Token) -> bool:
    return not (token[0] in T.Whitespace or token[0] in T.Newline or token[0] in T.Comment)


def _start(statement: Sequence[Token]) -> str:
    """The start of a statement on one line, cut short: enough to recognise it in the model."""
    first = next(i for i, token in enumerate(statement) if _is_code(token))
    text = " ".join("".join(value for _, value in statement[first:]).split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
