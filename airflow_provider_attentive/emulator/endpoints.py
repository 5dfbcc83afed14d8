"""Every emulated endpoint, across API versions: the table the server routes by.

Rate limits, fault targeting and statistics are keyed by the endpoint names listed here; a new
API version adds its route table to :data:`API_ROUTES`.
"""

from __future__ import annotations

from .api_v1 import V1_ROUTES
from .api_v2 import V2_ROUTES
from .routing import RouteTable

__all__ = ["API_ROUTES", "ENDPOINT_NAMES"]

API_ROUTES = RouteTable((*V1_ROUTES, *V2_ROUTES))
#: Endpoint names in table order (``"me"``, ``"attributes"``, ...).
ENDPOINT_NAMES: tuple[str, ...] = API_ROUTES.names
