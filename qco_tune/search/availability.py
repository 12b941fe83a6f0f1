"""What this machine and this model can run: the values of each knob that are available, and why not.

Stdlib only. Each ``Need`` in ``NEEDS`` says once what some knob values need of the machine, the model or
the study's dtype. ``SearchSpace.build`` keeps the available values of each knob (Optuna's choices never
change between trials) and reports the others with their reason (``unavailable``: the first need not
met); the rule of each need's name (``search.rules``) refuses a configuration that uses such a value (a
configuration from another machine's space, a queued or replayed one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from qco_tune.calls.backends import BACKEND_INFO, backends_of
from qco_tune.core.config import CUDA_GRAPH_MODES, GROUP_OFFLOADS, SETTINGS_DEFAULTS, TrialConfig
from qco_tune.core.records import ComponentInfo
from qco_tune.search.knob_checks import (
    Env,
    compile_unavailable,
    fp8_capable,
    fp8_reason,
    int4_reason,
    setting_unavailable,
)

BACKEND_LIBRARY: dict[str, str] = {name: info.library for name, info in BACKEND_INFO.items()}
"""Quantization backend → the library (as named in ``Capabilities.backends``) that provides it."""
BNB_BACKENDS = backends_of("bitsandbytes")
QUANTO_BACKENDS = backends_of("quanto")
SETTINGS_KNOBS: tuple[str, ...] = tuple(SETTINGS_DEFAULTS)
QUANTIZABLE_ROLES = ("denoiser", "text_encoder")
STREAM_KNOBS = ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")


def unavailable(knob: str, value: Any, env: Env) -> str | None:
    """Why ``knob = value`` cannot run for this model and dtype on this machine (its first need not met), or None."""
    kind = QUANT if knob.startswith("quant.") else PLACE if knob.startswith("place.") else knob
    return next((why for need in NEEDS if kind in need.knobs and (why := need.unmet(kind, value, env))), None)


Group = Literal["quantization", "runtime", "settings"]
"""The groups of knobs: quantization (``quant.*``), runtime (compile and offload) and settings (the rest)."""
QUANT = "quant"
"""Every ``quant.<component>`` knob, as a ``Need`` names them."""
PLACE = "place"
"""Every ``place.<component>`` knob, as a ``Need`` names them."""


Lacking = list[tuple[Any, str]]
"""(value, why it cannot run here) for each value of a configuration that a need's absence refuses."""


def _reasons(lacking: Lacking) -> str:
    return "; ".join(why for _, why in lacking)


def _named(lacking: Lacking) -> str:
    return "; ".join(f"{value}: {why}" for value, why in lacking)


def _not_installed(libraries: list[str]) -> str:
    return f"{', '.join(libraries)} is not installed (or does not work) here"


@dataclass(frozen=True)
class Need:
    """What some values of some knobs need of the machine, the model or the study's dtype, said once: the
    space leaves those values out where the need is not met (``unavailable``), and the rule of the same
    name refuses a configuration that uses them (``search.rules``)."""

    name: str
    """The rule's name."""
    group: Group
    knobs: tuple[str, ...]
    """The knobs it concerns (``QUANT``: every quantized component's)."""
    unmet: Callable[[str, Any, Env], str | None]
    """Why ``knob = value`` cannot run here for want of it, or None where it is met (or the value needs nothing)."""
    in_a_configuration: Callable[[Lacking], str] = _reasons
    """The rule's sentence for a configuration with these values (by default their reasons)."""
    ruled: bool = True
    """False: no rule of its own, another one always refuses such a configuration first."""

    def refusal(self, config: TrialConfig, env: Env) -> str | None:
        """The rule's sentence when values of ``config`` (those that mean something, its backends once each
        and in name order) need what ``env`` lacks; None when it has what they need."""
        in_play = _values_in_play(config)
        lacking: Lacking = []
        for knob in self.knobs:
            for value in in_play.get(knob, ()):
                why = self.unmet(knob, value, env)
                if why:
                    lacking.append((value, why))
        return self.in_a_configuration(lacking) if lacking else None


@functools.lru_cache(maxsize=4096)
def _values_in_play(config: TrialConfig) -> dict[str, tuple[Any, ...]]:
    """Knob → its values in ``config``: the settings that differ from their defaults, as given (a setting that
    means nothing there has its own rule), and the other knobs where they mean something (``QUANT``: the
    backends, in name order). Cached: each rule of a need asks it of every configuration checked; callers do
    not mutate it."""
    params = config.to_params()
    in_play: dict[str, tuple[Any, ...]] = {
        k: (v,) for k, v in params.items() if not k.startswith("quant.") and k not in SETTINGS_DEFAULTS
    }
    in_play.update({k: (v,) for k, v in config.settings().items()})
    in_play[PLACE] = tuple(sorted({p for _, p in config.placement}))
    in_play[QUANT] = tuple(sorted({v for k, v in params.items() if k.startswith("quant.") and v != "none"}))
    return in_play


def _backend_need(
    name: str,
    unmet: Callable[[str, Env], str | None],
    in_a_configuration: Callable[[Lacking], str] = _reasons,
) -> Need:
    """A need of quantization backends (a ``quant.*`` knob's value other than none)."""
    return Need(
        name,
        "quantization",
        (QUANT,),
        lambda knob, value, env: unmet(value, env) if value != "none" else None,
        in_a_configuration,
    )


def _without_cuda(env: Env, why: str) -> str | None:
    return None if env.caps.cuda else why


NEEDS: tuple[Need, ...] = (
    _backend_need(
        "bitsandbytes_needs_cuda",
        lambda b, env: _without_cuda(env, "bitsandbytes needs a CUDA GPU") if b in BNB_BACKENDS else None,
        lambda lacking: "bitsandbytes quantization needs a CUDA GPU",
    ),
    _backend_need(
        "fp8_needs_compute_capability",
        lambda b, env: fp8_reason(env.caps) if b == "torchao_fp8dq" and not fp8_capable(env.caps) else None,
        _named,
    ),
    _backend_need(
        "torchao_int4_needs_tinygemm", lambda b, env: int4_reason(env) if b == "torchao_int4wo" else None, _named
    ),
    _backend_need(
        "backend_not_installed",
        lambda b, env: None if BACKEND_LIBRARY[b] in env.caps.backends else _not_installed([BACKEND_LIBRARY[b]]),
        lambda lacking: _not_installed(sorted({BACKEND_LIBRARY[b] for b, _ in lacking})),
    ),
    _backend_need(
        "backend_unusable_here", lambda b, env: f"{b}: {why}" if (why := dict(env.caps.unusable).get(b)) else None
    ),
    Need("compile_unavailable", "runtime", ("compile",), lambda knob, value, env: compile_unavailable(value, env)),
    Need(
        "cuda_graphs_need_cuda",
        "runtime",
        ("compile_mode",),
        lambda knob, value, env: (
            _without_cuda(
                env, "CUDA graphs need a GPU (max-autotune-no-cudagraphs searches the same kernels without them)"
            )
            if value in CUDA_GRAPH_MODES
            else None
        ),
        lambda lacking: f"compile mode {lacking[0][0]} records CUDA graphs, which need a GPU",
    ),
    Need(
        "offload_needs_cuda",
        "runtime",
        ("offload", PLACE),
        lambda knob, value, env: (
            _without_cuda(env, "no CUDA: offloading to the CPU the trial already runs on means nothing")
            if value not in ("none", "resident")
            else None
        ),
        lambda lacking: "offloading needs a CUDA GPU: without one the trial already runs on the CPU",
    ),
    Need(
        "streams_need_cuda",
        "runtime",
        STREAM_KNOBS,
        lambda knob, value, env: _without_cuda(env, "CUDA streams need a GPU") if value is True else None,
        ruled=False,  # they apply under group offloading only, which offload_needs_cuda refuses first
    ),
    Need(
        "setting_unavailable",
        "settings",
        SETTINGS_KNOBS,
        lambda knob, value, env: setting_unavailable(knob, value, env) if value != SETTINGS_DEFAULTS[knob] else None,
    ),
)
"""Every need, in the order ``unavailable`` checks them."""


def missing_values(allowed: dict[str, tuple[Any, ...]], env: Env) -> list[tuple[str, str]]:
    """(knob or value, why) for what the study allows and this machine cannot run; a whole knob in one line."""
    missing: dict[str, str] = {}
    compiling = {v for v in allowed["compile"] if v != "none" and unavailable("compile", v, env) is None}
    grouping = GROUP_OFFLOADS & {v for k, vs in allowed.items() if k == "offload" or k.startswith("place.") for v in vs}
    for knob, choices in allowed.items():
        if knob in STREAM_KNOBS or (knob in ("compile_mode", "fullgraph") and not compiling):
            continue  # said once below, or not searched anyway
        if knob.startswith("place.") and "offload" in missing:
            continue  # every offload goes for the same reason, said once
        gone = [(value, why) for value in choices if (why := unavailable(knob, value, env))]
        if knob == "compile" and gone and env.caps.compile:
            for value, why in gone:  # a scope this model cannot take (regional), not the machine's compile
                missing.setdefault(f"compile={value}", why)
        elif (knob in ("compile", "offload") or knob.startswith("place.")) and gone:
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
    stream_gone = unavailable("use_stream", True, env)
    if grouping and stream_gone:
        missing["use_stream"] = stream_gone
    return list(missing.items())


def not_quantizable(component: ComponentInfo) -> str:
    """Why quantizing ``component`` is not offered (its role is not in ``QUANTIZABLE_ROLES``)."""
    if component.role == "vae":
        return (
            f"quantizing the VAE ({component.name}) is not offered: it is small and decoding is sensitive to precision"
        )
    return f"quantizing {component.name} ({component.role}) is not offered: only the denoiser and text encoders"
