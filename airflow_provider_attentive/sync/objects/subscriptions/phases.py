"""The subscriptions' own phases of a run: membership, mirror removals, in-doubt resolution, pre-checks, names.

Attentive texts a person every time they are subscribed again or unsubscribed, so everything here serves one
rule: only real membership changes are sent, each once, and a mirror only ever unsubscribes people it added.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_attentive.client import EndpointName, Request
from airflow_provider_attentive.sync.audience import MirrorGuard
from airflow_provider_attentive.sync.errors import SyncAborted
from airflow_provider_attentive.sync.object_type import Batch, Planned, Prepared, Run, key_text
from airflow_provider_attentive.sync.objects.subscriptions.answers import is_subscribed
from airflow_provider_attentive.sync.state import KNOWN_MEMBERS, KNOWN_STATUSES, RowOutcome, StateRow
from airflow_provider_attentive.sync.values import mask_key

if TYPE_CHECKING:
    from airflow_provider_attentive.sync.objects.subscriptions.type import SubscriptionsType

__all__ = ["SubscriptionPhases"]


class SubscriptionPhases:
    """Per-run state and phases of a subscriptions sync (created by ``SubscriptionsType.bind``)."""

    def __init__(self, obj: SubscriptionsType, run: Run) -> None:
        self.obj = obj
        self.run = run
        self.guard = MirrorGuard(run, verb="unsubscribe")
        self.members: set[str] | None = None  # mirror: the people this sync subscribed
        self.seen: set[str] = set()  # mirror: members still in the model
        self.unreadable_pks: set[str] = set()
        self.model_emails: set[str] = set()  # mirror: an email still in the model keeps its EMAIL subscription
        # Before subscribing, ask whether the person already is (needs subscriptions:read): a repeated subscribe
        # makes Attentive text them "you are already subscribed". Off for the run at the first 403.
        self.precheck = True
        self.followups: list[tuple[Request, str]] = []  # name attributes to write, with the hash they confirm

    # ---------------------------------------------------------------------------------------- phases ----

    def before_rows(self) -> None:
        self.resolve_in_doubt()
        if self.obj.mode != "mirror":
            return
        self.members = set(self.run.state.iter_members(self.run.options.sync_id)) if self.run.state_ready else set()
        if self.members and not self.run.options.dry_run:
            column = self.obj.columns[self.obj.key_index]
            self.guard.check_before_sending(self.members, column, self.obj.key_from_value)

    def after_rows(self) -> None:
        if self.members is not None and not self.run.halted:
            self.mirror_removals(self.members, self.seen)
        if not self.run.halted:
            self.resolve_in_doubt()
            self.send_followups()

    # -------------------------------------------------------------------------------------- per row ----

    def observe(self, key: str, row: Sequence[Any]) -> None:
        if self.members is None:
            return
        if key in self.members:
            self.seen.add(key)
        if self.members and (email := self.obj.email_of(row)):
            self.model_emails.add(email)

    def observe_unkeyed(self, row: Sequence[Any]) -> None:
        pk = row[self.obj.pk_index]
        if self.members is not None and pk is not None:
            # Still in the model, with a phone we cannot read this run (a typo): its member, if any, must not be
            # unsubscribed as "left the model".
            self.unreadable_pks.add(key_text(pk))

    def classify(
        self, key: str, row: Sequence[Any], state: StateRow | None, status: str | None, row_hash: str
    ) -> str | None:
        remove = self.obj.mode == "remove"
        target = "unsubscribed" if remove else "subscribed"
        # ``member`` only changes on a confirmed success, and a failed or rejected request changed nothing, so the
        # person is still a member as recorded. (Someone whose unsubscribe failed and who came back into the model
        # is still subscribed: subscribing them again would text them.)
        done = (target, "preexisting") if target == "subscribed" else (target,)
        if state is not None and state.member in done and status in ("ok", "failed", "rejected"):
            if status == "ok" and target == "subscribed" and self.obj.writes_names and state.row_hash != row_hash:
                # Subscribed, but the names of this row were never written (a stop or a crash came first) or
                # have changed: write them, without subscribing again.
                prepared = self.obj.prepare(row, key)
                if isinstance(prepared, Prepared) and prepared.names:
                    self.queue_names(key, prepared, row_hash)
            return None
        return "removed" if remove else "added"

    # ------------------------------------------------------------------------------ before a subscribe ----

    def skip_already_subscribed(self, items: list[Planned]) -> list[Planned]:
        """Record, without a subscribe, the people of ``items`` that Attentive says are already subscribed."""
        adds = [item for item in items if item.op == "added" and item.prepared and item.prepared.identity]
        if not self.precheck or not adds:
            return items
        checks = [Request(key=i.key, params={"phone": i.prepared.identity["phone"]}) for i in adds if i.prepared]
        already: set[str] = set()
        run = self.run
        for result in run.sender.send_many(EndpointName.SUBSCRIPTIONS_READ, checks):
            if result.status == 403:
                self.precheck = False
                run.log.info("the key lacks subscriptions:read: subscribes are sent without checking first")
            elif result.ok and is_subscribed(result.body, self.obj.subscription_type):
                already.add(str(result.key))
        if not already:
            return items
        outcomes = []
        for item in items:
            if item.key not in already:
                continue
            run.summary.succeeded["added"] += 1
            run.summary.extra["already_subscribed"] += 1
            confirm = True
            if item.prepared and item.prepared.names:
                self.queue_names(item.key, item.prepared, item.attempt_hash)
                confirm = False
            outcomes.append(
                RowOutcome(
                    pk=item.key,
                    op="added",
                    status="ok",
                    attempt_hash=item.attempt_hash,
                    message="already subscribed (GET /v1/subscriptions): not subscribed again",
                    member="preexisting",
                    log_key=mask_key(item.key),
                    confirm=confirm,
                )
            )
        run.write_outcomes(outcomes)
        return [item for item in items if item.key not in already]

    # ------------------------------------------------------------------------------------------ names ----

    def queue_names(self, key: str, prepared: Prepared, row_hash: str) -> None:
        body = {"properties": prepared.names, "user": {"phone": prepared.identity["phone"]}}
        self.followups.append((Request(key=key, body=body), row_hash))

    def send_followups(self) -> None:
        """First and last names of subscribers, as custom attributes (after a successful subscribe).

        A row counts as complete (its hash confirmed) only once its names are written, so names lost to a stop
        or a crash before this point are written by the next run.
        """
        run = self.run
        if not self.followups or run.options.dry_run:
            self.followups = []
            return
        hashes = {str(request.key): row_hash for request, row_hash in self.followups}
        written: list[tuple[str, str]] = []
        failed = 0
        for result in run.sender.send_many(EndpointName.ATTRIBUTES, [request for request, _ in self.followups]):
            if result.ok:
                written.append((str(result.key), hashes[str(result.key)]))
            else:
                failed += 1
                run.summary.error(mask_key(str(result.key)), f"name attributes not written: {result.error}")
        run.state.confirm_hashes(run.options.sync_id, written)
        run.summary.extra["names_written"] = len(written)
        if failed:
            run.log.warning("%d subscriber name update(s) failed; retried next run", failed)
        self.followups = []

    # ---------------------------------------------------------------------------------------- in doubt ----

    def resolve_in_doubt(self) -> None:
        """Ask Attentive (``GET /v1/subscriptions``) whether in-doubt subscribes/unsubscribes landed."""
        run = self.run
        if run.options.dry_run:
            return
        run.flush(force=True)
        rows = [r for r in run.state.rows_with_status(run.options.sync_id, ["in_doubt"]) if r.identity]
        if not rows:
            return
        by_key = {r.pk: r for r in rows}
        requests = []
        for r in rows:
            identity = self._identity(r)
            if identity is None:
                run.summary.error(
                    mask_key(r.pk), f"in doubt, and its identity in {run.state.state_table} is not readable JSON"
                )
                continue
            requests.append(Request(key=r.pk, params={"phone": identity["phone"]}))
        settled: list[RowOutcome] = []
        unresolved = 0
        for result in run.sender.send_many(EndpointName.SUBSCRIPTIONS_READ, requests):
            row = by_key[str(result.key)]
            if not result.ok:
                unresolved += 1
                if result.status == 403:
                    run.log.warning(
                        "cannot resolve in-doubt subscriptions: the API key lacks subscriptions:read; "
                        "they stay in doubt (resend_in_doubt=True sends them again)"
                    )
                continue
            subscribed = is_subscribed(result.body, self.obj.subscription_type)
            landed = subscribed if row.op == "added" else not subscribed
            if landed:
                settled.append(
                    RowOutcome(
                        pk=row.pk,
                        op=row.op or "",
                        status="ok",
                        attempt_hash=row.attempt_hash,
                        message="in doubt, confirmed by GET /v1/subscriptions",
                        member="subscribed" if row.op == "added" else "unsubscribed",
                        log_key=mask_key(row.pk),
                        # Names of a subscriber who landed are written by the next run that reads its row.
                        confirm=not self.obj.writes_names,
                    )
                )
            else:
                settled.append(
                    RowOutcome(
                        pk=row.pk,
                        op=row.op or "",
                        status="failed",
                        message="in doubt, had not landed per GET /v1/subscriptions; will resend",
                        log_key=mask_key(row.pk),
                    )
                )
        if settled:
            run.write_outcomes(settled)
            run.log.info(
                "resolved %d in-doubt subscription change(s) with GET /v1/subscriptions; %d still in doubt",
                len(settled),
                unresolved,
            )

    # ----------------------------------------------------------------------------------------- mirror ----

    def mirror_removals(self, members: set[str], seen: set[str]) -> None:
        """Unsubscribe the members this sync added who left the model, behind the guards."""
        leaving = sorted(members - seen)
        if not leaving:
            return
        run = self.run
        try:
            self.guard.check(len(members), len(leaving), run.summary.rows_read)
        except SyncAborted as exc:
            if not run.options.dry_run:
                raise
            # Go on listing who would be removed: that list is what the guard's message asks the user to check.
            run.log.warning("a live run would stop here: %s", exc)
        run.dispatch(EndpointName.UNSUBSCRIBE, self._removals(leaving))

    @staticmethod
    def _identity(st: StateRow) -> dict[str, Any] | None:
        """The identifiers kept with a membership, or None when the column is damaged."""
        try:
            identity = json.loads(st.identity or "")
        except ValueError:
            return None
        if not isinstance(identity, dict) or not isinstance(identity.get("phone"), str):
            return None
        return identity

    def _removals(self, leaving: list[str]) -> Iterator[Batch]:
        run = self.run
        options = run.options
        for start in range(0, len(leaving), options.batch_size):
            keys = leaving[start : start + options.batch_size]
            rows = run.state.lookup(options.sync_id, keys) if run.state_ready else {}
            items = []
            for key in keys:
                st = rows.get(key)
                if st is None or not st.identity:
                    continue
                if st.status == "in_doubt" and not options.resend_in_doubt:
                    run.summary.in_doubt += 1
                    continue
                identity = self._identity(st)
                problem = None
                if st.status not in KNOWN_STATUSES or st.member not in KNOWN_MEMBERS:
                    problem = "its state row has a status or membership this version never writes"
                elif identity is None:
                    problem = "its state row's identity column is not readable JSON"
                if problem or identity is None:
                    # Unsubscribing on a guess cannot be undone: hold, and say where to look.
                    run.summary.held_unknown_state += 1
                    run.summary.error(
                        mask_key(key), f"not unsubscribed: {problem}; fix or delete it in {run.state.state_table}"
                    )
                    continue
                if identity.get("pk") in self.unreadable_pks:
                    run.summary.extra["held_removals"] += 1
                    run.summary.error(
                        mask_key(key), "not unsubscribed: its row is still in the model, with an unreadable phone"
                    )
                    continue
                run.summary.planned["removed"] += 1
                body = self.obj.unsubscribe_body(
                    identity, email=str(identity.get("email", "")).lower() not in self.model_emails
                )
                run.sample(body, key, "removed")
                items.append(Planned(key, "removed", st.attempt_hash or "", None, body))
            yield Batch(items, set(rows))
