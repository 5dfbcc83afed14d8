"""Audiences that follow a model (mirror): who is tracked, who left, and the guards before anyone is removed.

Shared by every object type whose mode ``mirror`` removes people who left the model (subscriptions today):
a model that came back empty, or lost more than ``max_removals`` of its members, stops the run before any
request goes out, because a removal cannot be undone by a later run (an unsubscribe texts the person).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from airflow_provider_attentive.sync.errors import SyncAborted
from airflow_provider_attentive.sync.object_type import Run

__all__ = ["MirrorGuard", "scan_member_keys"]


class MirrorGuard:
    """The removal guards of one mirror run.

    :param run: the run (its options carry ``max_removals`` and ``allow_empty_source``).
    :param verb: what a removal does to a person, for the messages ("unsubscribe").
    """

    def __init__(self, run: Run, *, verb: str) -> None:
        self.run = run
        self.verb = verb

    def limit(self, tracked: int) -> int:
        """The most removals allowed out of ``tracked`` members."""
        cap = self.run.options.max_removals
        if isinstance(cap, float):
            return math.floor(cap * tracked + 1e-9)
        return int(cap)

    def check(self, tracked: int, removals: int, rows_read: int) -> None:
        """Raise :class:`SyncAborted` (recording ``blocked_removals``) when the removals must not go out."""
        if removals == 0:
            return
        options = self.run.options
        limit = self.limit(tracked)
        if rows_read == 0 and not options.allow_empty_source:
            self.run.summary.extra["blocked_removals"] = removals
            # Both guards stand in the way of emptying an audience: name both, or the next run fails on the other.
            advice = "set allow_empty_source=True"
            if removals > limit:
                advice += (
                    f" and max_removals=1.0 (or {removals}) together: removing all of them is also above "
                    f"max_removals={options.max_removals!r} (limit {limit})"
                )
            raise SyncAborted(
                f"the model returned no rows; mirroring it would {self.verb} all {removals} member(s) this sync "
                f"added. Nothing was sent. If the audience really is empty now, {advice}."
            )
        if removals > limit:
            self.run.summary.extra["blocked_removals"] = removals
            intended = "raise max_removals"
            if rows_read == 0:
                intended = f"set max_removals=1.0 (or {removals}) to empty the audience"
            raise SyncAborted(
                f"mirror would {self.verb} {removals} of {tracked} tracked member(s), above max_removals="
                f"{options.max_removals!r} (limit {limit}). Nothing was sent. Check the model; run with "
                f"dry_run=True to list who would be removed; if the removals are intended, {intended}."
            )

    def check_before_sending(self, members: set[str], column: str, key_from_value: Callable[[Any], str | None]) -> None:
        """Read the model's key column once, without sending, and apply the guards.

        A live mirror does this first so that a model that lost most of its rows stops the run before any
        request goes out, in either direction.
        """
        seen = scan_member_keys(self.run, column, key_from_value, members)
        self.check(len(members), len(members - seen), self.run.summary.rows_read)
        self.run.summary.rows_read = 0  # the stream that follows counts the model's rows


def scan_member_keys(run: Run, column: str, key_from_value: Callable[[Any], str | None], members: set[str]) -> set[str]:
    """Read only the key column of the model and return the members still in it (counting rows read)."""
    seen: set[str] = set()
    # Only the key column: the guards need nothing else, and a columnar warehouse bills by columns read.
    for _, rows in run.source.stream(column):
        run.summary.rows_read += len(rows)
        for (value,) in rows:
            key = key_from_value(value)
            if key is not None and key in members:
                seen.add(key)
        run.progress()  # also keeps the lock alive through a long scan
    return seen
