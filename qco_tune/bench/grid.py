"""A recorded grid of measurements: every configuration of a reduced space, measured once, for replays.

Stdlib only. ``python -m qco_tune.tools.record_grid`` writes a grid on a GPU; ``qco-tune bench search``
replays it on the CPU (``qco_tune.bench.search``). The file is JSON lines:

- line 1, the header: ``{"format": "qco-grid", "version": 1, "spec": ..., "model": ..., "capabilities":
  ..., "budget_bytes": ..., "note": ...}`` with the study spec (``config.spec_to_dict``: model,
  workload, space restriction), the resolved model (``ModelInfo.to_dict``) and the capabilities of the
  machine that recorded it, so the replay builds exactly the recorder's ``SearchSpace``;
- one line per measured configuration: ``{"key", "config", "configuration", "status", "reason",
  "latency_s", "memory_bytes", "first_call_s", "load_s", "trial_s", "fingerprint", "measurement"}``.
  ``memory_bytes`` is the peak the spec's budget counts (``device``: NVML, the CUDA context included);
  ``trial_s`` is the trial's whole cost, child start to result (what a search pays for it);
  ``fingerprint`` is the GPU and versions it ran with; ``measurement`` the full ``Measurement``.
  A configuration recorded twice counts once, the later line winning.

The grid is a subset of the space's valid configurations (``in_grid``): a configuration of the space
that the grid lacks is, to a replay, outside the space.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError
from qco_tune.core.records import Capabilities, Measurement, ModelInfo
from qco_tune.core.studyspec import SpaceRestriction, StudySpec, Workload, spec_to_dict

FORMAT = "qco-grid"
VERSION = 1
GIB = 2**30
GRID_PRESET = "flux.1-dev-reduced"
GRID_BUDGET = 4 * GIB
"""The VRAM budget the replay applies by default (the recorder measures without a cap)."""


class GridError(InputError):
    """A grid file that cannot be read; the message is one line naming the file (and line)."""


@dataclass(frozen=True)
class GridRecord:
    """One measured configuration of a grid."""

    config: TrialConfig
    measurement: Measurement
    trial_s: float
    """GPU seconds the trial cost: child start to result."""
    memory_bytes: int | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.config.key()

    @property
    def ok(self) -> bool:
        return (
            self.measurement.status == "ok" and self.measurement.latency_s is not None and self.memory_bytes is not None
        )

    def to_dict(self) -> dict[str, Any]:
        m = self.measurement
        data = m.to_dict()
        if data.get("output_tail"):
            data["output_tail"] = "\n".join(str(data["output_tail"]).splitlines()[-10:])
        return {
            "key": self.key,
            "config": self.config.to_dict(),
            "configuration": self.config.describe(),
            "status": m.status,
            "reason": m.reason,
            "latency_s": m.latency_s,
            "memory_bytes": self.memory_bytes,
            "first_call_s": m.first_call_s,
            "load_s": m.load_s,
            "trial_s": self.trial_s,
            "fingerprint": self.fingerprint,
            "measurement": data,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridRecord:
        config = TrialConfig.from_dict(_table(data, "config"))
        measurement = Measurement.from_dict(_table(data, "measurement"))
        trial_s = data.get("trial_s")
        if (
            isinstance(trial_s, bool)
            or not isinstance(trial_s, (int, float))
            or not math.isfinite(trial_s)
            or trial_s < 0
        ):
            raise ValueError(f"trial_s must be a non-negative number of seconds, got {trial_s!r}")
        memory = data.get("memory_bytes")
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float))):
            raise ValueError(f"memory_bytes must be a number or null, got {memory!r}")
        fingerprint = data.get("fingerprint") or {}
        if not isinstance(fingerprint, dict):
            raise ValueError("fingerprint must be an object")
        return cls(config, measurement, float(trial_s), int(memory) if memory is not None else None, fingerprint)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object")
    return value


@dataclass
class Grid:
    """A grid file in memory: where and how it was recorded, and its records by configuration key."""

    spec: StudySpec
    model: ModelInfo
    caps: Capabilities
    records: dict[str, GridRecord]
    budget_bytes: int
    note: str = ""

    @property
    def total_seconds(self) -> float:
        """GPU seconds the whole grid cost: what a search that measures everything pays."""
        return sum(r.trial_s for r in self.records.values())

    def header(self) -> dict[str, Any]:
        return header_dict(self.spec, self.model, self.caps, self.budget_bytes, self.note)

    def write(self, path: Path) -> None:
        lines = [json.dumps(self.header())] + [json.dumps(r.to_dict()) for r in self.records.values()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def header_dict(
    spec: StudySpec, model: ModelInfo, caps: Capabilities, budget_bytes: int, note: str = ""
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec_to_dict(spec),
        "model": model.to_dict(),
        "capabilities": caps.to_dict(),
        "budget_bytes": budget_bytes,
        "note": note,
    }


def load_grid(path: Path) -> Grid:
    """Read a grid file; ``GridError`` (one line) when it is missing, empty or malformed."""
    from qco_tune.core.spec import SpecError, spec_from_dict

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GridError(f"{path}: no such grid file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(f"{path}: cannot read it ({exc})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise GridError(f"{path}: empty file, not a grid")
    parsed = []
    for number, line in lines:
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise GridError(f"{path}, line {number}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise GridError(f"{path}, line {number}: expected a JSON object")
        parsed.append((number, data))
    header = parsed[0][1]
    if header.get("format") != FORMAT:
        raise GridError(f'{path}, line {parsed[0][0]}: not a qco-tune grid (no "format": "{FORMAT}" header)')
    if not isinstance(header.get("version"), int) or header["version"] > VERSION:
        raise GridError(
            f"{path}: grid format version {header.get('version')!r} is not one this qco-tune reads ({VERSION})"
        )
    try:
        spec = spec_from_dict(_table(header, "spec"))
        model = ModelInfo.from_dict(_table(header, "model"))
        caps = Capabilities.from_dict(_table(header, "capabilities"))
        budget = header.get("budget_bytes")
        budget = int(budget) if isinstance(budget, (int, float)) and not isinstance(budget, bool) else spec.vram_budget
    except (SpecError, ValueError, TypeError, KeyError) as exc:
        raise GridError(f"{path}, line {parsed[0][0]}: bad header: {exc}") from None
    records: dict[str, GridRecord] = {}
    for number, data in parsed[1:]:
        try:
            record = GridRecord.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise GridError(f"{path}, line {number}: bad record: {exc}") from None
        records[record.key] = record
    if not records:
        raise GridError(f"{path}: the grid has no measurements yet")
    return Grid(spec, model, caps, records, budget, str(header.get("note") or ""))


def append_record(path: Path, record: GridRecord) -> None:
    """Add one measured configuration to a grid file (its header must be there)."""
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(json.dumps(record.to_dict()) + "\n")


def recorded_keys(path: Path) -> dict[str, str]:
    """Configuration key → status of every record in ``path`` (empty when there is no file yet)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip():
            data = json.loads(line)
            out[str(data["key"])] = str(data.get("status"))
    return out


# -- the grid's space -----------------------------------------------------------------------------------

GRID_WORKLOAD = Workload(height=512, width=512, steps=4, guidance=3.5, seed=0, max_sequence_length=512)
GRID_SPACE = SpaceRestriction(
    quantization=("bnb_nf4", "torchao_int8wo", "torchao_fp8dq"),
    quantize_components=("transformer",),
    compile=("none", "regional", "full"),
    compile_modes=("default", "max-autotune-no-cudagraphs"),
    fullgraph=(False,),
    offload=("none", "model", "group_leaf"),
    attention_backends=("native",),
    layerwise_casting=("none",),
    vae_tiling=(False,),
    vae_slicing=(False,),
    vae_channels_last=(False,),
    tf32=(False,),
    fuse_qkv=(False,),
    denoiser_channels_last=(False,),
    inductor_profiles=("default",),
)
"""Quantization of the transformer (none, bitsandbytes NF4, torchao int8 weight-only, torchao float8) x
compilation x offloading: none, model CPU offload, leaf-level group offloading without and with a stream.
The other settings stay at their defaults."""


def grid_spec(model: str = GRID_PRESET, workload: Workload = GRID_WORKLOAD) -> StudySpec:
    """The spec whose space the recorded grid covers (``in_grid`` narrows it further)."""
    return StudySpec(
        name=f"search-grid-{model}",
        model=model,
        weights="random",
        workload=workload,
        vram_budget=GRID_BUDGET,
        trials=None,
        space=GRID_SPACE,
    )


def in_grid(config: TrialConfig) -> bool:
    """The configurations of ``grid_spec``'s space that the grid measures.

    Compilation: none, regional in the default and the autotuning mode, whole-denoiser in the default
    mode (the costliest variant, whole and autotuned, is left out). Group offloading: either no stream
    (blocking copies) or a stream with non-blocking copies, the guide's setting.
    """
    c = config.canonical()
    if c.compile == "full" and c.compile_mode != "default":
        return False
    if c.is_group_offload:
        return (c.use_stream, c.non_blocking, c.record_stream, c.low_cpu_mem_usage) in (
            (False, False, False, False),
            (True, True, False, False),
        )
    return True


# -- a synthetic grid (tests, and the sampler's design before the real one exists) ------------------------


@dataclass(frozen=True)
class SyntheticShape:
    """How a synthetic grid's figures are made: the structure the real one is expected to have.

    Latency: eager bf16 ``base_latency_s`` x a factor per quantization backend (dequantizing costs;
    float8 is slow eagerly and fast compiled) x per placement of the denoiser (model offload moves it
    per call; leaf-level group offloading moves every layer per step, a stream hides part of it) x a
    compile factor, plus the moves of the text encoders released after encoding. Memory: the memory
    model's prediction (``qco_tune.search.memory``) with a per-backend bias and noise. Cost: process
    start, load, quantization, the cold start (compilation: regional is cheaper than whole, autotuning
    much dearer; more with offloading, which recompiles) and the calls.
    """

    base_latency_s: float = 0.35
    quant_factor: tuple[tuple[str, float, float], ...] = (
        ("none", 1.0, 0.80),
        ("bnb_nf4", 1.30, 1.05),
        ("torchao_int8wo", 1.45, 0.70),
        ("torchao_fp8dq", 1.70, 0.55),
        ("quanto_int8", 2.20, 1.60),
    )
    """(backend, eager factor, compiled factor) relative to eager bf16."""
    offload_factor: tuple[tuple[str, float], ...] = (("resident", 1.0), ("model", 1.9), ("group_leaf", 4.0))
    """By the denoiser's placement (``TrialConfig.placement_of``: its own, else the pipeline-wide offload's)."""
    released_s: float = 0.02
    """Seconds a call spends moving each text encoder released after encoding off the GPU."""
    stream_factor: float = 0.55
    manc_factor: float = 0.92
    full_factor: float = 0.96
    start_s: float = 14.0
    cold_s: tuple[tuple[str, float], ...] = (
        ("regional/default", 35.0),
        ("regional/max-autotune-no-cudagraphs", 110.0),
        ("full/default", 60.0),
        ("full/max-autotune-no-cudagraphs", 240.0),
    )
    offload_recompile: float = 1.4
    calls: int = 5
    noise: float = 0.04
    fail_rate: float = 0.04


def synthetic_grid(seed: int = 0, shape: SyntheticShape | None = None, caps: Capabilities | None = None) -> Grid:
    """A grid of made-up figures over ``grid_spec``'s space on an H100-like machine (labelled synthetic)."""
    from qco_tune.core.presets import get_preset
    from qco_tune.search import memory
    from qco_tune.search.space import SearchSpace

    shape = shape or SyntheticShape()
    caps = caps or Capabilities(
        cuda=True,
        gpu_name="synthetic H100",
        gpu_count=1,
        total_memory=80 * GIB,
        compute_capability=(9, 0),
        backends=("bitsandbytes", "torchao", "quanto"),
        host="synthetic",
    )
    spec = grid_spec()
    model = get_preset(spec.model).model_info()
    space = SearchSpace.build(spec, model, caps)
    rng = random.Random(seed)
    quant = {b: (e, c) for b, e, c in shape.quant_factor}
    offload = dict(shape.offload_factor)
    cold = dict(shape.cold_s)
    bias = {b: rng.uniform(0.85, 1.2) for b in quant}
    records: dict[str, GridRecord] = {}
    for config in space.enumerate():
        if not in_grid(config):
            continue
        backend = config.backend_for(model.denoiser)
        eager, compiled = quant[backend]
        compiling = config.compile != "none"
        latency = shape.base_latency_s * (compiled if compiling else eager)
        if compiling:
            latency *= (shape.full_factor if config.compile == "full" else 1.0) * (
                shape.manc_factor if config.compile_mode != "default" else 1.0
            )
        placed = config.placement_of(model.denoiser)
        move = offload.get(placed, 1.0)
        if config.use_stream:
            move = 1 + (move - 1) * shape.stream_factor
        latency *= move * rng.lognormvariate(0, shape.noise)
        latency += shape.released_s * sum(config.placement_of(e) == "released" for e in model.text_encoders)
        predicted = memory.predict(model, config, spec, caps).device_bytes or GIB
        peak = int(predicted * bias[backend] * rng.lognormvariate(0, 0.05))
        cold_start = latency * 1.5
        if compiling:
            cold_start += (
                cold[f"{config.compile}/{config.compile_mode}"]
                * (shape.offload_recompile if placed != "resident" else 1.0)
                * rng.lognormvariate(0, 0.1)
            )
        load = 4.0 + (3.0 if backend != "none" else 0.0)
        trial_s = shape.start_s + load + cold_start + shape.calls * latency
        if rng.random() < shape.fail_rate:
            measurement = Measurement(status="error", device="cuda", reason="synthetic failure", load_s=load)
            trial_s = shape.start_s + load + cold_start / 2
            records[config.key()] = GridRecord(config, measurement, round(trial_s, 2), None, {"gpu": caps.gpu_name})
            continue
        measurement = Measurement(
            status="ok",
            device="cuda",
            latency_s=latency,
            load_s=load,
            first_call_s=cold_start,
            peak_device_bytes=peak,
            extra={"wall_s": trial_s},
        )
        records[config.key()] = GridRecord(config, measurement, round(trial_s, 2), peak, {"gpu": caps.gpu_name})
    note = f"SYNTHETIC grid (seed {seed}): made-up figures with the expected structure, not measurements"
    return Grid(spec, model, caps, records, GRID_BUDGET, note)


def grid_of(records: Iterable[GridRecord], like: Grid) -> Grid:
    """``like`` with other records (tests)."""
    return dataclasses.replace(like, records={r.key: r for r in records})
