import os
from pathlib import Path

import numpy as np
import pytest
import torch

from wrnlib import augment as A

ROOT = Path(__file__).resolve().parents[1]


def _find_npz():
    cands = []
    if os.environ.get("CIFAR10_DIR"):
        cands.append(Path(os.environ["CIFAR10_DIR"]) / "test.npz")
    cands += [ROOT.parent / "shared/cifar10/test.npz", ROOT / "wrnlib/sample_data/test.npz"]
    return next((p for p in cands if p.exists()), None)


@pytest.fixture(scope="module")
def real():
    """Up to 1024 real CIFAR-10 test images, uint8 (N,3,32,32), and int64 labels."""
    path = _find_npz()
    if path is None:
        pytest.skip("no CIFAR-10 npz found (set CIFAR10_DIR)")
    with np.load(path) as d:
        imgs, labels = d["images"][:1024], d["labels"][:1024]
    if imgs.shape[-1] == 3:  # HWC -> CHW
        imgs = imgs.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(imgs)), torch.from_numpy(labels.astype(np.int64))


def _match_shift(out, ref_padded, p):
    """For each image, index of the first (dy, dx) window of ref_padded equal to out, or -1."""
    B, C, H, W = out.shape
    found = torch.full((B,), -1)
    k = 0
    for oy in range(2 * p + 1):
        for ox in range(2 * p + 1):
            win = ref_padded[:, :, oy:oy + H, ox:ox + W]
            eq = (win == out).flatten(1).all(1) & (found < 0)
            found[eq] = k
            k += 1
    return found


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_is_a_shift(real, mode):
    x = real[0][:256]
    p = 4
    torch.manual_seed(0)
    out = A.random_crop(x, padding=p, pad_mode=mode)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # reference padding computed independently with numpy
    ref = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode=mode))
    found = _match_shift(out, ref, p)
    assert (found >= 0).all(), "some output is not a shift of its input"
    centre = p * (2 * p + 1) + p
    assert (found == centre).float().mean() < 0.2  # not a no-op
    assert len(found.unique()) > 40  # shifts vary per image
    # every dy and every dx in [-p, p] occurs (incl. the extremes), and nothing else can
    assert set((found // (2 * p + 1)).tolist()) == set(range(2 * p + 1))
    assert set((found % (2 * p + 1)).tolist()) == set(range(2 * p + 1))


def test_random_crop_zero_padding_identity(real):
    x = real[0][:64]
    assert torch.equal(A.random_crop(x, padding=0), x)
    with pytest.raises(ValueError, match="pad_mode"):
        A.random_crop(x, 4, "edge")


def test_zero_padding_wider_than_the_image_crops_windows_of_the_zero_padded_image():
    """Zero padding, unlike reflection, may exceed the image (torchvision's RandomCrop allows it): a shift past the
    edge gives a window of zeros, never an index error or a pixel wrapped round from the far side."""
    g = torch.Generator().manual_seed(0)
    images, padding = torch.randint(1, 256, (64, 3, 4, 4), generator=g, dtype=torch.uint8), 9  # no zero pixel
    torch.manual_seed(0)
    out = A.random_crop(images, padding, "constant")
    padded = torch.nn.functional.pad(images, [padding] * 4)
    windows = [[padded[i, :, dy:dy + 4, dx:dx + 4] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
               for i in range(len(images))]
    assert all(any(torch.equal(out[i], w) for w in windows[i]) for i in range(len(images)))
    assert (out.flatten(1) == 0).all(1).any()  # some crops fell wholly outside the image


def test_flip(real):
    x = real[0]
    mask = torch.rand(len(x)) < 0.5
    once = A.random_flip(x, mask)
    assert torch.equal(A.random_flip(once, mask), x)
    assert torch.equal(once[mask], x[mask].flip(-1)) and torch.equal(once[~mask], x[~mask])
    torch.manual_seed(1)
    out = A.random_flip(x)
    is_orig = (out == x).flatten(1).all(1)
    is_mirror = (out == x.flip(-1)).flatten(1).all(1)
    assert (is_orig | is_mirror).all()
    frac = (is_mirror & ~is_orig).float().mean().item()
    assert 0.4 < frac < 0.6


def test_normalize_roundtrip_and_stats(real):
    x = real[0]
    y = A.normalize(x, A.CIFAR10_MEAN, A.CIFAR10_STD)
    assert y.dtype == torch.float32 and y.shape == x.shape
    m, s = torch.tensor(A.CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(A.CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(y * s + m, x.float() / 255, atol=1e-5)
    # real CIFAR-10 test images normalised with the train stats: ~zero mean, ~unit std per channel
    assert y.mean((0, 2, 3)).abs().max() < 0.1
    assert (y.std((0, 2, 3)) - 1).abs().max() < 0.1
    yb = A.normalize(x[:8], torch.tensor(A.CIFAR10_MEAN), torch.tensor(A.CIFAR10_STD), dtype=torch.bfloat16)
    assert yb.dtype == torch.bfloat16 and torch.allclose(yb.float(), y[:8], atol=0.05)
    # statistics in float64 (numpy's, or a float64 tensor) still normalise in float32: the same bits
    for mean, std in ((np.array(A.CIFAR10_MEAN), np.array(A.CIFAR10_STD)),
                      (torch.tensor(A.CIFAR10_MEAN, dtype=torch.float64), torch.tensor(A.CIFAR10_STD).double())):
        assert torch.equal(A.normalize(x, mean, std), y)


@pytest.mark.parametrize("size", [8, 5])
def test_cutout(real, size):
    x = A.normalize(real[0][:512])
    assert (x != 0).all()  # precondition: zeros can only come from cutout
    torch.manual_seed(2)
    out = A.cutout(x, size)
    zero = out == 0
    assert (zero == zero[:, :1]).all()  # same square in every channel
    z = zero[:, 0]
    rows, cols = z.any(2), z.any(1)
    # the zero set is exactly a rows×cols rectangle with contiguous, at most `size`-long sides
    assert torch.equal(z, rows[:, :, None] & cols[:, None, :])
    for r in (rows, cols):
        n = r.sum(1)
        assert (n >= 1).all() and (n <= size).all()
        first = r.float().argmax(1)
        assert torch.equal(n, r.flip(1).float().argmax(1).neg() + 31 - first + 1)  # contiguous
    full = (rows.sum(1) == size) & (cols.sum(1) == size)
    assert 0.3 < full.float().mean() < 1.0  # mostly unclipped, some clipped at borders
    assert torch.equal(out[~zero], x[~zero])  # rest untouched
    assert torch.equal(A.cutout(x, 0), x)


def test_cutout_squares_are_centred_on_every_pixel_and_clipped_at_the_borders():
    """DeVries & Taylor's square: side ``size``, centre uniform over all H*W pixels, clipped at the borders."""
    side, size = 8, 4
    expected = {(max(c - size // 2, 0), min(c - size // 2 + size, side)) for c in range(side)}
    torch.manual_seed(0)
    zero = A.cutout(torch.ones(400, 1, side, side), size)[:, 0] == 0
    rows, cols = zero.any(2), zero.any(1)
    spans = {(int(r.nonzero().min()), int(r.nonzero().max()) + 1) for r in rows}
    assert spans == expected and {(int(c.nonzero().min()), int(c.nonzero().max()) + 1) for c in cols} == expected


def _onehot(y, k=10):
    return torch.nn.functional.one_hot(y, k).float()


def test_mixup_mechanics():
    torch.manual_seed(3)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    t = _onehot(y)
    perm = torch.randperm(16)
    xm, tm = A.mixup(x, t, 0.3, perm)
    assert torch.allclose(xm, 0.3 * x + 0.7 * x[perm], atol=1e-6)
    assert torch.allclose(tm, 0.3 * t + 0.7 * t[perm], atol=1e-6)
    assert torch.allclose(tm.sum(1), torch.ones(16))
    xi, ti = A.mixup(x, t, 0.3, torch.arange(16))
    assert torch.equal(xi, x) and torch.equal(ti, t)


def test_cutmix_targets_match_pasted_area(real):
    imgs, y = real
    x = A.normalize(imgs[:64])
    t = _onehot(y[:64])
    perm = torch.roll(torch.arange(64), 1)
    torch.manual_seed(4)
    areas = []
    for lam in (0.9, 0.5, 0.2, 0.75, 0.0, 1.0):
        out, tm = A.cutmix(x, t, lam, perm)
        assert out.shape == x.shape and torch.allclose(tm.sum(1), torch.ones(64))
        own = (out == x).all(1)  # (B,H,W)
        partner = (out == x[perm]).all(1)
        assert (own | partner).all()  # every pixel comes from one of the two sources
        sure = (partner & ~own).any(0)  # pixels certainly pasted in some image
        if sure.any():
            r, c = sure.any(1).nonzero().squeeze(1), sure.any(0).nonzero().squeeze(1)
            box = torch.zeros(32, 32, dtype=torch.bool)
            box[r.min():r.max() + 1, c.min():c.max() + 1] = True
        else:
            box = torch.zeros(32, 32, dtype=torch.bool)
        assert partner[:, box].all() and own[:, ~box].all()  # one rectangle, same for the batch
        frac = box.float().mean().item()
        assert torch.allclose(tm, (1 - frac) * t + frac * t[perm], atol=1e-6)
        assert frac <= 1 - lam + 0.05
        areas.append(frac)
    assert areas[-1] == 0 and areas[-2] > 0.1  # lam=1 pastes nothing, lam=0 a big (maybe clipped) box
    out, tm = A.cutmix(x, t, 0.5, torch.arange(64))
    assert torch.equal(out, x) and torch.equal(tm, t)


def test_cutmix_boxes_are_centred_on_every_pixel_and_clipped_at_the_borders():
    """The paper's box: size round(H*sqrt(1-lam)), centre uniform over all H*W pixels, clipped."""
    size, h = 8, 4  # lam = 0.75 gives a 4x4 box in an 8x8 image
    x = torch.stack([torch.zeros(1, size, size), torch.ones(1, size, size)])
    targets = torch.eye(2)
    expected = {(max(c - h // 2, 0), min(c - h // 2 + h, size)) for c in range(size)}
    rows, cols = set(), set()
    torch.manual_seed(0)
    for _ in range(400):
        out, mixed = A.cutmix(x, targets, 0.75, torch.tensor([1, 0]))
        pasted = out[0, 0].bool()
        r, c = pasted.any(1).nonzero().squeeze(1), pasted.any(0).nonzero().squeeze(1)
        rows.add((int(r.min()), int(r.max()) + 1))
        cols.add((int(c.min()), int(c.max()) + 1))
        assert torch.allclose(mixed[0], torch.tensor([1.0, 0.0]) - pasted.float().mean() * torch.tensor([1.0, -1.0]))
    assert rows == expected and cols == expected


@pytest.mark.parametrize("policy", ["autoaugment", "trivialaugment"])
def test_policies(real, policy):
    x = real[0][:128]
    torch.manual_seed(5)
    out = A.apply_policy(x, policy, group=8)
    assert out.shape == x.shape and out.dtype == torch.uint8
    changed = (out != x).flatten(1).any(1)
    assert changed.any()
    # 16 chunks with independently sampled ops -> not one global op for the whole batch: on 128 copies
    # of one image, the 8 images of a chunk come out identical and the chunks do not all agree
    torch.manual_seed(5)
    same = A.apply_policy(x[:1].repeat(128, 1, 1, 1), policy, group=8).view(16, 8, -1)
    assert all(torch.equal(chunk[0], img) for chunk in same for img in chunk)
    assert len({tuple(chunk[0].tolist()) for chunk in same}) > 1
    # brightness statistics stay in a plausible photo range
    means = out.float().mean((1, 2, 3))
    assert 10 < means.mean() < 245
    torch.manual_seed(5)
    assert torch.equal(A.apply_policy(x, policy, group=8), out)  # reproducible from CPU RNG
    assert A.apply_policy(x, "none") is x
    with pytest.raises(ValueError, match="policy"):
        A.apply_policy(x, "randaugment")


@pytest.mark.parametrize("kw", [
    dict(),
    dict(policy="trivialaugment", cutout=8, mix="cutmix"),
    dict(pad_mode="constant", policy="autoaugment", mix="mixup", mix_alpha=0.2, dtype=torch.bfloat16),
])
def test_batch_augment_end_to_end(real, kw):
    imgs, y = real[0][:64], real[1][:64]
    aug = A.BatchAugment(**kw)
    torch.manual_seed(6)
    x, t = aug(imgs, y)
    assert x.shape == (64, 3, 32, 32) and x.dtype == kw.get("dtype", torch.float32)
    assert t.shape == (64, 10) and t.dtype == torch.float32
    assert torch.allclose(t.sum(1), torch.ones(64))
    if kw.get("mix", "none") == "none":
        assert torch.equal(t, _onehot(y))
    torch.manual_seed(6)
    x2, t2 = aug(imgs, y)
    assert torch.equal(x, x2) and torch.equal(t, t2)
    assert not torch.equal(x, aug.eval_transform(imgs))
    assert torch.equal(aug.eval_transform(imgs), A.normalize(imgs, dtype=aug.dtype))
    assert "normalize" in repr(aug)


def test_batch_augment_mix_prob_zero_and_identity(real):
    imgs, y = real[0][:32], real[1][:32]
    aug = A.BatchAugment(crop_padding=0, flip=False, mix="mixup", mix_prob=0.0)
    x, t = aug(imgs, y)
    assert torch.equal(x, A.normalize(imgs)) and torch.equal(t, _onehot(y))


@pytest.mark.parametrize("kwargs, error", [
    ({"pad_mode": "constant", "policy": "trivialaugment", "mix": "cutmix"}, None),
    ({"pad_mode": "edge"}, "pad_mode='edge' is invalid: expected one of ('reflect', 'constant')"),
    ({"policy": "randaugment"}, "policy='randaugment' is invalid: expected one of ('none', 'autoaugment', "
                                "'trivialaugment')"),
    ({"mix": "cutout"}, "mix='cutout' is invalid: expected one of ('none', 'mixup', 'cutmix')"),
])
def test_a_choice_that_is_not_one_of_the_known_ones_is_refused_naming_them(kwargs, error):
    """Numbers and switches are checked once, by TrainConfig.validate (tests/test_config.py); a misspelt choice is
    refused here too, since it would otherwise silently run another augmentation."""
    if error is None:
        assert A.BatchAugment(**kwargs).describe()
        return
    with pytest.raises(ValueError) as raised:
        A.BatchAugment(**kwargs)
    assert str(raised.value) == error


def test_the_mix_chosen_is_the_one_applied_on_the_share_of_batches_asked(real, monkeypatch):
    imgs, y = real[0][:16], real[1][:16]
    calls = []
    for name in ("mixup", "cutmix"):
        real_mix = getattr(A, name)
        monkeypatch.setattr(A, name, lambda *args, name=name, real_mix=real_mix: calls.append(name) or real_mix(*args))
    for mix in ("mixup", "cutmix"):
        aug = A.BatchAugment(crop_padding=0, flip=False, mix=mix, mix_prob=0.25)
        calls.clear()
        torch.manual_seed(0)
        unmixed = 0
        for _ in range(200):
            x, t = aug(imgs, y)
            if torch.equal(t, _onehot(y)) and torch.equal(x, A.normalize(imgs)):
                unmixed += 1
        assert set(calls) == {mix} and len(calls) + unmixed == 200
        assert 30 < len(calls) < 70  # about a quarter of 200 batches


def test_bad_input_dtype(real):
    with pytest.raises(ValueError, match="uint8"):
        A.BatchAugment()(real[0][:4].float(), real[1][:4])


def test_describe_names_each_stage_in_the_order_applied():
    """The pipeline's description (recorded with the run and shown in notebook 01) lists what runs, in order."""
    assert A.BatchAugment().describe() == "crop(pad=4, reflect) -> flip -> normalize"
    full = A.BatchAugment(crop_padding=2, pad_mode="constant", policy="autoaugment", policy_group=8, cutout=16,
                        mix="cutmix", mix_alpha=0.5, mix_prob=0.25)
    assert full.describe() == ("crop(pad=2, constant) -> flip -> autoaugment(group=8) -> normalize -> cutout(16) -> "
                               "cutmix(alpha=0.5, p=0.25)")
    assert A.BatchAugment(crop_padding=0, flip=False).describe() == "normalize"
    assert repr(A.BatchAugment(crop_padding=0, flip=False)) == "BatchAugment(normalize, dtype=torch.float32)"


def test_apply_policys_default_group_is_the_training_configs():
    from wrnlib.config import TrainConfig

    many = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(4)
    default = A.apply_policy(many, "autoaugment")
    torch.manual_seed(4)
    assert torch.equal(default, A.apply_policy(many, "autoaugment", TrainConfig().policy_group))


def test_the_pipelines_defaults_are_a_default_training_configs_and_from_config_passes_the_rest_through():
    from wrnlib.config import TrainConfig

    plain, config = A.BatchAugment(), TrainConfig()
    assert {n: getattr(plain, n) for n in A.BatchAugment.CONFIG_FIELDS} == \
           {n: getattr(config, n) for n in A.BatchAugment.CONFIG_FIELDS}
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(3)
    default = A.random_crop(images)
    torch.manual_seed(3)
    assert torch.equal(default, A.random_crop(images, config.crop_padding, config.pad_mode))
    made = A.BatchAugment.from_config(config, dtype=torch.bfloat16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert (made.dtype, made.mean, made.std) == (torch.bfloat16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_evaluation_normalises_with_the_pipelines_own_mean_and_std():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    aug = A.BatchAugment(mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 1.0))
    expected = (images.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / \
        torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(aug.eval_transform(images), expected, atol=1e-6)


def test_labels_of_any_integer_dtype_give_the_same_one_hot_targets():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 9, 3, 3, 5, 1])
    aug = A.BatchAugment(crop_padding=0, flip=False)
    for dtype in (torch.uint8, torch.int32, torch.int64):
        _, targets = aug(images, labels.to(dtype))
        assert torch.equal(targets, torch.eye(10)[labels]), dtype


def test_reflect_padding_must_be_smaller_than_the_image_and_zero_padding_need_not_be():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert A.random_crop(images, 31, "reflect").shape == images.shape  # as F.pad(mode="reflect") allows
    assert A.random_crop(images, 40, "constant").shape == images.shape
    with pytest.raises(ValueError) as raised:
        A.random_crop(images, 32, "reflect")
    assert str(raised.value) == "padding=32 too large for reflect padding of 32x32 images"
