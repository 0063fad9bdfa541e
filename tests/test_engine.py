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


# --------------------------------------------------------------------------- the step replayed from a CUDA graph


def _batches(real_data, n: int, size: int = 16):
    images, labels = real_data.train_images, real_data.train_labels
    return [(normalize(images[i * size:(i + 1) * size]),
             torch.nn.functional.one_hot(labels[i * size:(i + 1) * size], 10).float()) for i in range(n)]


def _trained(step, optimizer, batches, lrs):
    seen = []
    for (x, targets), lr in zip(batches, lrs):
        for group in optimizer.param_groups:  # as fit sets the lr of each step
            group["lr"] = lr
        loss, logits = step(x, targets)
        groups = optimizer.param_groups  # numbers outside the step, as a checkpoint saves them
        assert [(type(group["lr"]), group["lr"]) for group in groups] == [(float, lr)] * len(groups)
        seen.append((loss, logits, loss.clone(), logits.clone()))
    return seen


def test_a_graphed_step_captures_once_after_its_warmup_and_trains_as_the_eager_step(real_data, monkeypatch):
    """Three eager steps, one capture, replays after it (torch.cuda's graph API replaced by a CPU stand-in that
    behaves like a graph); the weights, buffers, losses and logits are the eager step's, step by step."""
    from fake_cuda import FakeCudaGraphs
    from wrnlib.optim import make_sgd

    batches, lrs = _batches(real_data, 6), [0.1, 0.2, 0.3, 0.25, 0.15, 0.05]
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    optimizer = make_sgd(model, 0.1, 0.9, True, 5e-4, False)
    eager = _trained(engine.make_train_step(model, model, optimizer, device=CPU, bf16=False), optimizer, batches, lrs)
    torch.manual_seed(0)
    g_model = WideResNet(10, 1)
    g_optimizer = make_sgd(g_model, 0.1, 0.9, True, 5e-4, False)
    fake = FakeCudaGraphs(monkeypatch, g_model)
    step = engine.make_train_step(g_model, g_model, g_optimizer, device=CPU, bf16=False, cuda_graph=True)
    graphed = _trained(step, g_optimizer, batches, lrs)
    assert (fake.captures, fake.replays) == (1, 3)
    assert [lr.item() for lr in step.lrs] == pytest.approx([0.05, 0.05])  # the last step's, filled in place
    for (_, _, loss, logits), (_, _, g_loss, g_logits) in zip(eager, graphed):
        assert torch.allclose(loss, g_loss, atol=1e-6) and torch.allclose(logits, g_logits, atol=1e-5)
    for a, b in zip([*model.parameters(), *model.buffers()], [*g_model.parameters(), *g_model.buffers()]):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert graphed[3][0] is graphed[4][0] is graphed[5][0]  # the graph's own outputs, overwritten by each replay
    assert graphed[3][1] is graphed[5][1] and graphed[2][0] is not graphed[3][0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_graphed_step_trains_as_the_eager_step(real_data):
    """The real CUDA graph: bf16 autocast, channels_last, cuDNN's autotuner on, as fit trains on a GPU."""
    from wrnlib.optim import make_sgd

    gpu = torch.device("cuda")
    batches = [(x.to(gpu).contiguous(memory_format=torch.channels_last), t.to(gpu))
               for x, t in _batches(real_data, 8, 64)]
    lrs = [0.05 * (i + 1) for i in range(8)]
    runs = []
    for cuda_graph in (False, True):
        torch.manual_seed(0)
        model = WideResNet(16, 2).to(gpu, memory_format=torch.channels_last)
        optimizer = make_sgd(model, 0.1, 0.9, True, 5e-4, False)
        step = engine.make_train_step(model, model, optimizer, device=gpu, bf16=True, cuda_graph=cuda_graph)
        losses = [loss.item() for loss, *_ in _trained(step, optimizer, batches, lrs)]
        runs.append((losses, [t.detach().float().clone() for t in [*model.parameters(), *model.buffers()]]))
    (eager_losses, eager_state), (graph_losses, graph_state) = runs
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3)
    assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(eager_state, graph_state))
