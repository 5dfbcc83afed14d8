"""Subscribers (Add / Remove / Mirror): the object type and its own phases."""

from airflow_provider_attentive.sync.objects.subscriptions.type import SubscriptionsType

__all__ = ["SubscriptionsType"]
