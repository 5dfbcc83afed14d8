"""Reading Attentive's subscription answers: what a subscribe created, and whether someone is subscribed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_attentive.sync.errors import SyncConfigStop
from airflow_provider_attentive.sync.object_type import Answer, Planned

if TYPE_CHECKING:
    from airflow_provider_attentive.client import Result
    from airflow_provider_attentive.sync.objects.subscriptions.phases import SubscriptionPhases
    from airflow_provider_attentive.sync.objects.subscriptions.type import SubscriptionsType

__all__ = ["is_subscribed", "previously_created", "read_subscription_answer", "subscription_types"]


def read_subscription_answer(
    obj: SubscriptionsType, item: Planned, result: Result, phases: SubscriptionPhases
) -> Answer:
    """What an accepted subscribe or unsubscribe means for the member."""
    answer = Answer(member="unsubscribed" if item.op == "removed" else "subscribed")
    if item.op != "added":
        return answer
    created = subscription_types(result.body)
    if created and obj.subscription_type not in created:
        # The sign-up unit decides the type of what it creates; unsubscribes and the in-doubt check name
        # subscription_type, which would then miss these subscriptions entirely.
        answer.stop = SyncConfigStop(
            f"sign-up unit {obj.sign_up_source_id!r} creates {sorted(created)} subscriptions but "
            f"subscription_type is {obj.subscription_type!r}: set subscription_type to match, or unsubscribes and "
            "in-doubt checks would name the wrong subscription. The subscribes already accepted are recorded."
        )
    if previously_created(result.body):
        obj.run.summary.extra["already_subscribed"] += 1
        answer.message = "already subscribed (PREVIOUSLY_CREATED)"
        # Subscribed by someone else (another sync, a sign-up form): this sync did not add them, so a mirror
        # never unsubscribes them when they leave its model.
        answer.member = "preexisting"
    if item.prepared and item.prepared.names:
        phases.queue_names(item.key, item.prepared, item.attempt_hash)
        answer.confirm = False
    return answer


def subscription_types(body: Any) -> set[str]:
    """The subscription types a subscribe answer says were created or found."""
    responses = body.get("subscriptionResponses") if isinstance(body, dict) else None
    if not isinstance(responses, list):
        return set()
    return {
        str(r["subscription"]["type"])
        for r in responses
        if isinstance(r, dict) and isinstance(r.get("subscription"), dict) and r["subscription"].get("type")
    }


def previously_created(body: Any) -> bool:
    """True when every subscription in a 202 answer already existed."""
    if not isinstance(body, dict):
        return False
    responses = body.get("subscriptionResponses")
    if not isinstance(responses, list) or not responses:
        return False
    return all(isinstance(r, dict) and r.get("subscriptionCreationStatus") == "PREVIOUSLY_CREATED" for r in responses)


def is_subscribed(body: Any, subscription_type: str) -> bool:
    """Whether an eligibility answer (``GET /v1/subscriptions``) shows a TEXT subscription of that type."""
    if not isinstance(body, dict):
        return False
    for item in body.get("subscriptionEligibilities") or []:
        sub = item.get("subscription") or {}
        if sub.get("type") == subscription_type and sub.get("channel") == "TEXT":
            return bool((item.get("eligibility") or {}).get("isEligible"))
    return False
