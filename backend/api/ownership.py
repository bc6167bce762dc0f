"""Which jobs a caller may see: their own (admins: any). Another user's job reads as missing."""

from __future__ import annotations

from starlette.requests import Request

from backend.api.auth import principal_and_read
from backend.errors import NotFound
from backend.models import JobRecord
from backend.store import keys
from backend.store.tokens import Principal


async def caller_and_job(request: Request) -> tuple[Principal, JobRecord]:
    """The caller and the job named by the path's ``job_id``, in one Redis round trip.

    Raises what ``principal`` raises, and NotFound (404) when the job is not theirs.
    """
    who, fields = await principal_and_read(request, keys.job(request.path_params["job_id"]))
    if not fields:
        raise NotFound("job not found")
    record = JobRecord.from_fields({k.decode(): v.decode() for k, v in fields.items()})
    if record.user != who.user and not who.admin:
        raise NotFound("job not found")
    return who, record
