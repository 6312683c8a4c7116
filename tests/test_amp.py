"""train.amp=auto: bf16 autocast only where the device computes it natively."""
import logging

import pytest
import torch

from maskcls.errors import MaskclsError
from maskcls.infer import runtime
from maskcls.infer.runtime import autocast, check_training_amp, inference_amp

CPU = torch.device("cpu")


@pytest.fixture(params=[False, True], ids=["emulated", "native"])
def bf16_native(request, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: request.param)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return request.param


def _matmul_dtype(amp: str) -> torch.dtype:
    with autocast(CPU, amp):
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def test_auto_is_bf16_only_where_it_is_native(bf16_native):
    assert runtime.native_bf16(CPU) is bf16_native
    assert _matmul_dtype("auto") == (torch.bfloat16 if bf16_native else torch.float32)
    assert _matmul_dtype("bf16") == torch.bfloat16  # asked for by name: as asked
    assert _matmul_dtype("none") == torch.float32


def test_amx_alone_counts_as_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert _matmul_dtype("auto") == torch.bfloat16


def test_a_recorded_precision_is_predicted_with_what_runs_at_speed_here(bf16_native):
    assert _matmul_dtype(inference_amp("bf16", CPU)) == (torch.bfloat16 if bf16_native else torch.float32)
    assert _matmul_dtype(inference_amp("auto", CPU)) == (torch.bfloat16 if bf16_native else torch.float32)
    assert inference_amp("none", CPU) == "none"
    assert inference_amp("fp16", CPU) == "none"  # a GPU run predicted on a CPU
    assert inference_amp("fp16", torch.device("cuda")) == "fp16"


def test_explicit_bf16_where_it_is_emulated_warns(bf16_native, caplog):
    with caplog.at_level(logging.WARNING, logger="maskcls"):
        check_training_amp("bf16", CPU)
        check_training_amp("auto", CPU)
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ([] if bf16_native else [warned[0]])
    if not bf16_native:
        assert "train.amp=bf16" in warned[0] and "train.amp=auto" in warned[0]
    with pytest.raises(MaskclsError, match="train.amp=fp16 needs a CUDA GPU"):
        check_training_amp("fp16", CPU)


def test_auto_is_the_default():
    from maskcls.config import TrainConfig

    assert TrainConfig().amp == "auto"
