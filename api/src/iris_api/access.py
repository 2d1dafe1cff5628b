"""Who may send feedback, and how fast. Feedback changes the served model, so `/suggest` takes a
bearer token when one is configured (IRIS_API_FEEDBACK_TOKEN), compared in constant time, and
each client (by address) may send at most IRIS_API_FEEDBACK_RATE_LIMIT requests (a moving
window, kept in this process: with several replicas, each counts its own). `/predict` stays
open.
"""

from __future__ import annotations

import hmac
import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from iris_api.errors import Refused
from iris_api.settings import ApiSettings

#: What a refused client is told to send (RFC 6750).
CHALLENGE = 'Bearer realm="feedback"'


class FeedbackAccess:
    def __init__(self, settings: ApiSettings) -> None:
        token = settings.feedback_token
        self._token = token.get_secret_value().encode() if token is not None else None
        self.rate = parse(settings.feedback_rate_limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def protected(self) -> bool:
        return self._token is not None

    def check(self, authorization: str | None, client: str) -> None:
        """Refused(429) past the client's rate (every attempt counts, so guessing tokens is
        slow too); Refused(401) without a bearer token, Refused(403) with a wrong one."""
        if not self._limiter.hit(self.rate, client):
            reset = self._limiter.get_window_stats(self.rate, client).reset_time
            raise Refused(
                429,
                f"too many suggestions from {client}: at most {self.rate} (try again later)",
                {"Retry-After": str(max(1, math.ceil(reset - time.time())))},
            )
        if self._token is None:
            return
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Refused(
                401,
                "feedback needs a token: send `Authorization: Bearer <token>`",
                {"WWW-Authenticate": CHALLENGE},
            )
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise Refused(
                403,
                "the feedback token is not valid here",
                {"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
