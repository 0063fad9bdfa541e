"""The engine: device choice, precision, the allocator setting, and evaluation batching that does not change the
numbers."""
from __future__ import annotations

import pytest
import torch

import wrnlib.engine as engine
from wrnlib import WideResNet, evaluate, predict_logits, resolve_device
from wrnlib.augment import normalize

CPU = torch.device("cpu")
NONE = {"amx_bf16": False, "avx512_bf16": False}


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
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_batching_and_the_progress_bar_do_not_change_the_result(real_data):
    torch.manual_seed(0)
    model = WideResNet(10, 1).eval()
    images, labels = real_data.test_images[:96], real_data.test_labels[:96]
    whole = predict_logits(model, images, batch_size=96)
    parts = predict_logits(model, images, batch_size=25, progress="test")
    assert torch.allclose(whole, parts, atol=1e-5)
    result = evaluate(model, images, labels, batch_size=40)
    expected = (whole.argmax(1) == labels).float().mean().item()
    assert result["acc"] == pytest.approx(expected)
    assert result["loss"] == pytest.approx(torch.nn.functional.cross_entropy(whole, labels).item(), rel=1e-5)


def test_use_bf16_follows_the_precision_asked_for_and_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    assert engine.use_bf16("bf16", cpu) is True and engine.use_bf16("fp32", cpu) is False
    assert engine.use_bf16("auto", torch.device("cuda")) is True
    for amx, avx512, native in ((False, True, True), (True, False, True), (False, False, False)):
        monkeypatch.setattr(engine, "cpu_bf16_support", lambda a=amx, b=avx512: {"amx_bf16": a, "avx512_bf16": b})
        assert engine.use_bf16("auto", cpu) is native


def test_the_probe_asks_torch_for_each_unit(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert engine.cpu_bf16_support() == {"amx_bf16": True, "avx512_bf16": False}
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert engine.cpu_bf16_support() == {"amx_bf16": False, "avx512_bf16": True}
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # an older or newer torch without the probe
    assert engine.cpu_bf16_support()["amx_bf16"] is False

    def fails():
        raise RuntimeError("cpuinfo could not read this CPU")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", fails)
    assert engine.cpu_bf16_support() == {"amx_bf16": False, "avx512_bf16": False}


@pytest.mark.parametrize("support, why", [
    ({"amx_bf16": True}, "bf16 autocast (auto: this CPU computes bf16 natively, AMX-BF16)"),
    ({"avx512_bf16": True}, "bf16 autocast (auto: this CPU computes bf16 natively, AVX512-BF16)"),
    ({"amx_bf16": True, "avx512_bf16": True},
     "bf16 autocast (auto: this CPU computes bf16 natively, AMX-BF16 and AVX512-BF16)"),
    ({}, "fp32 (auto: this CPU has no native bf16, AMX or AVX512-BF16, where bf16 would be slower)"),
])
def test_auto_is_bf16_exactly_where_the_cpu_computes_it_and_says_why(monkeypatch, support, why):
    monkeypatch.setattr(engine, "cpu_bf16_support", lambda: NONE | support)
    assert engine.choose_precision("auto", CPU) == (bool(support), why)
    assert engine.choose_precision("auto", torch.device("cuda")) == (True, "bf16 autocast (auto: a CUDA GPU)")


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_precision_is_respected_on_any_cpu(monkeypatch, native):
    monkeypatch.setattr(engine, "cpu_bf16_support", lambda: NONE | {"avx512_bf16": native})
    assert engine.choose_precision("fp32", CPU) == (False, "fp32 (asked for)")
    assert engine.choose_precision("bf16", CPU) == (True, "bf16 autocast (asked for)")


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
    monkeypatch.setattr(engine.ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else None)
    monkeypatch.setattr(engine, "_KEPT", False)
    monkeypatch.delenv("WRNLIB_KEEP_FREED_MEMORY", raising=False)
    assert engine.keep_freed_memory() is True and engine.keep_freed_memory() is True
    assert libc.calls == [(-3, 1 << 30), (-1, 1 << 30)]


@pytest.mark.parametrize("case", ["turned off", "not linux", "no glibc", "refused"])
def test_keeping_freed_memory_is_skipped_where_it_cannot_or_should_not_apply(monkeypatch, case):
    libc = _FakeLibc(result=0 if case == "refused" else 1)

    def cdll(name):
        if case == "no glibc":
            raise OSError(f"{name}: cannot open shared object file")
        return libc

    monkeypatch.setattr(engine.ctypes, "CDLL", cdll)
    monkeypatch.setattr(engine, "_KEPT", False)
    monkeypatch.setenv("WRNLIB_KEEP_FREED_MEMORY", "0" if case == "turned off" else "1")
    if case == "not linux":
        monkeypatch.setattr(engine.sys, "platform", "darwin")
    assert engine.keep_freed_memory() is False
    assert libc.calls == ([(-3, 1 << 30)] if case == "refused" else [])


def test_predictions_average_the_mirror_restore_the_mode_and_follow_the_options(real_data, capsys):
    torch.manual_seed(0)
    model = WideResNet(10, 1).train()
    images = real_data.test_images[:12]
    plain = predict_logits(model, images)
    assert model.training  # evaluated in eval mode, then handed back as it was
    model.eval()
    x = normalize(images)
    with torch.no_grad():
        assert torch.allclose(plain, model(x), atol=1e-5)
        mirrored = 0.5 * (model(x) + model(x.flip(3)))
    assert torch.allclose(predict_logits(model, images, tta=True), mirrored, atol=1e-5)
    assert torch.allclose(predict_logits(model, images, channels_last=True), plain, atol=1e-4)
    dtypes = []
    model.fc.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    low = predict_logits(model, images, bf16=True)
    assert dtypes == [torch.bfloat16] and low.dtype == torch.float32 and torch.allclose(low, plain, atol=0.1)
    assert predict_logits(model, images[:0]).shape == (0, 0)
    capsys.readouterr()
    predict_logits(model, images, batch_size=5, progress="flip-TTA")
    assert "flip-TTA" in capsys.readouterr().err
    predict_logits(model, images, batch_size=5)
    assert capsys.readouterr().err == ""


def test_under_data_parallel_only_sams_first_pass_stays_local(real_data):
    """DDP's no_sync keeps SAM's first backward (which only sets the perturbation) from being all-reduced; plain
    SGD's one backward, and SAM's second, must be all-reduced, so they run outside it."""
    import contextlib

    from wrnlib.optim import SAM

    passes = []

    @contextlib.contextmanager
    def no_sync():
        passes.append("local")
        yield

    def forward(x):
        passes.append("forward")
        return model(x)

    torch.manual_seed(0)
    model = WideResNet(10, 1)
    x = normalize(real_data.train_images[:8])
    targets = torch.nn.functional.one_hot(real_data.train_labels[:8], 10).float()
    for optimizer, expected in ((torch.optim.SGD(model.parameters(), lr=0.1), ["forward"]),
                                (SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05),
                                 ["local", "forward", "forward"])):
        passes.clear()
        engine.make_train_step(model, forward, optimizer, device=CPU, bf16=False, no_sync=no_sync)(x, targets)
        assert passes == expected
