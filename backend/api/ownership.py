"""Which jobs a caller may see: their own (admins: any). Another user's job reads as missing."""

from __future__ import annotations

from starlette.requests import Request

from backend.errors import NotFound
from backend.models import JobRecord
from backend.queue.resources import Resources
from backend.store.tokens import Principal


async def owned_record(request: Request, who: Principal) -> JobRecord:
    """The job named by the path's ``job_id``; raises NotFound (404) if it is not theirs."""
    resources: Resources = request.app.state.resources
    record = await resources.jobs.get(request.path_params["job_id"])
    if record is None or (record.user != who.user and not who.admin):
        raise NotFound("job not found")
    return record
