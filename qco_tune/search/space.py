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
    place.<component>   offload == none (text encoders: resident or released; others where the study lists them)
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
    fuse_qkv            the denoiser implements fuse_qkv_projections (a rule: not with a bnb or quanto denoiser)
    denoiser_channels_last  the denoiser has no 3D convolution weights
    inductor_profile    a GPU, and compile in the space (a rule: only with compile != none)

The knobs fall into three groups that are enumerated separately and combined: quantization
(``quant.*``), runtime (compile and offload) and settings (the rest). Each rule says which groups it
reads (``Rule.scope``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from qco_tune.core.config import (
    ATTENTION_BACKENDS,
    COMPILE_MODES,
    COMPILE_SCOPES,
    GROUP_OFFLOADS,
    INDUCTOR_PROFILE_NAMES,
    LAYERWISE_CASTINGS,
    OFFLOAD_KINDS,
    QUANT_BACKENDS,
    SETTINGS_DEFAULTS,
    CompileMode,
    QuantBackend,
    TrialConfig,
)
from qco_tune.core.errors import InputError
from qco_tune.core.placement import GROUP_PLACEMENTS, SHORTHAND_PLACEMENT, Placement
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.studyspec import StudySpec
from qco_tune.search.availability import (
    BOOLS,
    DEFAULT_BLOCKS_PER_GROUP,
    QUANTIZABLE_ROLES,
    RECIPE_BACKENDS,
    SETTINGS_KNOBS,
    STREAM_KNOBS,
    _Env,
    _missing_values,
    _not_quantizable,
    _unavailable,
    _vae,
)
from qco_tune.search.replay import TrialLike, walk_configs
from qco_tune.search.rules import RULES, Key, Rule

__all__ = ["RULES", "Rule", "SearchSpace", "SpaceError", "TrialLike"]


class SpaceError(InputError):
    """A study restriction that does not fit the model (e.g. quantizing a component it does not have)."""


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
        self.model: ModelInfo = model
        self.caps: Capabilities = caps
        self.dtype: str = dtype
        self._allowed = allowed
        """Choices per knob that the study's restriction allows, whatever this machine can run."""
        self._knobs = knobs
        """Choices per knob that are also possible here: what ``suggest`` offers."""
        self._missing = missing
        self._enumerated: list[TrialConfig] | None = None
        self.env: _Env = _Env(caps, model, dtype)

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
        knobs = {k: v for k, v in knobs.items() if not (k.startswith("place.") and v in ((), ("resident",)))}
        offloads = set(knobs["offload"]) | {p for k, v in knobs.items() if k.startswith("place.") for p in v}
        if "group_block" not in offloads:
            knobs.pop("blocks_per_group", None)
        if not (GROUP_OFFLOADS | GROUP_PLACEMENTS) & offloads:
            for knob in STREAM_KNOBS:
                knobs.pop(knob, None)
        if not set(knobs["compile"]) - {"none"}:
            knobs.pop("compile_mode", None)
            knobs.pop("fullgraph", None)
            knobs.pop("inductor_profile", None)
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

    @property
    def placed(self) -> tuple[str, ...]:
        """Components whose placement is searched here (where the pipeline-wide offload is none)."""
        return tuple(k.split(".", 1)[1] for k in self._knobs if k.startswith("place."))

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
        if config.offload == "none":
            params.update({f"place.{c}": "resident" for c in self.placed})
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
        placement = tuple((c, pick(f"place.{c}")) for c in self.placed) if offload == "none" else ()
        placements = {offload, *(p for _, p in placement)}
        group = bool(placements & (GROUP_OFFLOADS | GROUP_PLACEMENTS))
        blocks_per_group = pick("blocks_per_group") if "group_block" in placements else 1
        use_stream = pick("use_stream") if group else False
        return TrialConfig(
            compile=compile_scope,
            compile_mode=compile_mode,
            fullgraph=fullgraph,
            offload=offload,
            placement=placement,
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

        runtimes = valid(walk_configs(self._suggest_runtime), "runtime", runtime_key)
        settings = valid(walk_configs(self._suggest_settings), "settings", settings_key)
        quants = valid(
            walk_configs(lambda t: TrialConfig(quantization=self._suggest_quantization(t))), "quantization", None
        )
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
        stream, non-blocking; compiled as in the guide's Wan example, and placed as it places the
        components of a video pipeline: ``_group_offload_recipe``). A recipe that breaks a rule or
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
                (f"quantization + group offload{suffix}", self._group_offload_recipe(quant)),
            ]
        kept: list[tuple[str, TrialConfig]] = []
        seen: set[str] = set()
        for label, config in recipes:
            if config.key() not in seen and not self.violations(config):
                seen.add(config.key())
                kept.append((label, config))
        return kept

    def _group_offload_recipe(self, quant: tuple[tuple[str, QuantBackend], ...]) -> TrialConfig:
        """The guide's Wan2.1 recipe: the transformer, the VAE and the text encoder group-offloaded one by one
        at leaf level with a stream, non-blocking, and the transformer compiled. For a video pipeline it is
        written per component as the guide writes it (each denoiser, the VAE, each text encoder), folded
        into the pipeline-wide shorthand where that names the same components (``shorthand``)."""
        recipe = TrialConfig(quantization=quant, compile="full", use_stream=True, non_blocking=True)
        if not self.model.is_video:
            return dataclasses.replace(recipe, offload="group_leaf")
        roles = ("denoiser", "vae", "text_encoder")
        placement: tuple[tuple[str, Placement], ...] = tuple(
            (c.name, "group_leaf") for c in self.model.components if c.role in roles
        )
        return self.shorthand(dataclasses.replace(recipe, placement=placement))

    def shorthand(self, config: TrialConfig) -> TrialConfig:
        """``config`` with a placement that is the same for every component of the model written as the
        pipeline-wide ``offload`` it equals (which places every component alike); else unchanged."""
        placements = {config.placement_of(c.name) for c in self.model.components}
        shorthand = {v: k for k, v in SHORTHAND_PLACEMENT.items()}
        if not config.placement or len(placements) != 1 or next(iter(placements)) not in shorthand:
            return config
        offload: Any = shorthand[placements.pop()]
        return dataclasses.replace(config, offload=offload, placement=()).canonical()

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
            **_placement_choices(spec, model),
            "blocks_per_group": tuple(r.blocks_per_group) or DEFAULT_BLOCKS_PER_GROUP,
            **{knob: BOOLS for knob in STREAM_KNOBS},
            "attention_backend": _restrict(ATTENTION_BACKENDS, r.attention_backends),
            "layerwise_casting": _restrict(LAYERWISE_CASTINGS, r.layerwise_casting),
            "vae_tiling": _restrict(BOOLS, r.vae_tiling),
            "vae_slicing": _restrict(BOOLS, r.vae_slicing) if r.vae_slicing else (False,),
            "vae_channels_last": _restrict(BOOLS, r.vae_channels_last),
            "tf32": _restrict(BOOLS, r.tf32) if r.tf32 or spec.dtype == "float32" else (False,),
            **_fast_path_choices(spec),
        }
    )
    return allowed


def _placement_choices(spec: StudySpec, model: ModelInfo) -> dict[str, tuple[str, ...]]:
    """``place.<component>`` → the placements searched for it: the study's list, else the text encoders
    resident or released. Raises ``SpaceError`` for a component the model lacks."""
    names = [c.name for c in model.components]
    listed: dict[str, list[str]] = {}
    for entry in spec.space.placement:
        component, _, placement = entry.partition(":")
        if component not in names:
            raise SpaceError(
                f"space.placement names {component!r}, which {model.reference} does not have "
                f"(components: {', '.join(names)})"
            )
        if placement == "released" and model.component(component).role != "text_encoder":
            raise SpaceError(f"space.placement: {component}:released: only text encoders are released after use")
        listed.setdefault(component, []).append(placement)
    if not listed:
        listed = {name: ["resident", "released"] for name in model.text_encoders}
    return {f"place.{c}": tuple(listed[c]) for c in names if c in listed}


def _fast_path_choices(spec: StudySpec) -> dict[str, tuple[Any, ...]]:
    r = spec.space
    return {
        "fuse_qkv": _restrict(BOOLS, r.fuse_qkv),
        "denoiser_channels_last": _restrict(BOOLS, r.denoiser_channels_last),
        "inductor_profile": _restrict(INDUCTOR_PROFILE_NAMES, r.inductor_profiles),
    }


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
