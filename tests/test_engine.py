"""The engine: device choice, and evaluation batching that does not change the numbers."""
from __future__ import annotations

import pytest
import torch

from wrnlib import WideResNet, evaluate, predict_logits, resolve_device


def test_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'foo'"):
        resolve_device("foo")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
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
    import wrnlib.engine as engine

    cpu = torch.device("cpu")
    assert engine.use_bf16("bf16", cpu) is True and engine.use_bf16("fp32", cpu) is False
    assert engine.use_bf16("auto", torch.device("cuda")) is True
    for amx, avx512, native in ((False, True, True), (True, False, True), (False, False, False)):
        monkeypatch.setattr(engine, "cpu_bf16_support", lambda a=amx, b=avx512: {"amx_bf16": a, "avx512_bf16": b})
        assert engine.use_bf16("auto", cpu) is native
