"""Study specs: TOML files (and their stored JSON form) parsed strictly into ``StudySpec``.

The TOML format, every field optional except ``model`` in practice (the default is ``tiny-flux``)::

    name = "flux.1-dev-16gib"     # derived from model and budget when left out (or empty)
    model = "flux.1-dev"          # a preset name, a hub id (from the local cache) or a local diffusers folder
    weights = "random"            # "random" (presets only) or "real"; default: random for presets, else real
    dtype = "bfloat16"            # bfloat16 | float16 | float32: what unquantized components run in

    [workload]                    # what one pipeline call does; keys left out: the model's usual workload
    prompt = "a photo of an astronaut riding a horse on the moon"
    negative_prompt = "blurry"    # optional
    height = 1024                 # pixels, a positive multiple of 8
    width = 1024
    frames = 33                   # video pipelines only
    steps = 28                    # denoising steps
    guidance = 3.5                # optional guidance scale
    seed = 0
    max_sequence_length = 512     # optional: text tokens for T5-style encoders

    [budget]
    vram = "16GiB"                # a size ("16GiB", "500MB") or bytes; on a CPU-only machine: host RAM
    counts = "device"             # device (NVML, includes the CUDA context) | reserved | allocated
    host_ram = "64GiB"            # optional host RAM budget
    min_psnr = 30                 # optional: dB of a trial's output against the study's reference output

    [run]
    trials = 20                   # trials to run (baselines included); "unlimited": until timeout or Ctrl-C
    timeout = "2h"                # wall clock for this run; "90s", "30m", "2h", "1h30m" or seconds
    trial_timeout = "30m"         # one trial is killed (and recorded as a hang) after this
    timed_calls = 3               # minimum timed pipeline calls per trial
    max_timed_calls = 10          # more while the spread is large, up to this
    warmup_calls = 1
    seed_baselines = true         # start with the recipes of the diffusers guide
    measure_steps = 8             # optional: trials run this many steps (at least 2, at most workload.steps);
                                  # latency is extrapolated to workload.steps, the final front re-measured
    compile_cache = true          # share Inductor's compilation caches between the study's trials

    [space]                       # restricts the search; a key left out means "everything that runs here"
    quantization = ["none", "bnb_nf4", "torchao_fp8dq"]
    quantize_components = ["transformer", "text_encoder_2"]
    compile = ["none", "regional", "full"]
    compile_modes = ["default", "max-autotune-no-cudagraphs"]
    fullgraph = [false, true]
    offload = ["none", "model", "sequential", "group_block", "group_leaf"]
    blocks_per_group = [1, 2]
    placement = ["text_encoder_2:resident", "text_encoder_2:released", "vae:model"]   # searched per component
    attention_backends = ["native", "_native_cudnn", "flash", "sage"]   # those usable here are searched
    layerwise_casting = ["none", "float8_e4m3fn"]   # the denoiser's weights stored in float8
    vae_tiling = [false, true]
    vae_slicing = [false, true]   # default [false]: a trial decodes one image, slicing splits a batch
    vae_channels_last = [false, true]
    tf32 = [false, true]          # default: searched in float32 studies only
    fuse_qkv = [false, true]      # the denoiser's fused QKV projections (where it implements them)
    denoiser_channels_last = [false, true]
    inductor_profiles = ["default", "flux-fast"]   # Inductor flags, when compiling

An unknown field, a wrong type or a bad value raises ``SpecError`` naming the field path and its line.
The stored form (``config.spec_to_dict``) is read back by ``spec_from_dict`` with the same checks, and
``apply_overrides`` maps command-line flags onto a spec, again with the same checks.

``placement`` lists the placements searched for the components it names (resident, model, sequential,
group_block, group_leaf, and released for text encoders), tried where the pipeline-wide ``offload`` is none;
left out, the text encoders are searched resident or released. A component the model does not have is an
error naming the ones it has.

Workload keys left out take the model's defaults (``qco_tune.core.workloads.default_workload``: a preset's
own workload, else its pipeline family's), so ``model = "flux.1-dev"`` alone times 1024x1024 in 28 steps.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qco_tune.core.errors import InputError
from qco_tune.core.presets import is_preset, preset_names, suggest_preset
from qco_tune.core.schema import (
    BY_ATTR,
    BY_TOML,
    DICT_TABLES,
    NAME_FLAG,
    OVERRIDES,
    TABLES,
    BadValue,
    Field,
    from_cli_text,
    type_name,
)
from qco_tune.core.studyspec import SpaceRestriction, StudySpec, Workload
from qco_tune.core.units import GIB, MIB
from qco_tune.core.workloads import default_workload

__all__ = [
    "SpecError",
    "apply_overrides",
    "derive_name",
    "load_default_spec",
    "load_spec",
    "parse_spec",
    "spec_for_model",
    "spec_from_dict",
]


class SpecError(InputError):
    """A study spec that cannot be used: the message names the field, its line (in a file) and the problem."""

    def __init__(self, problem: str, *, path: str | None = None, line: int | None = None, source: str | None = None):
        self.problem = problem
        self.path = path
        self.line = line
        self.source = source
        where = ", ".join(p for p in (source, f"line {line}" if line else None) if p)
        text = f"{path}: {problem}" if path else problem
        super().__init__(f"{where}: {text}" if where else text)


def load_spec(path: str | Path) -> StudySpec:
    """Read a study spec TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the study spec: {exc.strerror or exc}", source=str(path)) from None
    return parse_spec(text, source=path.name)


def load_default_spec() -> StudySpec:
    """The embedded default study (``qco_tune/studies/default.toml``): the tiny pipeline on any machine."""
    text = importlib.resources.files("qco_tune").joinpath("studies/default.toml").read_text(encoding="utf-8")
    return parse_spec(text, source="default.toml")


def parse_spec(text: str, *, source: str = "<spec>") -> StudySpec:
    """Parse study spec TOML ``text``; ``source`` names the file in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", source=source) from None
    lines = _LineFinder(text)

    def fail(problem: str, toml_path: str) -> SpecError:
        return SpecError(problem, path=toml_path, line=lines.find(toml_path), source=source)

    values: dict[str, Any] = {}
    for toml_path, raw in _leaves(document):
        field = BY_TOML.get(toml_path)
        if field is None:
            raise fail(_unknown(toml_path, BY_TOML, raw), toml_path)
        try:
            values[field.attr] = field.convert(raw)
        except BadValue as exc:
            raise fail(str(exc), toml_path) from None
    return _assemble(values, lambda attr, problem: fail(problem, BY_ATTR[attr].toml), model_defaults=True)


def spec_for_model(model: str) -> StudySpec:
    """The spec of a study of ``model`` with every other field at its default (the model's usual workload).

    What ``qco-tune run --model X`` starts from when no spec file is given.
    """
    return parse_spec(f"model = {_toml_string(model)}\n", source="--model")


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spec_from_dict(data: dict[str, Any]) -> StudySpec:
    """The inverse of ``config.spec_to_dict`` (specs stored in a study), with the same checks.

    ``spec_to_dict`` drops ``None`` values, so a missing ``trials`` means no trial limit.
    """
    if not isinstance(data, dict):
        raise SpecError(f"a stored spec must be a JSON object, got {type_name(data)}")
    values: dict[str, Any] = {"trials": None}
    for attr, raw in _leaves(data, tables=DICT_TABLES):
        field = BY_ATTR.get(attr)
        if field is None:
            raise SpecError(_unknown(attr, BY_ATTR, raw), path=attr)
        if raw is None or (attr.startswith("space.") and raw == []):
            continue  # dropped or unrestricted
        try:
            values[attr] = field.convert(raw)
        except BadValue as exc:
            raise SpecError(str(exc), path=attr) from None
    return _assemble(values, lambda attr, problem: SpecError(problem, path=attr))


def _leaves(document: dict[str, Any], tables: set[str] = TABLES) -> list[tuple[str, Any]]:
    """(dotted path, value) of every field: known tables are entered, anything else is a leaf."""
    leaves: list[tuple[str, Any]] = []
    for key, value in document.items():
        if key in tables and isinstance(value, dict):
            leaves.extend((f"{key}.{sub}", item) for sub, item in value.items())
        else:
            leaves.append((key, value))
    return leaves


def _unknown(path: str, known: dict[str, Field], value: Any) -> str:
    if any(k.startswith(path + ".") for k in known):
        return f"expected a table of {path}.* keys, got {type_name(value)}"
    leaf = path.rsplit(".", 1)[-1]
    close = [k for k in known if k.rsplit(".", 1)[-1] == leaf][:1]  # a known key in the wrong table
    close = close or difflib.get_close_matches(path, known, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field{hint}"


def _assemble(
    values: dict[str, Any], fail: Callable[[str, str], SpecError], *, model_defaults: bool = False
) -> StudySpec:
    """Build the spec from converted values keyed by attribute path; derive what was left out.

    With ``model_defaults`` workload fields left out take the model's defaults (a stored spec is read
    back without them: it holds every field it had).
    """
    top = {k: v for k, v in values.items() if "." not in k}
    model = top.get("model", StudySpec.model)
    given = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("workload.")}
    defaults = default_workload(model, top.get("revision")) if model_defaults else {}
    workload = Workload(**{**defaults, **given})
    space = SpaceRestriction(**{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("space.")})
    top.setdefault("weights", _default_weights(model))
    spec = StudySpec(name=top.pop("name", "") or "", workload=workload, space=space, **top)
    if spec.max_timed_calls < spec.timed_calls:
        raise fail("max_timed_calls", f"must be at least timed_calls ({spec.timed_calls}), got {spec.max_timed_calls}")
    if spec.measure_steps is not None and spec.measure_steps > spec.workload.steps:
        raise fail("measure_steps", f"must be at most workload.steps ({spec.workload.steps}), got {spec.measure_steps}")
    if spec.weights == "random" and not is_preset(spec.model):
        close = suggest_preset(spec.model)
        if close is not None:
            raise fail("model", f"unknown preset {spec.model!r}; did you mean {close!r}? presets: {_presets()}")
        raise fail(
            "weights", f"random weights are built only for presets ({_presets()}), and {spec.model!r} is not one"
        )
    if spec.weights == "real" and is_preset(spec.model):
        raise fail("weights", f"preset {spec.model!r} has random weights only")
    if spec.name and (not spec.name.strip() or spec.name != spec.name.strip() or not spec.name.isprintable()):
        # A blank name would run a whole study under a name no command can be given back.
        raise fail("name", f"a study name must be printable text without surrounding spaces, got {spec.name!r}")
    if not spec.name:
        spec = dataclasses.replace(spec, name=derive_name(spec))
    return spec


def _presets() -> str:
    return ", ".join(preset_names())


def _default_weights(model: str) -> str:
    return "random" if is_preset(model) else "real"


def derive_name(spec: StudySpec) -> str:
    """A study name from the model and the budget, e.g. ``flux.1-dev-16gib``."""
    model = spec.model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower() or "model"
    model = re.sub(r"[^a-z0-9.]+", "-", model).strip("-") or "model"
    budget = spec.vram_budget
    if budget % GIB == 0:
        size = f"{budget // GIB}gib"
    elif budget % MIB == 0:
        size = f"{budget // MIB}mib"
    else:
        size = f"{budget / GIB:.1f}gib"
    return f"{model}-{size}"


def apply_overrides(spec: StudySpec, **overrides: Any) -> StudySpec:
    """``spec`` with every override that is not None applied, validated like the TOML field it maps to.

    The keywords are the spec fields' (``schema.OVERRIDES``: ``budget``, ``steps``, ``trial_timeout``,
    ``quantization``...; the CLI's flags are the same names), and an unknown one is a ``TypeError``.
    Values may be typed or command-line text (``"20"``, ``"true"``, ``"none,bnb_nf4"`` for lists).
    ``trials``/``timeout`` accept ``"unlimited"``. A changed model re-derives ``weights`` unless given, and
    the workload fields that were the old model's defaults become the new model's; a derived name (or
    ``name=""``) is derived again from the new model and budget.
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"apply_overrides() got an unexpected keyword argument {unknown[0]!r}")
    return _override(spec, {key: value for key, value in overrides.items() if value is not None})


def _override(spec: StudySpec, given: dict[str, Any]) -> StudySpec:
    values = _spec_values(spec)
    if spec.name == derive_name(spec) and "name" not in given:
        values["name"] = ""  # a derived name follows the model and budget
    if "model" in given and "weights" not in given:
        values.pop("weights")
    if "model" in given and "revision" not in given:
        values.pop("revision", None)  # a revision of the old model
    if "model" in given:
        _forget_default_workload(values, spec.model, spec.revision)
    flag_of: dict[str, str] = {}
    for key, raw in given.items():
        field = BY_TOML[OVERRIDES[key]]
        flag = NAME_FLAG if key == "name" else "--" + key.replace("_", "-")
        flag_of[field.attr] = flag
        try:
            values[field.attr] = field.convert(from_cli_text(raw, field.kind))
        except BadValue as exc:
            raise SpecError(str(exc), path=flag) from None
    return _assemble(
        values,
        lambda attr, problem: SpecError(problem, path=flag_of.get(attr, BY_ATTR[attr].toml)),
        model_defaults=True,
    )


def _forget_default_workload(values: dict[str, Any], old_model: str, old_revision: str | None) -> None:
    """Drop the workload fields that equal ``old_model``'s defaults, so that a new model brings its own."""
    defaults = {**dataclasses.asdict(Workload()), **default_workload(old_model, old_revision)}
    for key, default in defaults.items():
        if values.get(f"workload.{key}", default) == default:
            values.pop(f"workload.{key}", None)


def _spec_values(spec: StudySpec) -> dict[str, Any]:
    """The spec's fields keyed by attribute path (``workload.height``), None values left out."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in DICT_TABLES:
            for sub in dataclasses.fields(value):
                item = getattr(value, sub.name)
                if item is not None and item != ():
                    values[f"{f.name}.{sub.name}"] = item
        else:
            values[f.name] = value
    return values


class _LineFinder:
    """Finds the line of a dotted key in TOML text by scanning for ``key =`` inside its ``[table]``.

    tomllib reports no positions; this is a good-enough scan for error messages (1-based, or None).
    """

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\- ]+?)\s*=""")

    def __init__(self, text: str) -> None:
        self._keys: list[tuple[str, int]] = []
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = self._normal(header.group(1))
                self._keys.append((table, number))
                continue
            key = self._KEY.match(line)
            if key:
                name = self._normal(key.group(1))
                self._keys.append((f"{table}.{name}" if table else name, number))

    @staticmethod
    def _normal(key: str) -> str:
        return ".".join(part.strip().strip("\"'") for part in key.split("."))

    def find(self, path: str) -> int | None:
        """The line of ``path``, else of its table, else None."""
        for candidate in (path, path.rsplit(".", 1)[0] if "." in path else None):
            for key, number in self._keys:
                if key == candidate:
                    return number
        return None
