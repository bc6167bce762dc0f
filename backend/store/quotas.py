"""Per-user limits kept in Redis: the submit rate (``countSubmit``) and the daily quota's day.

The daily quota itself is charged inside ``admitJob`` (atomically with the caps) and refunded
inside ``finishJob``; this module names the day a job is charged to, so both agree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backend.store import keys
from backend.store.scripts import Scripts
from backend.store.writes import EVENTS_MAXLEN, HitWrite

RATE_WINDOW_MS = 60_000
# A day's counter outlives its day, so a refund shortly after midnight still finds it.
QUOTA_KEEP_S = 2 * 24 * 3600


@dataclass(frozen=True)
class RateCheck:
    admitted: bool
    count: int  # submissions in the window, this one included (0 when refused)
    retry_after_s: int  # when refused: until the window closes


@dataclass(frozen=True)
class Screened:
    """What a plain submission's caller round trip learned besides who calls."""

    check: RateCheck  # the rate's verdict
    duplicate: bytes | None  # the job id the dedup window holds for this request, if any
    served: bool = False  # the cache hit it carried was written as this request's job
    # The duplicate's record as read in the same round trip (its hash's fields), if it was.
    duplicate_fields: dict[bytes, bytes] | None = None


def quota_day(at: float) -> str:
    """The UTC day (YYYYMMDD) a job admitted at ``at`` (epoch seconds) is charged to."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%d")


def quota_key(user: str, at: float) -> str:
    return keys.user_generations(user, quota_day(at))


def seconds_to_utc_midnight(at: float) -> int:
    """Whole seconds from ``at`` to the next UTC midnight (at least 1)."""
    now = datetime.fromtimestamp(at, UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


class SubmitRate:
    """The per-user submit rate: a fixed window per user that opens at their first submit."""

    def __init__(self, scripts: Scripts, *, per_minute: int) -> None:
        self._scripts = scripts
        self._per_minute = per_minute

    async def check(self, user: str) -> RateCheck:
        """Count one submission, or refuse it without writing anything (0 = no limit)."""
        if self._per_minute <= 0:
            return RateCheck(True, 0, 0)
        admitted, value = await self._scripts.run(
            "countSubmit", [keys.user_submits(user)], [self._per_minute, RATE_WINDOW_MS]
        )
        return _verdict(admitted, value)

    async def check_and_get(self, user: str, key: str) -> Screened:
        """``check``, and the dedup window at ``key`` read in the same round trip."""
        if self._per_minute <= 0:
            return Screened(RateCheck(True, 0, 0), await self._scripts.redis.get(key))
        (admitted, value), found = await self._scripts.run_and_get(
            "countSubmit", [keys.user_submits(user)], [self._per_minute, RATE_WINDOW_MS], get=key
        )
        return Screened(_verdict(admitted, value), found)

    async def with_caller(
        self,
        digest: str,
        token_keys: list[str],
        last_used_every_s: float,
        dedup_key: str,
        hit: HitWrite | None = None,
    ) -> tuple[list[bytes], Screened] | None:
        """The token record's ``user, admin, priority``, its user's rate counted and the
        dedup key read, in one round trip (``resolveSubmit``); ``dedup_key`` names the user
        ``{user}``. With ``hit`` (a sprite found in L1), the same step writes its finished
        job when the rate admits it and no live job holds the dedup window. None for an
        unknown, revoked or expired token (nothing counted, nothing written)."""
        job_id = hit.job_id if hit else ""
        args = [digest, repr(time.time()), last_used_every_s, self._per_minute, RATE_WINDOW_MS,
                keys.user_submits("{user}"), dedup_key]  # fmt: skip
        if hit is None:
            args += ["", "", 0, 0, "", "", 0]
        else:
            args += [hit.fields_json, hit.view_json, hit.keep_s, EVENTS_MAXLEN,
                     keys.user_jobs("{user}"), job_id, hit.created_ms]  # fmt: skip
        reply = await self._scripts.run(
            "resolveSubmit",
            [*token_keys, keys.job(job_id), keys.events(job_id), keys.STATS],
            args,
        )
        if not reply:
            return None
        user, admin, priority, admitted, value, found, served, record = reply
        fields = dict(zip(record[::2], record[1::2], strict=True)) if found else None
        screened = Screened(_verdict(admitted, value), found, bool(served), fields)
        return [user, admin, priority], screened


def _verdict(admitted: int | bytes, value: int | bytes) -> RateCheck:
    if int(admitted):
        return RateCheck(True, int(value), 0)
    return RateCheck(False, 0, max(1, math.ceil(int(value) / 1000)))
