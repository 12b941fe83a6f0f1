"""Units: sizes (``16GiB``, ``512MB``) and durations (``90m``, ``1h30m``) parsed and formatted. Stdlib only."""

from __future__ import annotations

import re

from qco_tune.core.errors import InputError

GIB = 2**30
"""A gibibyte, in bytes."""
MIB = 2**20
"""A mebibyte, in bytes."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)


_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"16GiB"``, ``"500 MB"`` or a plain number of bytes; ``ValueError`` otherwise."""
    if isinstance(text, bool):
        raise InputError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = _SIZE_RE.match(text)
        if not match:
            raise InputError(f'not a size: {text!r} (write e.g. "16GiB" or "512MiB")')
        value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").lower()])
    if value <= 0:
        raise InputError(f"size must be positive, got {text!r}")
    return value


def format_size(num_bytes: float | None) -> str:
    """``16.0 GiB``-style text; ``-`` for unknown."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``, ``"45"`` or a number; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise InputError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text, re.IGNORECASE):
            seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PART.findall(text))
        else:
            raise InputError(f'not a duration: {value!r} (write e.g. "90s", "30m", "2h" or seconds)')
    if seconds <= 0:
        raise InputError(f"must be positive, got {value!r}")
    return seconds
