"""Client-side throttling under Attentive's per-key, per-endpoint one-second windows.

``base`` (what the transport needs from a limiter, window arithmetic), ``local`` (in-process windows),
``shared`` (the common base of the cross-process backends, with its local fallback), ``redis`` and ``sql``
(the shared backends) and ``backends`` (their names, and the limiter a configuration asks for). Nothing is
imported here, so that reading the backend names never loads a limiter.
"""
