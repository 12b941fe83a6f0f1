"""A configuration as a plan of statements: quantization, placement, settings, compile and the pipeline call.

Pure: quantization, settings and dynamo come from ``calls`` (the data the trial child applies too);
rendered by ``export.render``.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Collection
from dataclasses import dataclass

from qco_tune.calls.dynamo import DENOISER_NAMES, dynamo_settings, inductor_settings
from qco_tune.calls.pipeline import GENERATOR_DEVICE, workload_arguments
from qco_tune.calls.placement import (
    CPU_OFFLOAD_METHODS,
    PLACING_ORDER,
    STREAM_FLAGS,
    PlacementStep,
    compile_call,
    group_offload_options,
    placement_steps,
)
from qco_tune.calls.quantconfigs import (
    BACKEND_CONFIGS,
    config_call,
    library_of,
    quantized_at_load,
    quantizes_on_device,
)
from qco_tune.calls.settings import SettingCall, moves_after_settings, pipeline_settings, process_settings
from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError
from qco_tune.core.pycode import Call, Code, Name, Value, string_literal
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import Workload
from qco_tune.core.units import format_size

DTYPES = ("bfloat16", "float16", "float32")


DEVICE_VARIABLE = "device"
"""The snippet's module-level variable naming the device it runs on (``"cuda"``: where it was measured)."""


VIDEO_FPS = {"Wan": 16, "LTX": 24, "CogVideoX": 8, "HunyuanVideo": 15, "Mochi": 30}
"""Frames per second of ``export_to_video`` by pipeline class prefix (the model's native rate)."""


DEFAULT_FPS = 16


OUTPUT_IMAGE = "output.png"


OUTPUT_VIDEO = "output.mp4"


@dataclass(frozen=True)
class ExportHeader:
    """Where an exported configuration came from, written as comments above it."""

    study: str
    trial: int
    best: bool
    """True when the trial was chosen as the study's fastest feasible trial."""
    qco_version: str
    latency_s: float | None = None
    memory_bytes: int | None = None
    memory_metric: str = "device"
    """What the memory figure counts: ``device``, ``reserved``, ``allocated``, or ``host`` (a CPU trial)."""
    budget_bytes: int | None = None
    gpu: str | None = None
    date: str | None = None
    """ISO date the trial finished."""
    notes: tuple[str, ...] = ()
    """Further lines, e.g. that the study measured random weights."""
    warning: str | None = None
    """Set when the trial did not finish feasibly: the code may not run or fit."""

    def lines(self, config: TrialConfig) -> list[str]:
        """The header as one-line texts (without ``#``)."""
        chosen = "the fastest feasible trial" if self.best else "chosen by number"
        lines = [f"Exported by qco-tune {self.qco_version} from study {self.study!r}, trial {self.trial} ({chosen})."]
        measured = []
        if self.latency_s is not None:
            measured.append(f"{self.latency_s:.3f} s per call")
        if self.memory_bytes is not None:
            size = format_size(self.memory_bytes)
            budget = f", budget {format_size(self.budget_bytes)}" if self.budget_bytes else ""
            if self.memory_metric == "host":
                measured.append(f"peak host RAM {size}")
            else:
                measured.append(f"peak VRAM {size} ({self.memory_metric} memory{budget})")
        where = " on " + ", ".join(x for x in (self.gpu, self.date) if x) if (self.gpu or self.date) else ""
        if measured:
            lines.append("Measured " + " and ".join(measured) + where + ".")
        elif where:
            lines.append(f"Nothing was measured; it ran{where}.")
        lines.append(f"Configuration: {config.describe()}.")
        lines += self.notes
        if self.warning:
            lines.append(f"WARNING: {self.warning}")
        return lines


@dataclass(frozen=True)
class Statement:
    """One call in the snippet: ``[assign =] callee(args, kwargs)``."""

    callee: Name | Code
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()
    assign: str | None = None


@dataclass(frozen=True)
class QuantPlan:
    """``PipelineQuantizationConfig`` arguments: one shared backend, or a mapping of per-component configs."""

    quant_backend: str | None = None
    quant_kwargs: tuple[tuple[str, Value], ...] = ()
    components: tuple[str, ...] = ()
    mapping: tuple[tuple[str, Call], ...] = ()

    def kwargs(self) -> tuple[tuple[str, Value], ...]:
        if self.quant_backend is not None:
            return (
                ("quant_backend", self.quant_backend),
                ("quant_kwargs", dict(self.quant_kwargs)),
                ("components_to_quantize", list(self.components)),
            )
        return (("quant_mapping", dict(self.mapping)),)


@dataclass(frozen=True)
class ExportPlan:
    """What an exported snippet does, in order; ``render_plan`` writes it."""

    model_ref: str
    dtype: str
    revision: str | None = None
    """``from_pretrained(..., revision=...)``: the hub revision the study measured (None: main)."""
    dynamo: tuple[tuple[str, Value], ...] = ()
    inductor: tuple[tuple[str, Value], ...] = ()
    """``torch._inductor.config`` values of the configuration's Inductor profile, set before compiling."""
    quantization: QuantPlan | None = None
    move_to_device: bool = True
    """``pipeline.to(device)``: only without offloading (offloading places the weights itself)."""
    process_settings: tuple[Statement, ...] = ()
    """Process-wide settings before loading (TF32)."""
    load_on_device: bool = False
    """``from_pretrained(..., device_map=device)``: a backend quantizes on the GPU while loading."""
    settings: tuple[Statement, ...] = ()
    """Calls on the loaded components (layerwise casting, attention backend, VAE), before offloading."""
    move_after_settings: bool = False
    """``pipeline.to(device)`` comes after the settings (layerwise casting first stores float8 on the host)."""
    offload_title: str = ""
    offload: tuple[Statement, ...] = ()
    compile: Statement | None = None
    compile_artifacts: str | None = None
    """A folder of a study's portable compile artefacts, loaded before the first call compiles (opt-in)."""
    strings: tuple[tuple[str, str], ...] = ()
    """Module-level string variables (prompt, negative prompt) that the call refers to."""
    call_kwargs: tuple[tuple[str, Value], ...] = ()
    video: bool = False
    fps: int = DEFAULT_FPS
    device: str = "cuda"


def _component_expr(name: str) -> str:
    """``pipeline.name``, or a subscript where the name is not a plain identifier (it comes from a file)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"pipeline.{name}"
    return f"pipeline.components[{string_literal(name)}]"


def plan_quantization(config: TrialConfig, model: ModelInfo) -> QuantPlan | None:
    """One shared ``quant_backend`` where every quantized component uses one backend that both libraries
    configure alike (bitsandbytes), else a ``quant_mapping`` of diffusers and transformers config objects.

    A denoiser quantized after fusing (``quantconfigs.quantized_after_fusing``) is left out: it loads unquantized.
    Raises ``ValueError`` for a component the model does not have or that cannot be quantized.
    """
    names = [c.name for c in model.components]
    libraries = {}
    for component, _ in config.quantization:
        if component not in names:
            raise InputError(f"cannot quantize {component!r}: the model has no such component ({', '.join(names)})")
        libraries[component] = library_of(model.component(component))
    at_load = quantized_at_load(config, model.denoiser)
    if not at_load:
        return None
    ordered = _in_model_order(model, [c for c, _ in at_load])
    backends = {b for _, b in at_load}
    shared = BACKEND_CONFIGS[next(iter(backends))] if len(backends) == 1 else None
    if shared is not None and shared.pipeline_backend is not None and shared.transformers_kwargs is None:
        return QuantPlan(quant_backend=shared.pipeline_backend, quant_kwargs=shared.kwargs, components=tuple(ordered))
    return QuantPlan(mapping=tuple((c, config_call(config.backend_for(c), libraries[c])) for c in ordered))


def _in_model_order(model: ModelInfo, components: list[str]) -> list[str]:
    """Components by role (denoiser, VAE, text encoders, others), then as the model lists them."""
    order = {c.name: (PLACING_ORDER.get(c.role, 3), i) for i, c in enumerate(model.components)}
    return sorted(components, key=lambda c: order.get(c, (4, 0)))


def _denoiser(model: ModelInfo) -> str:
    """The denoiser that ``measure.backends.compile`` compiles when a pipeline has several (Wan 2.2: transformer_2)."""
    names = [c.name for c in model.components]
    return next((n for n in DENOISER_NAMES if n in names), model.denoiser)


def plan_offload(config: TrialConfig, model: ModelInfo) -> tuple[str, tuple[Statement, ...]]:
    """The offloading section's title and calls, as ``measure.backends.offload.apply_offload`` makes them."""
    config = config.canonical()
    device = Code(DEVICE_VARIABLE)
    if config.placement:
        return plan_placement(config, model)
    if config.offload in CPU_OFFLOAD_METHODS:
        method = CPU_OFFLOAD_METHODS[config.offload]
        title = f"{config.offload} CPU offloading"
        return title, (Statement(Code(f"pipeline.{method}"), kwargs=(("device", device),)),)
    if not config.is_group_offload:
        return "", ()
    leaf = config.offload == "group_leaf"
    statements = [*_group_devices()]
    for name in _in_model_order(model, [c.name for c in model.components]):
        statements.append(_group_statement(config, model, name, config.offload))
    title = "group offloading, " + ("leaf level" if leaf else f"{config.blocks_per_group} block(s) per group")
    return title, tuple(statements)


def _group_devices() -> tuple[Statement, ...]:
    return (
        Statement(Name("torch", "device"), (Code(DEVICE_VARIABLE),), assign="onload_device"),
        Statement(Name("torch", "device"), ("cpu",), assign="offload_device"),
    )


def _group_statement(config: TrialConfig, model: ModelInfo, name: str, placement: str) -> Statement:
    """Group offloading of one component: diffusers models have enable_group_offload; transformers models
    take the hook directly."""
    kwargs: list[tuple[str, Value]] = [
        ("onload_device", Code("onload_device")),
        ("offload_device", Code("offload_device")),
    ]
    kwargs += [
        (key, value)
        for key, value in group_offload_options(config, placement).items()
        if not (key == "num_blocks_per_group" and value is None) and not (key in STREAM_FLAGS and not value)
    ]
    target = _component_expr(name)
    if model.component(name).role in ("denoiser", "vae"):
        return Statement(Code(f"{target}.enable_group_offload"), kwargs=tuple(kwargs))
    return Statement(Name("diffusers.hooks", "apply_group_offloading"), (Code(target),), tuple(kwargs))


def _hook_variable(name: str) -> str:
    return re.sub(r"\W", "_", name) + "_hook"


def plan_placement(config: TrialConfig, model: ModelInfo) -> tuple[str, tuple[Statement, ...]]:
    """Placement one component at a time, as ``measure.backends.offload.place_components`` makes it."""
    steps = placement_steps(config, [(c.name, c.role) for c in model.components])
    statements: list[Statement] = list(_group_devices()) if any(s.kind == "group" for s in steps) else []
    statements += [_placement_statement(config, model, step) for step in steps]
    # Each statement names its component; the title says what the hooks at the end are for.
    title = "placement per component" + (
        " (hooks move components off the GPU)" if any(s.kind == "offload_when" for s in steps) else ""
    )
    return title, tuple(statements)


def _placement_statement(config: TrialConfig, model: ModelInfo, step: PlacementStep) -> Statement:
    target = _component_expr(step.component)
    device = Code(DEVICE_VARIABLE)
    if step.kind == "resident":
        return Statement(Code(f"{target}.to"), (device,))
    if step.kind == "group":
        return _group_statement(config, model, step.component, step.placement)
    if step.kind == "sequential":  # offload_buffers as diffusers' enable_sequential_cpu_offload sets it
        return Statement(
            Name("accelerate", "cpu_offload"),
            (Code(target), device),
            (("offload_buffers", Code(f"len({target}._parameters) > 0")),),
        )
    if step.kind == "hook":
        hook = Name("accelerate", "cpu_offload_with_hook")
        return Statement(hook, (Code(target), device), assign=f"_, {_hook_variable(step.component)}")
    trigger = _component_expr(step.trigger) + (f".{step.trigger_module}" if step.trigger_module else "")
    # Moves the hooked component back to the CPU when the trigger starts; outside any compiled graph.
    offload = f"torch.compiler.disable(lambda module, args: {_hook_variable(step.component)}.offload())"
    return Statement(Code(f"{trigger}.register_forward_pre_hook"), (Code(offload),))


def _setting_statement(call: SettingCall, model: ModelInfo) -> Statement:
    if call.target == "torch":
        return Statement(Name("torch", call.method), call.args, call.kwargs)
    if call.target == "denoiser":
        target = _component_expr(_denoiser(model))
    else:
        vae = next((c.name for c in model.components if c.role == "vae"), None)
        if vae is None:
            raise InputError(f"{call.method}: {model.reference} has no VAE")
        target = _component_expr(vae)
    if call.function is not None:
        return Statement(call.function, (Code(target), *call.args), call.kwargs)
    return Statement(Code(f"{target}.{call.method}"), call.args, call.kwargs)


def plan_settings(
    config: TrialConfig, model: ModelInfo, dtype: str
) -> tuple[tuple[Statement, ...], tuple[Statement, ...]]:
    """(process-wide settings, calls on the components) as ``measure.backends.settings.apply_settings`` makes them."""
    process = tuple(_setting_statement(c, model) for c in process_settings(config))
    calls = pipeline_settings(config, dtype, _denoiser(model))
    return process, tuple(_setting_statement(c, model) for c in calls)


def plan_compile(config: TrialConfig, model: ModelInfo) -> Statement | None:
    """``compile_repeated_blocks`` (regional) or ``compile`` (full) of the denoiser, with non-default options."""
    call = compile_call(config.canonical())
    if call is None:
        return None
    method, options = call
    kwargs: list[tuple[str, Value]] = [
        (key, value)
        for key, value in options.items()
        if (key == "mode" and value != "default") or (key == "fullgraph" and value)
    ]
    return Statement(Code(f"{_component_expr(_denoiser(model))}.{method}"), kwargs=tuple(kwargs))


def plan_call(
    workload: Workload, *, video: bool, call_parameters: Collection[str] | None = None
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, Value], ...]]:
    """String variables and keyword arguments of the pipeline call, as the trial child makes it
    (``measure.backends.record.call_kwargs``, both from ``calls.pipeline``).

    Optional inputs appear only where set and, when ``call_parameters`` is known (the names the
    trial's pipeline accepted), only where the pipeline takes them. The generator is a seeded CPU
    generator, as in the trials, so the noise matches theirs.
    """
    strings = [("prompt", workload.prompt)]
    kwargs: list[tuple[str, Value]] = [("prompt", Code("prompt"))]
    for key, value, required in workload_arguments(workload, video=video)[1:]:  # the prompt is a variable
        if value is None or (not required and call_parameters is not None and key not in call_parameters):
            continue
        if key == "negative_prompt":
            strings.append((key, value))
            value = Code(key)
        kwargs.append((key, value))
    # torch is imported by every snippet (the dtype), so the generator can be written as text.
    kwargs.append(("generator", Code(f'torch.Generator("{GENERATOR_DEVICE}").manual_seed({int(workload.seed)})')))
    return tuple(strings), tuple(kwargs)


def plan_export(
    config: TrialConfig,
    *,
    model: ModelInfo,
    workload: Workload,
    dtype: str = "bfloat16",
    model_ref: str | None = None,
    call_parameters: Collection[str] | None = None,
    device: str = "cuda",
    compile_artifacts: str | None = None,
) -> ExportPlan:
    """What the snippet for ``config`` does. ``model_ref`` replaces what ``from_pretrained`` loads
    (default: ``model.reference``); ``device`` is the value of the snippet's ``device`` variable;
    ``compile_artifacts``, a folder the snippet loads a study's compile artefacts from (compiling
    configurations only).

    Raises ``ValueError`` for an unknown dtype or a quantized component the model lacks.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    config = config.canonical()
    title, offload = plan_offload(config, model)
    process, settings = plan_settings(config, model, dtype)
    strings, call_kwargs = plan_call(workload, video=model.is_video, call_parameters=call_parameters)
    fps = next((v for k, v in VIDEO_FPS.items() if model.pipeline_class.startswith(k)), DEFAULT_FPS)
    model_ref = model_ref if model_ref is not None else model.reference
    return ExportPlan(
        model_ref=model_ref,
        dtype=dtype,
        # the revision the study measured, where the snippet loads the study's hub model
        revision=model.revision if model.source == "hub" and model_ref == model.reference else None,
        dynamo=tuple(dynamo_settings(config).items()),  # type: ignore[arg-type]
        inductor=tuple(inductor_settings(config).items()),  # type: ignore[arg-type]
        quantization=plan_quantization(config, model),
        move_to_device=not config.is_offloaded,
        process_settings=process,
        load_on_device=quantizes_on_device(config),
        settings=settings,
        move_after_settings=moves_after_settings(config),
        offload_title=title,
        offload=offload,
        compile=plan_compile(config, model),
        compile_artifacts=compile_artifacts if config.compile != "none" else None,
        strings=strings,
        call_kwargs=call_kwargs,
        video=model.is_video,
        fps=fps,
        device=device,
    )
