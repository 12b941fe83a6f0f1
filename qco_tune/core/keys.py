"""The vocabulary of stored keys: every name qco-tune writes into an Optuna storage or a measurement.

Study and trial attributes (``qco.*``) and ``Measurement.extra`` keys are written by the study loop,
the trial child and the storage, and read by the reports, the exporter and the TUI: each is
spelled here once. Stdlib only (nothing to import).
"""

from __future__ import annotations

ATTR_PREFIX = "qco."
"""What every attribute qco-tune stores on a study or a trial begins with."""

# -- study attributes ------------------------------------------------------------------------------
SPEC_ATTR = "qco.spec"
"""The study's spec, as its stored JSON form."""
MODEL_ATTR = "qco.model"
"""The resolved ``ModelInfo``."""
CAPABILITIES_ATTR = "qco.capabilities"
"""The ``Capabilities`` of the machine that made the study."""
GPU_ATTR = "qco.gpu"
"""The GPU kind the study measures on."""
VERSION_ATTR = "qco.version"
"""The qco-tune version that made the study."""
GPU_KINDS_ATTR = "qco.gpu_kinds"
"""Every GPU kind whose workers took trials of the study."""

# -- trial attributes ------------------------------------------------------------------------------
CONFIG_ATTR = "qco.config"
MEASUREMENT_ATTR = "qco.measurement"
BASELINE_ATTR = "qco.baseline"
REASON_ATTR = "qco.reason"
STATUS_ATTR = "qco.status"
DEFERRED_STATUS = "deferred"
"""``STATUS_ATTR`` of a queued retry put aside by a run without time enough for it: failed in Optuna's terms,
it never ran (shown as skipped; queued again when that run ends)."""
PREDICTED_ATTR = "qco.predicted_device_bytes"
"""The memory model's prediction of the counted peak when the trial started (calibrated on the trials before it)."""
PREDICTED_RAW_ATTR = "qco.predicted_raw_bytes"
"""The same prediction before calibration."""
PREDICTED_HOST_ATTR = "qco.predicted_host_bytes"
MEMORY_ATTR = "qco.memory_bytes"
RETRY_OF_ATTR = "qco.retry_of"
ATTEMPT_ATTR = "qco.attempt"
FINGERPRINT_ATTR = "qco.fingerprint"
FEASIBLE_ATTR = "qco.feasible"
"""Whether every budget held (all constraints <= 0), beside the constraints (``store.constraints``) for the
clients that show user attributes only (``optuna trials``); qco-tune itself reads the constraints."""
REMEASURE_OF_ATTR = "qco.remeasure_of"
"""On a trial that measured an extrapolated trial's configuration again at the full step count: its number."""
REPLAYED_FROM_ATTR = "qco.replayed_from"
OWNER_HOST_ATTR = "qco.host"
"""The host of the process running a trial (stale-trial recovery)."""
OWNER_PID_ATTR = "qco.pid"
"""Its process id."""
OWNER_PID_NAMESPACE_ATTR = "qco.pid_namespace"
"""The kernel boot and PID namespace that process id belongs to: two containers may share a host name."""

# -- Measurement.extra keys ------------------------------------------------------------------------
CALL_KWARGS_KEY = "call_kwargs"
"""The names of the keyword arguments the trial's pipeline call used (the exporter writes the same call)."""
COMPILE_CACHE_KEY = "compile_cache"
"""A compiling trial's cache: where, ``cold`` or ``warm``, files and hit/miss counters."""
EXTRAPOLATED_KEY = "extrapolated"
"""What an extrapolated trial measured and how it was extrapolated."""
