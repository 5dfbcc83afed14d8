"""The ``attentive`` asset URI scheme: validation, a factory, and the OpenLineage dataset each URI stands for.

Two shapes of URI share the scheme:

* ``attentive://<API host>/<destination>`` names one destination in an Attentive API, e.g.
  ``attentive://api.attentivemobile.com/subscriptions/vip_sms_list``. Its OpenLineage dataset is namespace
  ``attentive://<API host>``, name ``<destination>``: exactly the output dataset the sync operators report,
  and what they hand to Airflow's hook lineage collector.
* ``attentive://<object>/<sync_id>`` is the asset a sync operator with ``emit_asset=True`` updates, e.g.
  ``attentive://subscriptions/vip_sms_list``. It names a sync, not an API host, so it converts to the
  destination that sync writes to on the production API (or on ``extra["api_host"]`` when the asset carries
  one): ``attributes`` for an attributes sync, ``<object>/<sync_id>`` for the others.

Registered in ``get_provider_info`` under ``asset-uris``, so that ``Asset("attentive://...")`` objects are
validated when a DAG is parsed and OpenLineage can translate them instead of dropping them.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from airflow_provider_attentive.get_provider_info import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from openlineage.client.event_v2 import Dataset

__all__ = [
    "DEFAULT_API_HOST",
    "SCHEME",
    "SYNC_OBJECTS",
    "convert_asset_to_openlineage",
    "create_asset",
    "destination_name",
    "destination_uri",
    "namespace",
    "sanitize_uri",
]

SCHEME = "attentive"
#: The host of Attentive's production API: the namespace of every real destination.
DEFAULT_API_HOST = urllib.parse.urlsplit(DEFAULT_BASE_URL).netloc
#: What a sync can write to; the authority of a sync asset URI is one of these, never a host name.
SYNC_OBJECTS = frozenset({"attributes", "events", "subscriptions", "segments"})


def destination_name(object_type: str, key: str | None = None) -> str:
    """The dataset name of a destination: ``attributes``, ``events/Order Shipped``, ``segments/<id>``...

    Attributes are one store per subscriber profile, shared by every sync that writes them, so they take no
    key; every other destination is one event type, list or segment.
    """
    return object_type if key is None else f"{object_type}/{key}"


def namespace(api_host: str) -> str:
    """The OpenLineage namespace of an Attentive API: ``attentive://<host[:port]>``."""
    return f"{SCHEME}://{api_host}"


def destination_uri(api_host: str, destination: str) -> str:
    """The asset URI of a destination; its path keeps the destination's own characters, percent-encoded."""
    return f"{namespace(api_host)}/{urllib.parse.quote(destination, safe='/')}"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Check an ``attentive://`` URI when an ``Asset`` is created: an authority and a destination (path)."""
    if not uri.netloc:
        raise ValueError(
            "URI format attentive:// must contain an API host or a sync object, e.g. attentive://events/..."
        )
    if not uri.path.strip("/"):
        raise ValueError("URI format attentive:// must name a destination after the host, e.g. .../subscriptions/vip")
    return uri


def create_asset(*, host: str, destination: str, extra: dict[str, Any] | None = None) -> Asset:
    """Asset factory (hook lineage): the destination ``destination`` of the Attentive API at ``host``."""
    return Asset(uri=destination_uri(host, destination), extra=extra)


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any) -> Dataset:
    """Translate an ``attentive://`` asset to the OpenLineage dataset the sync operators report for it."""
    from openlineage.client.event_v2 import Dataset

    parsed = urllib.parse.urlsplit(asset.uri)
    path = urllib.parse.unquote(parsed.path.strip("/"))
    if parsed.netloc in SYNC_OBJECTS:
        api_host = str((asset.extra or {}).get("api_host") or DEFAULT_API_HOST)
        key = None if parsed.netloc == "attributes" else path
        return Dataset(namespace=namespace(api_host), name=destination_name(parsed.netloc, key))
    return Dataset(namespace=namespace(parsed.netloc), name=path)
