"""Parsing ``redis+sentinel://`` URLs and the arq settings built from them."""

from __future__ import annotations

import pytest

from backend.errors import ConfigurationError
from backend.store.connect import arq_settings, is_sentinel, parse_sentinel_url


def test_parses_hosts_service_db_and_password() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,h2:26380/mymaster/3")
    assert parsed.sentinels == (("10.0.0.1", 26379), ("h2", 26380))
    assert (parsed.service, parsed.db, parsed.password, parsed.username) == (
        "mymaster", 3, "s@cret", None,
    )  # fmt: skip


def test_db_defaults_to_zero() -> None:
    parsed = parse_sentinel_url("redis+sentinel://127.0.0.1:26379/spritequeue")
    assert parsed.db == 0 and parsed.password is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1/svc",
        "redis+sentinel://127.0.0.1:26379/svc/notadb",
        "redis+sentinel://127.0.0.1:26379/svc/0/extra",
    ],
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_sentinel_url(url)


def test_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_sentinel_url("redis+sentinel://:topsecret@127.0.0.1/svc")
    assert "topsecret" not in str(caught.value)


def test_arq_settings() -> None:
    sentinel = arq_settings("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/2")
    assert sentinel.sentinel and sentinel.sentinel_master == "svc"
    assert sentinel.host == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert (sentinel.database, sentinel.password) == (2, "pw")
    plain = arq_settings("redis://127.0.0.1:6380/4")
    assert not plain.sentinel and (plain.port, plain.database) == (6380, 4)
    assert not is_sentinel("rediss://h:1/0")
