"""``spritequeue``: dev | api | worker | mock-pixellab | token create/list/revoke | dlq."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.logs import configure_logging
from backend.store.tokens import USER_NAME_RULE


def _check_queue_redis(settings: Settings) -> None:
    """Refuse to start on a queue Redis that may evict: one clear line, not a traceback."""
    from backend.queue.resources import redis_client
    from backend.store.eviction import check_eviction_policy

    async def check() -> None:
        redis = redis_client(settings.redis_url)
        try:
            await check_eviction_policy(redis, allow_eviction=settings.redis.allow_eviction)
        finally:
            await redis.aclose()

    asyncio.run(check())


def _run_api(args: argparse.Namespace) -> int:
    import uvicorn

    from backend.config import check_api_settings
    from backend.errors import ConfigurationError

    settings = Settings()
    try:
        check_api_settings(settings)
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    _check_queue_redis(settings)
    # A factory string, so the CLI does not import the API (siblings in the layering).
    uvicorn.run(
        "backend.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        **uvicorn_options(settings),
    )
    return 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server limits of ``spritequeue api`` (``SPRITEQ_SERVER__*``), as uvicorn's options.

    ``limit_concurrency`` answers ``503`` beyond that many connections and requests, instead
    of queueing without bound; the keep-alive timeout sits above common client and
    load-balancer idle timeouts (httpx 5 s, ALB 60 s), so a client never reuses a
    connection just as it is closed.
    """
    server = settings.server
    return {
        "limit_concurrency": server.limit_concurrency,
        "timeout_keep_alive": server.timeout_keep_alive_s,
        "timeout_graceful_shutdown": server.timeout_graceful_shutdown_s,
        "backlog": server.backlog,
    }


def _run_worker(args: argparse.Namespace) -> int:
    from backend.observability import serve_worker_metrics
    from backend.queue.worker import build_worker

    settings = Settings()
    configure_logging(settings.log_level)
    _check_queue_redis(settings)
    scrape_redis = None
    if args.metrics_port:
        scrape_redis = serve_worker_metrics(settings, args.metrics_port, args.metrics_host)
    build_worker(settings).run()
    if scrape_redis is not None:
        scrape_redis.close()
    return 0


def _run_mock(args: argparse.Namespace) -> int:
    try:
        from mocks.pixellab import run_mock
    except ModuleNotFoundError:
        # The production image ships backend/ only (test-only code stays out of it).
        print("error: the mock PixelLab is not installed here (it comes with a source "
              "checkout: scripts/bootstrap.sh)", file=sys.stderr)  # fmt: skip
        return 2
    if args.api_key:
        print("warning: --api-key shows the key to every local user (ps); "
              "set SPRITEQ_MOCK_API_KEY instead", file=sys.stderr)  # fmt: skip
    configure_logging("INFO")
    run_mock(args.host, args.port, scenario=args.scenario, latency_ms=args.latency_ms,
             api_key=args.api_key or os.environ.get("SPRITEQ_MOCK_API_KEY"))  # fmt: skip
    return 0


async def _with_resources(action: Callable[[Any], Awaitable[Any]]) -> Any:
    from backend.queue.resources import open_resources

    settings = Settings()
    configure_logging(settings.log_level)  # to stderr: stdout carries only the command's output
    resources = await open_resources(settings)
    try:
        return await action(resources)
    finally:
        await resources.close()


def _token_create(args: argparse.Namespace) -> int:
    from backend.errors import InvalidRequest
    from backend.store.tokens import TokenStore, check_user_name

    try:
        check_user_name(args.user)  # before connecting: a refused name needs no Redis
    except InvalidRequest as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    expires_in_s = args.expires_days * 86400 if args.expires_days is not None else None

    async def create(resources: Any) -> str:
        store = TokenStore(resources.redis)
        return await store.create(args.user, admin=args.admin, expires_in_s=expires_in_s,
                                  high_priority=args.priority == "high")  # fmt: skip

    print(asyncio.run(_with_resources(create)))
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from backend.store.tokens import TokenStore

    async def listing(resources: Any) -> Any:
        return await TokenStore(resources.redis).list_tokens(user=args.user)

    tokens = asyncio.run(_with_resources(listing))
    if args.json:
        print(json.dumps([vars(info) for info in tokens], indent=2))
        return 0
    rows = [("ID", "USER", "ADMIN", "CREATED", "LAST USED", "EXPIRES")]
    rows += [
        (
            t.id,
            t.user,
            "yes" if t.admin else "no",
            _when(t.created_at),
            _when(t.last_used_at),
            _when(t.expires_at),
        )
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _token_revoke(args: argparse.Namespace) -> int:
    from backend.store.tokens import TokenStore

    if (args.token_id is None) == (args.user is None):
        print("error: give a token ID or --user NAME (one of them)", file=sys.stderr)
        return 1

    async def revoke(resources: Any) -> list[str]:
        store = TokenStore(resources.redis)
        if args.user is not None:
            return await store.revoke_user(args.user)
        return [args.token_id] if await store.revoke(args.token_id) else []

    revoked = asyncio.run(_with_resources(revoke))
    if args.token_id is not None and not revoked:
        print(f"error: no token with id {args.token_id}", file=sys.stderr)
        return 1
    print(json.dumps({"revoked": revoked}))
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from backend.queue.dlq import DeadLetters
    from backend.queue.producer import Producer

    async def act(resources: Any) -> Any:
        dlq = DeadLetters(resources.redis, Producer(resources))
        if args.dlq_command == "list":
            items, cursor = await dlq.list(limit=args.limit, cursor=args.cursor)
            return {"items": items, "next_cursor": cursor}
        if args.dlq_command == "retry" and args.error_type is not None:
            done = await dlq.retry_matching(error_type=args.error_type)
            return {"requeued": done.requeued, "remaining": done.remaining,
                    "job_ids": done.job_ids}  # fmt: skip
        if args.dlq_command == "retry":
            return (await dlq.retry(args.job_id)).view.model_dump(mode="json")
        await dlq.delete(args.job_id)
        return {"deleted": args.job_id}

    from backend.errors import ErrorType, SpriteQueueError

    if args.dlq_command == "retry" and (args.job_id is None) == (args.error_type is None):
        print("error: give an entry ID or --error-type TYPE (one of them)", file=sys.stderr)
        return 1
    if getattr(args, "error_type", None) not in (None, *ErrorType):
        print(f"error: --error-type must be one of {', '.join(ErrorType)}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(asyncio.run(_with_resources(act)), indent=2))
    except SpriteQueueError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _run_dev(args: argparse.Namespace) -> int:
    from backend.dev import run_dev

    return run_dev(
        port=args.port, data_dir=Path(args.data_dir), cache_maxmemory=args.cache_maxmemory
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spritequeue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="everything on one machine, with an embedded Redis")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--data-dir", default=".spritequeue")
    dev.add_argument("--cache-maxmemory", default="256mb",
                     help="memory of the embedded L1 cache Valkey (allkeys-lru)")  # fmt: skip
    dev.set_defaults(run=_run_dev)

    api = sub.add_parser("api", help="the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(run=_run_api)

    worker = sub.add_parser("worker", help="one arq worker process")
    worker.add_argument("--metrics-port", type=int, default=9100)
    worker.add_argument("--metrics-host", default="127.0.0.1")
    worker.set_defaults(run=_run_worker)

    mock = sub.add_parser("mock-pixellab", help="the mock PixelLab API")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8700)
    mock.add_argument("--latency-ms", type=int, default=0)
    mock.add_argument("--scenario", default="success")
    mock.add_argument(
        "--api-key",
        default=None,
        help="require this bearer token (visible to other local users: prefer the "
        "SPRITEQ_MOCK_API_KEY environment variable)",
    )
    mock.set_defaults(run=_run_mock)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command",
                                                                       required=True)  # fmt: skip
    create = token.add_parser("create", help="print a new token (shown once)")
    create.add_argument("--user", required=True, help=f"the user name: {USER_NAME_RULE}")
    create.add_argument("--admin", action="store_true")
    create.add_argument("--expires-days", type=_positive_int, default=None,
                        help="the token stops working after N days")  # fmt: skip
    create.add_argument("--priority", choices=("normal", "high"), default="normal",
                        help="high: it may submit high-priority jobs")  # fmt: skip
    create.set_defaults(run=_token_create)
    listing = token.add_parser("list", help="tokens: id, user, admin, created, last used")
    listing.add_argument("--user", default=None, help="only this user's tokens")
    listing.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    listing.set_defaults(run=_token_list)
    revoke = token.add_parser("revoke", help="delete a token by ID, or all of a user's")
    revoke.add_argument("token_id", nargs="?", default=None, metavar="ID")
    revoke.add_argument("--user", default=None, help="revoke every token of this user")
    revoke.set_defaults(run=_token_revoke)

    dlq = sub.add_parser("dlq", help="the dead-letter queue").add_subparsers(
        dest="dlq_command", required=True
    )
    listing = dlq.add_parser("list")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", default=None)
    listing.set_defaults(run=_dlq)
    retry = dlq.add_parser("retry", help="requeue one entry by ID, or every entry of a type")
    retry.add_argument("job_id", nargs="?", default=None, metavar="ID")
    retry.add_argument("--error-type", default=None, metavar="TYPE",
                       help="requeue every entry that failed with this error type (oldest "
                       "first, up to the queue's free capacity), e.g. server_error")  # fmt: skip
    retry.set_defaults(run=_dlq)
    delete = dlq.add_parser("delete")
    delete.add_argument("job_id")
    delete.set_defaults(run=_dlq)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    from redis.exceptions import RedisError

    from backend.store.eviction import EvictionPolicyError

    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except EvictionPolicyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"error: Redis is unavailable: {exc} (check SPRITEQ_REDIS_URL)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
