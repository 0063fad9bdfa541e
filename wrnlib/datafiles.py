"""CIFAR-10 on disk: which files a folder holds, checking them, and reading one file safely.

Two layouts are read, detected from what a folder contains:

* npz: ``train_1.npz`` ... ``train_K.npz`` + ``test.npz``, each holding ``images`` uint8
  (N, 32, 32, 3) HWC RGB and ``labels`` (N,), plus an optional ``MANIFEST.json`` whose per-file
  sha256 is verified (the layout of the shared copy and of the shipped sample);
* torchvision's ``cifar-10-batches-py`` (or a folder containing it): pickled dicts ``data_batch_1``
  ... ``data_batch_5`` + ``test_batch`` with ``b'data'`` (N, 3072) uint8 in CHW order and ``b'labels'``,
  read by an unpickler that can build numpy arrays and nothing else.

:func:`verify` checks a folder once (its layout, every file present, the manifest's checksums) and
returns its :class:`Files`; :func:`Files.read` reads one file into checked arrays. Every problem is a
:class:`DataError` naming the file, what is wrong and what to do.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

NUM_CLASSES = 10
BATCHES_DIRNAME = "cifar-10-batches-py"  # what torchvision's downloader creates under its root
EXPECTED_FILES = ("expected train_1.npz ... train_5.npz + test.npz (npz layout) or "
                  f"data_batch_1 ... data_batch_5 + test_batch (torchvision's {BATCHES_DIRNAME})")
_PIXELS = 3 * 32 * 32  # values per image

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (N, 3, 32, 32) CHW, labels int64 (N,)


class DataError(ValueError):
    """A data set is missing, incomplete, corrupt or malformed; the message says what to do."""


@dataclass
class Files:
    """The files of one CIFAR-10 folder, checked by :func:`verify`, and the reader of its layout."""
    train: list[Path]  # in order; empty when only the test set was asked for
    test: Path
    read: Callable[[Path], Split]


def find_layout(folder: Path) -> tuple[str, Path] | None:
    """("npz" or "batches", the folder its files are in) for what ``folder`` holds, or None."""
    if not folder.is_dir():
        return None
    if _numbered(folder, "train_", ".npz") or (folder / "test.npz").exists():
        return "npz", folder
    nested = folder / BATCHES_DIRNAME  # a torchvision root: the data sits one level down
    for candidate in (folder, nested):
        if candidate.is_dir() and (_numbered(candidate, "data_batch_", "") or (candidate / "test_batch").exists()):
            return "batches", candidate
    return None


def verify(folder: Path, test_only: bool) -> Files:
    """Check a folder that :func:`find_layout` recognised: every file present (training files numbered
    1..K without gaps) and, in the npz layout, each file's sha256 against MANIFEST.json when there is one."""
    layout, folder = find_layout(folder)
    if layout == "npz":
        manifest = folder / "MANIFEST.json"
        if manifest.exists():
            _verify_manifest(manifest, only={"test.npz"} if test_only else None)
        test = _require_file(folder / "test.npz")
        return Files([] if test_only else _training_files(folder, "train_", ".npz"), test, _read_npz_file)
    test = _require_file(folder / "test_batch")
    return Files([] if test_only else _training_files(folder, "data_batch_", ""), test, _read_batch_file)


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
    """The numbered training files in order, requiring 1..K without gaps: a missing middle file would
    otherwise silently shrink the training set."""
    files = _numbered(folder, prefix, suffix)
    if not files:
        raise DataError(f"CIFAR-10 folder {folder} has no training files ({prefix}1{suffix} ...); "
                        f"{EXPECTED_FILES}. Re-copy or re-download the data set.")
    for number in range(1, max(files) + 1):
        if number not in files:
            raise DataError(f"Missing file {folder / f'{prefix}{number}{suffix}'}: the training files must run "
                            f"{prefix}1{suffix} ... {prefix}{max(files)}{suffix} without gaps. "
                            "Re-copy or re-download the data set.")
    return [files[number] for number in sorted(files)]


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"Missing file {path}: {EXPECTED_FILES}. Re-copy or re-download the data set.")
    return path


def _verify_manifest(manifest: Path, only: set[str] | None = None) -> None:
    """Check that every file the manifest lists (or those of ``only``) exists with the recorded sha256."""
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        expected = {str(name): str(entry["sha256"]).lower() for name, entry in entries.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"Cannot read {manifest} ({type(exc).__name__}: {exc}); it must be JSON with a 'files' "
                        "object mapping file names to {'sha256': ...}. Re-copy the data set, or delete the "
                        "manifest to skip verification.") from exc
    for name, sha256 in expected.items():
        if only is not None and name not in only:
            continue
        if Path(name).name != name:  # only plain names: a manifest must not point outside its folder
            raise DataError(f"{manifest} lists {name!r}, which is not a plain file name. Re-copy the data set.")
        path = _require_file(manifest.parent / name)
        actual = _file_sha256(path)
        if actual != sha256:
            raise DataError(f"{path} does not match {manifest.name}: sha256 is {actual}, expected {sha256}. "
                            "The copy is corrupt or truncated; re-copy / re-download the file.")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):  # never the whole file in memory at once
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"Cannot read {path} ({exc}). Check its permissions or re-copy it.") from exc
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading one file

# What a truncated, corrupt or non-npz file can raise inside numpy / zipfile / zlib.
_NPZ_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def _read_npz_file(path: Path) -> Split:
    try:
        # opened here so that it is closed even when numpy fails halfway; allow_pickle=False: an npz of
        # plain arrays never needs pickle, so refuse to run one
        with path.open("rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DataError(f"{path} holds a single .npy array, not an npz archive with 'images' and "
                                "'labels'. Re-copy the file.")
            with loaded as archive:
                missing = [key for key in ("images", "labels") if key not in archive.files]
                if missing:
                    raise DataError(f"{path} lacks the array(s) {missing} (has {sorted(archive.files)}); each npz "
                                    "must hold 'images' (N, 32, 32, 3) uint8 and 'labels' (N,). Re-copy the file.")
                images, labels = archive["images"], archive["labels"]
    except DataError:
        raise
    except _NPZ_READ_ERRORS as exc:
        # numpy reads bytes that are no archive as a pickle, and then advises loading it "unsafely":
        # never right for a data file, so that advice is not passed on
        why = "not an npz archive" if "allow_pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"Cannot read {path} ({why}); the file is truncated or corrupt. "
                        "Re-copy / re-download it.") from exc
    if images.shape[1:] != (32, 32, 3):  # an npz holds arrays only, so there is always a shape
        raise DataError(f"{path}: 'images' has shape {images.shape}, expected (N, 32, 32, 3) HWC. Re-copy the file "
                        "or fix how it was written.")
    _check_uint8(images, path, "images")
    return images.transpose(0, 3, 1, 2), _check_labels(labels, len(images), path)  # HWC -> CHW for torch


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
    """Unpickles numpy arrays and builtins only: unpickling can run arbitrary code, and a CIFAR-10 batch is
    a dict of bytes, lists and one array, so anything else means the file is not what it claims to be."""

    def find_class(self, module: str, name: str) -> Any:
        try:  # looked up when a pickle asks (a few times per file), so that tests exercise the table
            return _numpy_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR-10 batch never contains") from None


# What a truncated, corrupt or foreign pickle can raise while being read.
_PICKLE_READ_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
                       KeyError, MemoryError, OverflowError)


def _read_batch_file(path: Path) -> Split:
    try:
        with path.open("rb") as handle:
            # encoding="bytes": the batches were pickled by Python 2; keys come back as b'data'.
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except _PICKLE_READ_ERRORS as exc:
        raise DataError(f"Cannot unpickle {path} ({type(exc).__name__}: {exc}); the file is truncated, corrupt "
                        "or not a CIFAR-10 batch. Delete it and re-download / re-copy the data set.") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict with keys b'data' and b'labels', "
                        f"got {keys}. Re-download / re-copy the data set.")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(f"{path}: b'data' has shape {getattr(data, 'shape', None)}, expected (N, {_PIXELS}). "
                        "Re-download / re-copy the data set.")
    _check_uint8(data, path, "b'data'")
    images = data.reshape(len(data), 3, 32, 32)  # each row is already channel-major (1024 R, G, B): CHW
    return images, _check_labels(batch[b"labels"], len(images), path)


def _check_uint8(array: np.ndarray, path: Path, name: str) -> None:
    if array.dtype != np.uint8:
        raise DataError(f"{path}: {name} has dtype {array.dtype}, expected uint8 pixel values 0..255. "
                        "Re-copy the file or fix how it was written.")


def _check_labels(labels: Any, count: int, path: Path) -> np.ndarray:
    """Labels as int64, after checking they are 1-D integers in 0..9, one per image."""
    try:
        array = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: labels are not an array of integers ({exc}). Re-copy the file.") from exc
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise DataError(f"{path}: labels have shape {array.shape} and dtype {array.dtype}, expected a 1-D integer "
                        "array. Re-copy the file or fix how it was written.")
    if len(array) != count:
        raise DataError(f"{path}: {count} images but {len(array)} labels; each image needs exactly one label. "
                        "The file is inconsistent; re-copy it.")
    if array.size and (array.min() < 0 or array.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels range over {array.min()}..{array.max()}, expected 0..{NUM_CLASSES - 1}. "
                        "The file is corrupt or not CIFAR-10; re-copy it.")
    return array.astype(np.int64)
