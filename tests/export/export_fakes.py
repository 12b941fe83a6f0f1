"""FAKES for the export tests: a recording pipeline, and studies filled with fake trials.

``recording_run`` runs code against a FAKE diffusers pipeline that records every call instead of
doing it: ``from_pretrained`` (with the quantization config resolved per component), ``to``, the
offloading calls, ``compile``, the Dynamo settings and the pipeline call. Running an exported snippet
and ``qco_tune.from_pretrained`` through it shows whether they do the same thing, in milliseconds
and without weights or a GPU.

``add_fake_trial`` writes a FAKE trial (nothing ran) into a real Optuna storage with the attributes
``qco_tune.loop.study`` records, for the CLI tests.
"""

from __future__ import annotations

import datetime
import enum
import importlib.util
import inspect
import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qco_tune.calls.quantconfigs import LIBRARY_OF_ROLE
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import StudySpec, spec_to_dict

# -- a recording pipeline --------------------------------------------------------------------------


@dataclass
class Trace:
    """What a piece of code did to the fake pipeline, normalised so equal behaviour compares equal."""

    loads: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(target, action, arguments) in order; repeated identical ``to`` calls collapse into one."""
    dynamo: dict[str, Any] = field(default_factory=dict)
    inductor: dict[str, Any] = field(default_factory=dict)
    """``torch._inductor.config`` values the code changed (an Inductor profile)."""
    float32_matmul_precision: str | None = None
    """``torch.get_float32_matmul_precision()`` where the code changed it (TF32), else None."""
    pipeline_calls: list[dict[str, Any]] = field(default_factory=list)
    saved: list[tuple[str, ...]] = field(default_factory=list)

    def record(self, target: str, action: str, arguments: dict[str, Any]) -> None:
        entry = (target, action, arguments)
        moves = [call for call in self.calls if call[0] == target and call[1] == "to"]
        if action == "to" and moves and moves[-1] == entry:
            return  # moving to where it already is changes nothing: one move
        self.calls.append(entry)
        if action == "group_offload":
            # Components are group-offloaded independently, so their order does not matter.
            start = len(self.calls) - 1
            while start > 0 and self.calls[start - 1][1] == "group_offload":
                start -= 1
            self.calls[start:] = sorted(self.calls[start:], key=lambda call: call[0])


def _plain(value: Any) -> Any:
    """Config values as comparable plain data (dtypes, enums and devices as text)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def describe_quantization(quantization_config: Any, model: ModelInfo) -> dict[str, Any]:
    """``{component: (library, class, settings)}`` as diffusers resolves a ``PipelineQuantizationConfig``."""
    if quantization_config is None:
        return {}
    described = {}
    for component in model.components:
        library = LIBRARY_OF_ROLE.get(component.role)
        if library is None:
            continue
        resolved = quantization_config._resolve_quant_config(
            is_diffusers=library == "diffusers", module_name=component.name
        )
        if resolved is not None:
            cls = type(resolved)
            described[component.name] = (cls.__module__.split(".")[0], cls.__name__, _plain(resolved.to_dict()))
    return described


def _bind(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], drop: int = 0) -> dict[str, Any]:
    """Arguments by name with defaults filled in, so ``f()`` and ``f(mode="default")`` compare equal."""
    bound = inspect.signature(func).bind(*((None,) * drop), *args, **kwargs)
    bound.apply_defaults()
    names = list(bound.arguments)[drop:]
    return {n: _plain(bound.arguments[n]) for n in names}


def _compile_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    import torch

    arguments = _bind(torch.compile, args, kwargs, drop=1)
    if arguments.get("mode") is None:
        arguments["mode"] = "default"
    return arguments


def _fake_module_class(trace: Trace, diffusers_model: bool) -> type:
    import torch

    class FakeModule(torch.nn.Module):
        """A FAKE pipeline component: records compile, offload and settings calls."""

        _repeated_blocks = ("FakeBlock",)

        def __init__(self, name: str, dtype: Any = None) -> None:
            super().__init__()
            self.name = name
            self._dtype = dtype

        @property
        def dtype(self) -> Any:
            return self._dtype

        def to(self, *args: Any, **kwargs: Any) -> FakeModule:  # type: ignore[override]
            trace.record(self.name, "to", {"args": _plain(args), **_plain(kwargs)})
            return self

        def compile(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
            trace.record(self.name, "compile", _compile_arguments(args, kwargs))

        def register_forward_pre_hook(self, hook: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            """Records the hook, then runs it once: what it moves off the device is recorded as it happens."""
            trace.record(self.name, "forward_pre_hook", {})
            hook(self, ())

        def compile_repeated_blocks(self, *args: Any, **kwargs: Any) -> None:
            trace.record(self.name, "compile_repeated_blocks", _compile_arguments(args, kwargs))

    if not diffusers_model:
        return FakeModule

    class FakeDiffusersModule(FakeModule):
        def enable_group_offload(self, *args: Any, **kwargs: Any) -> None:
            from diffusers import ModelMixin

            arguments = _bind(ModelMixin.enable_group_offload, args, kwargs, drop=1)
            trace.record(self.name, "group_offload", arguments)

        def enable_layerwise_casting(self, *args: Any, **kwargs: Any) -> None:
            from diffusers import ModelMixin

            arguments = _bind(ModelMixin.enable_layerwise_casting, args, kwargs, drop=1)
            trace.record(self.name, "enable_layerwise_casting", arguments)

        def set_attention_backend(self, *args: Any, **kwargs: Any) -> None:
            from diffusers import ModelMixin

            arguments = _bind(ModelMixin.set_attention_backend, args, kwargs, drop=1)
            trace.record(self.name, "set_attention_backend", arguments)

        def enable_tiling(self) -> None:
            trace.record(self.name, "enable_tiling", {})

        def enable_slicing(self) -> None:
            trace.record(self.name, "enable_slicing", {})

        def fuse_qkv_projections(self) -> None:
            trace.record(self.name, "fuse_qkv_projections", {})

    return FakeDiffusersModule


def _fake_pipeline(trace: Trace, model: ModelInfo, dtype: Any = None) -> Any:
    import diffusers

    real_call = getattr(diffusers, model.pipeline_class).__call__

    class FakePipeline:
        """A FAKE diffusers pipeline with ``model``'s components and its real ``__call__`` signature."""

        def __init__(self) -> None:
            self._modules = {}
            for component in model.components:
                diffusers_model = LIBRARY_OF_ROLE.get(component.role) == "diffusers"
                module = _fake_module_class(trace, diffusers_model)(component.name, dtype)
                self._modules[component.name] = module
                setattr(self, component.name, module)

        @property
        def components(self) -> dict[str, Any]:
            return {**self._modules, "scheduler": object()}

        def to(self, *args: Any, **kwargs: Any) -> FakePipeline:
            device = kwargs.get("device", args[0] if args else None)
            trace.record("pipeline", "to", {"device": str(device)})
            return self

        # device=None means diffusers' default accelerator: CUDA on the machines the tuner measures.
        def enable_model_cpu_offload(self, gpu_id: int | None = None, device: Any = None) -> None:
            trace.record("pipeline", "model_cpu_offload", {"gpu_id": gpu_id, "device": str(device or "cuda")})

        def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: Any = None) -> None:
            trace.record("pipeline", "sequential_cpu_offload", {"gpu_id": gpu_id, "device": str(device or "cuda")})

        def set_progress_bar_config(self, **kwargs: Any) -> None:
            pass

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            arguments = inspect.signature(real_call).bind(None, *args, **kwargs).arguments
            arguments.pop("self")
            trace.pipeline_calls.append(_call_record(arguments))
            image = SimpleNamespace(save=lambda *a, **k: trace.saved.append(tuple(map(str, a))))
            return SimpleNamespace(images=[image], frames=[["frame"]])

    FakePipeline.__call__.__signature__ = inspect.signature(real_call)  # type: ignore[attr-defined]
    return FakePipeline()


def _call_record(arguments: dict[str, Any]) -> dict[str, Any]:
    import torch

    record = {}
    for key, value in arguments.items():
        if isinstance(value, torch.Generator):
            record[key] = ("generator", str(value.device), value.initial_seed())
        elif key not in ("callback_on_step_end", "output_type"):
            record[key] = _plain(value)
    return record


@contextmanager
def recording(model: ModelInfo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trace]:
    """Within the block, diffusers loads FAKE pipelines that record into the yielded ``Trace``.

    CUDA is reported present (compute capability 9.0) so that the configuration checks pass on a
    machine without a GPU; nothing ever reaches a device.
    """
    import accelerate
    import diffusers
    import diffusers.hooks
    import diffusers.utils
    import torch
    import torch._dynamo

    trace = Trace()
    from diffusers.hooks.group_offloading import apply_group_offloading as real_group_offloading

    def from_pretrained(cls: Any, path: Any, **kwargs: Any) -> Any:
        kwargs.pop("local_files_only", None)  # trials never download; snippets may
        quantization = describe_quantization(kwargs.pop("quantization_config", None), model)
        trace.loads.append((str(path), {**_plain(kwargs), "quantization": quantization}))
        return _fake_pipeline(trace, model, kwargs.get("dtype", kwargs.get("torch_dtype")))

    def apply_group_offloading(module: Any, *args: Any, **kwargs: Any) -> None:
        trace.record(module.name, "group_offload", _bind(real_group_offloading, args, kwargs, drop=1))

    def cpu_offload(module: Any, execution_device: Any = None, **kwargs: Any) -> None:
        trace.record(module.name, "cpu_offload", {"device": str(execution_device), **_plain(kwargs)})

    def cpu_offload_with_hook(module: Any, execution_device: Any = None, prev_module_hook: Any = None) -> Any:
        assert prev_module_hook is None  # placed one by one, the hooks are not chained
        trace.record(module.name, "cpu_offload_with_hook", {"device": str(execution_device)})
        return module, SimpleNamespace(offload=lambda: trace.record(module.name, "offloaded_by_hook", {}))

    def export_to_video(frames: Any, path: str, fps: int = 10, **kwargs: Any) -> str:
        trace.saved.append(("video", str(path), str(fps)))
        return path

    def quantize_(module: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        settings = {"config": type(config).__name__, "settings": _plain(vars(config)), **_plain(kwargs)}
        trace.record(module.name, "quantize_", settings)

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(diffusers.hooks, "apply_group_offloading", apply_group_offloading)
    monkeypatch.setattr(diffusers.utils, "export_to_video", export_to_video)
    monkeypatch.setattr(accelerate, "cpu_offload", cpu_offload)
    monkeypatch.setattr(accelerate, "cpu_offload_with_hook", cpu_offload_with_hook)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    if importlib.util.find_spec("torchao") is not None:
        import torchao.quantization

        monkeypatch.setattr(torchao.quantization, "quantize_", quantize_)
    import torch._inductor.config

    before = torch._dynamo.config.get_config_copy()
    inductor_before = torch._inductor.config.get_config_copy()
    precision = torch.get_float32_matmul_precision()
    try:
        yield trace
    finally:
        after = torch._dynamo.config.get_config_copy()
        trace.dynamo = {k: v for k, v in after.items() if before.get(k) != v}
        for key in trace.dynamo:
            setattr(torch._dynamo.config, key, before[key])
        inductor_after = torch._inductor.config.get_config_copy()
        trace.inductor = {k: v for k, v in inductor_after.items() if inductor_before.get(k) != v}
        for key in trace.inductor:
            setattr(torch._inductor.config, key, inductor_before[key])
        if torch.get_float32_matmul_precision() != precision:
            trace.float32_matmul_precision = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision(precision)


def run_snippet(source: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute snippet ``source`` as a script; returns its globals. The environment variables and warning
    filters it sets (its quiet preamble) are undone afterwards, as they would end with a script's process."""
    import os
    import warnings

    scope: dict[str, Any] = {"__name__": "__main__", **(namespace or {})}
    environ = dict(os.environ)
    with warnings.catch_warnings():
        try:
            exec(compile(source, "snippet.py", "exec"), scope)
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return scope


EMPTY_SAFETENSORS = struct.pack("<Q", 2) + b"{}"
"""A valid safetensors file holding no tensors."""


def write_model_index(folder: Path, model: ModelInfo) -> Path:
    """A FAKE diffusers pipeline folder: ``model_index.json`` and component folders holding no tensors.

    Enough for ``resolve_model`` (which checks that every part is there); nothing can load from it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    libraries = {"denoiser": "diffusers", "vae": "diffusers"}
    index: dict[str, Any] = {"_class_name": model.pipeline_class, "_diffusers_version": "0.42.1"}
    for component in model.components:
        index[component.name] = [libraries.get(component.role, "transformers"), component.class_name]
        (folder / component.name).mkdir(exist_ok=True)
        (folder / component.name / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


# -- fake studies ----------------------------------------------------------------------------------

FAKE_GPU = "FAKE GPU 80GB (fake trials)"


def create_fake_study(storage: Any, name: str, spec: StudySpec, model: ModelInfo, gpu: str = FAKE_GPU) -> Any:
    """A FAKE study: created through Optuna with the attributes ``qco_tune.loop.study`` stores, and no trials."""
    import optuna

    from qco_tune.core.keys import GPU_ATTR, MODEL_ATTR, SPEC_ATTR

    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "minimize"])
    study.set_user_attr(SPEC_ATTR, spec_to_dict(spec))
    study.set_user_attr(MODEL_ATTR, model.to_dict())
    study.set_user_attr(GPU_ATTR, gpu)
    return study


def add_fake_trial(
    study: Any,
    config: TrialConfig | dict[str, Any],
    *,
    latency_s: float = 1.0,
    memory_bytes: int = 2**30,
    budget_bytes: int | None = None,
    state: str = "COMPLETE",
    status: str = "ok",
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
    device: str = "cuda",
) -> int:
    """Add a FAKE finished trial (nothing ran) with ``qco.config`` and ``qco.measurement``; returns its number.

    ``state`` is an Optuna state name: COMPLETE (feasible unless ``memory_bytes`` is over ``budget_bytes``),
    FAIL or PRUNED. ``device="cpu"``: measured without CUDA, ``memory_bytes`` being host RAM.
    """
    import optuna
    from optuna.trial import TrialState

    from qco_tune.core.keys import CONFIG_ATTR, MEASUREMENT_ATTR, MEMORY_ATTR, REASON_ATTR, STATUS_ATTR

    data = config.to_dict() if isinstance(config, TrialConfig) else config
    attrs: dict[str, Any] = {CONFIG_ATTR: data, STATUS_ATTR: status}
    if state != "PRUNED":
        measurement = {
            "status": status,
            "device": device,
            "latency_s": latency_s if status == "ok" else None,
            "peak_device_bytes" if device == "cuda" else "peak_host_bytes": memory_bytes,
            "reason": reason,
            "extra": extra or {},
        }
        attrs[MEASUREMENT_ATTR] = measurement
    if reason:
        attrs[REASON_ATTR] = reason
    if state == "COMPLETE":
        attrs[MEMORY_ATTR] = memory_bytes
    over = (memory_bytes - budget_bytes) / 2**30 if budget_bytes else -1.0
    if state == "PRUNED":
        over = 1.0  # skipped trials carry a positive constraint, as the study loop sets it
    now = datetime.datetime(2026, 11, 24, 12, 0, 0)
    trial = optuna.trial.create_trial(
        state=TrialState[state],
        values=[latency_s, memory_bytes / 2**30] if state == "COMPLETE" else None,
        user_attrs=attrs,
        constraints={"vram": over} if state != "FAIL" else None,
    )
    trial.datetime_start = now
    trial.datetime_complete = now
    study.add_trial(trial)
    return int(study.trials[-1].number)
