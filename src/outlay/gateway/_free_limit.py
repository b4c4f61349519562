"""A request-rate limit per key on the gateway's free routes (``GET /v1/models``, ``GET
/v1/models/{id}``, ``POST /v1/messages/count_tokens``).

They cost the operator nothing at the provider and are never recorded, so the cost-rate limit never
slows them; each is still a request made with the upstream's own credential, which the provider
counts against the operator's rate limits. One key looping on them would take the requests every
other tenant's calls need. A token bucket per key, in this process: ``per_minute`` requests a
minute, in bursts of up to a sixth of that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["FreeRateLimit"]

#: Buckets kept at most; past this every full one is forgotten (a full bucket is a new key's state).
_MAX_KEYS: Final = 100_000


class FreeRateLimit:
    """``take(key)``: 0.0 if the request may go ahead, else the seconds until it may."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._burst = max(1.0, per_minute / 6.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
            if len(self._buckets) > _MAX_KEYS:
                self._forget_full(now)
            return wait

    def _forget_full(self, now: float) -> None:
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > _MAX_KEYS:  # all busy: bounded all the same, at the cost of a refill
            self._buckets.clear()
