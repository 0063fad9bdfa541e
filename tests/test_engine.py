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
