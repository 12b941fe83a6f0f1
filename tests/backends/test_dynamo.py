"""Which dynamo settings a configuration needs; the module must import without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qco_tune.calls.dynamo import OFFLOAD_CACHE_SIZE_LIMIT, dynamo_settings
from qco_tune.core.config import TrialConfig


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (TrialConfig(), {}),
        (TrialConfig(quantization=(("transformer", "bnb_nf4"),), offload="group_leaf"), {}),  # not compiling
        (TrialConfig(compile="regional"), {}),
        (
            TrialConfig(compile="full", quantization=(("text_encoder_2", "bnb_int8"),)),
            {"capture_dynamic_output_shape_ops": True},
        ),
        (TrialConfig(compile="regional", offload="model"), {"cache_size_limit": OFFLOAD_CACHE_SIZE_LIMIT}),
        (
            TrialConfig(compile="full", quantization=(("transformer", "bnb_fp4"),), offload="group_block"),
            {"capture_dynamic_output_shape_ops": True, "cache_size_limit": OFFLOAD_CACHE_SIZE_LIMIT},
        ),
        (TrialConfig(compile="full", quantization=(("transformer", "torchao_int8wo"),)), {}),
    ],
)
def test_dynamo_settings(config: TrialConfig, expected: dict[str, object]) -> None:
    assert dynamo_settings(config) == expected


def test_imports_without_torch() -> None:
    code = "import sys, qco_tune.calls.dynamo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
