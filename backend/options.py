"""What a submission asks of the queue beside the sprite: its priority, a webhook, variants.

None of these is part of the cache key (``normalize``): they steer how the job runs and who
is told, not what PixelLab draws (each variant's own ``seed`` is in its key).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field

MAX_VARIANTS = 4
MAX_CALLBACK_URL = 2048


class Priority(StrEnum):
    """Levels of the queue's order; a job one level up runs before jobs up to
    ``SPRITEQ_JOBS__PRIORITY_AGING_S`` older than it (``lua/include/priority.lua``)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class WebhookState(StrEnum):
    PENDING = "pending"  # due, or between attempts
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # no 2xx within the delivery window (24 h), or the URL became unsafe


class WebhookView(BaseModel):
    """The delivery of the job's final state to its ``callback_url``."""

    state: WebhookState = WebhookState.PENDING
    attempts: int = 0
    last_status: int | None = Field(
        None, description="The receiver's last HTTP status; null before an answer."
    )


class SubmitOptions(BaseModel):
    """The submit body's queue options, shared by every operation's request."""

    priority: Priority = Field(
        Priority.NORMAL,
        description="low and normal for anyone; high needs a token made with --priority high "
        "(or an admin), otherwise 403",
    )
    callback_url: Annotated[str, Field(min_length=1, max_length=MAX_CALLBACK_URL)] | None = Field(
        None, description="https URL that receives the job's final state, signed (docs/api.md)"
    )
    variants: Annotated[int, Field(ge=1, le=MAX_VARIANTS, strict=True)] = Field(
        1, description="1-4 jobs with consecutive seeds, admitted together as one group"
    )
