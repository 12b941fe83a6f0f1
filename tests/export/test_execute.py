"""Exported snippets run to completion against the tiny random-weight pipeline on the CPU.

Snippets set ``device = "cuda"`` at the top, where qco-tune measured; here it is rendered as
``"cpu"`` (or that line is rewritten, for a file written by the CLI). Only configurations that run on
a CPU are executed here: bitsandbytes, float8, offloading and compilation run in the ``gpu`` tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from export_cases import CPU_CASES, Case
from export_fakes import add_fake_trial, create_fake_study, run_snippet
from export_helpers import TINY_WORKLOAD

import qco_tune
from qco_tune.cli.main import cli
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import StudySpec, Workload
from qco_tune.export.formats import render_json
from qco_tune.export.render import render_python

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

CUDA_LINE = 'device = "cuda"  # where the pipeline runs'
EXECUTED = [c for c in CPU_CASES if c.config.compile == "none"]  # compiling even the tiny model takes ~45 s here


def run_in(folder: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.chdir(folder)
    return run_snippet(source)


@pytest.mark.parametrize("case", EXECUTED, ids=lambda c: c.name)
def test_snippet_runs(
    case: Case, tiny: ModelInfo, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = Workload(**{**TINY_WORKLOAD.__dict__, "prompt": case.workload.prompt})
    source = render_python(
        case.config, model=tiny, workload=workload, dtype=case.dtype, model_ref=str(tiny_folder), device="cpu"
    )
    scope = run_in(tmp_path, source, monkeypatch)
    from PIL import Image

    assert Image.open(tmp_path / "output.png").size == (64, 64)
    quantized = {c for c, _ in case.config.quantization}
    pipeline = scope["pipeline"]
    for component in quantized:
        assert getattr(pipeline, component).hf_quantizer is not None, component


def test_cli_export_of_a_tiny_study_runs(
    tiny: ModelInfo, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study of the tiny preset exports (without --model: the checkpoint the trials used) and runs."""
    url = f"sqlite:///{tmp_path}/tiny.db"
    spec = StudySpec(name="tiny", model="tiny-flux", workload=TINY_WORKLOAD, vram_budget=4 * 2**30)
    study = create_fake_study(url, "tiny", spec, tiny, gpu="cpu")
    config = TrialConfig(quantization=(("transformer", "quanto_int8"), ("text_encoder_2", "torchao_int8wo")))
    add_fake_trial(study, config, latency_s=0.2, memory_bytes=2**30, budget_bytes=4 * 2**30, device="cpu")
    monkeypatch.setenv("QCO_CACHE", str(tiny_folder.parent.parent))
    out = tmp_path / "tuned.py"
    result = CliRunner().invoke(cli, ["export", "tiny", "-o", str(out), "--storage", url], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    source = out.read_text()
    # Measured on the CPU: the snippet runs there as written, and says its peak is host RAM.
    assert 'device = "cpu"  # where the pipeline runs' in source and "peak host RAM 1.0 GiB" in source
    assert repr(str(tiny_folder)).replace("'", '"') in source
    # As a script, as a user runs it: quiet where the trials are (torch's pytree notices, torchao's and
    # transformers' messages, deprecations); only the pipeline's own progress bars remain.
    ran = subprocess.run(
        [sys.executable, str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    noise = [line for line in re.split(r"[\r\n]", ran.stderr + ran.stdout) if line.strip() and "it/s]" not in line]
    assert noise == []
    assert (tmp_path / "output.png").exists()


def test_from_pretrained_quantizes_and_apply_refuses_what_only_loading_can_do(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrialConfig(quantization=(("transformer", "torchao_int8wo"),))
    config_file = tmp_path / "tuned.json"
    config_file.write_text(render_json(config))

    pipe = qco_tune.from_pretrained(tiny_folder, config_file, device="cpu")
    assert pipe.transformer.hf_quantizer is not None
    images = pipe(prompt="a cat", height=64, width=64, num_inference_steps=1, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
    assert qco_tune.apply(pipe, config_file, device="cpu") is pipe  # loaded as configured: nothing to refuse

    from diffusers import DiffusionPipeline

    plain = DiffusionPipeline.from_pretrained(str(tiny_folder), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="quantization happens at load time"):
        qco_tune.apply(plain, json.loads(config_file.read_text()), device="cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        qco_tune.apply(plain, TrialConfig(offload="model"), device="cpu")
