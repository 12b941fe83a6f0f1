"""The spec schema: one row per field (its TOML path, attribute, converter, command-line flag and help).

Stdlib only. Parsing (``core.spec``), the command-line overrides and the CLI's flags and their help
all derive from ``FIELDS``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from qco_tune.core.config import (
    ATTENTION_BACKENDS,
    COMPILE_MODES,
    COMPILE_SCOPES,
    INDUCTOR_PROFILE_NAMES,
    LAYERWISE_CASTINGS,
    OFFLOAD_KINDS,
    QUANT_BACKENDS,
    MemoryMetric,
)
from qco_tune.core.placement import PLACEMENTS
from qco_tune.core.units import parse_duration, parse_size

DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")


MEMORY_METRICS: tuple[str, ...] = get_args(MemoryMetric)


WEIGHTS: tuple[str, ...] = ("random", "real")


UNLIMITED = ("unlimited", "none")


class BadValue(ValueError):
    """A value that a converter refuses; the caller adds the field path and line."""


_TYPE_NAMES = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string", list: "a list"}


def type_name(value: Any) -> str:
    """What a refused value is, in words ("a table", "a whole number") for an error message."""
    return "a table" if isinstance(value, dict) else _TYPE_NAMES.get(type(value), type(value).__name__)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise BadValue(f"expected a string, got {type_name(value)} {value!r}")
    return value


def _text(value: Any) -> str:
    text = _string(value).strip()
    if not text:
        raise BadValue("must not be empty")
    return text


def _optional_text(value: Any) -> str | None:
    text = _string(value)
    return text or None


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _string(value)
        if text not in choices:
            close = difflib.get_close_matches(text, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadValue(f"unknown value {text!r}{hint}; one of {', '.join(choices)}")
        return text

    return convert


def _integer(value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"expected a whole number, got {type_name(value)} {value!r}")
    if value < minimum:
        raise BadValue(f"must be {'positive' if minimum == 1 else f'at least {minimum}'}, got {value}")
    return value


def _positive_int(value: Any) -> int:
    return _integer(value, minimum=1)


def _step_count(value: Any) -> int:
    return _integer(value, minimum=2)


def _non_negative_int(value: Any) -> int:
    return _integer(value, minimum=0)


def _pixels(value: Any) -> int:
    number = _positive_int(value)
    if number % 8:
        raise BadValue(f"must be a multiple of 8 (the VAE works on 8x8 pixel cells), got {number}")
    return number


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(f"expected a number, got {type_name(value)} {value!r}")
    if value < 0:
        raise BadValue(f"must not be negative, got {value}")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"expected true or false, got {type_name(value)} {value!r}")
    return value


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadValue(f'expected a size such as "16GiB", got {type_name(value)} {value!r}')
    try:
        return parse_size(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def _duration(value: Any) -> float:
    if not isinstance(value, (str, int, float)):
        raise BadValue(f'expected a duration such as "30m", got {type_name(value)} {value!r}')
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def _or_unlimited(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in UNLIMITED:
            return None
        return convert(value)

    return wrapped


def _placement_entry(value: Any) -> str:
    """``component:placement``, e.g. ``text_encoder_2:released`` (the component is checked against the model later)."""
    component, sep, placement = _text(value).partition(":")
    if not sep or not component.strip():
        raise BadValue(f"expected component:placement (e.g. text_encoder_2:released), got {value!r}")
    return f"{component.strip()}:{_choice(PLACEMENTS)(placement.strip())}"


def _list_of(convert: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def wrapped(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise BadValue(f"expected a list, got {type_name(value)} {value!r}")
        if not value:
            raise BadValue("must not be empty (leave the key out to search everything)")
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                converted = convert(item)
            except BadValue as exc:
                raise BadValue(f"item {index + 1}: {exc}") from None
            if converted not in items:
                items.append(converted)
        return tuple(items)

    return wrapped


Kind = Literal["text", "int", "float", "bool", "list", "intlist", "boollist"]


@dataclass(frozen=True)
class Field:
    """One field of the spec: where it is written, where it is kept, how it is read and its flag."""

    toml: str
    """Path in the TOML file, e.g. ``budget.vram``."""
    attr: str
    """Path in ``StudySpec`` and its stored dict, e.g. ``vram_budget`` or ``workload.height``."""
    convert: Callable[[Any], Any]
    kind: Kind = "text"
    """How command-line text is read before ``convert`` (CLI values arrive as strings)."""
    help: str = ""
    """The command-line flag's help; empty: "Spec field <toml path>."."""
    flag: str = ""
    """The keyword of ``apply_overrides`` and the CLI flag (``--trial-timeout`` for ``trial_timeout``);
    empty: the last part of the TOML path."""

    @property
    def keyword(self) -> str:
        return self.flag or self.toml.rsplit(".", 1)[-1]

    @property
    def help_text(self) -> str:
        return self.help or f"Spec field {self.toml}."


NAME_FLAG = "--study"
"""The command line's flag for the spec's ``name`` (the keyword ``name`` of ``apply_overrides``)."""

FIELDS: tuple[Field, ...] = (
    Field("name", "name", _string),
    Field("model", "model", _text, help="Preset name, Hugging Face hub id (local cache) or local diffusers folder."),
    Field(
        "revision",
        "revision",
        _optional_text,
        help="Revision of a hub model in the local cache: a branch, tag or commit hash (default: main).",
    ),
    Field("weights", "weights", _choice(WEIGHTS), help="real, or random (a random-weight preset)."),
    Field("dtype", "dtype", _choice(DTYPES)),
    Field("workload.prompt", "workload.prompt", _string),
    Field("workload.negative_prompt", "workload.negative_prompt", _optional_text),
    Field("workload.height", "workload.height", _pixels, "int"),
    Field("workload.width", "workload.width", _pixels, "int"),
    Field("workload.frames", "workload.frames", _positive_int, "int"),
    Field("workload.steps", "workload.steps", _positive_int, "int"),
    Field("workload.guidance", "workload.guidance", _number, "float"),
    Field("workload.seed", "workload.seed", _non_negative_int, "int"),
    Field("workload.max_sequence_length", "workload.max_sequence_length", _positive_int, "int"),
    Field("budget.vram", "vram_budget", _size, help='VRAM budget, e.g. "16GiB".', flag="budget"),
    Field("budget.counts", "memory_metric", _choice(MEMORY_METRICS)),
    Field("budget.host_ram", "host_ram_budget", _size),
    Field(
        "budget.min_psnr",
        "min_psnr",
        _number,
        "float",
        help="Minimum PSNR (dB) of a trial's output against the study's reference output: a second constraint.",
    ),
    Field(
        "run.trials",
        "trials",
        _or_unlimited(_positive_int),
        "int",
        help="Trials to run in the study in total (seeded baselines included).",
    ),
    Field("run.timeout", "timeout", _or_unlimited(_duration), help='Wall-clock limit for this run, e.g. "90m".'),
    Field("run.trial_timeout", "trial_timeout", _duration, help="Time limit of one trial (a hang is killed after it)."),
    Field("run.timed_calls", "timed_calls", _positive_int, "int"),
    Field("run.max_timed_calls", "max_timed_calls", _positive_int, "int"),
    Field("run.warmup_calls", "warmup_calls", _non_negative_int, "int"),
    Field("run.seed_baselines", "seed_baselines", _boolean, "bool"),
    Field("space.quantization", "space.quantization", _list_of(_choice(QUANT_BACKENDS)), "list"),
    Field("space.quantize_components", "space.quantize_components", _list_of(_text), "list"),
    Field("space.compile", "space.compile", _list_of(_choice(COMPILE_SCOPES)), "list"),
    Field("space.compile_modes", "space.compile_modes", _list_of(_choice(COMPILE_MODES)), "list"),
    Field("space.fullgraph", "space.fullgraph", _list_of(_boolean), "boollist"),
    Field("space.offload", "space.offload", _list_of(_choice(OFFLOAD_KINDS)), "list"),
    Field("space.blocks_per_group", "space.blocks_per_group", _list_of(_positive_int), "intlist"),
    Field(
        "space.placement",
        "space.placement",
        _list_of(_placement_entry),
        "list",
        help="Placements per component to search, e.g. transformer:resident,text_encoder_2:released.",
    ),
    Field(
        "space.attention_backends",
        "space.attention_backends",
        _list_of(_choice(ATTENTION_BACKENDS)),
        "list",
        help="Attention backends to search, e.g. native,_native_cudnn (those usable here are).",
    ),
    Field(
        "space.layerwise_casting",
        "space.layerwise_casting",
        _list_of(_choice(LAYERWISE_CASTINGS)),
        "list",
        help="Layerwise casting of the denoiser to search: none,float8_e4m3fn.",
    ),
    Field("space.vae_tiling", "space.vae_tiling", _list_of(_boolean), "boollist"),
    Field(
        "space.vae_slicing",
        "space.vae_slicing",
        _list_of(_boolean),
        "boollist",
        help="false,true searches VAE slicing (left out by default: a trial decodes one image).",
    ),
    Field("space.vae_channels_last", "space.vae_channels_last", _list_of(_boolean), "boollist"),
    Field(
        "space.tf32",
        "space.tf32",
        _list_of(_boolean),
        "boollist",
        help="false,true searches TF32 matmuls (by default only in float32 studies).",
    ),
    Field("space.fuse_qkv", "space.fuse_qkv", _list_of(_boolean), "boollist"),
    Field("space.denoiser_channels_last", "space.denoiser_channels_last", _list_of(_boolean), "boollist"),
    Field(
        "space.inductor_profiles",
        "space.inductor_profiles",
        _list_of(_choice(INDUCTOR_PROFILE_NAMES)),
        "list",
        help="Inductor flag profiles to search when compiling: default,flux-fast.",
    ),
    Field("run.mix_gpus", "mix_gpus", _boolean, "bool"),
    Field(
        "run.measure_steps",
        "measure_steps",
        _step_count,
        "int",
        help="Trials run this many denoising steps; latency is extrapolated to --steps, the front re-measured.",
    ),
    Field(
        "run.compile_cache",
        "compile_cache",
        _boolean,
        "bool",
        help="true (default): the study's trials share Inductor's compilation caches; false: compile afresh.",
    ),
)


BY_TOML = {f.toml: f for f in FIELDS}
"""TOML path → its field."""


BY_ATTR = {f.attr: f for f in FIELDS}
"""``StudySpec`` attribute path → its field."""


TABLES = {"workload", "budget", "run", "space"}
"""The TOML tables of a spec file (their keys are fields)."""


DICT_TABLES = {"workload", "space"}
"""The tables that a stored spec keeps as nested objects (the others are flat attributes)."""


OVERRIDES: dict[str, str] = {f.keyword: f.toml for f in FIELDS}
"""Keyword of ``apply_overrides`` (the CLI flag, ``--trial-timeout`` for ``trial_timeout``) → TOML path."""


_TRUE = {"true", "yes", "on", "1"}


_FALSE = {"false", "no", "off", "0"}


def from_cli_text(value: Any, kind: Kind) -> Any:
    """Command-line text to the type the field's converter expects; anything else passes through."""
    if not isinstance(value, str):
        return list(value) if isinstance(value, tuple) else value
    text = value.strip()
    if kind in ("list", "intlist", "boollist"):
        item_kind: Kind = {"list": "text", "intlist": "int", "boollist": "bool"}[kind]  # type: ignore[assignment]
        return [from_cli_text(item, item_kind) for item in text.split(",") if item.strip()]
    if kind == "int" and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if kind == "float" and re.fullmatch(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", text):
        return float(text)
    if kind == "bool" and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    return value
