"""temporary re-export; removed once sync/ imports client"""

from airflow_provider_attentive.client.models import Request, Result
from airflow_provider_attentive.client.models import RequestOutcome as Outcome

__all__ = ["Outcome", "Request", "Result"]
