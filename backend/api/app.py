"""The Starlette application: ``create_app`` and its lifespan, which owns every client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from backend.aio import cancel_and_wait, run_every
from backend.api.context import RequestContext
from backend.api.errors import EXCEPTION_HANDLERS
from backend.api.routes import admin, docs, events, groups, jobs, pages, system, upstream
from backend.config import Settings, check_api_settings
from backend.logs import configure_logging
from backend.observability import queue_registry
from backend.progress.feed import ProgressFeed
from backend.queue.dlq import DeadLetters
from backend.queue.producer import Producer
from backend.queue.resources import open_resources
from backend.store.auth_failures import AuthFailures
from backend.store.tokens import TokenStore

log = structlog.get_logger(__name__)

HIT_FLUSH_S = 1.0  # how often the cache hits this process served are added to L1


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; with no settings given they are read from the environment now.

    Raises ConfigurationError for settings the API must not run with (a short admin token).
    """
    settings = settings or Settings()
    check_api_settings(settings)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = await open_resources(settings)
        producer = Producer(resources)
        app.state.resources = resources
        app.state.producer = producer
        app.state.dlq = DeadLetters(resources.redis, producer)
        app.state.tokens = TokenStore(resources.redis, bootstrap_admin=settings.admin_token)
        app.state.auth_failures = AuthFailures(
            resources.redis,
            allowance=settings.auth.failures_per_minute,
            max_delay_s=settings.auth.failure_delay_max_s,
        )
        progress = ProgressFeed(
            resources.redis, max_streams_per_user=settings.limits.max_sse_per_user
        )
        await progress.start()
        app.state.progress = progress
        positions = resources.position_announcer()
        positions_task = asyncio.create_task(run_every(positions.interval_s, positions.run_once))
        hits_task = asyncio.create_task(run_every(HIT_FLUSH_S, resources.cache.flush_hits))
        app.state.metrics_registry, scrape_redis = queue_registry(settings)
        log.info("api_started", l2_enabled=resources.cache.l2_enabled)
        try:
            yield
        finally:
            await cancel_and_wait(positions_task)
            await cancel_and_wait(hits_task)
            await resources.cache.flush_hits()  # the last second's hits
            await progress.stop()
            await resources.close()
            scrape_redis.close()

    return Starlette(
        routes=[
            *jobs.routes,
            *groups.routes,
            *events.routes,
            *system.routes,
            *admin.routes,
            *upstream.routes,
            *docs.routes,
            *pages.routes,
        ],
        middleware=[Middleware(RequestContext)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
