"""Settings: env names of the operating contract, nested sections, secrets hidden."""

from __future__ import annotations

import pytest

from backend.config import Settings


def test_defaults_match_the_design() -> None:
    settings = Settings()
    assert settings.limits.queue_capacity == 500
    assert settings.limits.per_user == 5
    assert settings.limits.dedup_window_s == 10
    assert settings.limits.warning_at == 400
    assert settings.jobs.timeout_s == 600
    assert settings.jobs.max_retries == 1
    assert settings.jobs.jitter == pytest.approx(0.10)
    assert settings.jobs.dlq_retention_s == 7 * 24 * 3600
    assert settings.cache.l2_ttl_days == 30
    assert settings.sse.ping_s == 30
    assert settings.pixellab.base_url == "https://api.pixellab.ai/v1"
    assert settings.firestore.project is None
    assert settings.effective_cache_redis_url == settings.redis_url


def test_contract_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SPRITEQ_REDIS_URL": "rediss://:pw@redis.example:6380/2",
        "SPRITEQ_CACHE_REDIS_URL": "redis://cache:6379/0",
        "SPRITEQ_PIXELLAB__BASE_URL": "http://127.0.0.1:8700",
        "SPRITEQ_PIXELLAB__API_KEY": "very-secret",
        "SPRITEQ_FIRESTORE__PROJECT": "demo",
        "SPRITEQ_LIMITS__QUEUE_CAPACITY": "50",
        "SPRITEQ_LIMITS__PER_USER": "2",
        "SPRITEQ_LIMITS__DEDUP_WINDOW_S": "3",
        "SPRITEQ_JOBS__TIMEOUT_S": "120",
        "SPRITEQ_JOBS__MAX_RETRIES": "3",
        "SPRITEQ_SSE__PING_S": "5",
        "SPRITEQ_ADMIN_TOKEN": "boot-admin",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis_url.startswith("rediss://")
    assert settings.effective_cache_redis_url == "redis://cache:6379/0"
    assert settings.pixellab.base_url == "http://127.0.0.1:8700"
    assert settings.pixellab.api_key is not None
    assert settings.pixellab.api_key.get_secret_value() == "very-secret"
    assert settings.firestore.project == "demo"
    assert (settings.limits.queue_capacity, settings.limits.per_user) == (50, 2)
    assert settings.limits.dedup_window_s == 3
    assert (settings.jobs.timeout_s, settings.jobs.max_retries) == (120, 3)
    assert settings.sse.ping_s == 5
    assert settings.admin_token is not None
    for secret in ("very-secret", "boot-admin"):
        assert secret not in repr(settings) and secret not in str(settings.model_dump())


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPRITEQ_LIMITS__PER_USER", "0")
    with pytest.raises(ValueError, match="per_user"):
        Settings()
