import math
import re

import pytest
import torch
from torch import nn

from wrnlib.model import (PreActBlock, WideResNet, activation_bytes_per_image, count_forward_flops,
                          count_parameters, forward_flops, model_stats, param_count, stage_widths,
                          validate_architecture)


def analytic_params(depth: int, width: float, classes: int = 10) -> int:
    """Parameter count of WRN-d-k written out from the architecture, independent of the module."""
    n = (depth - 4) // 6
    total, c_in = 3 * 16 * 9, 16  # stem conv, no bias
    for base in (16, 32, 64):
        c = max(1, round(base * width))
        for b in range(n):
            cin = c_in if b == 0 else c
            total += 2 * cin + cin * c * 9 + 2 * c + c * c * 9  # bn1, conv1, bn2, conv2
            if b == 0 and cin != c or (b == 0 and base != 16):
                total += cin * c  # 1x1 projection
        c_in = c
    return total + 2 * c_in + c_in * classes + classes  # final bn + linear


def analytic_flops(depth: int, width: float, classes: int = 10) -> int:
    """2 x MACs of every conv and the linear layer for one 32x32 image."""
    n = (depth - 4) // 6
    flops, c_in, side = 2 * 3 * 16 * 9 * 32 * 32, 16, 32
    for base, stride in zip((16, 32, 64), (1, 2, 2)):
        c = round(base * width)
        for b in range(n):
            s = stride if b == 0 else 1
            cin = c_in if b == 0 else c
            out_side = side // s
            flops += 2 * cin * c * 9 * out_side ** 2 + 2 * c * c * 9 * out_side ** 2
            if b == 0 and (cin != c or s != 1):
                flops += 2 * cin * c * out_side ** 2
            side = out_side
        c_in = c
    return flops + 2 * c_in * classes


@pytest.mark.parametrize("depth,width,published", [(28, 3.5, 4.48e6), (28, 10, 36.5e6), (16, 4, 2.75e6)])
def test_parameter_counts_match_the_papers(depth, width, published):
    # The study reports 4.48 M for WRN-28-3.5; the WRN paper 36.5 M and 2.7 M for WRN-28-10 and WRN-16-4.
    params = count_parameters(WideResNet(depth, width))
    assert abs(params - published) / published < 0.01


# 0.04: stages 1 and 2 both round to one channel, and stage 2 still needs its projection for the stride
@pytest.mark.parametrize("depth,width", [(10, 1), (16, 2.5), (22, 3.3), (28, 3.5), (10, 0.04)])
def test_parameters_and_flops_match_analytic_formulas(depth, width):
    model = WideResNet(depth, width)
    assert count_parameters(model) == analytic_params(depth, width)
    assert count_forward_flops(model) == analytic_flops(depth, width)
    stats = model_stats(depth, width)
    assert stats.params == analytic_params(depth, width)
    assert stats.train_flops == 3 * stats.forward_flops
    # the closed form the explorer and the time estimates use, against torch's count on the model itself
    assert forward_flops(depth, width) == count_forward_flops(model) == stats.forward_flops
    closed_forms = (forward_flops(depth, width), param_count(depth, width))
    assert all(type(n) is int for n in (stats.params, stats.forward_flops, stats.activation_bytes, *closed_forms))
    assert forward_flops(depth, width, num_classes=100) == count_forward_flops(WideResNet(depth, width, 100))


def test_flops_are_counted_on_the_models_own_device_and_dtype_and_its_mode_is_kept():
    """A bf16 model and one on the meta device (no memory, so any width can be sized) count as the float32 one."""
    expected = analytic_flops(10, 1)
    bf16 = WideResNet(10, 1).to(torch.bfloat16)
    with torch.device("meta"):
        meta = WideResNet(10, 1)
    assert count_forward_flops(bf16) == count_forward_flops(meta) == expected
    assert bf16.training and meta.training  # counted in eval mode, then put back as it was
    bf16.eval()
    assert count_forward_flops(bf16) == expected and not bf16.training


@pytest.mark.parametrize("depth,width", [(10, 1), (16, 2.5)])
def test_activation_estimate_counts_what_it_says_from_the_models_own_shapes(depth, width):
    """About four tensors of each block's output size, and three of the stem's, in bf16 (2 bytes) by default."""
    model = WideResNet(depth, width)
    sizes = {"stem": [], "block": []}
    model.stem.register_forward_hook(lambda m, i, out: sizes["stem"].append(out[0].numel()))
    for block in model.modules():
        if isinstance(block, PreActBlock):
            block.register_forward_hook(lambda m, i, out: sizes["block"].append(out[0].numel()))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    values = 3 * sum(sizes["stem"]) + 4 * sum(sizes["block"])
    assert activation_bytes_per_image(depth, width) == 2 * values
    assert activation_bytes_per_image(depth, width, bytes_per_value=4) == 4 * values
    assert model_stats(depth, width).activation_bytes == 2 * values


def test_model_stats_and_param_count_describe_the_model_asked_for():
    stats = model_stats(16, 2.5, num_classes=100)
    assert (stats.depth, stats.width, stats.stage_widths) == (16, 2.5, (40, 80, 160))
    assert stats.params == count_parameters(WideResNet(16, 2.5, 100)) == param_count(16, 2.5, num_classes=100)
    assert param_count(16, 2.5) == count_parameters(WideResNet(16, 2.5))
    with pytest.raises(ValueError):
        param_count(16, 0)


def test_fractional_widths_round_each_stage():
    assert stage_widths(3.5) == (56, 112, 224)
    assert stage_widths(2.7) == (43, 86, 173)  # 43.2, 86.4, 172.8
    assert stage_widths(1) == (16, 32, 64)
    model = WideResNet(16, 2.7)
    convs = [m for m in model.stages.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sorted({c.out_channels for c in convs}) == [43, 86, 173]


def test_forward_shapes_and_structure():
    model = WideResNet(16, 2, num_classes=7)
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 7)
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 3 * 2  # n = (16 - 4) / 6 = 2 blocks per stage
    strides = [b.conv1.stride[0] for b in blocks]
    assert strides == [1, 1, 2, 1, 2, 1]
    # spatial size halves twice: the features entering the pool are 8x8
    feats = model.stages(model.stem(torch.randn(1, 3, 32, 32)))
    assert feats.shape == (1, 128, 8, 8)  # 64 * k with k = 2


def test_preactivation_block_is_identity_when_residual_branch_is_zero():
    # In a pre-activation block, the identity shortcut passes the input through untouched.
    block = PreActBlock(8, 8, 1)
    nn.init.zeros_(block.conv2.weight)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)
    proj = PreActBlock(8, 16, 2)
    assert proj.shortcut is not None and proj(x).shape == (2, 16, 3, 3)


def test_initialisation_follows_wrn_reference():
    torch.manual_seed(0)
    model = WideResNet(28, 3.5)
    conv = model.stages[2][1].conv2  # 224 -> 224, 3x3: plenty of samples
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    # He-normal on fan_out, also where it differs from fan_in (the widening convs and the 1x1 projections)
    widening = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels != m.out_channels
                and m.weight.numel() >= 5000]
    assert len(widening) == 5  # the first conv of each stage, and the projections of the last two
    for m in widening:
        fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05), m
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert torch.all(model.fc.bias == 0)


def test_defaults_are_the_studys_network_without_dropout():
    from wrnlib.config import TrainConfig

    default, config = WideResNet(), TrainConfig()
    assert (default.depth, default.width, default.fc.out_features) == (config.depth, config.width, 10)
    assert config.dropout == 0 and not any(isinstance(m, nn.Dropout) for m in default.modules())
    assert isinstance(PreActBlock(8, 8, 1).dropout, nn.Identity)


def test_dropout_is_in_every_block():
    model = WideResNet(16, 1, dropout=0.3)  # two blocks per stage: the first and the rest are built apart
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3] * 6


def test_dropout_only_in_training():
    model = WideResNet(10, 1, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_the_size_limit_counts_every_parameter_and_says_how_big_the_net_would_be():
    import wrnlib.model as model_module

    # WRN-22-86.46 is just under the limit with CIFAR-10's 10 classes (the default), over it with 11
    under, params = model_module._param_count(22, 86.46, 10), model_module._param_count(22, 86.46, 11)
    assert under <= model_module.MAX_PARAMS < params == under + stage_widths(86.46)[2] + 1  # one more fc row
    assert param_count(22, 86.46) == under
    validate_architecture(22, 86.46)
    with pytest.raises(ValueError) as over:
        validate_architecture(22, 86.46, 11)
    # 2.0e9 float32 weights are 8.0e9 bytes, 7.45 GiB
    assert str(over.value) == (f"WRN-22-86.46 would have about {params:,} parameters (7 GiB of float32 weights), more "
                               f"than the 2,000,000,000 wrnlib builds; choose a smaller depth or width")
    validate_architecture(10, 0.0313)  # the smallest widths: 16 k just over one half rounds to one channel
    assert model_module._param_count(16, 43.328125, 605_393) == model_module.MAX_PARAMS
    validate_architecture(16, 43.328125, 605_393)  # the limit itself is allowed
    validate_architecture(10, 1, 2)  # two classes are enough


@pytest.mark.parametrize("kwargs,needle", [
    ({"depth": 27}, "6n + 4"), ({"depth": 4}, "6n + 4"), ({"depth": -2}, "6n + 4"), ({"depth": 28.0}, "6n + 4"),
    ({"width": 0}, "finite number > 0"), ({"width": -1.5}, "width"), ({"width": float("nan")}, "width"),
    ({"width": float("inf")}, "width"), ({"width": "3.5"}, "width"), ({"width": 0.01}, "too small"),
    ({"width": 0.03}, "too small"), ({"width": 1 / 32}, "too small"),  # 16 k = 0.5 rounds (half to even) to 0
    ({"num_classes": 1}, "num_classes"), ({"num_classes": 10.0}, "num_classes"), ({"dropout": 1.0}, "dropout"),
])
def test_bad_architectures_raise_clear_errors(kwargs, needle):
    args = {"depth": 28, "width": 3.5} | kwargs
    with pytest.raises(ValueError, match=re.escape(needle)):
        WideResNet(**args)
    if "dropout" not in kwargs:  # the closed forms refuse what the model refuses
        for closed_form in (param_count, forward_flops):
            with pytest.raises(ValueError, match=re.escape(needle)):
                closed_form(**args)
