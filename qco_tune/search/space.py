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
from collections.abc import Iterator, Mapping
from typing import Any

from qco_tune.core.config import GROUP_OFFLOADS, SETTINGS_DEFAULTS, CompileMode, TrialConfig
from qco_tune.core.placement import GROUP_PLACEMENTS, SHORTHAND_PLACEMENT
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.studyspec import StudySpec
from qco_tune.search.availability import SETTINGS_KNOBS, STREAM_KNOBS, missing_values, unavailable
from qco_tune.search.choices import allowed_choices, unsearched_settings
from qco_tune.search.knob_checks import Env
from qco_tune.search.recipes import guide_recipes
from qco_tune.search.replay import TrialLike, walk_configs
from qco_tune.search.rules import RULES, Key, Rule

__all__ = ["SearchSpace"]


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
        self.env: Env = Env(caps, model, dtype)

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def build(cls, spec: StudySpec, model: ModelInfo, caps: Capabilities) -> SearchSpace:
        """The space of ``spec``'s restriction for ``model`` on a machine with ``caps``.

        Raises ``SpaceError`` when the restriction names a component the model lacks or one that
        cannot be quantized.
        """
        allowed = allowed_choices(spec, model)
        env = Env(caps, model, spec.dtype)
        knobs: dict[str, tuple[Any, ...]] = {}
        for name, choices in allowed.items():
            knobs[name] = tuple(c for c in choices if unavailable(name, c, env) is None)
        missing = missing_values(allowed, env) + unsearched_settings(spec, model)
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

    @property
    def allowed(self) -> Mapping[str, tuple[Any, ...]]:
        """Choices per knob that the study's restriction allows, whatever this machine can run (read only)."""
        return self._allowed

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
        """The recipes of the diffusers guide that fit here, labelled (``recipes.guide_recipes``)."""
        return guide_recipes(self)

    def shorthand(self, config: TrialConfig) -> TrialConfig:
        """``config`` with a placement that is the same for every component of the model written as the
        pipeline-wide ``offload`` it equals (which places every component alike); else unchanged."""
        placements = {config.placement_of(c.name) for c in self.model.components}
        shorthand = {v: k for k, v in SHORTHAND_PLACEMENT.items()}
        if not config.placement or len(placements) != 1 or next(iter(placements)) not in shorthand:
            return config
        offload: Any = shorthand[placements.pop()]
        return dataclasses.replace(config, offload=offload, placement=()).canonical()
