"""CIFAR-10 in memory: where it is, loading it as tensors, and a seeded, class-stratified validation split.

``load_cifar10()`` looks at an explicit folder, then ``$CIFAR10_DIR``, then the cache folder
(``~/.cache/wrnlib``, where ``download=True`` lets torchvision fetch the data); ``"sample"`` names the
small real subset shipped inside the package. The folder is checked once (:func:`wrnlib.datafiles.verify`),
then read: every problem is a :class:`DataError` that says what to do.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datafiles import EXPECTED_FILES, NUM_CLASSES, DataError, find_layout, verify
from .errors import setting

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Published per-channel statistics of the 50,000 training images scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ENV_VAR = "CIFAR10_DIR"
SAMPLE = "sample"  # the data_dir / CIFAR10_DIR value naming the shipped sample
SAMPLE_VAL_SIZE = 200  # 20 images per class held out of the sample's 1,200


def _advice() -> str:
    return (f"Point wrnlib at CIFAR-10 with the {ENV_VAR} environment variable or {setting('data_dir')} (a folder "
            "with train_*.npz + test.npz, or torchvision's cifar-10-batches-py), or use 'sample' for the tiny subset "
            "shipped with wrnlib (for smoke tests only, not the benchmark).")


@dataclass
class CIFAR10:
    """The whole data set in memory, as torch tensors ready for a pipeline on the training device."""
    train_images: torch.Tensor  # uint8 (N, 3, 32, 32), contiguous CHW
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # resolved folder path, or "sample"
    checksum: str  # sha256 over the four tensors, see _checksum (the test set's alone when loaded test_only)
    test_checksum: str = ""  # sha256 over the test images and labels: what an evaluation can compare

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES


def sample_dir() -> Path:
    """The folder of the small real subset shipped inside the package."""
    return Path(__file__).resolve().parent / "sample_data"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/wrnlib`` or ``~/.cache/wrnlib``: where ``download=True`` puts the data."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "wrnlib"


def has_cifar10(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds one of the layouts :func:`load_cifar10` reads (files not verified)."""
    return find_layout(Path(folder).expanduser()) is not None


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                 test_only: bool = False) -> CIFAR10:
    """Load CIFAR-10 from ``data_dir``, else ``$CIFAR10_DIR``, else :func:`default_cache_dir`.

    ``"sample"`` (as ``data_dir`` or ``CIFAR10_DIR``) loads the shipped sample. ``download`` only
    applies to the default cache: when it holds no data, torchvision fetches it there. ``test_only``
    reads (and verifies) the test file alone: the training arrays are empty, and ``checksum`` then
    covers the test set only (``test_checksum`` always does).
    """
    folder, source, origin = _locate(data_dir, download)
    if not folder.exists():
        raise DataError(f"CIFAR-10 folder {folder} (from {origin}) does not exist. {_advice()}")
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 path {folder} (from {origin}) is not a directory. {_advice()}")
    if find_layout(folder) is None:
        raise DataError(f"CIFAR-10 folder {folder} (from {origin}) contains no recognised data files: "
                        f"{EXPECTED_FILES}. {_advice()}")
    files = verify(folder, test_only)
    train = [files.read(path) for path in files.train]
    test_images, test_labels = files.read(files.test)
    arrays = (np.concatenate([images for images, _ in train]) if train else np.zeros((0, 3, 32, 32), np.uint8),
              np.concatenate([labels for _, labels in train]) if train else np.zeros((0,), np.int64),
              test_images, test_labels)
    tensors = [torch.from_numpy(np.ascontiguousarray(array)) for array in arrays]
    test_checksum = _checksum(tensors[2:], names=("test_images", "test_labels"))
    checksum = _checksum(tensors) if train else test_checksum
    return CIFAR10(*tensors, source=source, checksum=checksum, test_checksum=test_checksum)


def _locate(data_dir, download: bool) -> tuple[Path, str, str]:
    """(folder, source to record, where the choice came from) of the data to load."""
    env_value = os.environ.get(ENV_VAR) or None  # an empty variable counts as unset
    if data_dir is not None:
        chosen, origin = os.fspath(data_dir), f"the {setting('data_dir')} argument"
    elif env_value is not None:
        chosen, origin = env_value, f"the {ENV_VAR} environment variable"
    else:
        cache = default_cache_dir()
        if find_layout(cache) is None:
            if not download:
                raise DataError(f"No CIFAR-10 found: {ENV_VAR} is not set and the default cache folder {cache} "
                                f"holds no data ({EXPECTED_FILES}). {_advice()} Or pass {setting('download', True)} "
                                f"to fetch it with torchvision into {cache}.")
            _download_with_torchvision(cache)
        return cache, str(cache.resolve()), "the default cache folder"
    if chosen == SAMPLE:
        return sample_dir(), SAMPLE, f"'{SAMPLE}' from {origin}"
    folder = Path(chosen).expanduser()
    return folder, str(folder.resolve()), origin


def _download_with_torchvision(cache: Path) -> None:
    try:
        from torchvision.datasets import (
            CIFAR10 as TorchvisionCIFAR10,  # only when downloading
        )

        cache.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            TorchvisionCIFAR10(root=str(cache), train=train, download=True)
    except Exception as exc:  # offline, DNS, proxy, disk full, bad archive: all mean "no data"
        raise DataError(f"Downloading CIFAR-10 into {cache} with torchvision failed "
                        f"({type(exc).__name__}: {exc}). {_advice()}") from exc


def _checksum(tensors: list[torch.Tensor],
              names: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")) -> str:
    """sha256 over train images, train labels, test images, test labels, in that order.

    Each array's dtype and shape go in before its bytes, so equal bytes cut differently
    (say, one image moved from train to test) give a different checksum. Identical data
    gives the identical checksum whichever layout or folder it came from.
    """
    digest = hashlib.sha256()
    for name, tensor in zip(names, tensors):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- splits


def train_val_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(len(labels))`` into sorted (train_idx, val_idx), stratified by class.

    Each class gives ``val_size * count / N`` images, rounded by largest remainder (ties to the
    lower class id) so the quotas sum to exactly ``val_size``. Which images of a class go to
    validation is drawn with a ``torch.Generator`` seeded by ``seed``: same seed, same split.
    """
    labels = torch.as_tensor(labels).detach().cpu().flatten()
    n = labels.numel()
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must satisfy 0 <= val_size < {n} (the number of labels), got {val_size}")
    if val_size == 0:
        return torch.arange(n, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    classes, counts = torch.unique(labels, return_counts=True)  # classes sorted ascending
    quotas = _stratified_quotas(counts, val_size)
    generator = torch.Generator().manual_seed(seed)
    val_parts = []
    for cls, quota in zip(classes.tolist(), quotas.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen = torch.randperm(len(members), generator=generator)[:quota]
        val_parts.append(members[chosen])
    val_idx = torch.sort(torch.cat(val_parts)).values
    in_train = torch.ones(n, dtype=torch.bool)
    in_train[val_idx] = False
    return torch.nonzero(in_train).flatten(), val_idx


def _stratified_quotas(counts: torch.Tensor, total: int) -> torch.Tensor:
    """Per-class quotas proportional to ``counts`` summing to ``total`` (largest remainder)."""
    n = int(counts.sum())
    scaled = counts.to(torch.int64) * total  # exact integer arithmetic: no float rounding ties
    quotas = scaled // n
    remainders = scaled % n
    leftover = total - int(quotas.sum())
    # stable sort: equal remainders keep class order, so the result is fully deterministic
    order = torch.sort(remainders, descending=True, stable=True).indices
    quotas[order[:leftover]] += 1
    return quotas


def test_subset(data: CIFAR10, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a fixed, class-stratified subset of ``limit`` test images (0: all).

    Seed 0 always, so every run with the same ``limit`` is scored on the same images.
    """
    images, labels = data.test_images, data.test_labels
    if limit and limit < len(labels):
        _, keep = train_val_split(labels, limit, 0)
        images, labels = images[keep], labels[keep]
    return images, labels


test_subset.__test__ = False  # a library function, not a pytest test


def sample_size() -> tuple[int, int]:
    """(training, test) images of the sample shipped with wrnlib, from its MANIFEST.json."""
    manifest = json.loads((sample_dir() / "MANIFEST.json").read_text())
    return int(manifest["train_images"]), int(manifest["test_images"])


def sample_split(val_size: int, train_limit: int, test_limit: int) -> dict[str, int]:
    """Split sizes that fit the shipped sample: at most 200 validation images (its 1,200 training images
    would not hold the default 5,000), and limits larger than what is left dropped (0: all)."""
    n_train, n_test = sample_size()
    val = min(val_size, SAMPLE_VAL_SIZE)
    return {"val_size": val, "train_limit": train_limit if train_limit <= n_train - val else 0,
            "test_limit": test_limit if test_limit <= n_test else 0}
