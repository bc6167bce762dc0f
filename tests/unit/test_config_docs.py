"""docs/configuration.md is generated from the Settings model and must be up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from backend import config_docs
from backend.config import Settings


def test_every_setting_has_a_description() -> None:
    assert config_docs.undocumented() == []


def test_the_page_is_up_to_date() -> None:
    assert config_docs.PAGE.read_text() == config_docs.render(), (
        "docs/configuration.md is stale: run `python -m backend.config_docs` and commit it"
    )


def test_every_field_of_every_section_is_listed() -> None:
    names = set(config_docs.env_names())
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                assert f"SPRITEQ_{name.upper()}__{sub.upper()}" in names
        else:
            assert f"SPRITEQ_{name.upper()}" in names


def test_the_env_names_are_the_ones_pydantic_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPRITEQ_REDIS__ALLOW_EVICTION", "true")
    monkeypatch.setenv("SPRITEQ_LIMITS__PER_USER", "7")
    monkeypatch.setenv("SPRITEQ_REDIS_URL", "redis://elsewhere:6379/1")
    settings = Settings()
    assert settings.redis.allow_eviction is True
    assert settings.limits.per_user == 7
    assert settings.redis_url == "redis://elsewhere:6379/1"
    assert {
        "SPRITEQ_REDIS__ALLOW_EVICTION",
        "SPRITEQ_LIMITS__PER_USER",
        "SPRITEQ_REDIS_URL",
    } <= set(config_docs.env_names())


def test_check_mode_reports_a_stale_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(config_docs, "PAGE", stale)
    assert config_docs.main(["--check"]) == 1
    assert config_docs.main([]) == 0
    assert config_docs.main(["--check"]) == 0
    capsys.readouterr()
