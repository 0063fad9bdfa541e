"""Wiring between the units: each test recomputes, independently of the code under test, what one
connection (block -> shortcut, SAM -> base optimiser, config -> augment, ...) must deliver, on real
CIFAR-10 images where the behaviour depends on data. Tiny models (WRN-10-1) on CPU, seconds each."""
import collections
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

import wrnlib.train as train_module
from wrnlib import BatchAugment, TrainConfig, WideResNet, predict_logits
from wrnlib import runfolder
from wrnlib.data import CIFAR10_MEAN, CIFAR10_STD
from wrnlib.engine import make_train_step
from wrnlib.model import PreActBlock
from wrnlib.optim import SAM, ModelEMA, make_sgd
from wrnlib.train import make_splits, summarize

CPU = torch.device("cpu")


def norm(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> (x / 255 - mean) / std per channel, written out here rather than taken from wrnlib."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics, so BN -> ReLU is far from identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return torch.eye(10)[labels]


# --------------------------------------------------------------------------------------------
# model: the projection shortcut reads the pre-activated input


def reference_block(block: PreActBlock, x: torch.Tensor) -> torch.Tensor:
    """A pre-activation block in eval mode, from F ops and the block's tensors."""
    def bn_relu(bn, t):
        return F.relu(F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
    stride = block.conv1.stride
    pre = bn_relu(block.bn1, x)
    out = F.conv2d(pre, block.conv1.weight, stride=stride, padding=1)
    out = F.conv2d(bn_relu(block.bn2, out), block.conv2.weight, padding=1)
    skip = x if block.shortcut is None else F.conv2d(pre, block.shortcut.weight, stride=stride)
    return out + skip


def test_projection_shortcut_reads_the_preactivated_input(real_data):
    """PreActBlock: a 1x1 projection takes relu(bn1(x)), not the raw x (WRN reference code)."""
    torch.manual_seed(0)
    block = PreActBlock(3, 16, 2)
    randomise_bn(block)
    block.eval()
    nn.init.zeros_(block.conv2.weight)  # residual branch off: the output is the shortcut alone
    x = norm(real_data.train_images[:16])
    with torch.no_grad():
        bn = block.bn1
        pre = F.relu((x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
                     * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
        expected = F.conv2d(pre, block.shortcut.weight, stride=2)
        raw = F.conv2d(x, block.shortcut.weight, stride=2)
        out = block(x)
    assert (expected - raw).abs().max() > 0.1  # precondition: the two readings differ
    assert torch.allclose(out, expected, atol=1e-5)


def test_whole_network_matches_a_functional_reference(real_data):
    """WideResNet: stem -> blocks (with pre-activated projections) -> BN-ReLU -> pool -> fc, end to end."""
    torch.manual_seed(1)
    model = WideResNet(10, 1)
    randomise_bn(model, seed=1)
    model.eval()
    x = norm(real_data.test_images[:16])
    with torch.no_grad():
        h = F.conv2d(x, model.stem.weight, padding=1)
        blocks = [b for stage in model.stages for b in stage]
        assert sum(b.shortcut is not None for b in blocks) == 2  # stages 2 and 3 project
        for block in blocks:
            h = reference_block(block, h)
        bn = model.bn
        h = F.relu(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
        expected = F.linear(h.mean((2, 3)), model.fc.weight, model.fc.bias)
        out = model(x)
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# engine + SAM: the base optimiser steps with the gradient at the perturbed weights


def test_sam_train_step_steps_with_the_gradient_at_the_perturbed_weights(real_data):
    """make_train_step + SAM: base.step sees grad at w + rho*g/||g|| and the weights are back at w."""
    torch.manual_seed(2)
    model = WideResNet(10, 1)
    randomise_bn(model, seed=2)
    model.eval()  # BN on running statistics: the loss is a pure function of the weights
    x = norm(real_data.train_images[:32])
    targets = one_hot(real_data.train_labels[:32])
    rho = 0.5
    base = make_sgd(model, 0.1, 0.9, True, 5e-4, False)
    sam = SAM(base, rho=rho)
    names = [n for n, _ in model.named_parameters()]
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    seen = {}
    real_step = base.step

    def spy_step(*args, **kwargs):
        seen["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        seen["weights"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return real_step(*args, **kwargs)

    base.step = spy_step
    make_train_step(model, model, sam, device=CPU, bf16=False)(x, targets)

    def loss_at(params):
        return F.cross_entropy(functional_call(model, (params, buffers), (x,)), targets)

    g = grad(loss_at)(w0)
    g_norm = torch.sqrt(sum((t ** 2).sum() for t in g.values()))
    g_adv = grad(loss_at)({n: w0[n] + rho * g[n] / g_norm for n in names})

    for n in names:
        assert torch.allclose(seen["weights"][n], w0[n], atol=1e-6), n  # restored before the step
        assert torch.allclose(seen["grads"][n], g_adv[n], atol=1e-5, rtol=1e-3), n
    gap = max((g_adv[n] - g[n]).abs().max() / g[n].abs().max() for n in names)
    assert gap > 0.05  # precondition: the perturbed gradient is far from the plain one
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------
# train.make_splits: validation held out of the training images


def _keys(images: torch.Tensor, labels: torch.Tensor) -> collections.Counter:
    return collections.Counter((img.numpy().tobytes(), int(y)) for img, y in zip(images, labels))


@pytest.mark.parametrize("train_limit", [0, 300])
def test_splits_hold_validation_out_of_training(real_data, tmp_path, train_limit):
    """make_splits: train and val are disjoint by content, sizes add up, both come from the training set."""
    config = TrainConfig(name="s", out_dir=str(tmp_path), val_size=200, train_limit=train_limit, test_limit=100,
                         batch_size=64, seed=3)
    s = make_splits(config, real_data, CPU)
    original = _keys(real_data.train_images, real_data.train_labels)
    assert len(original) == len(real_data.train_labels)  # precondition: every training image is unique
    train, val = _keys(s.train_x, s.train_y), _keys(s.val_x, s.val_y)
    assert sum(val.values()) == 200
    assert not set(train) & set(val)  # no validation image is trained on
    if train_limit:
        assert sum(train.values()) == train_limit
        assert not (train + val) - original  # both drawn from the original training set
    else:
        assert train + val == original  # train ∪ val is the whole training set, nothing twice
    test = _keys(s.test_x, s.test_y)
    assert sum(test.values()) == 100 and not test - _keys(real_data.test_images, real_data.test_labels)


# --------------------------------------------------------------------------------------------
# engine.predict_logits: flip test-time augmentation


def test_flip_tta_averages_the_image_and_its_mirror(real_data):
    """predict_logits(tta=True) = 0.5 * (f(x) + f(mirror x)), batched, and differs from plain logits."""
    torch.manual_seed(4)
    model = WideResNet(10, 1)
    model.train()
    with torch.no_grad():
        model(norm(real_data.train_images[:256]))  # realistic BN running statistics from real images
    model.eval()
    images = real_data.test_images[:40]
    plain = predict_logits(model, images, batch_size=16)
    tta = predict_logits(model, images, batch_size=16, tta=True)
    with torch.no_grad():
        expected_plain = model(norm(images))
        expected = 0.5 * (expected_plain + model(norm(images.flip(-1))))
    assert torch.allclose(plain, expected_plain, atol=1e-5)
    assert torch.allclose(tta, expected, atol=1e-5)
    assert (tta - plain).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------
# train.summarize: milestones follow the test accuracy and report the epoch number


def test_summary_milestones_follow_test_accuracy_and_epoch_numbers(tmp_path):
    """summarize: first_crossing_9x_{epoch,train_time_s} is the first epoch (1-based) whose TEST accuracy
    reaches 9x %."""
    #            epoch  val    test   cumulative train time
    table = [(1, 0.930, 0.900, 10.0),
             (2, 0.945, 0.920, 21.0),   # val passes 94 %
             (3, 0.952, 0.941, 33.0),   # val passes 95 %, test passes 94 %
             (4, 0.960, 0.948, 46.0),
             (5, 0.955, 0.953, 60.0)]   # test passes 95 %
    rows = [{"epoch": e, "val_acc": v, "test_acc": t, "train_time_s": s, "images_per_s": 1000.0, "epoch_time_s": 1.0}
            for e, v, t, s in table]
    summary = summarize(rows, TrainConfig(name="m", out_dir=str(tmp_path)), {"acc": 0.953, "loss": 0.2}, None,
                        60.0, WideResNet(10, 1), 600)
    assert (summary["first_crossing_94_epoch"], summary["first_crossing_94_train_time_s"]) == (3, 33.0)
    assert (summary["first_crossing_95_epoch"], summary["first_crossing_95_train_time_s"]) == (5, 60.0)
    assert (summary["best_val_epoch"], summary["best_val_acc"]) == (4, 0.960)

    never = [dict(r, test_acc=0.5) for r in rows]
    summary = summarize(never, TrainConfig(name="m", out_dir=str(tmp_path)), {"acc": 0.5, "loss": 1.0}, None,
                        60.0, WideResNet(10, 1), 600)
    assert (summary["first_crossing_94_epoch"] is summary["first_crossing_94_train_time_s"]
            is summary["first_crossing_95_epoch"] is None)


# --------------------------------------------------------------------------------------------
# augment.BatchAugment -> cutout: the square has the configured side


@pytest.mark.parametrize("size", [5, 8])
def test_batch_augment_cuts_out_a_square_of_the_configured_side(real_data, size):
    """BatchAugment(cutout=s): every erased region is a rectangle of sides <= s, unclipped ones exactly s x s."""
    images, labels = real_data.test_images[:256], real_data.test_labels[:256]
    reference = norm(images)
    torch.manual_seed(5)
    x, _ = BatchAugment(crop_padding=0, flip=False, cutout=size)(images, labels)
    changed = ~torch.isclose(x, reference, atol=1e-5, rtol=0)  # (B, 3, H, W)
    erased = changed.any(1)
    assert torch.equal(changed, erased[:, None].expand_as(changed))  # all channels of a pixel, or none
    assert (x[changed] == 0).all()  # erased to the mean colour
    rows, cols = erased.any(2), erased.any(1)
    assert torch.equal(erased, rows[:, :, None] & cols[:, None, :])  # one rectangle per image
    heights, widths = rows.sum(1), cols.sum(1)
    assert (heights <= size).all() and (widths <= size).all() and (heights >= 1).all()
    assert heights.max() == size and widths.max() == size
    # a centre at least s/2 from every border gives an unclipped square: most images
    assert ((heights == size) & (widths == size)).float().mean() > 0.4


# --------------------------------------------------------------------------------------------
# optim.make_sgd: which parameters are weight-decayed


@pytest.mark.parametrize("decay_bn_bias", [False, True])
def test_sgd_decays_bn_and_bias_exactly_when_asked(decay_bn_bias):
    """make_sgd: with zero gradients one step shrinks decayed params by (1 - lr*wd), leaves the rest alone."""
    torch.manual_seed(6)
    model = WideResNet(10, 1)
    randomise_bn(model, seed=6)
    with torch.no_grad():
        model.fc.bias.copy_(torch.randn(10))  # nonzero, so decay would show
    lr, wd = 0.1, 0.5
    sgd = make_sgd(model, lr, 0.0, False, wd, decay_bn_bias)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    sgd.step()
    kinds = collections.Counter()
    for n, p in model.named_parameters():
        is_bn_or_bias = n.endswith(".bias") or (n.endswith(".weight") and p.ndim == 1)
        kinds["bn/bias" if is_bn_or_bias else "weight"] += 1
        if is_bn_or_bias and not decay_bn_bias:
            assert torch.equal(p, before[n]), n
        else:
            assert torch.allclose(p, before[n] * (1 - lr * wd), atol=1e-7), n
    assert kinds == {"bn/bias": 2 * 7 + 1, "weight": 1 + 6 + 2 + 1}  # 7 BNs + fc bias; stem, 6 convs, 2 proj, fc


# --------------------------------------------------------------------------------------------
# optim.ModelEMA: BN running statistics are averaged too


def test_ema_averages_batchnorm_running_statistics(real_data):
    """ModelEMA.update: running_mean/var follow ema = d*ema + (1-d)*live with the warm-up decay d."""
    torch.manual_seed(7)
    model = WideResNet(10, 1)
    ema = ModelEMA(model, decay=0.5)
    bn_names = [n for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    expected = {n: b.detach().clone() for n, b in ema.module.named_buffers() if n in bn_names}
    model.train()
    for t in range(1, 4):
        with torch.no_grad():
            model(norm(real_data.train_images[64 * t:64 * (t + 1)]))  # moves the live running stats
        ema.update(model)
        d = min(0.5, (1 + t) / (10 + t))
        live = dict(model.named_buffers())
        for n in bn_names:
            expected[n] = d * expected[n] + (1 - d) * live[n]
    ema_buffers = dict(ema.module.named_buffers())
    live = dict(model.named_buffers())
    for n in bn_names:
        assert torch.allclose(ema_buffers[n], expected[n], atol=1e-5), n
    assert max((ema_buffers[n] - live[n]).abs().max() for n in bn_names) > 1e-3  # an average, not a copy
    assert ema_buffers["bn.running_mean"].abs().max() > 1e-2  # moved off the initial zeros


# --------------------------------------------------------------------------------------------
# train.fit: the config reaches BatchAugment, and its output reaches the training step


def test_fit_trains_with_the_batch_augment_its_config_describes(real_data, tmp_path, monkeypatch):
    """fit: BatchAugment is built from the config's augmentation fields and feeds every training step."""
    built, stepped = [], []

    class SpyAugment(BatchAugment):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.kwargs, self.outputs = kwargs, []
            built.append(self)

        def __call__(self, images, labels):
            x, targets = super().__call__(images, labels)
            self.outputs.append((x.clone(), targets.clone()))
            return x, targets

    real_make_step = train_module.make_train_step

    def spy_make_step(*args, **kwargs):
        step = real_make_step(*args, **kwargs)

        def recording_step(x, targets):
            stepped.append((x.clone(), targets.clone()))
            return step(x, targets)
        return recording_step

    monkeypatch.setattr(train_module, "BatchAugment", SpyAugment)
    monkeypatch.setattr(train_module, "make_train_step", spy_make_step)
    # every augmentation field away from its default, so a dropped argument shows
    augmentation = dict(crop_padding=2, pad_mode="constant", flip=False, policy="trivialaugment", policy_group=8,
                        cutout=6, mix="cutmix", mix_alpha=0.5, mix_prob=0.7)
    config = TrainConfig(name="aug", out_dir=str(tmp_path), depth=10, width=1, epochs=1, batch_size=64, lr=0.05,
                         val_size=100, train_limit=128, test_limit=100, warmup_epochs=0.0, progress=False,
                         tta=False, **augmentation)
    result = train_module.fit(config, data=real_data)

    assert runfolder.load_config(tmp_path / "aug") == config
    assert len(built) == 1
    defaults = {k: p.default for k, p in inspect.signature(BatchAugment.__init__).parameters.items()}
    received = {k: built[0].kwargs.get(k, defaults[k]) for k in augmentation}
    assert received == augmentation
    assert len(stepped) == len(built[0].outputs) == 128 // 64 == len(result.metrics) * 2
    for (x, t), (ax, at) in zip(stepped, built[0].outputs):
        assert x.shape == (64, 3, 32, 32) and torch.equal(x, ax) and torch.equal(t, at)
