"""The worker process: arq's worker (``queue.arq_worker.SpriteWorker``) with our task, its
resources opened in ``on_startup`` and closed in ``on_shutdown``. The worker's background
loops (leases, heartbeat, reconciler, positions, probe, balance, webhooks) are in
``queue.loops``.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import httpx
import structlog
from arq.worker import Worker, func

from backend.config import Settings
from backend.pixellab import PixelLabClient, create_http_client
from backend.queue.arq_worker import SpriteWorker
from backend.queue.loops import WorkerLoops
from backend.queue.producer import TASK_NAME
from backend.queue.resources import open_resources
from backend.queue.runner import JobRunner
from backend.queue.serializer import deserialize, serialize
from backend.queue.tasks import generate_sprite
from backend.queue.wakeups import Wakeups
from backend.queue.webhooks import WebhookDeliverer
from backend.store.connect import arq_settings

log = structlog.get_logger(__name__)

# arq's own timeout is only a backstop: ours bounds the PixelLab call (``timeout_s``), and a
# job waiting on another job's call (single flight) may wait as long as that call's lease
# lives, so a whole attempt has no fixed bound of its own.
ARQ_TIMEOUT_S = 7 * 24 * 3600
# Tries are counted by us (attempt history, stalls); arq's counter is only a backstop.
ARQ_MAX_TRIES = 1000


def build_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        resources = await open_resources(settings)
        http = create_http_client(settings.pixellab)
        worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        runner = JobRunner(
            jobs=resources.jobs,
            cache=resources.cache,
            pixellab=PixelLabClient(http),
            estimates=resources.estimates,
            upstream=resources.upstream,
            settings=settings.jobs,
            worker_id=worker_id,
            throttle_max_wait_s=settings.pixellab.throttle_max_wait_s,
            on_no_permit=worker.wait_for_permit,
            inputs=resources.inputs,
        )
        loops = WorkerLoops(
            resources, runner, max_jobs=settings.worker.max_jobs, worker_id=worker_id
        )
        wakeups = Wakeups(resources.redis)
        hooks_http = httpx.AsyncClient(follow_redirects=False)
        deliverer = WebhookDeliverer(resources.jobs, resources.webhooks, hooks_http,
                                     settings.webhooks)  # fmt: skip
        wakeups.add_listener(deliverer.wake)
        wakeups.start()
        ctx.update(resources=resources, http=http, loops=loops, runner=runner, wakeups=wakeups,
                   hooks_http=hooks_http)  # fmt: skip
        await loops.heartbeat()
        loops.start()
        loops.add_task(deliverer.run(), name="webhooks")
        log.info("worker_started", worker_id=loops.worker_id, max_jobs=loops.max_jobs)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "loops" in ctx:
            await ctx["runner"].drain(timeout_s=10)
            await ctx["wakeups"].stop()
            await ctx["loops"].stop()
            await ctx["http"].aclose()
            await ctx["hooks_http"].aclose()
            await ctx["resources"].close()
        log.info("worker_stopped")

    async def on_job_start(ctx: dict[str, Any]) -> None:
        ctx["loops"].running.add(ctx["job_id"])

    async def on_job_end(ctx: dict[str, Any]) -> None:
        ctx["loops"].running.discard(ctx["job_id"])
        worker.slot_freed()

    worker = SpriteWorker(
        functions=[
            func(
                generate_sprite,
                name=TASK_NAME,
                timeout=ARQ_TIMEOUT_S,
                max_tries=ARQ_MAX_TRIES,
            )
        ],
        queue_name=settings.queue_name,
        redis_settings=arq_settings(settings.redis_url),
        burst=burst,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        on_job_start=on_job_start,
        on_job_end=on_job_end,
        handle_signals=handle_signals,
        job_completion_wait=int(settings.worker.shutdown_grace_s),
        max_jobs=settings.worker.max_jobs,
        keep_result=0,
        poll_delay=settings.worker.poll_delay_s,
        allow_abort_jobs=True,
        job_serializer=serialize,
        job_deserializer=deserialize,
        max_tries=ARQ_MAX_TRIES,
        log_results=False,
    )
    # The short, renewed lease described in the module docstring.
    worker.in_progress_timeout_s = settings.jobs.lease_s
    worker._idle_poll_s = settings.worker.idle_poll_s
    return worker
