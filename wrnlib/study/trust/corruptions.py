"""CIFAR-10-C style corruptions, generated locally and deterministically on uint8 batches.

``corrupt(images, kind, severity, seed)`` takes uint8 images (N, 3, H, W) on any device and
returns a uint8 tensor of the same shape on the same device. Every kind has five severities.

The severity constants are those Hendrycks & Dietterich published for CIFAR-10 with
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019),
in ``ImageNet-C/create_c/make_cifar_c.py`` of https://github.com/hendrycks/robustness. Only the
constants are taken from there; the operations are reimplemented here with torch and
torchvision, so the images are *CIFAR-10-C style*, not the published CIFAR-10-C arrays (the
random draws differ anyway). How each kind is computed, and where it differs:

* gaussian_noise, shot_noise, impulse_noise: same formulas (additive N(0, c²), Poisson(x·c)/c,
  salt-and-pepper on a fraction c of the values, drawn per value as skimage's
  ``random_noise(mode='s&p')`` does), but torch's random generator instead of numpy's.
* gaussian_blur: ``torchvision.transforms.v2.functional.gaussian_blur`` with skimage's kernel
  extent (truncate at 4 sigma), on the image padded by repeating its edge as skimage does
  (torchvision alone would reflect, which changes the border pixels by up to ~50 grey levels).
* contrast: the original's per-channel blend towards each channel's mean. torchvision's
  ``adjust_contrast`` blends towards the grey-level mean instead, so it is not used.
* brightness, saturate: the original adds c to the HSV value / sets S' = S·a + b in skimage's
  HSV. Both are done here without an HSV round trip, and agree with skimage to one grey level:
  with hue and saturation fixed an RGB pixel is proportional to its value, and with hue and
  value fixed ``V - RGB`` is proportional to the saturation. Like skimage, a grey pixel (S = 0)
  has hue 0 (red), so saturate's additive term (severities 4, 5) tints greys pink, as in
  CIFAR-10-C.
  torchvision's ``adjust_brightness`` (a multiplicative factor) and ``adjust_saturation`` (a
  blend with the luma image) compute something else, so they are not used.
* jpeg_compression: ``torchvision.transforms.v2.functional.jpeg`` (libjpeg through
  torchvision, on the CPU) instead of PIL's encoder at the same quality; with the libraries
  here both gave identical images on the shipped sample.
* pixelate: PIL's BOX resize down to int(size·c) and back up, written as averaging matrices
  with PIL's rounding (equal to PIL's output on the shipped sample images).
* The result is rounded to uint8; the original truncates (``np.uint8`` of a float image).

Hendrycks' saturate severities do not grow monotonically in distortion: 1 and 2 desaturate
(S·0.3, S·0.1), 3 to 5 oversaturate (S·1.5, S·2+0.1, S·2.5+0.2). Kept as published.

Randomness is drawn on the CPU from one ``torch.Generator`` (``seed`` or a generator passed
in), so the same batch and seed give the same noise on every device (the images may still
differ by a grey level where float rounding differs). The draws depend on the whole batch:
corrupting a set in chunks gives other (equally valid) noise than all at once.
"""
from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

SEVERITIES = (1, 2, 3, 4, 5)

# kind -> the constant for severities 1..5, from make_cifar_c.py (see the module docstring)
CONSTANTS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of the additive noise
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity (fewer = noisier)
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards the channel mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # S -> S * a + b
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # down-size factor before scaling back up
}
KINDS: tuple[str, ...] = tuple(CONSTANTS)
RANDOM_KINDS = ("gaussian_noise", "shot_noise", "impulse_noise")  # the kinds that use the seed


def corrupt(images: torch.Tensor, kind: str, severity: int, seed: int | torch.Generator = 0) -> torch.Tensor:
    """``images`` (uint8, N×3×H×W) corrupted by ``kind`` at ``severity`` (1..5), as uint8.

    ``seed`` is an int or a CPU ``torch.Generator`` (which it advances); only the noise kinds
    (``RANDOM_KINDS``) draw from it, the others are deterministic functions of the images.
    """
    if kind not in CONSTANTS:
        raise ValueError(f"unknown corruption kind {kind!r}: expected one of {', '.join(KINDS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity={severity!r} is invalid: expected one of {SEVERITIES}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] != 3:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 (N, 3, H, W) tensor, got {got}")
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    if gen.device.type != "cpu":
        raise ValueError(f"seed must be an int or a CPU torch.Generator, got a generator on {gen.device}")
    x = images.float().div(255)
    out = _FUNCTIONS[kind](x, CONSTANTS[kind][severity - 1], gen)
    return out.clamp(0, 1).mul(255).round().to(torch.uint8)


# ---------------------------------------------------------------- one function per kind
# Each takes float images in [0, 1] (N, 3, H, W), the severity's constant and a generator.


def _draw(fn, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random tensor shaped like ``x``, drawn on the CPU (the same on every device), on x's device."""
    return fn(x.shape, generator=gen).to(x.device)


def _gaussian_noise(x, c, gen):
    return x + c * _draw(torch.randn, x, gen)


def _shot_noise(x, c, gen):
    return torch.poisson((x * c).cpu(), generator=gen).to(x.device) / c


def _impulse_noise(x, c, gen):
    flipped = _draw(torch.rand, x, gen) < c
    salt = _draw(torch.rand, x, gen) < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def _gaussian_blur(x, sigma, gen):
    r = int(4 * sigma + 0.5)  # skimage/scipy: truncate=4.0
    # skimage repeats the edge pixels (torchvision would reflect): pad so, blur, crop back
    padded = torch.nn.functional.pad(x, [r] * 4, mode="replicate")
    return TF.gaussian_blur(padded, kernel_size=[2 * r + 1] * 2, sigma=[sigma, sigma])[..., r:-r, r:-r]


def _contrast(x, c, gen):
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def _brightness(x, c, gen):
    value = x.amax(dim=1, keepdim=True)  # HSV value
    new_value = (value + c).clamp(0, 1)
    # hue and saturation fixed: RGB scales with V; black (V = 0, S = 0) becomes grey V'
    return torch.where(value > 0, x * new_value / value.clamp_min(1e-12), new_value)


def _saturate(x, ab, gen):
    a, b = ab
    value = x.amax(dim=1, keepdim=True)
    delta = value - x.amin(dim=1, keepdim=True)
    sat = torch.where(value > 0, delta / value.clamp_min(1e-12), 0.0)  # HSV saturation
    new_sat = (sat * a + b).clamp(0, 1)
    # hue and value fixed: V - RGB = S * V * g(hue); skimage gives grey pixels hue 0, g = (0, 1, 1)
    red = torch.tensor([0.0, 1.0, 1.0], device=x.device).view(1, 3, 1, 1) * value
    per_sat = torch.where(delta > 0, (value - x) * value / delta.clamp_min(1e-12), red)  # (V - RGB) / S
    return value - new_sat * per_sat


def _jpeg_compression(x, quality, gen):
    as_uint8 = x.mul(255).round().to(torch.uint8).cpu()
    return TF.jpeg(as_uint8, quality=quality).to(x.device).float().div(255)


def _pixelate(x, c, gen):
    h, w = x.shape[-2:]
    small_h, small_w = int(h * c), int(w * c)
    return _box_resize(_box_resize(x, small_h, small_w), h, w)


def _box_resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PIL's ``resize(BOX)`` of a uint8 image: a horizontal then a vertical pass, each rounded
    half up to uint8 as PIL does."""
    x = (x @ _box_matrix(w, x.shape[-1], x.device).T).mul(255).add(0.5).floor().div(255)
    return (_box_matrix(h, x.shape[-2], x.device) @ x).mul(255).add(0.5).floor().div(255)


def _box_matrix(n_out: int, n_in: int, device) -> torch.Tensor:
    """PIL's BOX filter as an (n_out, n_in) matrix: output pixel i averages the input pixels whose
    centres lie within max(s, 1)/2 of its own centre (i + ½)·s, s = n_in / n_out (window open on
    the left, closed on the right): a box average when shrinking, the nearest pixel when enlarging."""
    scale = n_in / n_out
    half = max(scale, 1.0) / 2
    centres_in = torch.arange(n_in, dtype=torch.float64) + 0.5
    centres_out = (torch.arange(n_out, dtype=torch.float64).view(-1, 1) + 0.5) * scale
    offset = centres_in - centres_out
    inside = ((offset > -half) & (offset <= half)).double()
    return (inside / inside.sum(1, keepdim=True)).float().to(device)


_FUNCTIONS = {kind: globals()["_" + kind] for kind in KINDS}
