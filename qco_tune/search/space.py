"""The search space: which knobs exist, their conditions, and the rules that make a combination invalid.

Stdlib only. A ``SearchSpace`` is built once per study from the spec (its restriction), the model (its
components) and the machine (``Capabilities``). Optuna's categorical distributions must not change
between trials, so every parameter always has the same choices; combinations that cannot run are
not avoided by dynamic choices but reported by ``violations`` with a sentence per broken rule.

Knobs, with the conditions under which they are suggested (parameter names as in
``TrialConfig.to_params``)::

    quant.<component>   always (one per searched component: the denoiser and text encoders)
    compile             always
    compile_mode        compile != none
    fullgraph           compile != none
    offload             always
    blocks_per_group    offload == group_block
    use_stream          offload in (group_block, group_leaf)
    non_blocking        offload in (group_block, group_leaf)
    record_stream       group offloading with use_stream
    low_cpu_mem_usage   group offloading with use_stream
    attention_backend   always (native, and the others that the probe found usable here)
    layerwise_casting   always (the rule below forbids it with a quantized denoiser)
    vae_tiling          the VAE supports tiling
    vae_slicing         the VAE supports slicing, and the study lists it (a trial decodes one image)
    vae_channels_last   the VAE is a 2D convolutional one
    tf32                a GPU of compute capability 8.0 or newer, and a float32 study (or the study lists it)

The knobs fall into three groups that are enumerated separately and combined: quantization
(``quant.*``), runtime (compile and offload) and settings (the rest). Each rule says which groups it
reads (``Rule.scope``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from qco_tune.calls.backends import BACKEND_INFO, FP8_MIN_CAPABILITY, backends_of
from qco_tune.core.config import (
    ATTENTION_BACKENDS,
    COMPILE_MODES,
    COMPILE_SCOPES,
    CUDA_GRAPH_MODES,
    GROUP_OFFLOADS,
    LAYERWISE_CASTINGS,
    OFFLOAD_KINDS,
    QUANT_BACKENDS,
    SETTINGS_DEFAULTS,
    Capabilities,
    CompileMode,
    ComponentInfo,
    ModelInfo,
    QuantBackend,
    StudySpec,
    TrialConfig,
)

__all__ = ["BACKEND_LIBRARY", "RULES", "Rule", "SearchSpace", "SpaceError", "TrialLike"]

BACKEND_LIBRARY: dict[str, str] = {name: info.library for name, info in BACKEND_INFO.items()}
"""Quantization backend → the library (as named in ``Capabilities.backends``) that provides it."""
BNB_BACKENDS = backends_of("bitsandbytes")
QUANTO_BACKENDS = backends_of("quanto")
TENSOR_CORE_CAPABILITY = (8, 0)
"""Ampere: TF32 tensor cores, and torchao's int4 (tinygemm) kernel."""
SETTINGS_KNOBS: tuple[str, ...] = tuple(SETTINGS_DEFAULTS)
HALF_ONLY_ATTENTION = frozenset({"flash", "_flash_3", "sage", "_native_flash", "_native_cudnn"})
"""Attention backends diffusers registers for bfloat16/float16 inputs only (``_check_qkv_dtype_bf16_or_fp16``)."""
VAE_TILING_CLASSES = frozenset(
    {
        "AutoencoderDC",
        "AutoencoderKL",
        "AutoencoderKLAllegro",
        "AutoencoderKLCogVideoX",
        "AutoencoderKLCosmos",
        "AutoencoderKLFlux2",
        "AutoencoderKLHunyuanImage",
        "AutoencoderKLHunyuanImageRefiner",
        "AutoencoderKLHunyuanVideo",
        "AutoencoderKLHunyuanVideo15",
        "AutoencoderKLKVAE",
        "AutoencoderKLKVAEVideo",
        "AutoencoderKLLTX2Video",
        "AutoencoderKLLTXVideo",
        "AutoencoderKLMagvit",
        "AutoencoderKLMiniMaxH3",
        "AutoencoderKLMochi",
        "AutoencoderKLQwenImage",
        "AutoencoderKLQwenImage21",
        "AutoencoderKLWan",
        "AutoencoderTiny",
        "AutoencoderVidTok",
    }
)
"""VAE classes that implement both tiled and sliced decoding (``use_tiling``, ``use_slicing``) in diffusers
0.42; ``tests/backends/test_knobs_cpu.py`` checks the table against the installed diffusers."""
VAE_2D_CLASSES = frozenset(
    {"AutoencoderKL", "AutoencoderDC", "AutoencoderTiny", "AutoencoderKLFlux2", "AutoencoderKLHunyuanImage"}
)
"""VAE classes made of 2D convolutions, whose weights take the channels-last memory format."""
DEFAULT_BLOCKS_PER_GROUP = (1, 2)
BOOLS = (False, True)
QUANTIZABLE_ROLES = ("denoiser", "text_encoder")
# The guide's quantization recipe uses bitsandbytes NF4; where that cannot run, the first of these that can.
RECIPE_BACKENDS: tuple[QuantBackend, ...] = ("bnb_nf4", "torchao_int8wo", "quanto_int8")
STREAM_KNOBS = ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")


class SpaceError(ValueError):
    """A study restriction that does not fit the model (e.g. quantizing a component it does not have)."""


class TrialLike(Protocol):
    """The part of ``optuna.trial.Trial`` the space uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


Group = Literal["quantization", "runtime", "settings"]
Key = Callable[[TrialConfig], Any]
BOTH: tuple[Group, ...] = ("quantization", "runtime")


@dataclass(frozen=True)
class Rule:
    """One reason a configuration cannot run: ``broken(config, space)`` → the sentence ``reason(config, space)``."""

    name: str
    broken: Callable[[TrialConfig, SearchSpace], bool]
    reason: Callable[[TrialConfig, SearchSpace], str]
    scope: Group | tuple[Group, ...] = "runtime"
    """The groups of knobs the predicate reads: quantization, runtime (compile, offload), settings."""

    @property
    def groups(self) -> frozenset[str]:
        return frozenset((self.scope,) if isinstance(self.scope, str) else self.scope)


class SearchSpace:
    """The typed, finite search space of one study on one machine. Build it with ``SearchSpace.build``."""

    def __init__(
        self,
        *,
        model: ModelInfo,
        caps: Capabilities,
        allowed: dict[str, tuple[Any, ...]],
        knobs: dict[str, tuple[Any, ...]],
        missing: list[tuple[str, str]],
        dtype: str = "bfloat16",
    ) -> None:
        self.model = model
        self.caps = caps
        self.dtype = dtype
        self._allowed = allowed
        """Choices per knob that the study's restriction allows, whatever this machine can run."""
        self._knobs = knobs
        """Choices per knob that are also possible here: what ``suggest`` offers."""
        self._missing = missing
        self._enumerated: list[TrialConfig] | None = None
        self.env = _Env(caps, model, dtype)

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def build(cls, spec: StudySpec, model: ModelInfo, caps: Capabilities) -> SearchSpace:
        """The space of ``spec``'s restriction for ``model`` on a machine with ``caps``.

        Raises ``SpaceError`` when the restriction names a component the model lacks or one that
        cannot be quantized.
        """
        allowed = _allowed_choices(spec, model)
        env = _Env(caps, model, spec.dtype)
        knobs: dict[str, tuple[Any, ...]] = {}
        for name, choices in allowed.items():
            knobs[name] = tuple(c for c in choices if _unavailable(name, c, env) is None)
        missing = _missing_values(allowed, env) + _unsearched_settings(spec, model)
        # A component with nothing but "none" left is not searched at all, nor a setting with one choice.
        knobs = {k: v for k, v in knobs.items() if not (k.startswith("quant.") and v == ("none",))}
        knobs = {k: v for k, v in knobs.items() if not (k in SETTINGS_KNOBS and v in ((), (SETTINGS_DEFAULTS[k],)))}
        if "group_block" not in knobs["offload"]:
            knobs.pop("blocks_per_group", None)
        if not GROUP_OFFLOADS & set(knobs["offload"]):
            for knob in STREAM_KNOBS:
                knobs.pop(knob, None)
        if not set(knobs["compile"]) - {"none"}:
            knobs.pop("compile_mode", None)
            knobs.pop("fullgraph", None)
        return cls(model=model, caps=caps, allowed=allowed, knobs=knobs, missing=missing, dtype=spec.dtype)

    # -- views ------------------------------------------------------------------------------------------

    @property
    def components(self) -> tuple[str, ...]:
        """Components whose quantization is searched here (in pipeline order)."""
        return tuple(k.split(".", 1)[1] for k in self._knobs if k.startswith("quant."))

    def knobs(self) -> dict[str, tuple[Any, ...]]:
        """Choices per knob (parameter name → choices) offered on this machine."""
        return dict(self._knobs)

    def missing(self) -> list[tuple[str, str]]:
        """(knob or value, why it is missing here) for what the study allows but this machine cannot run."""
        return list(self._missing)

    @staticmethod
    def config_from(quantization: dict[str, str], **knobs: Any) -> TrialConfig:
        """The canonical configuration with this quantization (component → backend) and these knobs (parameter
        names as in ``TrialConfig.to_params``), every other knob at its default; conditional knobs that mean
        nothing (``compile_mode`` without compiling, stream knobs without group offloading) are reset."""
        params = {f"quant.{component}": backend for component, backend in quantization.items()}
        return TrialConfig.from_params({**params, **knobs}).canonical()

    def params(self, config: TrialConfig) -> dict[str, Any]:
        """Every parameter ``suggest`` would ask for ``config``: for ``study.enqueue_trial``.

        Unlike ``TrialConfig.to_params`` this includes ``quant.<component> = "none"`` for each searched
        component, so an enqueued baseline is not filled in by the sampler.
        """
        params = {f"quant.{c}": "none" for c in self.components}
        params.update({k: getattr(config, k) for k in SETTINGS_KNOBS if k in self._knobs})
        params.update(config.to_params())
        return params

    # -- suggesting ---------------------------------------------------------------------------------

    def suggest(self, trial: TrialLike) -> TrialConfig:
        """Ask ``trial`` for one configuration, following the conditions of the knobs.

        The result may still break a rule (see ``violations``): choices are static.
        """
        quantization = self._suggest_quantization(trial)
        runtime = self._suggest_runtime(trial)
        settings = self._suggest_settings(trial)
        return dataclasses.replace(runtime, quantization=quantization, **settings.settings())

    def _suggest_quantization(self, trial: TrialLike) -> tuple[tuple[str, Any], ...]:
        return tuple((c, trial.suggest_categorical(f"quant.{c}", self._knobs[f"quant.{c}"])) for c in self.components)

    def _suggest_runtime(self, trial: TrialLike) -> TrialConfig:
        """The compile and offload knobs (everything but quantization), in their conditional order."""
        knobs = self._knobs

        def pick(name: str) -> Any:
            return trial.suggest_categorical(name, knobs[name])

        compile_scope = pick("compile")
        compiling = compile_scope != "none"
        compile_mode: CompileMode = pick("compile_mode") if compiling else "default"
        fullgraph = pick("fullgraph") if compiling else False
        offload = pick("offload")
        group = offload in GROUP_OFFLOADS
        blocks_per_group = pick("blocks_per_group") if offload == "group_block" else 1
        use_stream = pick("use_stream") if group else False
        return TrialConfig(
            compile=compile_scope,
            compile_mode=compile_mode,
            fullgraph=fullgraph,
            offload=offload,
            blocks_per_group=blocks_per_group,
            use_stream=use_stream,
            non_blocking=pick("non_blocking") if group else False,
            record_stream=pick("record_stream") if use_stream else False,
            low_cpu_mem_usage=pick("low_cpu_mem_usage") if use_stream else False,
        )

    def _suggest_settings(self, trial: TrialLike) -> TrialConfig:
        """The settings knobs that are searched here (the others keep their defaults)."""
        chosen = {k: trial.suggest_categorical(k, self._knobs[k]) for k in SETTINGS_KNOBS if k in self._knobs}
        return TrialConfig(**chosen)

    # -- checking ---------------------------------------------------------------------------------------

    def violations(self, config: TrialConfig) -> list[str]:
        """A sentence for every rule that ``config`` (as given, not canonicalised) breaks; empty when valid."""
        return [rule.reason(config, self) for rule in RULES if rule.broken(config, self)]

    def is_valid(self, config: TrialConfig) -> bool:
        return not self.violations(config)

    def enumerate(self) -> list[TrialConfig]:
        """Every valid canonical configuration, each once, in the order of ``suggest``'s decisions.

        Computed once, as a list: for small spaces (tests, restricted studies). A full space with
        every settings knob runs into millions; walk it lazily with ``iter_configs``.
        """
        if self._enumerated is None:
            self._enumerated = list(self.iter_configs())
        return list(self._enumerated)

    def is_empty(self) -> bool:
        """True when no configuration of the space is valid (computed lazily: stops at the first valid one)."""
        return next(iter(self.iter_configs()), None) is None

    def iter_configs(
        self,
        runtime_key: Key | None = None,
        settings_key: Key | None = None,
    ) -> Iterator[TrialConfig]:
        """Every valid canonical configuration, each once, lazily, in the order of ``suggest``'s decisions.

        The quantization choices, the runtime (compile, offload) tree and the settings are walked
        separately, each checked by the rules of its group, then combined under the rules that read
        several groups; the result equals checking every combination with ``violations``.
        ``runtime_key`` and ``settings_key`` keep only the first runtime (settings) configuration of
        each key: correct for a caller that needs one representative per key, as long as the rules
        that read several groups read nothing that the key leaves out (``memory.smallest_need``).
        """
        by_group: dict[frozenset[str], list[Rule]] = {}
        for rule in RULES:
            by_group.setdefault(rule.groups, []).append(rule)

        def valid(configs: list[TrialConfig], group: str, key: Key | None) -> list[TrialConfig]:
            rules = by_group.get(frozenset({group}), [])
            kept: list[TrialConfig] = []
            seen: set[Any] = set()
            for config in configs:
                if any(r.broken(config, self) for r in rules):
                    continue
                if key is not None:
                    if key(config) in seen:
                        continue
                    seen.add(key(config))
                kept.append(config)
            return kept

        runtimes = valid(_walk(self._suggest_runtime), "runtime", runtime_key)
        settings = valid(_walk(self._suggest_settings), "settings", settings_key)
        quants = valid(_walk(lambda t: TrialConfig(quantization=self._suggest_quantization(t))), "quantization", None)
        # Rules of quantization and runtime are checked before the settings are combined in.
        without_settings = [r for g, rules in by_group.items() if len(g) > 1 and "settings" not in g for r in rules]
        with_settings = [r for g, rules in by_group.items() if len(g) > 1 and "settings" in g for r in rules]
        for quant in quants:
            for runtime in runtimes:
                partial = dataclasses.replace(runtime, quantization=quant.quantization)
                if any(r.broken(partial, self) for r in without_settings):
                    continue
                for setting in settings:
                    config = dataclasses.replace(partial, **setting.settings())
                    if not any(r.broken(config, self) for r in with_settings):
                        yield config

    # -- seeded recipes ---------------------------------------------------------------------------------

    def baselines(self) -> list[tuple[str, TrialConfig]]:
        """The recipes of the diffusers guide "Compiling and offloading quantized models" that fit here.

        In order: the unoptimised reference, quantization, quantization + compile (max-autotune,
        fullgraph), + model CPU offload (default mode), and quantization + group offload (leaf level,
        stream, non-blocking; compiled as in the guide's Wan example). A recipe that breaks a rule or
        leaves the study's space is dropped, never altered; only the quantization backend falls back
        from bitsandbytes NF4 to the first of torchao int8 weight-only and quanto int8 that runs here,
        and the label names it.
        """
        recipes: list[tuple[str, TrialConfig]] = [("reference", TrialConfig())]
        backend = self._recipe_backend()
        targets = self._recipe_components()
        if backend is not None and targets:
            suffix = "" if backend == "bnb_nf4" else f" ({backend})"
            quant: tuple[tuple[str, QuantBackend], ...] = tuple((c, backend) for c in targets)
            recipes += [
                (f"quantization{suffix}", TrialConfig(quantization=quant)),
                (
                    f"quantization + compile{suffix}",
                    TrialConfig(quantization=quant, compile="full", compile_mode="max-autotune", fullgraph=True),
                ),
                (
                    f"quantization + compile + model offload{suffix}",
                    TrialConfig(quantization=quant, compile="full", offload="model"),
                ),
                (
                    f"quantization + group offload{suffix}",
                    TrialConfig(
                        quantization=quant, compile="full", offload="group_leaf", use_stream=True, non_blocking=True
                    ),
                ),
            ]
        kept: list[tuple[str, TrialConfig]] = []
        seen: set[str] = set()
        for label, config in recipes:
            if config.key() not in seen and not self.violations(config):
                seen.add(config.key())
                kept.append((label, config))
        return kept

    def _recipe_backend(self) -> QuantBackend | None:
        denoiser = self._knobs.get(f"quant.{self.model.denoiser}", ())
        return next((b for b in RECIPE_BACKENDS if b in denoiser), None)

    def _recipe_components(self) -> tuple[str, ...]:
        """The denoiser and the T5-family text encoder, as the guide quantizes them (Flux's
        ``text_encoder_2``, Wan's UMT5 ``text_encoder``); without a T5 encoder, the largest one."""
        encoders = [self.model.component(n) for n in self.model.text_encoders]
        t5 = [c for c in encoders if "T5" in c.class_name]
        # On a tie the later encoder: FLUX lists CLIP before T5.
        largest = max(reversed(t5 or encoders), key=lambda c: c.params or 0, default=None)
        if self.model.denoiser not in self.components:
            return ()  # the recipes are about the denoiser first
        wanted = [self.model.denoiser] + ([largest.name] if largest else [])
        return tuple(c for c in wanted if c in self.components)


# -- building helpers ---------------------------------------------------------------------------------------


def _allowed_choices(spec: StudySpec, model: ModelInfo) -> dict[str, tuple[Any, ...]]:
    """Choices per knob that the study allows for this model, before asking what the machine can run."""
    r = spec.space
    backends = ("none", *(b for b in QUANT_BACKENDS if b != "none" and (not r.quantization or b in r.quantization)))
    allowed: dict[str, tuple[Any, ...]] = {f"quant.{c}": backends for c in _searched_components(spec, model)}
    allowed.update(
        {
            "compile": _restrict(COMPILE_SCOPES, r.compile),
            "compile_mode": _restrict(COMPILE_MODES, r.compile_modes),
            "fullgraph": _restrict(BOOLS, r.fullgraph),
            "offload": _restrict(OFFLOAD_KINDS, r.offload),
            "blocks_per_group": tuple(r.blocks_per_group) or DEFAULT_BLOCKS_PER_GROUP,
            **{knob: BOOLS for knob in STREAM_KNOBS},
            "attention_backend": _restrict(ATTENTION_BACKENDS, r.attention_backends),
            "layerwise_casting": _restrict(LAYERWISE_CASTINGS, r.layerwise_casting),
            "vae_tiling": _restrict(BOOLS, r.vae_tiling),
            "vae_slicing": _restrict(BOOLS, r.vae_slicing) if r.vae_slicing else (False,),
            "vae_channels_last": _restrict(BOOLS, r.vae_channels_last),
            "tf32": _restrict(BOOLS, r.tf32) if r.tf32 or spec.dtype == "float32" else (False,),
        }
    )
    return allowed


def _unsearched_settings(spec: StudySpec, model: ModelInfo) -> list[tuple[str, str]]:
    """Settings the study leaves out by default because they change nothing for it (listing them searches them)."""
    out = []
    if not spec.space.vae_slicing and _vae(model) is not None:
        out.append(("vae_slicing", "not searched: slicing splits a batch, and a trial decodes one image per call"))
    if not spec.space.tf32 and spec.dtype != "float32":
        out.append(("tf32", f"not searched: TF32 changes float32 matmuls only, and the study runs in {spec.dtype}"))
    return out


def _restrict(everything: tuple[Any, ...], restriction: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v for v in everything if not restriction or v in restriction)


def _searched_components(spec: StudySpec, model: ModelInfo) -> tuple[str, ...]:
    names = {c.name: c for c in model.components}
    wanted = spec.space.quantize_components
    for name in wanted:
        if name not in names:
            raise SpaceError(
                f"space.quantize_components names {name!r}, which {model.reference} does not have "
                f"(components: {', '.join(names)})"
            )
        if names[name].role not in QUANTIZABLE_ROLES:
            raise SpaceError(f"space.quantize_components: {_not_quantizable(names[name])}")
    return tuple(c.name for c in model.components if c.role in QUANTIZABLE_ROLES and (not wanted or c.name in wanted))


def _not_quantizable(component: ComponentInfo) -> str:
    if component.role == "vae":
        return (
            f"quantizing the VAE ({component.name}) is not offered: it is small and decoding is sensitive to precision"
        )
    return f"quantizing {component.name} ({component.role}) is not offered: only the denoiser and text encoders"


@dataclass(frozen=True)
class _Env:
    """What decides whether a knob's value can run: the machine, the model and the study's dtype."""

    caps: Capabilities
    model: ModelInfo
    dtype: str


def _vae(model: ModelInfo) -> ComponentInfo | None:
    return next((c for c in model.components if c.role == "vae"), None)


def _unavailable(knob: str, value: Any, env: _Env) -> str | None:
    """Why ``knob = value`` cannot run for this model and dtype on this machine, or None."""
    caps = env.caps
    if knob.startswith("quant."):
        return _backend_unavailable(value, env) if value != "none" else None
    if knob == "compile" and value != "none" and not caps.compile:
        return "torch.compile cannot build kernels here (no C compiler for the CPU, or no Triton for CUDA)"
    if knob == "compile_mode" and value in CUDA_GRAPH_MODES and not caps.cuda:
        return "CUDA graphs need a GPU (max-autotune-no-cudagraphs searches the same kernels without them)"
    if knob == "offload" and value != "none" and not caps.cuda:
        return "no CUDA: offloading to the CPU the trial already runs on means nothing"
    if knob in STREAM_KNOBS and value is True and not caps.cuda:
        return "CUDA streams need a GPU"
    if knob in SETTINGS_KNOBS and value != SETTINGS_DEFAULTS[knob]:
        return _setting_unavailable(knob, value, env)
    return None


def _setting_unavailable(knob: str, value: Any, env: _Env) -> str | None:
    """Why a settings knob's non-default ``value`` cannot run here, or None."""
    caps, vae = env.caps, _vae(env.model)
    if knob == "attention_backend":
        if not caps.cuda:
            return f"attention backend {value} needs a CUDA GPU (on the CPU only native attention runs)"
        if value in HALF_ONLY_ATTENTION and env.dtype == "float32":
            return f"attention backend {value} takes bfloat16 or float16 inputs only, and the study runs in float32"
        unusable = dict(caps.unusable).get(f"attention_backend={value}")
        if unusable:
            return f"attention backend {value}: {unusable}"
        if value not in caps.attention_backends:
            return f"attention backend {value} was not found usable here"
        return None
    if knob.startswith("vae_"):
        if vae is None:
            return f"{env.model.reference} has no VAE"
        if knob in ("vae_tiling", "vae_slicing") and vae.class_name not in VAE_TILING_CLASSES:
            return f"{vae.class_name} has no {knob.removeprefix('vae_')} (enable_{knob.removeprefix('vae_')})"
        if knob == "vae_channels_last" and vae.class_name not in VAE_2D_CLASSES:
            return f"channels-last is a 2D memory format, and {vae.class_name} is not a 2D convolutional VAE"
        return None
    if knob == "tf32" and not _capability_at_least(caps, TENSOR_CORE_CAPABILITY):
        return "TF32 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere)" + _this_one(caps)
    return None


def _capability_at_least(caps: Capabilities, needed: tuple[int, int]) -> bool:
    return caps.cuda and caps.compute_capability is not None and tuple(caps.compute_capability) >= needed


def _this_one(caps: Capabilities) -> str:
    if caps.cuda and caps.compute_capability:
        return f"; this one is {caps.compute_capability[0]}.{caps.compute_capability[1]}"
    return ""


def _backend_unavailable(backend: str, env: _Env) -> str | None:
    caps = env.caps
    library = BACKEND_LIBRARY[backend]
    if library == "bitsandbytes" and not caps.cuda:
        return "bitsandbytes needs a CUDA GPU"
    if backend == "torchao_fp8dq" and not _fp8_capable(caps):
        return _fp8_reason(caps)
    if backend == "torchao_int4wo":
        reason = _int4_reason(env)
        if reason:
            return reason
    if library not in caps.backends:
        return f"{library} is not installed (or does not work) here"
    unusable = dict(caps.unusable).get(backend)
    if unusable:
        return f"{backend}: {unusable}"
    return None


def _int4_reason(env: _Env) -> str | None:
    """torchao's int4 weight-only (tinygemm layout) packs on the GPU for its CUDA kernel, in bfloat16 only."""
    if not _capability_at_least(env.caps, TENSOR_CORE_CAPABILITY):
        return "torchao int4 (tinygemm) needs a CUDA GPU of compute capability 8.0 or newer" + _this_one(env.caps)
    if env.dtype != "bfloat16":
        return f"torchao int4 (tinygemm) quantizes bfloat16 weights only, and the study runs in {env.dtype}"
    return None


def _fp8_capable(caps: Capabilities) -> bool:
    return caps.cuda and caps.compute_capability is not None and tuple(caps.compute_capability) >= FP8_MIN_CAPABILITY


def _fp8_reason(caps: Capabilities) -> str:
    need = "float8 matmuls need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper)"
    if caps.cuda and caps.compute_capability:
        return f"{need}; this one is {caps.compute_capability[0]}.{caps.compute_capability[1]}"
    return need


def _missing_values(allowed: dict[str, tuple[Any, ...]], env: _Env) -> list[tuple[str, str]]:
    """(knob or value, why) for what the study allows and this machine cannot run; a whole knob in one line."""
    missing: dict[str, str] = {}
    compiling = set(allowed["compile"]) - {"none"}
    grouping = GROUP_OFFLOADS & set(allowed["offload"])
    for knob, choices in allowed.items():
        if knob in STREAM_KNOBS or (knob in ("compile_mode", "fullgraph") and not compiling):
            continue  # said once below, or not searched anyway
        gone = [(value, why) for value in choices if (why := _unavailable(knob, value, env))]
        if knob in ("compile", "offload") and gone:
            missing.setdefault(knob, gone[0][1])  # every value but "none" goes for one reason
        elif knob == "compile_mode" and "compile" in missing:
            continue
        elif knob == "attention_backend":
            for value, why in gone:
                missing.setdefault(f"attention_backend={value}", why)
        elif knob in SETTINGS_KNOBS:
            if gone:
                missing.setdefault(knob, gone[0][1])  # one other value
        else:
            for value, why in gone:
                missing.setdefault(str(value), why)
    stream_gone = _unavailable("use_stream", True, env)
    if grouping and stream_gone:
        missing["use_stream"] = stream_gone
    return list(missing.items())


# -- the rules ---------------------------------------------------------------------------------------------


def _backends(config: TrialConfig) -> set[str]:
    return {b for _, b in config.quantization}


def _components_not_in_model(config: TrialConfig, space: SearchSpace) -> list[str]:
    names = {c.name for c in space.model.components}
    return [c for c, _ in config.quantization if c not in names]


def _not_quantizable_components(config: TrialConfig, space: SearchSpace) -> list[ComponentInfo]:
    names = {c.name: c for c in space.model.components}
    return [names[c] for c, _ in config.quantization if c in names and names[c].role not in QUANTIZABLE_ROLES]


def _uninstalled(config: TrialConfig, space: SearchSpace) -> list[str]:
    return sorted({BACKEND_LIBRARY[b] for b in _backends(config)} - set(space.caps.backends))


def _outside_quantization(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Quantization in ``config`` that the study's restriction leaves out (other rules say what the machine lacks)."""
    allowed = space._allowed
    names = {comp.name: comp for comp in space.model.components}
    out = []
    for component, backend in config.quantization:
        knob = f"quant.{component}"
        if component not in names or names[component].role not in QUANTIZABLE_ROLES:
            continue  # said by their own rules
        if knob not in allowed:
            out.append(f"{component} is not among the quantized components")
        elif backend not in allowed[knob]:
            out.append(f"{backend} is not among the quantization backends")
    return out


def _outside_runtime(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Compile and offload knobs in ``config`` that the study's restriction leaves out."""
    allowed = space._allowed
    params = config.canonical().to_params()
    return [
        f"{knob}={value} is not among {', '.join(map(str, allowed[knob]))}"
        for knob, value in params.items()
        if not knob.startswith("quant.") and knob not in SETTINGS_KNOBS and value not in allowed[knob]
    ]


def _outside_settings(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Settings in ``config`` that the study's restriction (or its defaults) leaves out."""
    allowed = space._allowed
    return [
        f"{knob}={getattr(config, knob)} is not among {', '.join(map(str, allowed[knob]))}"
        for knob in SETTINGS_KNOBS
        if getattr(config, knob) not in allowed[knob]
    ]


def _settings_unavailable(config: TrialConfig, space: SearchSpace) -> list[str]:
    return [why for knob, value in config.settings().items() if (why := _setting_unavailable(knob, value, space.env))]


def _probed_unusable(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Backends the machine's probe found unusable, with its reason."""
    unusable = dict(space.caps.unusable)
    return [f"{b}: {unusable[b]}" for b in sorted(_backends(config)) if b in unusable]


def _group_knobs_set(config: TrialConfig) -> list[str]:
    return [k for k in ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage") if getattr(config, k)]


def _int8_offload_observed_to_run(config: TrialConfig, space: SearchSpace) -> bool:
    """bitsandbytes int8 under group offloading as observed to run: with a stream, and not at block
    level with an int8 denoiser (see the rule below)."""
    int8_denoiser = config.backend_for(space.model.denoiser) == "bnb_int8"
    return config.use_stream and not (config.offload == "group_block" and int8_denoiser)


RULES: tuple[Rule, ...] = (
    Rule(
        "record_stream_without_stream",
        lambda c, s: c.record_stream and not c.use_stream,
        lambda c, s: "record_stream only applies when group offloading copies on a CUDA stream (use_stream)",
    ),
    Rule(
        "low_cpu_mem_usage_without_stream",
        lambda c, s: c.low_cpu_mem_usage and not c.use_stream,
        lambda c, s: "low_cpu_mem_usage only applies when group offloading copies on a CUDA stream (use_stream)",
    ),
    Rule(
        "group_knobs_without_group_offload",
        lambda c, s: not c.is_group_offload and bool(_group_knobs_set(c)),
        lambda c, s: f"{', '.join(_group_knobs_set(c))} only apply to group offloading, and offload is {c.offload}",
    ),
    Rule(
        "blocks_per_group_without_block_offload",
        lambda c, s: c.offload != "group_block" and c.blocks_per_group != 1,
        lambda c, s: f"blocks_per_group only applies to group_block offloading, and offload is {c.offload}",
    ),
    Rule(
        "compile_knobs_without_compile",
        lambda c, s: c.compile == "none" and (c.compile_mode != "default" or c.fullgraph),
        lambda c, s: "compile_mode and fullgraph only apply when compiling, and compile is none",
    ),
    Rule(
        "cuda_graphs_with_offload",
        lambda c, s: c.compile != "none" and c.compile_mode in CUDA_GRAPH_MODES and c.offload != "none",
        lambda c, s: (
            f"compile mode {c.compile_mode} records CUDA graphs, which replay fixed device addresses, "
            f"and {c.offload} offloading moves the weights between calls"
        ),
    ),
    Rule(
        "sequential_offload_with_bitsandbytes",
        lambda c, s: c.offload == "sequential" and bool(_backends(c) & BNB_BACKENDS),
        # diffusers issue 10800: accelerate re-quantizes the already packed weights and fails with
        # "Blockwise quantization only supports 16/32-bit floats".
        lambda c, s: (
            "sequential CPU offload cannot move bitsandbytes weights (accelerate tries to quantize them again)"
        ),
        BOTH,
    ),
    Rule(
        "group_offload_with_bitsandbytes_int8",
        lambda c, s: c.is_group_offload and "bnb_int8" in _backends(c) and not _int8_offload_observed_to_run(c, s),
        # Observed on an H100 (torch 2.11, diffusers 0.42.1, bitsandbytes 0.50.2, 2026-11-24; the tiny
        # FLUX preset, studies/results/rules_probe/): LLM.int8 weights under group offloading fail with
        # "ValueError: Expected a cuda device, but got: cpu" (int8 state is left on the CPU) without a
        # stream at either level, and at block level with an int8 denoiser even with a stream. With a
        # stream they ran at leaf level (denoiser, or denoiser and T5) and at block level (T5 alone).
        lambda c, s: (
            "group offloading leaves bitsandbytes int8 state on the CPU (fails: expected a cuda device) "
            + ("without use_stream" if not c.use_stream else "at block level with an int8 denoiser")
        ),
        BOTH,
    ),
    Rule(
        "group_offload_with_quanto",
        lambda c, s: c.is_group_offload and bool(_backends(c) & QUANTO_BACKENDS),
        # Observed on an H100 (torch 2.11, diffusers 0.42.1, optimum-quanto 0.2.7, 2026-11-24): both
        # trials of a quanto int8 transformer under block-level group offloading failed with "Expected all
        # tensors to be on the same device, but got mat2 is on cpu" (quanto's weights were not onloaded).
        # quanto's int4 and float8 weights are the same kind of tensor subclass (tests/gpu/test_gpu_knobs.py
        # checks that they fail the same way).
        lambda c, s: "group offloading does not onload quanto weights (fails: mat2 is on cpu)",
        BOTH,
    ),
    Rule(
        "fullgraph_with_group_offload",
        lambda c, s: c.fullgraph and c.compile != "none" and c.is_group_offload,
        # Group offloading onloads each group in a hook that diffusers wraps in torch.compiler.disable:
        # a graph break, which fullgraph forbids. Observed on an H100 (torch 2.11, diffusers 0.42.1,
        # 2026-11-24): bf16 regional fullgraph compile with block-level group offload failed with
        # "torch._dynamo.exc.Unsupported: Skip inlining `torch.compiler.disable()`d function
        # ModuleGroup.onload_"; no fullgraph trial under group offloading has ever run to the end.
        lambda c, s: (
            "fullgraph compilation cannot trace group offloading's onload hooks (torch.compiler.disable: a graph break)"
        ),
    ),
    Rule(
        "sequential_offload_with_quanto",
        lambda c, s: c.offload == "sequential" and bool(_backends(c) & QUANTO_BACKENDS),
        # diffusers issue 10526: accelerate cannot rebuild quanto's WeightQBytesTensor on the meta device.
        lambda c, s: "sequential CPU offload cannot move quanto weights (accelerate cannot rebuild its tensors)",
        BOTH,
    ),
    Rule(
        "fp8_needs_compute_capability",
        lambda c, s: "torchao_fp8dq" in _backends(c) and not _fp8_capable(s.caps),
        lambda c, s: f"torchao_fp8dq: {_fp8_reason(s.caps)}",
        "quantization",
    ),
    Rule(
        "torchao_int4_needs_tinygemm",
        lambda c, s: "torchao_int4wo" in _backends(c) and _int4_reason(s.env) is not None,
        lambda c, s: f"torchao_int4wo: {_int4_reason(s.env)}",
        "quantization",
    ),
    Rule(
        "backend_unusable_here",
        lambda c, s: bool(_probed_unusable(c, s)),
        lambda c, s: "; ".join(_probed_unusable(c, s)),
        "quantization",
    ),
    Rule(
        "bitsandbytes_needs_cuda",
        lambda c, s: bool(_backends(c) & BNB_BACKENDS) and not s.caps.cuda,
        lambda c, s: "bitsandbytes quantization needs a CUDA GPU",
        "quantization",
    ),
    Rule(
        "offload_needs_cuda",
        lambda c, s: c.offload != "none" and not s.caps.cuda,
        lambda c, s: "offloading needs a CUDA GPU: without one the trial already runs on the CPU",
    ),
    Rule(
        "cuda_graphs_need_cuda",
        lambda c, s: c.compile != "none" and c.compile_mode in CUDA_GRAPH_MODES and not s.caps.cuda,
        lambda c, s: f"compile mode {c.compile_mode} records CUDA graphs, which need a GPU",
    ),
    Rule(
        "compile_unavailable",
        lambda c, s: c.compile != "none" and not s.caps.compile,
        lambda c, s: "torch.compile cannot build kernels on this machine",
    ),
    Rule(
        "backend_not_installed",
        lambda c, s: bool(_uninstalled(c, s)),
        lambda c, s: f"{', '.join(_uninstalled(c, s))} is not installed (or does not work) here",
        "quantization",
    ),
    Rule(
        "component_not_in_model",
        lambda c, s: bool(_components_not_in_model(c, s)),
        lambda c, s: (
            f"{s.model.reference} has no component {', '.join(_components_not_in_model(c, s))} "
            f"(it has {', '.join(x.name for x in s.model.components)})"
        ),
        "quantization",
    ),
    Rule(
        "component_not_quantizable",
        lambda c, s: bool(_not_quantizable_components(c, s)),
        lambda c, s: "; ".join(_not_quantizable(x) for x in _not_quantizable_components(c, s)),
        "quantization",
    ),
    Rule(
        "quantization_outside_study_space",
        lambda c, s: bool(_outside_quantization(c, s)),
        lambda c, s: "outside the study's space: " + "; ".join(_outside_quantization(c, s)),
        "quantization",
    ),
    Rule(
        "runtime_outside_study_space",
        lambda c, s: bool(_outside_runtime(c, s)),
        lambda c, s: "outside the study's space: " + "; ".join(_outside_runtime(c, s)),
    ),
    Rule(
        "layerwise_casting_with_quantized_denoiser",
        lambda c, s: c.layerwise_casting != "none" and c.backend_for(s.model.denoiser) != "none",
        lambda c, s: (
            f"layerwise casting stores the denoiser's weights in {c.layerwise_casting} itself, and "
            f"{s.model.denoiser} is already quantized ({c.backend_for(s.model.denoiser)})"
        ),
        ("quantization", "settings"),
    ),
    Rule(
        "setting_unavailable",
        lambda c, s: bool(_settings_unavailable(c, s)),
        lambda c, s: "; ".join(_settings_unavailable(c, s)),
        "settings",
    ),
    Rule(
        "settings_outside_study_space",
        lambda c, s: bool(_outside_settings(c, s)),
        lambda c, s: "outside the study's space: " + "; ".join(_outside_settings(c, s)),
        "settings",
    ),
)
"""Every rule a configuration can break, in the order their sentences are reported."""


# -- enumeration by replay ---------------------------------------------------------------------------------


def _walk(decide: Callable[[TrialLike], TrialConfig]) -> list[TrialConfig]:
    """Every result of ``decide`` over all paths of choices, depth first, in the order of the choices."""
    results = []
    stack: list[tuple[int, ...]] = [()]
    while stack:
        path = stack.pop()
        replay = _Replay(path)
        results.append(decide(replay))
        for depth in range(len(path), len(replay.sizes)):  # the deepest on top: lexicographic order
            for alternative in range(replay.sizes[depth] - 1, 0, -1):
                stack.append((*replay.taken[:depth], alternative))
    return results


class _Replay:
    """A trial that answers with the choice indices of ``path``, then the first choice, recording each decision."""

    def __init__(self, path: tuple[int, ...]) -> None:
        self._path = path
        self.taken: list[int] = []
        self.sizes: list[int] = []

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        depth = len(self.taken)
        index = self._path[depth] if depth < len(self._path) else 0
        self.taken.append(index)
        self.sizes.append(len(choices))
        return choices[index]
