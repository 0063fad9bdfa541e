"""The engine: the training step's data-parallel hook, and evaluation whose batching does not change the numbers."""
from __future__ import annotations

import pytest
import torch

import wrnlib.engine as engine
from wrnlib import WideResNet, evaluate, predict_logits
from wrnlib.augment import normalize

CPU = torch.device("cpu")


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
