"""Normalization: same meaning -> same key; different meaning -> different key."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.models import Detail, Direction, Outline, Shading, SpriteRequest, View
from backend.normalize import cache_key, canonical_json

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789éü", min_size=1, max_size=8)
SIDE = st.integers(32, 400)
OPTIONAL_ENUMS: dict[str, list[str]] = {
    "outline": [e.value for e in Outline],
    "shading": [e.value for e in Shading],
    "detail": [e.value for e in Detail],
    "view": [e.value for e in View],
    "direction": [e.value for e in Direction],
}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "description": " ".join(draw(st.lists(WORD, min_size=1, max_size=6))),
        "image_size": {"width": draw(SIDE), "height": draw(SIDE)},
    }
    for name, values in OPTIONAL_ENUMS.items():
        if draw(st.booleans()):
            body[name] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        body["seed"] = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        body["isometric"] = draw(st.booleans())
    if draw(st.booleans()):
        body["no_background"] = draw(st.booleans())
    if draw(st.booleans()):
        body["text_guidance_scale"] = draw(st.sampled_from([1, 2.5, 8, 12.25, 20]))
    return body


def respell(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same request written differently: spacing, enum case, key order, defaults."""
    out: dict[str, Any] = {}
    words = body["description"].split(" ")
    spaces = [" " * rng.randint(1, 3) + rng.choice(["", "\t", "\n"]) for _ in words]
    out["description"] = (
        rng.choice(["", "  ", "\n"])
        + "".join(w + s for w, s in zip(words, spaces, strict=True)).rstrip()
        + rng.choice(["", " ", "\t "])
    )
    out["image_size"] = dict(reversed(list(body["image_size"].items())))
    for name, value in body.items():
        if name in OPTIONAL_ENUMS:
            out[name] = rng.choice([value.upper(), value.title(), f"  {value} "])
        elif name not in out:
            out[name] = value
    defaults = {"isometric": False, "no_background": False, "text_guidance_scale": 8.0}
    for name, default in defaults.items():
        if name not in out and rng.random() < 0.5:
            out[name] = default
        if out.get("text_guidance_scale") == 8 and rng.random() < 0.5:
            out["text_guidance_scale"] = 8  # int spelling of the default
    for name in list(OPTIONAL_ENUMS):
        if name not in out and rng.random() < 0.3:
            out[name] = None
    items = list(out.items())
    rng.shuffle(items)
    return dict(items)


@settings(max_examples=300, deadline=None)
@given(requests(), st.randoms(use_true_random=False))
def test_same_meaning_gives_same_key(body: dict[str, Any], rng: random.Random) -> None:
    original = SpriteRequest.model_validate(body)
    respelled = SpriteRequest.model_validate(respell(body, rng))
    assert canonical_json(respelled) == canonical_json(original)
    assert cache_key(respelled) == cache_key(original)


@settings(max_examples=300, deadline=None)
@given(requests(), st.data())
def test_different_meaning_gives_different_key(body: dict[str, Any], data: st.DataObject) -> None:
    original = SpriteRequest.model_validate(body)
    changed = json.loads(json.dumps(body))
    change = data.draw(st.sampled_from(["description", "width", "seed", "isometric", "outline"]))
    if change == "description":
        changed["description"] = body["description"] + " x"
    elif change == "width":
        changed["image_size"]["width"] = 32 if body["image_size"]["width"] != 32 else 33
    elif change == "seed":
        changed["seed"] = (body.get("seed", 0) + 1) % 2**32
    elif change == "isometric":
        changed["isometric"] = not body.get("isometric", False)
    else:
        options = [v for v in OPTIONAL_ENUMS["outline"] if v != body.get("outline")]
        changed["outline"] = data.draw(st.sampled_from(options))
    assert cache_key(SpriteRequest.model_validate(changed)) != cache_key(original)


def test_canonical_form_is_compact_sorted_and_drops_defaults() -> None:
    request = SpriteRequest.model_validate(
        {
            "text_guidance_scale": 8,
            "isometric": False,
            "image_size": {"width": 64, "height": 32},
            "description": "  A   Knight\n",
            "outline": "LINELESS",
            "timeout_s": 30,
        }
    )
    assert canonical_json(request) == (
        '{"description":"A Knight","image_size":{"height":32,"width":64},"outline":"lineless"}'
    )
    assert len(cache_key(request)) == 64


def test_description_case_is_meaning() -> None:
    lower = SpriteRequest.model_validate(
        {"description": "knight", "image_size": {"width": 64, "height": 64}}
    )
    upper = SpriteRequest.model_validate(
        {"description": "KNIGHT", "image_size": {"width": 64, "height": 64}}
    )
    assert cache_key(lower) != cache_key(upper)
