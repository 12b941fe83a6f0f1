"""The configuration itself as JSON or TOML, and reading it back (``qco_tune.load_config``). Stdlib only."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.pycode import comment_lines
from qco_tune.export.plan import ExportHeader


def render_json(config: TrialConfig) -> str:
    """``config.to_dict()`` as indented JSON (what ``load_config`` and ``qco_tune.apply`` read)."""
    return json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n"


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def render_toml(config: TrialConfig, header: ExportHeader | None = None) -> str:
    """``config.to_dict()`` as TOML: top-level knobs, then a ``[quantization]`` table (and a ``[placement]``
    table where components are placed one by one); header as comments."""
    data = config.to_dict()
    tables = {name: data.pop(name) for name in ("quantization", "placement") if name in data}
    lines = [line for text in (header.lines(config) if header else ()) for line in comment_lines(text)]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def load_config(source: TrialConfig | Mapping[str, Any] | str | os.PathLike[str]) -> TrialConfig:
    """A ``TrialConfig`` from itself, its ``to_dict`` form, or a JSON/TOML file written by ``--format``.

    Raises ``ValueError`` for an unreadable file, an unknown suffix, or a configuration that is
    invalid or from a newer qco-tune; ``FileNotFoundError`` when the file does not exist.
    """
    if isinstance(source, TrialConfig):
        return source
    if isinstance(source, Mapping):
        return TrialConfig.from_dict(dict(source))
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ValueError(f"{path}: a configuration file ends in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path} is not a readable configuration: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a configuration table")
    try:
        return TrialConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
