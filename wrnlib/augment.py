"""Batch augmentation that runs on the training device.

Every function takes a whole batch (B, C, H, W) and is vectorised: there is no
Python loop over images, no ``.item()``, no ``torch.nonzero`` and no Python
branch on the *value* of a device tensor, so a CUDA training loop never waits
on the GPU here.  Randomness comes from torch's global RNGs:

* per-image draws (crop shifts, flips, cutout centres, mix permutation) use the
  images' device generator (``torch.rand(..., device=x.device)``);
* per-batch scalars (apply mix this batch?, Beta lambda, CutMix box, policy op)
  use the CPU generator, so they are free (no device round trip) and are
  reproduced exactly when the caller saves/restores both RNG states.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from .data import CIFAR10_MEAN, CIFAR10_STD, NUM_CLASSES

POLICIES = ("none", "autoaugment", "trivialaugment")
MIXES = ("none", "mixup", "cutmix")
PAD_MODES = ("reflect", "constant")


def random_crop(images: torch.Tensor, padding: int = 4, pad_mode: str = "reflect") -> torch.Tensor:
    """Pad by ``padding`` and take a random H×W window per image.

    Equivalent to shifting each image by an independent (dy, dx) in
    [-padding, padding]².  Rather than materialising the padded batch we map each
    output pixel straight to its source pixel (reflected, or flagged out-of-range
    for zero padding) and read everything with a single advanced-indexing gather.
    """
    if padding == 0:
        return images
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    B, C, H, W = images.shape
    if pad_mode == "reflect" and padding >= min(H, W):
        raise ValueError(f"padding={padding} too large for reflect padding of {H}x{W} images")
    dev = images.device
    shift = torch.randint(-padding, padding + 1, (2, B, 1), device=dev)
    rows = torch.arange(H, device=dev) + shift[0]  # (B, H) source row of each output row
    cols = torch.arange(W, device=dev) + shift[1]  # (B, W)
    if pad_mode == "reflect":
        # reflect about 0 and about n-1 (no edge repeat), as F.pad(mode="reflect")
        rows = (H - 1) - ((H - 1) - rows.abs()).abs()
        cols = (W - 1) - ((W - 1) - cols.abs()).abs()
    else:
        valid = ((rows >= 0) & (rows < H))[:, None, :, None] & ((cols >= 0) & (cols < W))[:, None, None, :]
        rows, cols = rows.clamp(0, H - 1), cols.clamp(0, W - 1)
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    out = images[b, c, rows[:, None, :, None], cols[:, None, None, :]]
    if pad_mode == "constant":
        out = out.masked_fill(~valid, 0)
    return out


def random_flip(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror (left-right) the images where ``mask`` is True; default mask: p=0.5 per image."""
    if mask is None:
        mask = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype=torch.float32) -> torch.Tensor:
    """uint8 -> float in [0, 1] -> per-channel (x - mean) / std, returned as ``dtype``.

    Arithmetic is done in float32 (then cast) so bf16/fp16 outputs lose no extra
    precision.  Pass cached device tensors for mean/std in hot loops: building
    them from Python floats costs a host-to-device copy per call.
    """
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().div(255).sub_(mean).div_(std).to(dtype)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size×size square per image at a uniform random centre (DeVries & Taylor 2017).

    The centre may lie near a border, so the square is clipped there; this is
    the paper's behaviour and means the expected erased area is below size².
    Applied after normalisation, so zero means "the dataset mean colour".
    """
    if size == 0:
        return x
    B, _, H, W = x.shape
    dev = x.device
    y0 = torch.randint(0, H, (B, 1, 1, 1), device=dev) - size // 2
    x0 = torch.randint(0, W, (B, 1, 1, 1), device=dev) - size // 2
    ys = torch.arange(H, device=dev).view(1, 1, H, 1)
    xs = torch.arange(W, device=dev).view(1, 1, 1, W)
    mask = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)  # (B,1,H,W)
    return x.masked_fill(mask, 0)


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor):
    """MixUp (Zhang et al. 2018): lam*x + (1-lam)*x[perm], same for the soft targets.

    ``torch.lerp(x[perm], x, lam)`` computes exactly that and returns x bit-exactly
    when perm is the identity.
    """
    return torch.lerp(x[perm], x, lam), torch.lerp(targets[perm], targets, lam)


def cutmix(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor):
    """CutMix (Yun et al. 2019): paste one box of area ~(1-lam) from x[perm] into x.

    One box per batch, as in the paper.  Its centre is drawn on the CPU RNG (a
    per-batch scalar, like lam), so the coordinates are plain ints: slicing
    needs no device mask and causes no sync.  The box is clipped at the borders
    and the targets are mixed by the area *actually* pasted.
    """
    _, _, H, W = x.shape
    r = math.sqrt(max(0.0, 1.0 - float(lam)))
    h, w = round(H * r), round(W * r)
    cy, cx = int(torch.randint(0, H, ())), int(torch.randint(0, W, ()))  # CPU RNG: no sync
    y1, y2 = max(cy - h // 2, 0), min(cy - h // 2 + h, H)
    x1, x2 = max(cx - w // 2, 0), min(cx - w // 2 + w, W)
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    kept = 1.0 - (y2 - y1) * (x2 - x1) / (H * W)
    return out, torch.lerp(targets[perm], targets, kept)


@functools.lru_cache(maxsize=None)
def _policy_transform(policy: str):
    from torchvision.transforms import v2  # lazy: torchvision import is slow

    if policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    return v2.TrivialAugmentWide()


def apply_policy(images: torch.Tensor, policy: str, group: int = 32) -> torch.Tensor:
    """AutoAugment (CIFAR-10 policy) or TrivialAugmentWide on a uint8 batch, any device.

    torchvision samples ONE op (and magnitude) per call and applies it to the
    whole batched tensor, so we call it on chunks of ``group`` images: each chunk
    gets an independently sampled op.  group=1 reproduces the per-image paper
    semantics but costs ~B/1 small kernel launches per batch; larger groups are
    faster but correlate the augmentation within a chunk (still fine across an
    epoch since chunks are reshuffled each batch).  Op sampling uses the CPU
    RNG, and the ops themselves are batched tensor kernels (no sync).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if policy == "none":
        return images
    t = _policy_transform(policy)
    return torch.cat([t(chunk) for chunk in images.split(group)])


class BatchAugment:
    """Training-time pipeline: crop → flip → policy → normalise → cutout → mix.

    ``aug(images_uint8, labels_int64) -> (x, soft_targets)`` with x (B,3,H,W) of
    ``dtype`` and soft targets (B, num_classes) float32 summing to one per row.
    """

    def __init__(self, *, crop_padding: int = 4, pad_mode: str = "reflect", flip: bool = True,
                 policy: str = "none", policy_group: int = 32, cutout: int = 0, mix: str = "none",
                 mix_alpha: float = 1.0, mix_prob: float = 1.0, num_classes: int = NUM_CLASSES,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 dtype: torch.dtype = torch.float32):
        for name, value, allowed in (("pad_mode", pad_mode, PAD_MODES), ("policy", policy, POLICIES),
                                     ("mix", mix, MIXES)):
            if value not in allowed:  # a typo would otherwise silently run another augmentation
                raise ValueError(f"{name}={value!r} is invalid: expected one of {allowed}")
        self.crop_padding, self.pad_mode, self.flip = crop_padding, pad_mode, flip
        self.policy, self.policy_group, self.cutout = policy, policy_group, cutout
        self.mix, self.mix_alpha, self.mix_prob = mix, float(mix_alpha), float(mix_prob)
        self.num_classes, self.mean, self.std, self.dtype = num_classes, tuple(mean), tuple(std), dtype
        self._beta = torch.distributions.Beta(torch.tensor(self.mix_alpha), torch.tensor(self.mix_alpha))
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # The config fields that describe the training augmentation, under the same names as here.
    CONFIG_FIELDS = ("crop_padding", "pad_mode", "flip", "policy", "policy_group", "cutout", "mix", "mix_alpha",
                     "mix_prob")

    @classmethod
    def from_config(cls, config, **kwargs) -> "BatchAugment":
        """The pipeline a training config (any object with the CONFIG_FIELDS attributes) describes."""
        return cls(**{name: getattr(config, name) for name in cls.CONFIG_FIELDS}, **kwargs)

    def _stats_on(self, device: torch.device):
        # one host->device copy per device for the lifetime of the object
        if device not in self._stats:
            self._stats[device] = (torch.tensor(self.mean, device=device), torch.tensor(self.std, device=device))
        return self._stats[device]

    def eval_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation preprocessing: normalisation only."""
        return normalize(images, *self._stats_on(images.device), dtype=self.dtype)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (B,C,H,W) tensor, got {images.dtype} {tuple(images.shape)}")
        x = random_crop(images, self.crop_padding, self.pad_mode)
        if self.flip:
            x = random_flip(x)
        x = apply_policy(x, self.policy, self.policy_group)
        x = self.eval_transform(x)
        x = cutout(x, self.cutout)
        # one-hot via scatter: sync-free on CUDA (F.one_hot may validate label range)
        targets = torch.zeros(labels.shape[0], self.num_classes, device=x.device)
        targets.scatter_(1, labels.to(x.device, torch.int64).view(-1, 1), 1.0)
        # per-batch decisions on the CPU generator: no device round trip
        if self.mix != "none" and float(torch.rand(())) < self.mix_prob:
            lam = float(self._beta.sample())
            perm = torch.randperm(x.shape[0], device=x.device)
            x, targets = (mixup if self.mix == "mixup" else cutmix)(x, targets, lam, perm)
        return x, targets

    def describe(self) -> str:
        parts = []
        if self.crop_padding:
            parts.append(f"crop(pad={self.crop_padding}, {self.pad_mode})")
        if self.flip:
            parts.append("flip")
        if self.policy != "none":
            parts.append(f"{self.policy}(group={self.policy_group})")
        parts.append("normalize")
        if self.cutout:
            parts.append(f"cutout({self.cutout})")
        if self.mix != "none":
            parts.append(f"{self.mix}(alpha={self.mix_alpha:g}, p={self.mix_prob:g})")
        return " -> ".join(parts)

    def __repr__(self) -> str:
        return f"BatchAugment({self.describe()}, dtype={self.dtype})"
