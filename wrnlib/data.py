"""Loading CIFAR-10 from disk, and a seeded, class-stratified train/validation split.

Two on-disk layouts are read, detected from what a folder contains:

* the npz layout: ``train_1.npz`` ... ``train_K.npz`` + ``test.npz``, each holding ``images``
  uint8 (N, 32, 32, 3) HWC RGB and ``labels`` (N,), plus an optional ``MANIFEST.json`` whose
  per-file sha256 is verified (this is the layout of the shared copy and of the shipped sample);
* torchvision's ``cifar-10-batches-py`` folder (or a folder containing it): pickled dicts
  ``data_batch_1`` ... ``data_batch_5`` + ``test_batch`` with ``b'data'`` (N, 3072) uint8 in
  CHW order and ``b'labels'``.

Every problem with the data raises :class:`DataError`, whose message names the file or folder,
says what is wrong and what to do about it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataError",
    "NUM_CLASSES",
    "default_cache_dir",
    "has_cifar10",
    "load_cifar10",
    "sample_dir",
    "test_subset",
    "train_val_split",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CIFAR10_CLASSES)
# Published per-channel statistics of the 50,000 training images scaled to [0, 1].
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

ENV_VAR = "CIFAR10_DIR"
SAMPLE = "sample"  # the special data_dir / CIFAR10_DIR value naming the shipped sample
BATCHES_DIRNAME = "cifar-10-batches-py"  # what torchvision's downloader creates under its root

_IMAGE_HW = (32, 32)
_CHANNELS = 3
_PIXELS = _CHANNELS * _IMAGE_HW[0] * _IMAGE_HW[1]  # 3072 values per image
_HASH_CHUNK = 1 << 20

_ADVICE = (
    f"Point wrnlib at CIFAR-10 with the {ENV_VAR} environment variable or --data-dir "
    "(a folder with train_*.npz + test.npz, or torchvision's cifar-10-batches-py), "
    f"or use '{SAMPLE}' for the tiny subset shipped with wrnlib (for smoke tests only, "
    "not the benchmark)."
)
_EXPECTED_FILES = (
    "expected train_1.npz ... train_5.npz + test.npz (npz layout) or "
    f"data_batch_1 ... data_batch_5 + test_batch (torchvision's {BATCHES_DIRNAME})"
)


class DataError(ValueError):
    """A data set is missing, incomplete, corrupt or malformed; the message says what to do."""


@dataclass
class CIFAR10:
    """The whole data set in memory, as torch tensors ready for a GPU-resident pipeline."""

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


# --------------------------------------------------------------------------- locations


def sample_dir() -> Path:
    """The folder of the small real subset shipped inside the package."""
    return Path(__file__).resolve().parent / "sample_data"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/wrnlib`` or ``~/.cache/wrnlib``: where ``download=True`` puts the data."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "wrnlib"


def has_cifar10(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds one of the layouts :func:`load_cifar10` reads (files not verified)."""
    return _find_layout(Path(folder).expanduser()) is not None


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                 test_only: bool = False) -> CIFAR10:
    """Load CIFAR-10 from ``data_dir``, else ``$CIFAR10_DIR``, else :func:`default_cache_dir`.

    ``"sample"`` (as ``data_dir`` or ``CIFAR10_DIR``) loads the shipped sample. ``download``
    only applies to the default cache: when it holds no data, torchvision fetches it there.
    ``test_only`` reads (and verifies) the test file alone: the training arrays are empty, and
    ``checksum`` then covers the test set only (``test_checksum`` always does).
    """
    env_value = os.environ.get(ENV_VAR) or None  # an empty variable counts as unset
    if data_dir is not None:
        chosen, origin = os.fspath(data_dir), "the data_dir argument"
    elif env_value is not None:
        chosen, origin = env_value, f"the {ENV_VAR} environment variable"
    else:
        return _load_default_cache(download, test_only)

    if chosen == SAMPLE:
        return _load_folder(sample_dir(), source=SAMPLE, origin=f"'{SAMPLE}' from {origin}", test_only=test_only)
    folder = Path(chosen).expanduser()
    return _load_folder(folder, source=str(folder.resolve()), origin=origin, test_only=test_only)


def _load_default_cache(download: bool, test_only: bool) -> CIFAR10:
    cache = default_cache_dir()
    origin = "the default cache folder"
    if _find_layout(cache) is None:
        if not download:
            raise DataError(
                f"No CIFAR-10 found: {ENV_VAR} is not set and the default cache folder {cache} "
                f"holds no data ({_EXPECTED_FILES}). {_ADVICE} Or pass download=True "
                f"(--download) to fetch it with torchvision into {cache}."
            )
        _download_with_torchvision(cache)
    return _load_folder(cache, source=str(cache.resolve()), origin=origin, test_only=test_only)


def _download_with_torchvision(cache: Path) -> None:
    # Imported here so that reading data from disk never depends on torchvision.
    try:
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        cache.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            TorchvisionCIFAR10(root=str(cache), train=train, download=True)
    except Exception as exc:  # offline, DNS, proxy, disk full, bad archive: all mean "no data"
        raise DataError(
            f"Downloading CIFAR-10 into {cache} with torchvision failed "
            f"({type(exc).__name__}: {exc}). {_ADVICE}"
        ) from exc


# --------------------------------------------------------------------------- folders


def _load_folder(folder: Path, *, source: str, origin: str, test_only: bool) -> CIFAR10:
    if not folder.exists():
        raise DataError(f"CIFAR-10 folder {folder} (from {origin}) does not exist. {_ADVICE}")
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 path {folder} (from {origin}) is not a directory. {_ADVICE}")
    layout = _find_layout(folder)
    if layout is None:
        raise DataError(
            f"CIFAR-10 folder {folder} (from {origin}) contains no recognised data files: "
            f"{_EXPECTED_FILES}. {_ADVICE}"
        )
    read, data_folder = layout
    train, test = read(data_folder, test_only)
    return _to_dataset(train, test, source)


def _find_layout(folder: Path) -> tuple[Callable[[Path, bool], tuple[Split, Split]], Path] | None:
    """The reader of the layout ``folder`` holds (npz or batches) and where its files are, or None."""
    if not folder.is_dir():
        return None
    if _numbered(folder, "train_", ".npz") or (folder / "test.npz").exists():
        return _read_npz_layout, folder
    if _numbered(folder, "data_batch_", "") or (folder / "test_batch").exists():
        return _read_batches_layout, folder
    nested = folder / BATCHES_DIRNAME  # a torchvision root: the data sits one level down
    if nested.is_dir() and (_numbered(nested, "data_batch_", "") or (nested / "test_batch").exists()):
        return _read_batches_layout, nested
    return None


def _numbered(folder: Path, prefix: str, suffix: str) -> dict[int, Path]:
    """Files named ``<prefix><number><suffix>`` in ``folder``, keyed by number."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    found = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _training_files(folder: Path, prefix: str, suffix: str) -> list[Path]:
    """The numbered training files in order, requiring 1..K without gaps.

    A missing middle file would otherwise silently shrink the training set.
    """
    files = _numbered(folder, prefix, suffix)
    if not files:
        raise DataError(
            f"CIFAR-10 folder {folder} has no training files ({prefix}1{suffix} ...); "
            f"{_EXPECTED_FILES}. Re-copy or re-download the data set."
        )
    for number in range(1, max(files) + 1):
        if number not in files:
            raise DataError(
                f"Missing file {folder / f'{prefix}{number}{suffix}'}: the training files must run "
                f"{prefix}1{suffix} ... {prefix}{max(files)}{suffix} without gaps. "
                "Re-copy or re-download the data set."
            )
    return [files[number] for number in sorted(files)]


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"Missing file {path}: {_EXPECTED_FILES}. Re-copy or re-download the data set.")
    return path


# --------------------------------------------------------------------------- npz layout

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (N, 3, 32, 32) CHW, labels int64 (N,)


def _read_npz_layout(folder: Path, test_only: bool) -> tuple[Split, Split]:
    manifest = folder / "MANIFEST.json"
    if manifest.exists():
        _verify_manifest(manifest, only={"test.npz"} if test_only else None)
    test_file = _require_file(folder / "test.npz")
    if test_only:
        return _EMPTY_TRAIN, _read_npz_file(test_file)
    train_files = _training_files(folder, "train_", ".npz")
    train = _concat([_read_npz_file(path) for path in train_files])
    return train, _read_npz_file(test_file)


_EMPTY_TRAIN: Split = (np.zeros((0, 3, 32, 32), np.uint8), np.zeros((0,), np.int64))


def _verify_manifest(manifest: Path, only: set[str] | None = None) -> None:
    """Check that every file the manifest lists (or those of ``only``) exists with the recorded sha256."""
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        expected = {str(name): str(entry["sha256"]).lower() for name, entry in entries.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"Cannot read {manifest} ({type(exc).__name__}: {exc}); it must be JSON with a "
            "'files' object mapping file names to {'sha256': ...}. Re-copy the data set, "
            "or delete the manifest to skip verification."
        ) from exc
    for name, sha256 in expected.items():
        if only is not None and name not in only:
            continue
        if Path(name).name != name:  # only plain names: a manifest must not point outside its folder
            raise DataError(f"{manifest} lists {name!r}, which is not a plain file name. Re-copy the data set.")
        path = _require_file(manifest.parent / name)
        actual = _file_sha256(path)
        if actual != sha256:
            raise DataError(
                f"{path} does not match {manifest.name}: sha256 is {actual}, expected {sha256}. "
                "The copy is corrupt or truncated; re-copy / re-download the file."
            )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            # Chunked, so verifying never needs the whole file in memory at once.
            for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"Cannot read {path} ({exc}). Check its permissions or re-copy it.") from exc
    return digest.hexdigest()


# What a truncated, corrupt or non-npz file can raise inside numpy / zipfile / zlib.
_NPZ_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def _read_npz_file(path: Path) -> Split:
    try:
        # We open the file ourselves so it is closed even when numpy fails halfway through;
        # allow_pickle=False: an npz of plain arrays never needs pickle, so refuse to run one.
        with path.open("rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path} holds a single .npy array, not an npz archive with 'images' and "
                    "'labels'. Re-copy the file."
                )
            with loaded as archive:
                missing = [key for key in ("images", "labels") if key not in archive.files]
                if missing:
                    raise DataError(
                        f"{path} lacks the array(s) {missing} (has {sorted(archive.files)}); each npz "
                        "must hold 'images' (N, 32, 32, 3) uint8 and 'labels' (N,). Re-copy the file."
                    )
                images, labels = archive["images"], archive["labels"]
    except DataError:
        raise
    except _NPZ_READ_ERRORS as exc:
        # numpy reads bytes that are no archive as a pickle, and then advises loading it "unsafely":
        # never right for a data file, so that advice is not passed on
        why = "not an npz archive" if "allow_pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise DataError(
            f"Cannot read {path} ({why}); the file is truncated or corrupt. Re-copy / re-download it."
        ) from exc
    expected_shape = (*_IMAGE_HW, _CHANNELS)
    if images.shape[1:] != expected_shape:  # an npz holds arrays only, so there is always a shape
        raise DataError(
            f"{path}: 'images' has shape {images.shape}, expected "
            f"(N, {', '.join(map(str, expected_shape))}) HWC. Re-copy the file or fix how it was written."
        )
    _check_uint8(images, path, "images")
    # HWC -> CHW, the layout torch's convolutions expect.
    return images.transpose(0, 3, 1, 2), _check_labels(labels, len(images), path)


# --------------------------------------------------------------------------- batches layout


def _read_batches_layout(folder: Path, test_only: bool) -> tuple[Split, Split]:
    test_file = _require_file(folder / "test_batch")
    if test_only:
        return _EMPTY_TRAIN, _read_batch_file(test_file)
    train_files = _training_files(folder, "data_batch_", "")
    train = _concat([_read_batch_file(path) for path in train_files])
    return train, _read_batch_file(test_file)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 batch pickle refers to: how numpy rebuilds an array."""
    try:  # numpy >= 2 (numpy 1.26 also ships this alias)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles at protocol <= 2 spell bytes (an array's raw data) through this.
        ("_codecs", "encode"): codecs.encode,
    }
    # The original batches were pickled by numpy 1.x ("numpy.core"); newer pickles say "numpy._core".
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtins only.

    Unpickling can run arbitrary code; a CIFAR-10 batch is a dict of bytes, lists and one
    array, so anything else means the file is not what it claims to be.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:  # looked up when a pickle asks (a few times per file), so that tests exercise the table
            return _numpy_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refers to {module}.{name}, which a CIFAR-10 batch never contains"
            ) from None


# What a truncated, corrupt or foreign pickle can raise while being read.
_PICKLE_READ_ERRORS = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    MemoryError,
    OverflowError,
)


def _read_batch_file(path: Path) -> Split:
    try:
        with path.open("rb") as handle:
            # encoding="bytes": the batches were pickled by Python 2; keys come back as b'data'.
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except _PICKLE_READ_ERRORS as exc:
        raise DataError(
            f"Cannot unpickle {path} ({type(exc).__name__}: {exc}); the file is truncated, corrupt "
            "or not a CIFAR-10 batch. Delete it and re-download / re-copy the data set."
        ) from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(
            f"{path} is not a CIFAR-10 batch: expected a dict with keys b'data' and b'labels', "
            f"got {keys}. Re-download / re-copy the data set."
        )
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(
            f"{path}: b'data' has shape {getattr(data, 'shape', None)}, expected (N, {_PIXELS}). "
            "Re-download / re-copy the data set."
        )
    _check_uint8(data, path, "b'data'")
    # Each row is already channel-major (1024 R, 1024 G, 1024 B), i.e. CHW.
    images = data.reshape(len(data), _CHANNELS, *_IMAGE_HW)
    return images, _check_labels(batch[b"labels"], len(images), path)


# --------------------------------------------------------------------------- checks and assembly


def _check_uint8(array: np.ndarray, path: Path, name: str) -> None:
    if array.dtype != np.uint8:
        raise DataError(
            f"{path}: {name} has dtype {array.dtype}, expected uint8 pixel values 0..255. "
            "Re-copy the file or fix how it was written."
        )


def _check_labels(labels: Any, count: int, path: Path) -> np.ndarray:
    """Labels as int64, after checking they are 1-D integers in 0..9, one per image."""
    try:
        array = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: labels are not an array of integers ({exc}). Re-copy the file.") from exc
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise DataError(
            f"{path}: labels have shape {array.shape} and dtype {array.dtype}, expected a 1-D "
            "integer array. Re-copy the file or fix how it was written."
        )
    if len(array) != count:
        raise DataError(
            f"{path}: {count} images but {len(array)} labels; each image needs exactly one label. "
            "The file is inconsistent; re-copy it."
        )
    if array.size and (array.min() < 0 or array.max() >= NUM_CLASSES):
        raise DataError(
            f"{path}: labels range over {array.min()}..{array.max()}, expected 0..{NUM_CLASSES - 1}. "
            "The file is corrupt or not CIFAR-10; re-copy it."
        )
    return array.astype(np.int64)


def _concat(splits: list[Split]) -> Split:
    return np.concatenate([s[0] for s in splits]), np.concatenate([s[1] for s in splits])


def _to_dataset(train: Split, test: Split, source: str) -> CIFAR10:
    tensors = [torch.from_numpy(np.ascontiguousarray(array)) for array in (*train, *test)]
    test_checksum = _checksum(tensors[2:], names=("test_images", "test_labels"))
    checksum = _checksum(tensors) if len(tensors[1]) else test_checksum
    return CIFAR10(*tensors, source=source, checksum=checksum, test_checksum=test_checksum)


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


# --------------------------------------------------------------------------- validation split


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
