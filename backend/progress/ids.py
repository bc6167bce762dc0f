"""Redis Stream ids as ``(ms, seq)`` tuples, so "already delivered?" is a tuple comparison."""

from __future__ import annotations

from typing import NamedTuple

_MAX_SEQ = 2**64 - 1


class StreamId(NamedTuple):
    """A stream entry id, ``<ms>-<seq>``; compares in stream order (not as text: 9 < 10)."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> StreamId:
        """``"1700000000000-3"`` (or just ``"1700000000000"``, seq 0); raises ``ValueError``."""
        raw = text.decode() if isinstance(text, bytes) else text
        ms, sep, seq = raw.strip().partition("-")
        if not _digits(ms) or (sep and not _digits(seq)):
            raise ValueError(f"not a stream id: {raw!r}")
        parsed = cls(int(ms), int(seq) if sep else 0)
        if parsed.ms > _MAX_SEQ or parsed.seq > _MAX_SEQ:
            raise ValueError(f"stream id out of range: {raw!r}")
        return parsed

    @classmethod
    def at_ms(cls, ms: int) -> StreamId:
        return cls(ms, 0)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_optional(text: str | None) -> StreamId | None:
    """A client's resume point: None for a missing or empty value; raises ``ValueError``."""
    if text is None or not text.strip():
        return None
    return StreamId.parse(text)
