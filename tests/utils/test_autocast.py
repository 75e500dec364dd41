import logging
import math

import pytest
import torch

from audiogen_lab.utils import autocast as autocast_utils
from audiogen_lab.utils.autocast import MAX_NATIVE_SLOWDOWN, bf16_is_native, check_autocast


def _cpu(monkeypatch, avx512_bf16: bool, amx: bool = False, slowdown: float = 40.0):
    """Pretend to run on a CPU with these flags and this measured bfloat16/float32 matmul time ratio."""
    measured = []

    def fake_slowdown() -> float:
        measured.append(1)
        return slowdown

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(autocast_utils, "cpu_bf16_slowdown", fake_slowdown)
    return measured


def test_cpu_with_native_bf16_passes_and_warns_only_when_bf16_is_slower(monkeypatch, caplog):
    for flags in ({"avx512_bf16": True}, {"avx512_bf16": False, "amx": True}):
        measured = _cpu(monkeypatch, slowdown=1.9, **flags)
        assert bf16_is_native("cpu")
        assert not measured  # the CPU flags are enough to call it native
        with caplog.at_level(logging.WARNING, logger=autocast_utils.__name__):
            check_autocast("cpu", torch.bfloat16)  # passes, but says autocast will not pay here
        assert any("1.9x" in record.getMessage() and "autocast=false" in record.getMessage()
                   for record in caplog.records)
        caplog.clear()
        _cpu(monkeypatch, slowdown=0.3, **flags)
        with caplog.at_level(logging.WARNING, logger=autocast_utils.__name__):
            check_autocast("cpu", torch.bfloat16)
        assert not caplog.records


def test_cpu_without_bf16_refuses_with_keys_and_measured_reason(monkeypatch):
    measured = _cpu(monkeypatch, avx512_bf16=False, slowdown=37.0)
    assert not bf16_is_native("cpu")
    with pytest.raises(RuntimeError) as error:
        check_autocast("cpu", torch.bfloat16)
    message = str(error.value)
    for needle in ("autocast=true", "autocast_dtype=bfloat16", "autocast_force=true", "autocast=false",
                   "37.0x", "AVX-512 BF16"):
        assert needle in message, (needle, message)
    assert measured


def test_forced_bf16_on_slow_cpu_warns_and_returns(monkeypatch, caplog):
    _cpu(monkeypatch, avx512_bf16=False, slowdown=37.0)
    with caplog.at_level(logging.WARNING, logger=autocast_utils.__name__):
        check_autocast("cpu", torch.bfloat16, force=True)
    assert any("autocast_force=true" in record.getMessage() and "37.0x" in record.getMessage()
               for record in caplog.records)


def test_cpu_without_flags_but_fast_measured_bf16_is_native(monkeypatch):
    # e.g. an Arm CPU with BF16 instructions: no x86 flag, but the measurement shows native speed
    _cpu(monkeypatch, avx512_bf16=False, slowdown=0.5)
    assert bf16_is_native("cpu")
    check_autocast("cpu", torch.bfloat16)
    _cpu(monkeypatch, avx512_bf16=False, slowdown=MAX_NATIVE_SLOWDOWN * 1.01)
    assert not bf16_is_native("cpu")


def test_other_dtypes_are_not_checked(monkeypatch):
    measured = _cpu(monkeypatch, avx512_bf16=False, slowdown=400.0)
    check_autocast("cpu", torch.float32)
    check_autocast("cuda", torch.float16)
    assert not measured


def test_cuda_uses_torch_cuda_bf16_check(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert bf16_is_native("cuda") and bf16_is_native("cuda:1")
    check_autocast("cuda:0", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert not bf16_is_native("cuda")
    with pytest.raises(RuntimeError, match="is_bf16_supported"):
        check_autocast("cuda", torch.bfloat16)


def test_unknown_device_type_is_an_error():
    with pytest.raises(ValueError, match="device"):
        bf16_is_native("meta")


def test_measured_slowdown_on_this_cpu():
    slowdown = autocast_utils.cpu_bf16_slowdown()
    assert math.isfinite(slowdown) and slowdown > 0
    assert autocast_utils.cpu_bf16_slowdown() == slowdown  # measured once per process
    emulating_x86 = (torch.cpu._is_avx2_supported() and not torch.cpu._is_avx512_bf16_supported()
                     and not torch.cpu._is_amx_tile_supported())
    if emulating_x86:  # AVX2-only x86: bfloat16 matmuls run in slow reference kernels
        assert slowdown > MAX_NATIVE_SLOWDOWN
        assert not bf16_is_native("cpu")
        with pytest.raises(RuntimeError, match="autocast_force"):
            check_autocast("cpu", torch.bfloat16)
