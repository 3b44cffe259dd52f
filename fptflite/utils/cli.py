"""Parsing helpers for command-line flags."""

from __future__ import annotations


def parse_hw(text: str) -> tuple[int, int]:
    """Parses "256x192" into (256, 192) = (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected a size like 256x192 (height x width), got {text!r}") from None
    return h, w
