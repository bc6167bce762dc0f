"""Resolving a submission's input images before admission: chained jobs, sizes, storage.

A ``{"type": "job", "job_id": ...}`` input is resolved here, at submission, into the image
itself (one frame of the caller's own completed job, read from the cache), so the request's
canonical form and cache key cover the actual pixels: chaining and uploading the same image
are the same work, and a later change of that job cannot change what this one drew. Then
every input must have the size its operation allows (``operations.image_problems``), and the
bytes go to the content-addressed input store for the worker.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from backend import sprites
from backend.cache import TieredCache
from backend.errors import InvalidRequest, NotFound
from backend.inputs import Base64Image, JobImage
from backend.models import GenerationRequest, JobStatus
from backend.operations import image_items, image_problems
from backend.store.inputs import InputStore
from backend.store.jobs import JobStore


class InputResolver:
    def __init__(self, jobs: JobStore, cache: TieredCache, store: InputStore) -> None:
        self._jobs = jobs
        self._cache = cache
        self._store = store

    async def resolve(self, request: GenerationRequest, user: str) -> GenerationRequest:
        """``request`` with every chained input replaced by its image, sizes checked and
        the images stored. Raises ``NotFound`` (a job that is not the caller's, or whose
        image has left the cache) and ``InvalidRequest`` (not completed, no such frame, a
        wrong size), each naming the field."""
        resolved: dict[str, Base64Image] = {}
        for path, item in image_items(request):
            if isinstance(item, JobImage):
                resolved[path] = await self._from_job(path, item, user)
        if resolved:
            request = _replaced(request, resolved)
        if problems := image_problems(request):
            first = problems[0]
            raise InvalidRequest(f"{first['field']}: {first['reason']}", details=problems)
        images = {
            item.sha256: item.png
            for _, item in image_items(request)
            if isinstance(item, Base64Image)
        }
        await self._store.put(images)
        return request

    async def _from_job(self, path: str, ref: JobImage, user: str) -> Base64Image:
        record = await self._jobs.get(ref.job_id)
        if record is None or record.user != user:
            raise NotFound(f"{path}.job_id: no such job of yours")
        if record.status is not JobStatus.COMPLETED:
            reason = f"the job is {record.status.value}; chain from a completed job"
            raise _invalid(f"{path}.job_id", reason)
        image = await self._cache.get(record.cache_key)
        if image is None:
            raise NotFound(f"{path}.job_id: that job's image is no longer stored")
        index = ref.frame or 0
        if index >= image.frames:
            raise _invalid(f"{path}.frame", f"the job has {image.frames} frame(s), from 0")
        return Base64Image.of(sprites.frame(image.png, index, image.frames))


def _invalid(field: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}", details=[{"field": field, "reason": reason}])


def _replaced(request: GenerationRequest, resolved: dict[str, Base64Image]) -> GenerationRequest:
    update: dict[str, Any] = {}
    for path, image in resolved.items():
        name, _, index = path.partition(".")
        if index:
            items = list(update.get(name, getattr(request, name)))
            items[int(index)] = image
            update[name] = items
        else:
            update[name] = image
    copied: BaseModel = request.model_copy(update=update)
    assert isinstance(copied, GenerationRequest)
    return copied
