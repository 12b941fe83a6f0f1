"""A ``TrialConfig`` as code a user pastes into a project, or as JSON/TOML. Pure: stdlib only, no torch.

``plan_export`` computes what the snippet does (an ``ExportPlan``: Dynamo settings, quantization,
loading, offloading, compilation and the pipeline call, in the order that works); ``render_plan``
writes it in the style of the diffusers docs. Both mirror what a trial does through
``qco_tune.measure.backends`` (``load_pipeline`` then ``apply_config``): the Dynamo settings come from the
same ``dynamo_settings``, the quantization configs from the same ``quantconfigs`` table, and a test
runs snippets and ``qco_tune.apply`` against one recording pipeline to prove the calls agree.

Every string from outside (prompt, model reference, study and GPU names) is written through
``pycode.string_literal`` or ``pycode.comment``: it cannot break out of its literal or comment.
"""

from __future__ import annotations

from collections.abc import Collection

from qco_tune.core.compile_artifacts import SUFFIX as ARTIFACT_SUFFIX
from qco_tune.core.config import TrialConfig
from qco_tune.core.pycode import (
    Code,
    Imports,
    Name,
    Value,
    assign_string,
    call_node,
    comment_lines,
    format_node,
    string_literal,
    value_node,
)
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import Workload
from qco_tune.export.formats import render_json, render_toml
from qco_tune.export.plan import (
    DEVICE_VARIABLE,
    OUTPUT_IMAGE,
    OUTPUT_VIDEO,
    ExportHeader,
    ExportPlan,
    Statement,
    plan_export,
)

FORMATS: tuple[str, ...] = ("python", "json", "toml")


def _statement(statement: Statement, imports: Imports) -> list[str]:
    callee = statement.callee.text if isinstance(statement.callee, Code) else imports.name(statement.callee)
    if statement.assign:
        callee = f"{statement.assign} = {callee}"
    return format_node(call_node(callee, statement.args, statement.kwargs, imports))


def _body(plan: ExportPlan, imports: Imports) -> list[list[str]]:
    """The snippet's blocks (each a list of lines), separated by blank lines when written."""
    blocks: list[list[str]] = [[f"{DEVICE_VARIABLE} = {string_literal(plan.device)}  # where the pipeline runs"]]
    torch = imports.module("torch")
    if plan.dynamo:
        for key in (k for k, _ in plan.dynamo):
            if not key.isidentifier():
                raise ValueError(f"not a dynamo setting: {key!r}")
        blocks.append(
            [f"{torch}._dynamo.config.{k} = {format_node(value_node(v, imports))[0]}" for k, v in plan.dynamo]
        )
    if plan.inductor:
        blocks.append(_config_lines(f"{torch}._inductor.config", plan.inductor, imports))
    if plan.process_settings:
        blocks.append([line for statement in plan.process_settings for line in _statement(statement, imports)])
    load_kwargs: list[tuple[str, Value]] = [("revision", plan.revision)] if plan.revision else []
    if plan.quantization is not None:
        config_class = imports.name(Name("diffusers.quantizers", "PipelineQuantizationConfig"))
        quant = format_node(
            call_node(f"pipeline_quant_config = {config_class}", (), plan.quantization.kwargs(), imports)
        )
        blocks.append(["# quantize", *quant])
        load_kwargs.append(("quantization_config", Code("pipeline_quant_config")))
    load_kwargs.append(("dtype", Name("torch", plan.dtype)))
    if plan.load_on_device:
        load_kwargs.append(("device_map", Code(DEVICE_VARIABLE)))
    pipeline_class = imports.name(Name("diffusers", "DiffusionPipeline"))
    load = _statement(
        Statement(Code(f"{pipeline_class}.from_pretrained"), (plan.model_ref,), tuple(load_kwargs), "pipeline"), imports
    )
    move = f"pipeline.to({DEVICE_VARIABLE})"
    if plan.move_to_device and not plan.move_after_settings:
        load.append(move)
    blocks.append(load)
    if plan.settings:
        lines = ["# denoiser and VAE settings"]
        for statement in plan.settings:
            lines += _statement(statement, imports)
        if plan.move_to_device and plan.move_after_settings:
            lines.append(move)
        blocks.append(lines)
    if plan.offload:
        lines = [f"# {plan.offload_title}"]
        for statement in plan.offload:
            lines += _statement(statement, imports)
        blocks.append(lines)
    if plan.compile is not None:
        if plan.compile_artifacts is not None:
            blocks.append(_artifact_lines(plan.compile_artifacts, imports))
        blocks.append(["# compile", *_statement(plan.compile, imports)])
    blocks.append([assign_string(name, text) for name, text in plan.strings])
    blocks.append(_call_lines(plan, imports))
    return blocks


def _artifact_lines(folder: str, imports: Imports) -> list[str]:
    """Load the study's compile artefacts (``qco_tune.core.compile_artifacts``: a header line, then torch's blob)
    of this GPU and torch, before anything compiles."""
    torch, json, path = imports.module("torch"), imports.module("json"), imports.name(Name("pathlib", "Path"))
    return [
        "# start warm: load the kernels a qco-tune study compiled (torch's portable compile",
        "# cache) so that the first call skips most of the compilation; only files made on",
        "# this GPU kind with this torch, and not cut short, are loaded",
        assign_string("compile_artifacts", folder),
        "here = {",
        f'    "gpu": {torch}.cuda.get_device_name() if {DEVICE_VARIABLE} == "cuda" else "cpu",',
        f'    "torch": {torch}.__version__,',
        "}",
        f"for artifact in sorted({path}(compile_artifacts).rglob({string_literal('*' + ARTIFACT_SUFFIX)})):",
        '    header, _, blob = artifact.read_bytes().partition(b"\\n")',
        f'    made = {json}.loads(header.partition(b" ")[2])',
        '    if {key: made[key] for key in here} == here and len(blob) == made["bytes"]:',
        f"        {torch}.compiler.load_cache_artifacts(blob)",
    ]


def _call_lines(plan: ExportPlan, imports: Imports) -> list[str]:
    kwargs = plan.call_kwargs
    if plan.video:
        export = imports.name(Name("diffusers.utils", "export_to_video"))
        lines = format_node(call_node("video = pipeline", (), kwargs, imports, tail=".frames[0]"))
        return [*lines, f"{export}(video, {string_literal(OUTPUT_VIDEO)}, fps={int(plan.fps)})"]
    lines = format_node(call_node("image = pipeline", (), kwargs, imports, tail=".images[0]"))
    return [*lines, f"image.save({string_literal(OUTPUT_IMAGE)})"]


QUIET_PREAMBLE = (
    "import os",
    "import warnings",
    "",
    "# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set",
    "# before torch, diffusers and transformers load.",
    'os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")',
    'os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")',
    'os.environ.setdefault("TORCH_LOGS", "-all")',
)
"""The snippet's first lines: what ``measure.backends.libraries`` does to quiet a trial, as environment variables
(the import-time notices of torch's pytree registrations, torchao, transformers' optional backends). Only
``os.environ`` changes come before the imports, which linters accept above imports; the warnings filter
(``QUIET_WARNINGS``: the libraries' deprecation notices, e.g. diffusers' ``QuantoConfig``) comes after them."""


QUIET_WARNINGS = 'warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials'


def render_plan(plan: ExportPlan, header: list[str] | tuple[str, ...] = ()) -> str:
    """The snippet's source: header comments, the quiet preamble, imports, then the body blocks."""
    imports = Imports()
    blocks = [[QUIET_WARNINGS], *_body(plan, imports)]
    head = [line for text in header for line in comment_lines(text)]
    parts = ["\n".join(head), "\n".join(QUIET_PREAMBLE), "\n".join(imports.render())]
    parts += ["\n".join(b) for b in blocks if b]
    return "\n\n".join(p for p in parts if p) + "\n"


def render_python(
    config: TrialConfig,
    *,
    model: ModelInfo,
    workload: Workload,
    dtype: str = "bfloat16",
    model_ref: str | None = None,
    header: ExportHeader | None = None,
    call_parameters: Collection[str] | None = None,
    device: str = "cuda",
    compile_artifacts: str | None = None,
) -> str:
    """Python source that loads ``model`` with ``config`` and calls it with ``workload``; see ``plan_export``."""
    plan = plan_export(
        config,
        model=model,
        workload=workload,
        dtype=dtype,
        model_ref=model_ref,
        call_parameters=call_parameters,
        device=device,
        compile_artifacts=compile_artifacts,
    )
    return render_plan(plan, header.lines(config) if header else ())


def render(
    fmt: str,
    config: TrialConfig,
    *,
    model: ModelInfo,
    workload: Workload,
    dtype: str = "bfloat16",
    model_ref: str | None = None,
    header: ExportHeader | None = None,
    call_parameters: Collection[str] | None = None,
    compile_artifacts: str | None = None,
    device: str = "cuda",
) -> str:
    """``config`` in ``fmt`` (``python``, ``json`` or ``toml``); ``ValueError`` for another format.

    ``compile_artifacts`` (python only): the snippet loads a study's compile artefacts from that folder.
    """
    if fmt == "python":
        return render_python(
            config,
            model=model,
            workload=workload,
            dtype=dtype,
            model_ref=model_ref,
            header=header,
            call_parameters=call_parameters,
            compile_artifacts=compile_artifacts,
            device=device,
        )
    if fmt == "json":
        return render_json(config)
    if fmt == "toml":
        return render_toml(config, header)
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")


def _config_lines(target: str, values: tuple[tuple[str, Value], ...], imports: Imports) -> list[str]:
    """``target.key = value`` per setting (Inductor flags; keys come from ``calls.dynamo``, checked anyway)."""
    for key, _ in values:
        if not key.isidentifier():
            raise ValueError(f"not a compiler setting: {key!r}")
    return [f"{target}.{k} = {format_node(value_node(v, imports))[0]}" for k, v in values]
