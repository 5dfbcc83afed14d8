"""Segment members: a warehouse audience as an Attentive segment, through v2 bulk member jobs."""

from airflow_provider_attentive.sync.objects.segments.members import SegmentMembersDelivery
from airflow_provider_attentive.sync.objects.segments.segment import SegmentRegistry, SegmentSpec
from airflow_provider_attentive.sync.objects.segments.type import SegmentsType

__all__ = ["SegmentMembersDelivery", "SegmentRegistry", "SegmentSpec", "SegmentsType"]
