"""Prompts: control characters refused (tab and newline allowed), invisible ones stripped."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.models import SpriteRequest

SIZE = {"width": 64, "height": 64}


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\r", "\x0b"])
def test_control_characters_are_refused_naming_the_field(char: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SpriteRequest(description=f"a knight{char}x", image_size=SIZE)
    (error,) = caught.value.errors()
    assert error["loc"] == ("description",) and f"U+{ord(char):04X}" in error["msg"]


def test_tab_newline_and_crlf_are_whitespace() -> None:
    request = SpriteRequest(description="a\tred\nknight\r\nwith sword", image_size=SIZE)
    assert request.description == "a red knight with sword"


@pytest.mark.parametrize(
    "char",
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202a", "\u202e", "\u2066", "\u2069"],
)
def test_bidi_overrides_and_zero_width_characters_are_stripped(char: str) -> None:
    request = SpriteRequest(description=f"a{char} red kni{char}ght{char}", image_size=SIZE)
    assert request.description == "a red knight"


def test_a_prompt_of_invisible_characters_only_is_empty() -> None:
    with pytest.raises(ValidationError):
        SpriteRequest(description="\u200b\u202e", image_size=SIZE)
