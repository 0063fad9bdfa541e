"""The device: which one, the precision chosen for it and why, and the CPU allocator setting."""
from __future__ import annotations

import pytest
import torch

import wrnlib.device as device
from wrnlib import resolve_device

CPU = torch.device("cpu")
NONE = {"amx_bf16": False, "avx512_bf16": False}


def device_choice(precision: str, where: torch.device) -> bool:
    return device.choose_precision(precision, where)[0]


def test_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'foo'"):
        resolve_device("foo")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device() == torch.device("cpu")  # auto is the default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as error:
        resolve_device("cuda")
    assert str(error.value) == "device 'cuda' was asked for but no CUDA GPU is visible; use device='cpu' or auto"


def test_bf16_follows_the_precision_asked_for_and_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    assert device_choice("bf16", cpu) is True and device_choice("fp32", cpu) is False
    assert device_choice("auto", torch.device("cuda")) is True
    for amx, avx512, native in ((False, True, True), (True, False, True), (False, False, False)):
        monkeypatch.setattr(device, "cpu_bf16_support", lambda a=amx, b=avx512: {"amx_bf16": a, "avx512_bf16": b})
        assert device_choice("auto", cpu) is native


def test_the_probe_asks_torch_for_each_unit(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert device.cpu_bf16_support() == {"amx_bf16": True, "avx512_bf16": False}
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert device.cpu_bf16_support() == {"amx_bf16": False, "avx512_bf16": True}
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # an older or newer torch without the probe
    assert device.cpu_bf16_support()["amx_bf16"] is False

    def fails():
        raise RuntimeError("cpuinfo could not read this CPU")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", fails)
    assert device.cpu_bf16_support() == {"amx_bf16": False, "avx512_bf16": False}


@pytest.mark.parametrize("support, why", [
    ({"amx_bf16": True}, "bf16 autocast (auto: this CPU computes bf16 natively, AMX-BF16)"),
    ({"avx512_bf16": True}, "bf16 autocast (auto: this CPU computes bf16 natively, AVX512-BF16)"),
    ({"amx_bf16": True, "avx512_bf16": True},
     "bf16 autocast (auto: this CPU computes bf16 natively, AMX-BF16 and AVX512-BF16)"),
    ({}, "fp32 (auto: this CPU has no native bf16, AMX or AVX512-BF16, where bf16 would be slower)"),
])
def test_auto_is_bf16_exactly_where_the_cpu_computes_it_and_says_why(monkeypatch, support, why):
    monkeypatch.setattr(device, "cpu_bf16_support", lambda: NONE | support)
    assert device.choose_precision("auto", CPU) == (bool(support), why)
    assert device.choose_precision("auto", torch.device("cuda")) == (True, "bf16 autocast (auto: a CUDA GPU)")


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_precision_is_respected_on_any_cpu(monkeypatch, native):
    monkeypatch.setattr(device, "cpu_bf16_support", lambda: NONE | {"avx512_bf16": native})
    assert device.choose_precision("fp32", CPU) == (False, "fp32 (asked for)")
    assert device.choose_precision("bf16", CPU) == (True, "bf16 autocast (asked for)")


class _FakeLibc:
    def __init__(self, result: int = 1):
        self.calls, self.result = [], result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_keeping_freed_memory_raises_glibcs_two_thresholds_once(monkeypatch):
    """M_MMAP_THRESHOLD (-3) and M_TRIM_THRESHOLD (-1) of glibc's malloc.h, both to 1 GiB, once per process;
    the page faults this saves are measured in tests/test_precision.py."""
    libc = _FakeLibc()
    monkeypatch.setattr(device.ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else None)
    monkeypatch.setattr(device, "_KEPT", False)
    monkeypatch.delenv("WRNLIB_KEEP_FREED_MEMORY", raising=False)
    assert device.keep_freed_memory() is True and device.keep_freed_memory() is True
    assert libc.calls == [(-3, 1 << 30), (-1, 1 << 30)]


@pytest.mark.parametrize("case", ["turned off", "not linux", "no glibc", "refused"])
def test_keeping_freed_memory_is_skipped_where_it_cannot_or_should_not_apply(monkeypatch, case):
    libc = _FakeLibc(result=0 if case == "refused" else 1)

    def cdll(name):
        if case == "no glibc":
            raise OSError(f"{name}: cannot open shared object file")
        return libc

    monkeypatch.setattr(device.ctypes, "CDLL", cdll)
    monkeypatch.setattr(device, "_KEPT", False)
    monkeypatch.setenv("WRNLIB_KEEP_FREED_MEMORY", "0" if case == "turned off" else "1")
    if case == "not linux":
        monkeypatch.setattr(device.sys, "platform", "darwin")
    assert device.keep_freed_memory() is False
    assert libc.calls == ([(-3, 1 << 30)] if case == "refused" else [])
