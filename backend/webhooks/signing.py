"""Delivery signatures in Stripe's scheme, so receivers can reuse its verifiers.

``X-Spritequeue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
``SPRITEQ_WEBHOOKS__SECRET``. The time is signed with the body, so a captured delivery
cannot be replayed later than the receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Spritequeue-Signature"
DELIVERY_HEADER = "X-Spritequeue-Delivery"
DEFAULT_TOLERANCE_S = 300


def _mac(secret: bytes, at: int, body: bytes) -> str:
    return hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, *, at: int | None = None) -> str:
    """The signature header's value for ``body`` sent at ``at`` (now by default)."""
    at = int(time.time()) if at is None else at
    return f"t={at},v1={_mac(secret, at, body)}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of now: what
    a receiver checks (any ``v1`` entry may match, as Stripe allows during a key change)."""
    parts = [part.partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in parts if key.strip() == "t"]
    macs = [value.strip() for key, _, value in parts if key.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        return False
    at = int(stamps[0])
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        return False
    expected = _mac(secret, at, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)
