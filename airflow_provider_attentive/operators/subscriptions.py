"""AttentiveSubscriptionsOperator: subscriber lists that follow a SQL model (Add / Remove / Mirror)."""

from __future__ import annotations

from typing import Any

from airflow_provider_attentive.operators.base import AttentiveSyncOperator
from airflow_provider_attentive.sync.objects import ObjectType, SubscriptionsType


class AttentiveSubscriptionsOperator(AttentiveSyncOperator):
    """Subscribe people who enter a model, unsubscribe people who leave it, and nobody twice.

    Attentive texts a person every time they are subscribed again or unsubscribed, so only real membership
    changes are sent, each once: ``add`` subscribes keys this sync has not subscribed yet; ``remove``
    unsubscribes keys in the model that it has not unsubscribed yet; ``mirror`` does both, and only ever
    unsubscribes people this sync subscribed.

    :param mode: ``"add"``, ``"remove"`` or ``"mirror"`` (required).
    :param sign_up_source_id: the API sign-up unit's id; or give ``locale`` with ``subscription_type``.
    :param locale: e.g. ``"en-US"``, used with ``subscription_type`` when there is no sign-up source id.
    :param subscription_type: ``"MARKETING"`` or ``"TRANSACTIONAL"``.
    :param single_opt_in: skip the "Reply Y" confirmation text (the legal message is still sent).
    :param notify_on_unsubscribe: let Attentive text an unsubscribe confirmation (off by default).
    :param max_removals: an ``int`` count or a ``float`` share of tracked members; above it the run fails
        and sends nothing.
    :param allow_empty_source: let a mirror of an empty model go ahead (``max_removals`` still applies: emptying
        an audience on purpose takes ``allow_empty_source=True, max_removals=1.0``).
    """

    object_type = "subscriptions"
    template_fields = (*AttentiveSyncOperator.template_fields, "sign_up_source_id", "locale")

    def __init__(
        self,
        *,
        mode: str,  # required: whether people get subscribed, unsubscribed or both is never a default
        sign_up_source_id: str | None = None,
        locale: str | None = None,
        subscription_type: str = "MARKETING",
        single_opt_in: bool = False,
        notify_on_unsubscribe: bool = False,
        max_removals: int | float = 0.2,
        allow_empty_source: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in SubscriptionsType.modes:
            raise ValueError(f"mode must be one of {SubscriptionsType.modes}, got {mode!r}")
        self.mode = mode
        self.sign_up_source_id = sign_up_source_id
        self.locale = locale
        self.subscription_type = subscription_type
        self.single_opt_in = single_opt_in
        self.notify_on_unsubscribe = notify_on_unsubscribe
        self.max_removals = max_removals
        self.allow_empty_source = allow_empty_source

    @property
    def mode_default(self) -> str:  # type: ignore[override]
        return self.mode

    def build_object(self) -> ObjectType:
        return SubscriptionsType(
            sign_up_source_id=self.sign_up_source_id,
            locale=self.locale,
            subscription_type=self.subscription_type,
            single_opt_in=self.single_opt_in,
            notify_on_unsubscribe=self.notify_on_unsubscribe,
            primary_key=self.primary_key,
            mapping=self.mapping,
            default_region=self.default_region,
            allow_sensitive=self.allow_sensitive_columns,
        )

    def sync_options(self) -> dict[str, Any]:
        return {"max_removals": self.max_removals, "allow_empty_source": self.allow_empty_source}
