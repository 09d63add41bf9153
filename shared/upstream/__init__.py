"""The images API upstream: the client, its retry policy, the streaming body decoder, error mapping.

- :mod:`~shared.upstream.client`: :class:`UpstreamClient` (one connection pool; endpoint styles; the call);
- :mod:`~shared.upstream.retry`: what is safe to repeat and how long to wait; the 401 refresh;
- :mod:`~shared.upstream.body`: :class:`ImageBodyReader`, ``b64_json`` decoded while it streams in, bounded outside it;
- :mod:`~shared.upstream.fetch`: which image URLs of an answer are fetched, and how;
- :mod:`~shared.upstream.errors`: upstream answers and transport failures as the service's errors;
- :mod:`~shared.upstream.ledger`: what the client did for the calling task (sent, answered).
"""

from shared.upstream.body import ImageBodyReader
from shared.upstream.client import UpstreamClient, UpstreamImage, UpstreamResult
from shared.upstream.errors import IMAGE_FILTERED, PROMPT_FILTERED, map_error, parse_retry_after, sniff_content_type
from shared.upstream.ledger import UpstreamCalls, track_upstream
from shared.upstream.retry import RefreshOnce, RetryPolicy, safe_to_repeat

__all__ = [
    "IMAGE_FILTERED",
    "PROMPT_FILTERED",
    "ImageBodyReader",
    "RefreshOnce",
    "RetryPolicy",
    "UpstreamCalls",
    "UpstreamClient",
    "UpstreamImage",
    "UpstreamResult",
    "map_error",
    "parse_retry_after",
    "safe_to_repeat",
    "sniff_content_type",
    "track_upstream",
]
