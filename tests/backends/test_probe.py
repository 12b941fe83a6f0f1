"""The capability probe prints two JSON lines: the seconds its stages took, then the Capabilities."""

from __future__ import annotations

import json

import pytest
import torch

from qco_tune.core.records import Capabilities
from qco_tune.measure.backends import libraries, probe


@pytest.mark.slow  # imports the quantization libraries
def test_probe_prints_capabilities(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "quiet_libraries", lambda: None)  # keep this process's environment as it is
    assert probe.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    stages = json.loads(lines[0])["stage_seconds"]
    assert set(stages) == {
        "importing torch",
        "importing the quantization libraries",
        "checking the attention backends",
        "checking the quantization kernels",
    }
    assert all(seconds >= 0 for seconds in stages.values())
    caps = Capabilities.from_dict(json.loads(lines[1]))
    assert caps.cuda == torch.cuda.is_available()
    versions = dict(caps.versions)
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"diffusers", "transformers", "qco_tune"} <= set(versions)
    assert "torchao" in caps.backends
    assert ("bitsandbytes" in caps.backends) == (caps.cuda and "bitsandbytes" in versions)
    if not caps.cuda:
        assert caps.gpu_count == 0 and caps.total_memory is None and caps.compute_capability is None
    assert caps.host
