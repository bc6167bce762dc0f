"""The queue and PixelLab as clients see them (``GET /v1/queue``)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class QueueState(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


class UpstreamState(StrEnum):
    OK = "ok"
    THROTTLED = "throttled"  # 429s: fewer calls at once for a while
    PAUSED = "paused"  # 401/402: no calls until a probe or an admin resumes


class UpstreamView(BaseModel):
    """PixelLab's state as the service sees it."""

    state: UpstreamState = UpstreamState.OK
    reason: str | None = Field(None, description="auth, insufficient_credits or rate_limited")
    since: float | None = Field(None, description="unix time of the last change")


class BalanceView(BaseModel):
    """PixelLab's credit as a worker last read it (``GET /balance``)."""

    usd: float = Field(description="remaining credit in USD")
    checked_at: float = Field(description="unix time of the read")


class AdminUpstreamView(UpstreamView):
    """PixelLab's state with the account's balance, for admins."""

    balance: BalanceView | None = Field(
        None, description="the last balance a worker read; null before the first read"
    )


class QueueView(BaseModel):
    waiting: int
    active: int
    capacity: int
    state: QueueState
    estimated_wait_s: float
    upstream: UpstreamView = UpstreamView()
