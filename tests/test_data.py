"""Tests for wrnlib.data on real CIFAR-10: the shipped sample always, the full set when
CIFAR10_DIR points at it. Broken inputs are built in tmp_path from copies of the sample."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from wrnlib.data import (
    CIFAR10,
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataError,
    default_cache_dir,
    load_cifar10,
    sample_dir,
    sample_size,
    sample_split,
    train_val_split,
)
from wrnlib.datafiles import find_layout
from wrnlib.errors import command_line

SAMPLE_MANIFEST = json.loads((sample_dir() / "MANIFEST.json").read_text())
TRAIN_PER_CLASS = SAMPLE_MANIFEST["train_per_class"]
TEST_PER_CLASS = SAMPLE_MANIFEST["test_per_class"]

_FULL_DIR = os.environ.get("CIFAR10_DIR", "")
HAVE_FULL = _FULL_DIR not in ("", "sample") and Path(_FULL_DIR).is_dir()
needs_full = pytest.mark.skipif(not HAVE_FULL, reason="CIFAR10_DIR does not point at the complete CIFAR-10")


@pytest.fixture(scope="module")
def sample() -> CIFAR10:
    return load_cifar10("sample")


@pytest.fixture(scope="module")
def full() -> CIFAR10:
    return load_cifar10(_FULL_DIR)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No CIFAR10_DIR and an empty default cache, so nothing outside tmp_path is found."""
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def copy_sample(dest: Path, *, manifest: bool = True) -> Path:
    dest.mkdir(parents=True)
    for name in ("train_1.npz", "test.npz") + (("MANIFEST.json",) if manifest else ()):
        shutil.copy(sample_dir() / name, dest / name)
    return dest


def write_batches(dest: Path, data: CIFAR10, train_batches: int = 5) -> Path:
    """A torchvision-style cifar-10-batches-py folder holding ``data``'s arrays."""
    dest.mkdir(parents=True)

    def dump(name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),  # torchvision's files store a plain list of ints
            b"data": images.reshape(len(images), -1).numpy(),  # CHW rows of 3072 uint8
            b"filenames": [f"{i}.png".encode() for i in range(len(images))],
        }
        with open(dest / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)

    chunks = zip(data.train_images.chunk(train_batches), data.train_labels.chunk(train_batches))
    for number, (images, labels) in enumerate(chunks, start=1):
        dump(f"data_batch_{number}", images, labels)
    dump("test_batch", data.test_images, data.test_labels)
    (dest / "batches.meta").write_bytes(b"ignored")
    return dest


def assert_same_arrays(a: CIFAR10, b: CIFAR10) -> None:
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.checksum == b.checksum


# --------------------------------------------------------------------------- the sample


def test_sample_shapes_dtypes_ranges(sample):
    n_train, n_test = 10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS
    assert sample.train_images.shape == (n_train, 3, 32, 32)
    assert sample.test_images.shape == (n_test, 3, 32, 32)
    assert sample.train_labels.shape == (n_train,) and sample.test_labels.shape == (n_test,)
    for images in (sample.train_images, sample.test_images):
        assert images.dtype == torch.uint8 and images.is_contiguous()
        assert images.min() == 0 and images.max() == 255  # real photos span the full range
    for labels in (sample.train_labels, sample.test_labels):
        assert labels.dtype == torch.int64
    assert sample.source == "sample"
    assert sample.num_classes == len(CIFAR10_CLASSES) == 10
    assert len(sample.checksum) == 64 and int(sample.checksum, 16) >= 0


def test_sample_class_balanced_and_in_original_order(sample):
    assert sample.train_labels.bincount(minlength=10).tolist() == [TRAIN_PER_CLASS] * 10
    assert sample.test_labels.bincount(minlength=10).tolist() == [TEST_PER_CLASS] * 10
    for name in ("train_1.npz", "test.npz"):
        indices = SAMPLE_MANIFEST["provenance"]["files"][name]["source_indices"]
        assert indices == sorted(indices) and len(set(indices)) == len(indices)


def test_sample_manifest_and_size():
    assert SAMPLE_MANIFEST["classes"] == list(CIFAR10_CLASSES)
    total = sum(path.stat().st_size for path in sample_dir().iterdir())
    assert total <= 5 * 1024 * 1024
    assert (sample_dir() / "README.md").read_text().count("NOT the benchmark") == 1


def test_checksum_is_stable_and_data_sensitive(sample):
    again = load_cifar10(sample_dir())  # same files by path: same arrays, same checksum
    assert again.checksum == sample.checksum and again.source == str(sample_dir())
    assert isinstance(sample.train_images, torch.Tensor)
    from wrnlib.data import _checksum

    tensors = [sample.train_images.clone(), sample.train_labels, sample.test_images, sample.test_labels]
    tensors[0][0, 0, 0, 0] ^= 1
    assert _checksum(tensors) != sample.checksum


# --------------------------------------------------------------------------- the full set


@pytest.mark.full_data
@needs_full
def test_full_counts(full):
    assert full.train_images.shape == (50_000, 3, 32, 32)
    assert full.test_images.shape == (10_000, 3, 32, 32)
    assert full.train_labels.bincount(minlength=10).tolist() == [5_000] * 10
    assert full.test_labels.bincount(minlength=10).tolist() == [1_000] * 10
    assert full.source == str(Path(_FULL_DIR).resolve())


@pytest.mark.full_data
@needs_full
def test_full_channel_statistics_match_published(full):
    # Exact per-channel histograms avoid a 150M-element float copy.
    values = torch.arange(256, dtype=torch.float64) / 255
    for channel in range(3):
        hist = torch.bincount(full.train_images[:, channel].flatten(), minlength=256).double()
        mean = (hist * values).sum() / hist.sum()
        std = ((hist * (values - mean) ** 2).sum() / hist.sum()).sqrt()
        assert abs(mean.item() - CIFAR10_MEAN[channel]) < 1e-3
        assert abs(std.item() - CIFAR10_STD[channel]) < 1e-3


@pytest.mark.full_data
@needs_full
def test_sample_equals_full_set_images(full, sample):
    files = SAMPLE_MANIFEST["provenance"]["files"]
    train_idx = torch.tensor(files["train_1.npz"]["source_indices"])  # train_1 = full train 0..9999
    test_idx = torch.tensor(files["test.npz"]["source_indices"])
    assert torch.equal(sample.train_images, full.train_images[train_idx])
    assert torch.equal(sample.train_labels, full.train_labels[train_idx])
    assert torch.equal(sample.test_images, full.test_images[test_idx])
    assert torch.equal(sample.test_labels, full.test_labels[test_idx])
    # "first k of each class": no earlier image of any class was skipped
    for cls in range(10):
        first = torch.nonzero(full.train_labels == cls).flatten()[:TRAIN_PER_CLASS]
        assert torch.equal(first, train_idx[sample.train_labels == cls])


# --------------------------------------------------------------------------- batches-py format


@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_batches_reader_matches_npz_reader(tmp_path, sample, point_at):
    batches = write_batches(tmp_path / "cifar-10-batches-py", sample)
    loaded = load_cifar10(batches if point_at == "folder" else tmp_path)
    assert_same_arrays(loaded, sample)
    assert loaded.source == str(batches.resolve() if point_at == "folder" else tmp_path.resolve())
    assert loaded.train_images.is_contiguous() and loaded.train_labels.dtype == torch.int64


def py2_pickle(obj) -> bytes:
    """``obj`` as Python 2's cPickle (protocol 2) wrote the original batches: str opcodes for
    byte strings, numpy arrays rebuilt through ``numpy.core.multiarray._reconstruct``."""
    out = bytearray(b"\x80\x02")

    def emit(o) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for key, value in o.items():
                emit(key)
                emit(value)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for item in o:
                emit(item)
            out.extend(b"e")
        elif isinstance(o, bytes):
            out.extend(b"T" + struct.pack("<i", len(o)) + o)  # BINSTRING: a Python 2 str
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        else:  # a uint8 ndarray
            assert o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            emit(0)
            out.extend(b"\x85")
            emit(b"b")
            out.extend(b"\x87R(")
            emit(1)
            out.extend(b"(")
            for dim in o.shape:
                emit(dim)
            out.extend(b"tcnumpy\ndtype\n")
            emit(b"u1"), emit(0), emit(1)
            out.extend(b"\x87R(")
            emit(3), emit(b"|")
            out.extend(b"NNN")
            emit(-1), emit(-1), emit(0)
            out.extend(b"tb\x89")
            emit(o.tobytes())
            out.extend(b"tb")

    emit(obj)
    return bytes(out + b".")


def test_batches_reader_reads_python2_pickle(tmp_path, sample):
    batches = write_batches(tmp_path / "b", sample, train_batches=1)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": sample.test_labels.tolist(),
        b"data": sample.test_images.reshape(len(sample.test_images), -1).numpy(),
        b"filenames": [b"x.png"] * len(sample.test_images),
    }
    (batches / "test_batch").write_bytes(py2_pickle(batch))
    loaded = load_cifar10(batches)
    assert torch.equal(loaded.test_images, sample.test_images)
    assert torch.equal(loaded.test_labels, sample.test_labels)


# --------------------------------------------------------------------------- resolution order


def _distinct_sources(tmp_path: Path, sample: CIFAR10) -> tuple[Path, Path, Path]:
    """Three folders with different training sizes, so the result shows which was read."""
    explicit = copy_sample(tmp_path / "explicit")
    env = write_batches(tmp_path / "env", sample, train_batches=5)
    (env / "data_batch_5").unlink()  # 4/5 of the sample's training images
    cache = write_batches(tmp_path / "xdg" / "wrnlib" / "cifar-10-batches-py", sample, train_batches=5)
    for name in ("data_batch_4", "data_batch_5"):
        (cache / name).unlink()  # 3/5 of them
    return explicit, env, cache


def test_default_cache_dir_follows_xdg_and_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "wrnlib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "wrnlib"


def test_resolution_order(monkeypatch, tmp_path, sample, no_env):
    explicit, env, cache = _distinct_sources(tmp_path, sample)
    n = len(sample.train_labels)
    assert len(load_cifar10().train_labels) == n * 3 // 5  # nothing set: default cache
    assert load_cifar10().source == str((tmp_path / "xdg" / "wrnlib").resolve())
    monkeypatch.setenv("CIFAR10_DIR", str(env))
    assert len(load_cifar10().train_labels) == n * 4 // 5  # env var beats default cache
    assert load_cifar10().source == str(env.resolve())
    loaded = load_cifar10(explicit)  # explicit argument beats env var
    assert len(loaded.train_labels) == n and loaded.source == str(explicit.resolve())
    assert load_cifar10(str(explicit)).source == str(explicit.resolve())
    assert load_cifar10("sample").source == "sample"
    monkeypatch.setenv("CIFAR10_DIR", "sample")
    assert_same_arrays(load_cifar10(), sample)
    monkeypatch.setenv("CIFAR10_DIR", "")  # empty counts as unset
    assert len(load_cifar10().train_labels) == n * 3 // 5


def test_nothing_found_gives_advice(no_env, tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar10()
    message = str(info.value)
    for advice in ("CIFAR10_DIR", "data_dir", "'sample'", "download=True", str(tmp_path / "xdg" / "wrnlib")):
        assert advice in message
    assert (
        "Point wrnlib at CIFAR-10 with the CIFAR10_DIR environment variable or data_dir (a folder with train_*.npz + "
        "test.npz, or torchvision's cifar-10-batches-py), or use 'sample' for the tiny subset shipped with wrnlib "
        "(for smoke tests only, not the benchmark).") in message
    with command_line(), pytest.raises(DataError) as info:  # the same advice, as flags
        load_cifar10()
    for advice in ("CIFAR10_DIR", "--data-dir", "'sample'", "--download", str(tmp_path / "xdg" / "wrnlib")):
        assert advice in str(info.value)


def test_download_failure_gives_advice(monkeypatch, no_env, tmp_path):
    import torchvision.datasets

    def offline(**kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as info:
        load_cifar10(download=True)
    for advice in ("CIFAR10_DIR", "data_dir", "'sample'", "name resolution", str(tmp_path / "xdg")):
        assert advice in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_download_fills_default_cache(monkeypatch, no_env, tmp_path, sample):
    import torchvision.datasets

    calls = []

    def fake_torchvision_cifar10(root, train, download):
        # Stands in for the network: leaves what torchvision leaves, cifar-10-batches-py under root.
        calls.append((root, train, download))
        if not (Path(root) / "cifar-10-batches-py").exists():
            write_batches(Path(root) / "cifar-10-batches-py", sample)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_torchvision_cifar10)
    cache = str(tmp_path / "xdg" / "wrnlib")
    assert_same_arrays(load_cifar10(download=True), sample)
    assert calls == [(cache, True, True), (cache, False, True)]
    load_cifar10(download=True)  # already cached: no second download
    assert len(calls) == 2


# --------------------------------------------------------------------------- bad inputs


def _raises_naming(what: str, data_dir) -> DataError:
    with pytest.raises(DataError) as info:
        load_cifar10(data_dir)
    assert what in str(info.value), str(info.value)
    return info.value


def test_missing_folder(tmp_path):
    error = _raises_naming(str(tmp_path / "nowhere"), tmp_path / "nowhere")
    assert "does not exist" in str(error) and "CIFAR10_DIR" in str(error)


def test_a_missing_folder_is_named_with_where_it_came_from(tmp_path, monkeypatch):
    from wrnlib import data

    missing = tmp_path / "nowhere"
    said = str(_raises_naming(str(missing), missing))
    assert said.startswith(f"CIFAR-10 folder {missing} (from the data_dir argument) does not exist. ")
    monkeypatch.setenv("CIFAR10_DIR", str(missing))
    with pytest.raises(DataError, match=r"\(from the CIFAR10_DIR environment variable\) does not exist"):
        load_cifar10(None)
    monkeypatch.setattr(data, "sample_dir", lambda: missing)  # a package installed without its sample
    with pytest.raises(DataError, match=r"\(from 'sample' from the data_dir argument\) does not exist"):
        load_cifar10("sample")


def _independent_checksum(*named: tuple[str, torch.Tensor]) -> str:
    """sha256 of name:dtype:shape; and the bytes of each array in turn, as env.json documents it."""
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode() + tensor.numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("where", ["sample", "folder"])
def test_a_test_only_load_has_no_training_set_and_the_same_test_checksum(tmp_path, where):
    folder = "sample" if where == "sample" else copy_sample(tmp_path / "d")
    full, only_test = load_cifar10(folder), load_cifar10(folder, test_only=True)
    assert len(only_test.train_images) == len(only_test.train_labels) == 0 and len(full.train_labels) > 0
    # empty, but shaped and typed as the full training set is
    assert (only_test.train_images.shape, only_test.train_images.dtype) == ((0, 3, 32, 32), torch.uint8)
    assert (only_test.train_labels.shape, only_test.train_labels.dtype) == ((0,), torch.int64)
    test = _independent_checksum(("test_images", full.test_images), ("test_labels", full.test_labels))
    assert full.test_checksum == only_test.test_checksum == only_test.checksum == test
    assert full.checksum == _independent_checksum(
        ("train_images", full.train_images), ("train_labels", full.train_labels),
        ("test_images", full.test_images), ("test_labels", full.test_labels))


@pytest.mark.parametrize("nested", [False, True], ids=["folder", "torchvision-root"])
def test_a_batches_folder_is_recognised_by_any_of_its_files(tmp_path, sample, nested):
    """Training batches alone, or the test batch alone, mark the layout: a missing file is then named as
    missing, rather than the folder called unrecognised."""
    root = tmp_path / "root"
    folder = write_batches(root / "cifar-10-batches-py" if nested else root, sample, train_batches=2)
    assert find_layout(root) == ("batches", folder)
    (folder / "test_batch").unlink()
    assert str(_raises_naming(str(folder / "test_batch"), root)).startswith(f"Missing file {folder / 'test_batch'}")
    for number in (1, 2):
        (folder / f"data_batch_{number}").unlink()
    write_batches(tmp_path / "t", sample, train_batches=1)
    shutil.copy(tmp_path / "t" / "test_batch", folder / "test_batch")
    assert torch.equal(load_cifar10(root, test_only=True).test_labels, sample.test_labels)


def test_an_npz_folder_is_recognised_by_its_test_file_alone(tmp_path):
    folder = copy_sample(tmp_path / "d", manifest=False)
    (folder / "train_1.npz").unlink()
    assert find_layout(folder) == ("npz", folder)
    assert len(load_cifar10(folder, test_only=True).test_labels) == TEST_PER_CLASS * 10
    assert str(_raises_naming("has no training files (train_1.npz ...)", folder)).startswith(
        f"CIFAR-10 folder {folder} has no training files")


def test_path_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "not a directory" in str(_raises_naming(str(tmp_path / "file"), tmp_path / "file"))


def test_empty_folder(tmp_path):
    error = _raises_naming(str(tmp_path), tmp_path)
    assert "train_1.npz" in str(error) and "data_batch_1" in str(error)  # says what was expected


@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "no-manifest"])
def test_missing_test_npz(tmp_path, manifest):
    folder = copy_sample(tmp_path / "d", manifest=manifest)
    (folder / "test.npz").unlink()
    assert "Missing file" in str(_raises_naming(str(folder / "test.npz"), folder))


def test_gap_in_training_files(tmp_path):
    folder = copy_sample(tmp_path / "d", manifest=False)
    shutil.copy(folder / "train_1.npz", folder / "train_3.npz")
    _raises_naming(str(folder / "train_2.npz"), folder)


def test_the_first_training_batch_missing_or_all_of_them_is_an_error(tmp_path, sample):
    folder = write_batches(tmp_path / "cifar-10-batches-py", sample)
    (folder / "data_batch_1").unlink()
    _raises_naming(f"Missing file {folder / 'data_batch_1'}: the training files must run data_batch_1 "
                           "... data_batch_5 without gaps. Re-copy or re-download the data set.", folder)
    for number in range(2, 6):
        (folder / f"data_batch_{number}").unlink()
    error = _raises_naming(f"CIFAR-10 folder {folder} has no training files (data_batch_1 ...); ", folder)
    assert str(error).endswith("Re-copy or re-download the data set.")


def test_only_the_test_batch_is_read_when_only_the_test_set_is_asked(tmp_path, sample):
    folder = write_batches(tmp_path / "cifar-10-batches-py", sample)
    (folder / "data_batch_2").write_bytes(b"damaged, and never opened")
    loaded = load_cifar10(folder, test_only=True)
    assert len(loaded.train_images) == len(loaded.train_labels) == 0
    assert torch.equal(loaded.test_images, sample.test_images) and torch.equal(loaded.test_labels, sample.test_labels)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_batches_pickled_by_python3_at_any_protocol_read_back(tmp_path, sample, protocol):
    """Labels as numpy integers pickle through numpy's scalar; protocol 5 rebuilds arrays from buffers."""
    folder = write_batches(tmp_path / "cifar-10-batches-py", sample, train_batches=1)
    for name in ("data_batch_1", "test_batch"):
        batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        batch[b"labels"] = [np.int64(label) for label in batch[b"labels"]]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    loaded = load_cifar10(folder)
    assert torch.equal(loaded.train_images, sample.train_images) and torch.equal(loaded.test_labels, sample.test_labels)


@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "no-manifest"])
def test_truncated_npz(tmp_path, manifest):
    folder = copy_sample(tmp_path / "d", manifest=manifest)
    path = folder / "train_1.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    error = _raises_naming(str(path), folder)
    assert ("sha256" if manifest else "truncated") in str(error)
    if not manifest:  # chained from the zipfile/numpy error, which the message names
        cause = error.__cause__
        assert str(error) == (f"Cannot read {path} ({type(cause).__name__}: {cause}); the file is truncated or "
                              "corrupt. Re-copy / re-download it.")


@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "no-manifest"])
def test_flipped_byte_in_npz(tmp_path, manifest):
    folder = copy_sample(tmp_path / "d", manifest=manifest)
    path = folder / "test.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, corrupt compressed payload
    path.write_bytes(bytes(raw))
    error = _raises_naming(str(path), folder)
    assert ("sha256" if manifest else "corrupt") in str(error)


def test_manifest_lists_missing_file(tmp_path):
    folder = copy_sample(tmp_path / "d")
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    manifest["files"]["train_2.npz"] = {"sha256": "0" * 64}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    _raises_naming(str(folder / "train_2.npz"), folder)


@pytest.mark.parametrize("text", ["{not json", '{"no_files": {}}'])
def test_unreadable_manifest(tmp_path, text):
    folder = copy_sample(tmp_path / "d")
    (folder / "MANIFEST.json").write_text(text)
    error = _raises_naming(str(folder / "MANIFEST.json"), folder)
    cause = error.__cause__
    assert str(error) == (f"Cannot read {folder / 'MANIFEST.json'} ({type(cause).__name__}: {cause}); it must be "
                          "JSON with a 'files' object mapping file names to {'sha256': ...}. Re-copy the data set, "
                          "or delete the manifest to skip verification.")


def test_a_manifest_names_files_of_its_own_folder_with_their_checksums(tmp_path):
    folder = copy_sample(tmp_path / "d")
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    good = manifest["files"]["test.npz"]["sha256"]
    manifest["files"]["test.npz"]["sha256"] = "0" * 64
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    actual = hashlib.sha256((folder / "test.npz").read_bytes()).hexdigest()
    assert str(_raises_naming(str(folder / "test.npz"), folder)) == (
        f"{folder / 'test.npz'} does not match MANIFEST.json: sha256 is {actual}, expected {'0' * 64}. "
        "The copy is corrupt or truncated; re-copy / re-download the file.")
    manifest["files"]["test.npz"]["sha256"] = good
    manifest["files"]["../elsewhere.npz"] = {"sha256": good}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    assert str(_raises_naming("MANIFEST.json", folder)) == (
        f"{folder / 'MANIFEST.json'} lists '../elsewhere.npz', which is not a plain file name. Re-copy the data set.")


def test_the_test_set_alone_is_verified_and_read_when_only_it_is_asked(tmp_path):
    folder = copy_sample(tmp_path / "d")
    train = folder / "train_1.npz"
    train.write_bytes(train.read_bytes()[:100])  # listed in the manifest, damaged, and not needed
    loaded = load_cifar10(folder, test_only=True)
    assert len(loaded.train_labels) == 0 and len(loaded.test_labels) == TEST_PER_CLASS * 10
    test = folder / "test.npz"
    test.write_bytes(test.read_bytes()[:-1])  # listed after the training file: still checked
    with pytest.raises(DataError, match="test.npz does not match MANIFEST.json"):
        load_cifar10(folder, test_only=True)


def test_a_file_that_cannot_be_read_says_so(tmp_path, monkeypatch):
    folder = copy_sample(tmp_path / "d")
    locked = folder / "test.npz"
    real_open = Path.open

    def open_except_locked(self, *args, **kwargs):  # as root (CI), permissions would not stop the read
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_except_locked)
    assert str(_raises_naming(str(locked), folder)) == (
        f"Cannot read {locked} ([Errno 13] Permission denied: '{locked}'). Check its permissions or re-copy it.")


@pytest.mark.parametrize("content", ["npy", "text"])
def test_npz_that_is_not_an_archive(tmp_path, content):
    folder = copy_sample(tmp_path / "d", manifest=False)
    path = folder / "test.npz"
    if content == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.zeros((2, 32, 32, 3), np.uint8))
    else:
        path.write_text("images,labels\n")
    assert str(_raises_naming(str(path), folder)) == (
        f"{path} holds a single .npy array, not an npz archive with 'images' and 'labels'. Re-copy the file."
        if content == "npy" else  # numpy's advice to unpickle it is not passed on
        f"Cannot read {path} (not an npz archive); the file is truncated or corrupt. Re-copy / re-download it.")


def _rewrite_npz(folder: Path, name: str, **arrays: np.ndarray) -> Path:
    (folder / "MANIFEST.json").unlink(missing_ok=True)  # let the array checks speak
    np.savez(folder / name, **arrays)
    return folder / name


@pytest.mark.parametrize(
    "case, expected",
    [
        ("chw", "shape"),
        ("flat", "shape"),
        ("float", "dtype"),
        ("no_labels", "labels"),
        ("label_10", "0..9"),
        ("negative_label", "0..9"),
        ("too_few_labels", "labels"),
        ("2d_labels", "1-D"),
        ("float_labels", "1-D"),
    ],
)
def test_malformed_npz_contents(tmp_path, sample, case, expected):
    folder = copy_sample(tmp_path / "d", manifest=False)
    with np.load(folder / "train_1.npz") as archive:
        images, labels = archive["images"], archive["labels"]
    arrays = {
        "chw": dict(images=images.transpose(0, 3, 1, 2), labels=labels),
        "flat": dict(images=images.reshape(len(images), -1), labels=labels),
        "float": dict(images=images.astype(np.float32), labels=labels),
        "no_labels": dict(images=images),
        "label_10": dict(images=images, labels=np.where(np.arange(len(labels)) == 7, 10, labels).astype(np.uint8)),
        "negative_label": dict(images=images,
                               labels=np.where(np.arange(len(labels)) == 7, -1, labels.astype(np.int64))),
        "too_few_labels": dict(images=images, labels=labels[:-1]),
        "2d_labels": dict(images=images, labels=labels[:, None]),
        "float_labels": dict(images=images, labels=labels.astype(np.float32)),
    }[case]
    path = _rewrite_npz(folder, "train_1.npz", **arrays)
    said = str(_raises_naming(str(path), folder))
    assert expected in said
    if case in ("chw", "flat"):
        assert said == (f"{path}: 'images' has shape {arrays['images'].shape}, expected (N, 32, 32, 3) HWC. "
                        "Re-copy the file or fix how it was written.")
    elif case == "float":
        assert said == (f"{path}: images has dtype float32, expected uint8 pixel values 0..255. "
                        "Re-copy the file or fix how it was written.")
    elif case == "no_labels":
        assert said == (f"{path} lacks the array(s) ['labels'] (has ['images']); each npz must hold 'images' "
                        "(N, 32, 32, 3) uint8 and 'labels' (N,). Re-copy the file.")
    elif case == "too_few_labels":
        assert said == (f"{path}: {len(images)} images but {len(images) - 1} labels; each image needs exactly one "
                        "label. The file is inconsistent; re-copy it.")
    elif case in ("label_10", "negative_label"):
        low, high = (0, 10) if case == "label_10" else (-1, 9)
        assert said == (f"{path}: labels range over {low}..{high}, expected 0..9. The file is corrupt or not "
                        "CIFAR-10; re-copy it.")
    elif case in ("2d_labels", "float_labels"):
        wrong = arrays["labels"]
        assert said == (f"{path}: labels have shape {wrong.shape} and dtype {wrong.dtype}, expected a 1-D integer "
                        "array. Re-copy the file or fix how it was written.")


READ_AGAIN = "Re-download / re-copy the data set."
UNPICKLE = ("); the file is truncated, corrupt or not a CIFAR-10 batch. Delete it and re-download / re-copy the "
            "data set.")
PICKLE_DAMAGE = {  # what the error must say: the problem, then the fix
    "truncated": UNPICKLE, "garbage": UNPICKLE, "empty": UNPICKLE,
    "not_a_dict": f"is not a CIFAR-10 batch: expected a dict with keys b'data' and b'labels', got list. {READ_AGAIN}",
    "no_data_key": f"got [b'batch_label', b'filenames', b'labels']. {READ_AGAIN}",
    "bad_shape": f"b'data' has shape ({{rows}}, 1024), expected (N, 3072). {READ_AGAIN}",
    "three_dims": f"b'data' has shape ({{rows}}, 3072, 1), expected (N, 3072). {READ_AGAIN}",
    "data_as_a_list": f"b'data' has shape None, expected (N, 3072). {READ_AGAIN}",
    "float_data": "b'data' has dtype float32, expected uint8 pixel values 0..255.",
}


@pytest.mark.parametrize("damage", list(PICKLE_DAMAGE))
def test_corrupt_pickle(tmp_path, sample, damage):
    folder = write_batches(tmp_path / "cifar-10-batches-py", sample)
    path = folder / "data_batch_2"
    raw = path.read_bytes()
    batch = pickle.loads(raw, encoding="bytes")
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01 this is not a pickle" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_a_dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "no_data_key":
        del batch[b"data"]
        path.write_bytes(pickle.dumps(batch))
    elif damage == "float_data":
        batch[b"data"] = batch[b"data"].astype(np.float32)
        path.write_bytes(pickle.dumps(batch))
    elif damage == "three_dims":  # the right row length, one axis too many
        batch[b"data"] = batch[b"data"][:, :, None]
        path.write_bytes(pickle.dumps(batch))
    elif damage == "data_as_a_list":
        batch[b"data"] = batch[b"data"].tolist()
        path.write_bytes(pickle.dumps(batch))
    else:
        batch[b"data"] = batch[b"data"][:, :1024]
        path.write_bytes(pickle.dumps(batch))
    error = _raises_naming(str(path), tmp_path)
    assert PICKLE_DAMAGE[damage].format(rows=len(batch.get(b"data", ()))) in str(error)
    if damage in ("truncated", "garbage", "empty"):
        assert error.__cause__ is not None
        assert str(error).startswith(f"Cannot unpickle {path} ({type(error.__cause__).__name__}: ")


def test_an_empty_file_reads_as_no_images_and_ragged_labels_are_refused(tmp_path, sample):
    folder = copy_sample(tmp_path / "d", manifest=False)
    np.savez(folder / "train_2.npz", images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros((0,)))
    assert len(load_cifar10(folder).train_labels) == TRAIN_PER_CLASS * 10  # an empty array of any dtype is fine
    batches = write_batches(tmp_path / "b", sample, train_batches=1)
    batch = pickle.loads((batches / "test_batch").read_bytes(), encoding="bytes")
    batch[b"labels"] = [[1]] + [[1, 2]] * (len(batch[b"labels"]) - 1)
    (batches / "test_batch").write_bytes(pickle.dumps(batch))
    said = str(_raises_naming(str(batches / "test_batch"), batches))
    assert said.startswith(f"{batches / 'test_batch'}: labels are not an array of integers (")
    assert said.endswith("). Re-copy the file.")


def test_pickle_with_foreign_global_is_refused_not_run(tmp_path, sample):
    folder = write_batches(tmp_path / "b", sample, train_batches=1)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    error = _raises_naming(str(folder / "test_batch"), folder)
    assert "mkdir" in str(error)
    assert not marker.exists()


def test_pickle_labels_out_of_range(tmp_path, sample):
    folder = write_batches(tmp_path / "b", sample, train_batches=1)
    batch = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")
    batch[b"labels"][3] = 12
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    assert "0..9" in str(_raises_naming(str(folder / "test_batch"), folder))


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- train_val_split


def _imbalanced_labels() -> torch.Tensor:
    counts = [37, 5, 120, 1, 64, 13, 9, 50, 2, 77]
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(378, generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("val_size", [1, 7, 50, 100, 377])
def test_split_partition_size_and_stratification(val_size):
    labels = _imbalanced_labels()
    train_idx, val_idx = train_val_split(labels, val_size, seed=0)
    n = len(labels)
    assert train_idx.dtype == val_idx.dtype == torch.int64
    assert len(val_idx) == val_size and len(train_idx) == n - val_size
    assert torch.equal(torch.sort(torch.cat([train_idx, val_idx])).values, torch.arange(n))  # partition
    assert torch.equal(train_idx, train_idx.sort().values) and torch.equal(val_idx, val_idx.sort().values)
    counts = labels.bincount(minlength=10).double()
    val_counts = labels[val_idx].bincount(minlength=10).double()
    assert ((val_counts - counts * val_size / n).abs() < 1).all()


def test_split_quotas_go_by_largest_remainder_with_ties_to_the_lower_class():
    def val_counts(counts, val_size):
        labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
        return labels[train_val_split(labels, val_size, seed=0)[1]].bincount(minlength=len(counts)).tolist()

    # shares 3.0, 1.5, 0.5: the one image left over goes to the larger remainder (a tie here: class 1 comes first),
    # not to the largest share
    assert val_counts([6, 3, 1], 5) == [3, 2, 0]
    assert val_counts([1, 1, 1, 1], 2) == [1, 1, 0, 0]  # all tied: the lowest classes
    assert val_counts([2, 5, 3], 3) == [1, 1, 1]  # shares 0.6, 1.5, 0.9: remainders .9 and .6 get the two left
    # many classes tied (torch.sort is not stable on long tensors unless asked): still the lowest classes
    labels = torch.arange(1000).repeat(3)
    _, val_idx = train_val_split(labels, 1500, seed=0)
    assert labels[val_idx].bincount().tolist() == [2] * 500 + [1] * 500


def test_split_on_sample_is_exactly_balanced(sample):
    _, val_idx = train_val_split(sample.train_labels, 10 * 13, seed=3)
    assert sample.train_labels[val_idx].bincount(minlength=10).tolist() == [13] * 10


def test_split_deterministic_per_seed():
    labels = _imbalanced_labels()
    a = train_val_split(labels, 60, seed=123)
    b = train_val_split(labels.clone(), 60, seed=123)
    c = train_val_split(labels, 60, seed=124)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # a different seed draws different images but keeps the same per-class quotas
    assert torch.equal(labels[a[1]].bincount(minlength=10), labels[c[1]].bincount(minlength=10))


def test_split_val_size_zero():
    labels = _imbalanced_labels()
    train_idx, val_idx = train_val_split(labels, 0, seed=0)
    assert torch.equal(train_idx, torch.arange(len(labels)))
    assert val_idx.numel() == 0 and val_idx.dtype == torch.int64


@pytest.mark.parametrize("val_size", [-1, 378, 1000])
def test_split_bad_sizes_raise(val_size):
    with pytest.raises(ValueError, match="val_size"):
        train_val_split(_imbalanced_labels(), val_size, seed=0)


def test_has_cifar10_recognises_the_layouts(tmp_path):
    from wrnlib.data import has_cifar10, sample_dir

    assert has_cifar10(sample_dir())
    assert not has_cifar10(tmp_path) and not has_cifar10(tmp_path / "missing")
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"")  # torchvision's layout, one level down
    assert has_cifar10(tmp_path)


def test_download_into_an_existing_cache_and_a_failed_one_names_its_cause(tmp_path, monkeypatch):
    import torchvision.datasets

    from wrnlib import data

    calls = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda root, train, download: calls.append((train, download)))
    cache = tmp_path / "cache"
    cache.mkdir()  # what a partial download leaves: fetching again must not trip over it
    data._download_with_torchvision(cache)
    assert calls == [(True, True), (False, True)]

    def offline(root, train, download):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match=r"into .*cache with torchvision failed \(ConnectionError: no route to host\)"):
        data._download_with_torchvision(cache)


def test_a_download_that_leaves_no_data_is_reported_against_the_default_cache(tmp_path, monkeypatch):
    from wrnlib import data

    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(data, "_download_with_torchvision", lambda cache: cache.mkdir(parents=True))
    with pytest.raises(DataError, match=r"\(from the default cache folder\) contains no recognised data files"):
        load_cifar10(None, download=True)


@pytest.mark.parametrize("test_only", [True, False])
def test_the_default_cache_is_read_as_asked(tmp_path, monkeypatch, test_only):
    from wrnlib.data import default_cache_dir, load_cifar10, sample_dir

    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = default_cache_dir()
    cache.mkdir(parents=True)
    for name in ("train_1.npz", "test.npz", "MANIFEST.json"):
        if (sample_dir() / name).exists():
            shutil.copy(sample_dir() / name, cache / name)
    loaded = load_cifar10(None, test_only=test_only)
    sample = load_cifar10(sample_dir())
    assert loaded.source == str(cache.resolve()) and torch.equal(loaded.test_images, sample.test_images)
    assert len(loaded.train_images) == (0 if test_only else len(sample.train_images))


def test_the_test_subset_is_the_whole_set_by_default_or_at_its_size_and_else_the_seed_0_stratified_draw(real_data):
    from wrnlib import data as data_module

    images, labels = real_data.test_images, real_data.test_labels
    for whole in (data_module.test_subset(real_data), data_module.test_subset(real_data, len(labels))):
        assert torch.equal(whole[0], images) and torch.equal(whole[1], labels)
    _, keep = train_val_split(labels, 40, 0)  # seed 0 always: every run with test_limit=40 sees these images
    subset = data_module.test_subset(real_data, 40)
    assert torch.equal(subset[0], images[keep]) and torch.equal(subset[1], labels[keep])


def test_the_sample_split_holds_at_most_200_images_out_and_drops_limits_it_cannot_hold():
    n_train, n_test = sample_size()
    assert sample_split(5000, 7, 3) == {"val_size": 200, "train_limit": 7, "test_limit": 3}
    assert sample_split(100, n_train - 100, n_test) == {  # exactly what is left: kept
        "val_size": 100, "train_limit": n_train - 100, "test_limit": n_test}
    assert sample_split(100, n_train - 99, n_test + 1) == {"val_size": 100, "train_limit": 0,
                                                           "test_limit": 0}  # 0: all of it
