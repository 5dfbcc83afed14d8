"""Property: whatever a driver hands back, every row of a run is accounted for and the run never raises for it.

The warehouse holds plain rows; a converter (the hook's per-chunk row conversion, the place a driver's values
enter the engine) swaps in generated keys and values, including what SQLite could never store: lone surrogates,
NUL characters, signalling NaNs, integers too long to print, objects whose repr raises.
"""

from __future__ import annotations

import decimal
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_attentive.client import AttentiveTransport
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.source import SqlSource
from tests.helpers.crash import assert_accounted
from tests.helpers.engine import sync_engine
from tests.helpers.objects import attributes, events
from tests.helpers.phones import phone

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class _Opaque:
    """A driver type the engine has never seen, whose text cannot even be asked for."""

    def __repr__(self) -> str:
        raise RuntimeError("unprintable")

    __str__ = __repr__


any_text = st.text(st.characters(codec=None), max_size=30) | st.just("a\x00b") | st.just("\udc80")
numbers = (
    st.integers()
    | st.just(10**5000)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.just(decimal.Decimal("sNaN"))
    | st.just(decimal.Decimal("1E+5000"))
    | st.floats()
)
hostile = st.none() | any_text | numbers | st.binary(max_size=8) | st.booleans() | st.just(_Opaque()) | st.dates()
phones = st.integers(0, 9_999).map(phone) | hostile


def _rows(n: int) -> st.SearchStrategy[list[tuple[Any, Any, Any, Any]]]:
    row = st.tuples(st.integers(0, 30) | hostile, phones, hostile, hostile)
    return st.lists(row, min_size=1, max_size=n)


@SETTINGS
@given(generated=_rows(25), kind=st.sampled_from(["attributes", "events"]))
def test_every_row_is_accounted_for_and_no_row_stops_the_run(
    transport: AttentiveTransport, attentive_emulator: Emulator, generated: list[tuple[Any, ...]], kind: str
) -> None:
    def swap(chunk: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        return [generated[int(row[0])] for row in chunk]

    class GeneratedSource(SqlSource):
        def __init__(self, conn: Any, sql: str, *, chunk_size: int = 1000) -> None:
            super().__init__(conn, sql, chunk_size=chunk_size, convert=swap)

    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "w.db")
        conn.execute("CREATE TABLE t (k INTEGER, phone TEXT, a TEXT, b TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, '', '', '')", [(i,) for i in range(len(generated))])
        conn.commit()
        if kind == "attributes":
            obj: Any = attributes(
                primary_key="k", mapping={"k": "client_user_id", "phone": "phone", "a": "a", "b": "b"}
            )
        else:
            obj = events(primary_key="k", mapping={"phone": "phone", "a": "properties.a", "b": "timestamp"})
        for _ in range(2):  # the second run reads the state the first one wrote
            summary = sync_engine(
                obj,
                conn,
                "SELECT k, phone, a, b FROM t",
                sender=transport,
                source_type=GeneratedSource,
                check_primary_key=False,
                max_failed_ratio=1.0,
            ).run()
            assert summary["rows_read"] == len(generated)
            assert_accounted(summary)
        conn.close()
