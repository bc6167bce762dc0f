"""Our request models against PixelLab's own v1 limits, field by field.

``pixellab_limits.json`` is our extract of PixelLab's published v1 OpenAPI document (see its
``_about``): the repository holds the limits, not the document. Each operation's model must
name only fields PixelLab has, require what PixelLab requires, and allow nothing PixelLab
would refuse (bounds inside PixelLab's, the same enums and defaults, sizes within its sides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backend.operations import ENDPOINTS, MODELS

LIMITS = json.loads((Path(__file__).parent / "pixellab_limits.json").read_text())["operations"]
OURS_ONLY = {"operation", "timeout_s", "priority", "callback_url", "variants"}
# PixelLab fields we leave out on purpose: deprecated upstream (docs/pixellab.md).
LEFT_OUT = {"negative_description", "extra_guidance_scale"}


def our_schema(operation: str) -> dict[str, Any]:
    schema: dict[str, Any] = MODELS[operation].model_json_schema(mode="validation")
    return schema


def resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """A property with ``$ref`` and a nullable ``anyOf`` unwrapped."""
    if "anyOf" in prop:
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        prop = {**options[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    if "$ref" in prop:
        target = schema["$defs"][prop["$ref"].split("/")[-1]]
        prop = {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def test_every_operation_is_covered() -> None:
    assert set(LIMITS) == set(MODELS)
    assert {name: spec["endpoint"] for name, spec in LIMITS.items()} == ENDPOINTS


@pytest.mark.parametrize("operation", sorted(LIMITS))
def test_field_names_and_required_fields(operation: str) -> None:
    spec, ours = LIMITS[operation], our_schema(operation)
    names = set(ours["properties"]) - OURS_ONLY
    assert names <= set(spec["fields"]), f"not PixelLab fields: {names - set(spec['fields'])}"
    missing = set(spec["fields"]) - names - LEFT_OUT
    assert not missing, f"PixelLab fields we do not offer: {missing}"
    assert set(spec["required"]) <= set(ours.get("required", [])) | {"operation"}


@pytest.mark.parametrize("operation", sorted(LIMITS))
def test_bounds_enums_defaults_and_sizes(operation: str) -> None:
    spec, ours = LIMITS[operation], our_schema(operation)
    for name, theirs in spec["fields"].items():
        if name not in ours["properties"]:
            continue
        prop = resolve(ours, ours["properties"][name])
        kind = theirs["kind"]
        if kind in ("number", "integer"):
            if "minimum" in theirs:
                assert prop.get("minimum", float("-inf")) >= theirs["minimum"], name
            if "maximum" in theirs:
                assert prop.get("maximum", float("inf")) <= theirs["maximum"], name
            if "default" in theirs and name != "seed":
                assert prop.get("default") == theirs["default"], name
            if kind == "integer":
                assert prop["type"] == "integer", name
        elif kind == "enum":
            assert sorted(prop["enum"]) == sorted(theirs["values"]), name
        elif kind == "boolean":
            assert prop["type"] == "boolean" and prop.get("default") is False, name
        elif kind == "image_size":
            for side in ("width", "height"):
                bounds = prop["properties"][side]
                assert bounds["minimum"] >= theirs["min_side"], (name, side)
                assert bounds["maximum"] <= theirs["max_side"], (name, side)
        elif kind in ("image", "images"):
            text = json.dumps(prop)
            assert "Base64Image" in text and "JobImage" in text, name
        elif kind == "array" and "maxItems" in theirs:
            assert prop.get("maxItems", 1_000) <= theirs["maxItems"], name
            assert prop.get("minItems", 0) >= theirs.get("minItems", 0), name
