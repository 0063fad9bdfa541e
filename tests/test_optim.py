import pytest
import torch
from torch import nn

from wrnlib.engine import make_train_step
from wrnlib.model import WideResNet
from wrnlib.optim import SAM, ModelEMA, frozen_bn_stats, make_sgd, parameter_groups


def test_parameter_groups_exclude_bn_and_bias_unless_asked():
    model = WideResNet(10, 1)
    groups = parameter_groups(model, 5e-4, decay_bn_bias=False)
    decayed, plain = groups[0]["params"], groups[1]["params"]
    assert all(p.ndim > 1 for p in decayed) and all(p.ndim == 1 for p in plain)
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert len(decayed) + len(plain) == len(list(model.parameters()))
    everything = parameter_groups(model, 5e-4, decay_bn_bias=True)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))


def test_sam_step_uses_the_gradient_at_the_perturbed_point():
    torch.manual_seed(0)
    a = torch.randn(5, 5)
    a = a @ a.T + torch.eye(5)  # a quadratic with a non-constant gradient
    w0 = torch.randn(5)

    def loss_fn(w):
        return 0.5 * w @ a @ w + w.sum() ** 2

    w = nn.Parameter(w0.clone())
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.3)
    loss_fn(w).backward()
    sam.perturb()
    loss_fn(w).backward()
    sam.restore()
    sam.step()

    # the same update written out by hand
    g = torch.func.grad(loss_fn)(w0)
    g_adv = torch.func.grad(loss_fn)(w0 + 0.3 * g / g.norm())
    assert torch.allclose(w.detach(), w0 - 0.1 * g_adv, atol=1e-6)


def test_sam_second_pass_leaves_bn_running_stats_alone_and_restores_momentum():
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    bn = model.bn
    x = torch.randn(8, 3, 32, 32)
    model(x)
    before = bn.running_mean.clone()
    with frozen_bn_stats(model):
        model(x * 3 + 1)
        assert torch.equal(bn.running_mean, before)
    assert bn.momentum == 0.1
    model(x * 3 + 1)
    assert not torch.equal(bn.running_mean, before)


def test_sam_training_step_under_bf16_autocast_updates_running_stats_once():
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    sam = SAM(make_sgd(model, 0.05, 0.9, True, 5e-4, False), rho=0.05)
    step = make_train_step(model, model, sam, device=torch.device("cpu"), bf16=True)
    x = torch.randn(8, 3, 32, 32)
    targets = torch.eye(10)[torch.arange(8)]
    reference = WideResNet(10, 1)
    reference.load_state_dict(model.state_dict())
    weights = [p.detach().clone() for p in model.parameters()]
    loss, logits = step(x, targets)
    assert torch.isfinite(loss) and logits.shape == (8, 10)
    assert any(not torch.equal(a, p) for a, p in zip(weights, model.parameters()))
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step
    # running stats: exactly one update, the one a single forward of the same batch makes
    reference.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference(x)
    assert torch.allclose(model.bn.running_mean, reference.bn.running_mean, atol=1e-3)
    assert int(model.bn.num_batches_tracked) == 2  # counted by both passes, harmless with momentum set


def test_model_ema_averages_with_warmup_and_tracks_a_constant_model():
    model = nn.Linear(3, 1)
    ema = ModelEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = min(0.9, 2 / 11)  # warm-up decay on the first update
    assert torch.allclose(ema.module.weight, d * start + (1 - d) * model.weight)
    for _ in range(300):
        ema.update(model)
    assert torch.allclose(ema.module.weight, model.weight, atol=1e-6)
    assert not ema.module.weight.requires_grad


def test_sgd_uses_the_multi_tensor_kernel_on_the_cpu_and_nesterov_only_with_momentum():
    model = WideResNet(10, 1)
    sgd = make_sgd(model, 0.1, 0.9, True, 5e-4, False)
    assert sgd.defaults["foreach"] is True and not sgd.defaults["fused"]  # fused is the CUDA choice
    assert sgd.defaults["nesterov"] is True and sgd.defaults["momentum"] == 0.9
    plain = make_sgd(model, 0.1, 0.0, True, 5e-4, False)  # torch refuses Nesterov without momentum
    assert plain.defaults["nesterov"] is False and plain.defaults["momentum"] == 0.0


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="rho"):
        SAM(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), rho=0)
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(2, 2), decay=1.0)


def test_ema_refuses_a_decay_outside_the_open_interval_and_checkpoints_what_it_is():
    model = nn.Linear(2, 2)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="EMA decay must be in"):
            ModelEMA(model, bad)
    state = ModelEMA(model, 0.99).state_dict()
    assert set(state) == {"module", "updates", "decay"} and state["decay"] == 0.99 and state["updates"] == 0


def test_sam_defaults_the_papers_rho_and_frees_gradients_by_default():
    model = nn.Linear(2, 2)
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    assert sam.rho == 0.05  # Foret et al.'s CIFAR value
    model(torch.ones(1, 2)).sum().backward()
    sam.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_sam_restore_without_a_perturb_says_so_and_restores_only_once():
    w = nn.Parameter(torch.ones(3))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.1)
    with pytest.raises(RuntimeError, match="call perturb\\(\\) first"):
        sam.restore()
    (w * w).sum().backward()
    sam.perturb()
    assert not torch.equal(w.detach(), torch.ones(3))
    sam.restore()
    assert torch.equal(w.detach(), torch.ones(3))
    with pytest.raises(RuntimeError, match="nothing to restore"):
        sam.restore()
