"""Wide Residual Networks (Zagoruyko & Komodakis, 2016) with pre-activation basic blocks.

WRN-d-k: a 16-channel 3x3 stem, three stages of n = (d - 4) / 6 blocks at 16k, 32k and 64k
channels (strides 1, 2, 2), then BN -> ReLU -> global average pooling -> linear. Each block is
BN -> ReLU -> 3x3 conv, twice, plus an identity shortcut, or a 1x1 projection when the shape
changes. Depth follows the WRN paper's convention, d = 6n + 4.

Fractional widths (the study's k = 3.5) are allowed: a stage's channel count is
``round(base * k)`` with Python's round-half-to-even, at least 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STAGE_BASE_CHANNELS = (16, 32, 64)
STEM_CHANNELS = 16
# Past this the weights alone need tens of GB: refuse at once instead of trying to allocate them.
MAX_PARAMS = 2_000_000_000


def validate_architecture(depth: int, width: float, num_classes: int = 10, dropout: float = 0.0) -> None:
    """Raise ValueError with what is allowed when (depth, width, ...) does not describe a WRN."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be an integer of the form 6n + 4 with n >= 1 "
                         f"(10, 16, 22, 28, 34, 40, ...); got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width (the widening factor k) must be a finite number > 0, "
                         f"e.g. 1, 3.5 or 10; got {width!r}")
    if round(STAGE_BASE_CHANNELS[0] * width) < 1:
        raise ValueError(f"width {width!r} is too small: the first stage would have no channels "
                         f"(16 * k must round to at least 1, so k > 1/32)")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1); got {dropout!r}")
    params = _param_count(depth, width, num_classes)
    if params > MAX_PARAMS:
        raise ValueError(f"WRN-{depth}-{width:g} would have about {params:,} parameters ({4 * params / 2**30:,.0f} GiB "
                         f"of float32 weights), more than the {MAX_PARAMS:,} wrnlib builds; choose a smaller depth "
                         f"or width")


def stage_widths(width: float) -> tuple[int, int, int]:
    """Channel counts of the three stages for widening factor ``width`` (e.g. 3.5 -> 56, 112, 224)."""
    return tuple(max(1, round(base * width)) for base in STAGE_BASE_CHANNELS)


def blocks_per_stage(depth: int) -> int:
    return (depth - 4) // 6


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus identity or 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # As in the WRN reference code, a projection reads the pre-activated input.
        skip = x if self.shortcut is None else self.shortcut(pre)
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 images. ``WideResNet(28, 3.5)`` is the study's 4.48 M-parameter net."""

    def __init__(self, depth: int = 28, width: float = 3.5, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        validate_architecture(depth, width, num_classes, dropout)
        self.depth, self.width = depth, width
        self.stem = nn.Conv2d(3, STEM_CHANNELS, 3, padding=1, bias=False)
        channels = STEM_CHANNELS
        stages = []
        for out_channels, stride in zip(stage_widths(width), (1, 2, 2)):
            stages.append(_make_stage(channels, out_channels, blocks_per_stage(depth), stride, dropout))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """WRN reference initialisation: He-normal convs (fan_out), BN weight 1 / bias 0, zero fc bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _make_stage(in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
    layers = [PreActBlock(in_channels, out_channels, stride, dropout)]
    layers += [PreActBlock(out_channels, out_channels, 1, dropout) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# Size and cost reports


@dataclass(frozen=True)
class ModelStats:
    depth: int
    width: float
    params: int
    forward_flops: int  # per image: 2 x multiply-accumulates of convs and the linear layer
    stage_widths: tuple[int, int, int]
    activation_bytes: int  # per image, bf16 activations saved for backward (estimate)

    @property
    def train_flops(self) -> int:
        """Forward + backward per image: backward costs about twice the forward."""
        return 3 * self.forward_flops


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_forward_flops(model: nn.Module, image_size: int = 32) -> int:
    """FLOPs of one image's forward pass, counted by torch's FlopCounterMode (convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def activation_bytes_per_image(depth: int, width: float, bytes_per_value: int = 2) -> int:
    """Rough memory for the activations kept for backward, per image.

    Each block keeps about four tensors of its output size (two BN inputs, two ReLU outputs) and
    the stage input; it is a planning estimate, not an allocator measurement.
    """
    n = blocks_per_stage(depth)
    total = 3 * STEM_CHANNELS * 32 * 32
    for channels, side in zip(stage_widths(width), (32, 16, 8)):
        total += n * 4 * channels * side * side
    return total * bytes_per_value


def _stages(depth: int, width: float):
    """(in_channels, out_channels, output side, blocks) of each stage; only its first block changes shape."""
    c_in, side = STEM_CHANNELS, 32
    for c_out, stride in zip(stage_widths(width), (1, 2, 2)):
        side //= stride
        yield c_in, c_out, side, blocks_per_stage(depth)
        c_in = c_out


def _block_params(c_in: int, c_out: int) -> int:
    projection = c_in * c_out if c_in != c_out else 0  # the first block of stages 2 and 3 also strides
    return 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + projection  # bn1, conv1, bn2, conv2


def _block_flops(c_in: int, c_out: int, side: int, projects: bool) -> int:
    return 2 * (9 * (c_in * c_out + c_out * c_out) + (c_in * c_out if projects else 0)) * side * side


def _param_count(depth: int, width: float, num_classes: int) -> int:
    total = 3 * STEM_CHANNELS * 9
    for c_in, c_out, _, n in _stages(depth, width):
        total += _block_params(c_in, c_out) + (n - 1) * _block_params(c_out, c_out)
    return total + 2 * c_out + c_out * num_classes + num_classes  # final bn, fc


def param_count(depth: int, width: float, num_classes: int = 10) -> int:
    """Parameters of WRN-depth-width in closed form (equals ``model_stats(...).params``), instantly."""
    validate_architecture(depth, width, num_classes)
    return _param_count(depth, width, num_classes)


def forward_flops(depth: int, width: float, num_classes: int = 10) -> int:
    """Forward FLOPs per 32x32 image in closed form (2 x MACs of convs and the fc, as model_stats counts)."""
    validate_architecture(depth, width, num_classes)
    total = 2 * 3 * STEM_CHANNELS * 9 * 32 * 32
    for i, (c_in, c_out, side, n) in enumerate(_stages(depth, width)):
        total += _block_flops(c_in, c_out, side, i > 0 or c_in != c_out)
        total += (n - 1) * _block_flops(c_out, c_out, side, False)
    return total + 2 * c_out * num_classes


def model_stats(depth: int, width: float, num_classes: int = 10) -> ModelStats:
    """Parameters, forward FLOPs and stage widths of WRN-depth-width, built on the CPU."""
    model = WideResNet(depth, width, num_classes)
    return ModelStats(depth, width, count_parameters(model), count_forward_flops(model),
                      stage_widths(width), activation_bytes_per_image(depth, width))
