"""The model's SQL text: terminators dropped, comments and literals kept, a second statement refused."""

from __future__ import annotations

import pytest

from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.sql_text import strip_sql


@pytest.mark.parametrize(
    ("sql", "kept"),
    [
        ("SELECT a FROM t;\n-- end of model\n", "SELECT a FROM t\n-- end of model"),
        ("SELECT a FROM t; -- end; /* x */", "SELECT a FROM t -- end; /* x */"),
        ("SELECT a FROM t ; /* one */ ; -- two", "SELECT a FROM t /* one */ -- two"),
        ("SELECT '--;' AS a FROM t", "SELECT '--;' AS a FROM t"),
        ('SELECT "x--;" FROM t;', 'SELECT "x--;" FROM t'),
        ("SELECT $$ -- ; $$ AS a;", "SELECT $$ -- ; $$ AS a"),
        # Read with backslash escapes (MySQL) the string runs to the last quote: the trailing ; is dropped.
        ("SELECT 'a\\' -- ' ;", "SELECT 'a\\' -- '"),
    ],
)
def test_strip_sql_drops_terminators_but_keeps_strings_and_comments(sql: str, kept: str) -> None:
    assert strip_sql(sql) == kept


@pytest.mark.parametrize("sql", ["", " ;; ", "-- nothing here\n", "/* nor here */ ;"])
def test_a_model_of_only_comments_and_semicolons_is_empty(sql: str) -> None:
    with pytest.raises(SyncConfigError, match="sql is empty"):
        strip_sql(sql)


@pytest.mark.parametrize(
    ("sql", "second"),
    [
        ("SELECT 1; SELECT 2", "'SELECT 2'"),
        ("SELECT id FROM t;\n-- clean up\nDELETE FROM t;", "'DELETE FROM t'"),
        ("SELECT id FROM t; /* c */ ;\n  UPDATE t\n  SET x = 1", "'UPDATE t SET x = 1'"),
        (
            "SELECT 1; DELETE FROM members WHERE member_id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)",
            "'DELETE FROM members WHERE member_id IN (1, 2, 3, 4, 5, 6,...'",
        ),
    ],
)
def test_a_second_statement_is_refused_showing_its_start(sql: str, second: str) -> None:
    with pytest.raises(SyncConfigError) as info:
        strip_sql(sql)
    assert str(info.value) == f"the sql must be one SELECT statement, but a second statement follows a ';': {second}"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'a; DELETE FROM t' AS note FROM t",
        "SELECT 'it''s; DELETE FROM t' AS note FROM t",
        "SELECT 'it\\'s; DELETE FROM t' AS note FROM t",  # MySQL's backslash escape
        'SELECT "a; DELETE FROM t" FROM t',
        "SELECT `a; DELETE FROM t` FROM t",
        "SELECT $body$ ; DELETE FROM t $body$ AS note",
        "SELECT id FROM t -- ; DELETE FROM t",
        "SELECT id FROM t /* ; DELETE FROM t */",
        "SELECT id FROM t; -- ; DELETE FROM t\n/* ; DELETE FROM t */;",
    ],
)
def test_a_semicolon_inside_a_string_or_comment_is_not_a_second_statement(sql: str) -> None:
    assert strip_sql(sql).startswith("SELECT ")


@pytest.mark.parametrize(
    ("sql", "kept"),
    [
        # PostgreSQL reads 'C:\' as a whole string, MySQL reads on past the backslash: the first ; is not
        # certainly a terminator, so the model goes to the database as it is, less its final ;.
        ("SELECT 'C:\\', 'x;y' FROM t;", "SELECT 'C:\\', 'x;y' FROM t"),
        ("SELECT 'unclosed; DELETE FROM t ;", "SELECT 'unclosed; DELETE FROM t"),
        ("SELECT 1 /* unclosed; DELETE FROM t", "SELECT 1 /* unclosed; DELETE FROM t"),
    ],
)
def test_quoting_that_cannot_be_read_leaves_the_statements_to_the_database(sql: str, kept: str) -> None:
    assert strip_sql(sql) == kept
