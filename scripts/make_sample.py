"""Build wrnlib/sample_data/: a small, real, class-balanced CIFAR-10 subset shipped with the package.

The sample uses the same npz layout as the full copy (train_1.npz + test.npz + MANIFEST.json),
so ``load_cifar10("sample")`` goes through the very same reader and sha256 verification.
It takes the first k training images and first k/2 test images of every class, in original
order, with k as large as fits the size budget (5 MiB by default).

    python scripts/make_sample.py [SOURCE_DIR] [--out DIR] [--max-bytes N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from wrnlib.data import CIFAR10_CLASSES, load_cifar10  # noqa: E402  (needs the path above)

# (train, test) images per class, largest first; the first that fits the budget is used.
# 3,000 images of CIFAR-10 barely compress (about 2.8 kB each), so the larger ones do not fit 5 MiB.
PER_CLASS_CHOICES = ((200, 100), (150, 75), (120, 60), (100, 50))
MAX_BYTES = 5 * 1024 * 1024

README = """\
# CIFAR-10 sample shipped with wrnlib (NOT the benchmark)

A tiny, real subset of CIFAR-10 for smoke tests, CI and examples without the full data set:
the first {train} training images of each class ({n_train:,} images, from `train_1.npz`) and
the first {test} test images of each class ({n_test:,} images, from `test.npz`), in their
original order and unmodified. Same layout as the full copy, so the same loader reads it:
`load_cifar10("sample")` or `CIFAR10_DIR=sample`.

Accuracies measured on it say nothing about the benchmark; use the full 50,000/10,000 set
for results. `MANIFEST.json` records the source indices and every file's sha256.
Regenerate with `python scripts/make_sample.py ../shared/cifar10`.
"""


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of every class, in original order."""
    picked = [np.flatnonzero(labels == cls)[:per_class] for cls in range(len(CIFAR10_CLASSES))]
    if any(len(p) < per_class for p in picked):
        raise SystemExit(f"source has fewer than {per_class} images of some class")
    return np.sort(np.concatenate(picked))


def read_source(source: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(source / name, allow_pickle=False) as archive:
        return archive["images"], archive["labels"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sample(source: Path, out: Path, train_per_class: int, test_per_class: int) -> int:
    """Write the sample for one size choice into ``out``; return its total size in bytes."""
    # The sample comes from the first training file only: it holds ~1,000 images per class.
    parts = {"train_1.npz": train_per_class, "test.npz": test_per_class}
    files, provenance = {}, {}
    for name, per_class in parts.items():
        images, labels = read_source(source, name)
        indices = first_per_class(labels, per_class)
        np.savez_compressed(out / name, images=images[indices], labels=labels[indices])
        provenance[name] = {
            "source_file": name,
            "source_sha256": sha256_of(source / name),
            "source_indices": indices.tolist(),
        }
        files[name] = {
            "images": list(images[indices].shape),
            "sha256": sha256_of(out / name),
            "bytes": (out / name).stat().st_size,
        }
    manifest = {
        "dataset": "CIFAR-10 sample shipped with wrnlib: NOT the benchmark",
        "classes": list(CIFAR10_CLASSES),
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "train_images": train_per_class * len(CIFAR10_CLASSES),
        "test_images": test_per_class * len(CIFAR10_CLASSES),
        "layout": "train_1.npz, test.npz: images uint8 (N,32,32,3) HWC RGB, labels uint8 (N,)",
        "provenance": {
            "source": "the complete CIFAR-10 npz copy (train_1.npz = data_batch_1, test.npz = test_batch)",
            "selection": "first images of each class in original order; source_indices index the source file",
            "files": provenance,
        },
        "files": files,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    readme = README.format(
        train=train_per_class,
        test=test_per_class,
        n_train=manifest["train_images"],
        n_test=manifest["test_images"],
    )
    (out / "README.md").write_text(readme, encoding="utf-8")
    return sum(path.stat().st_size for path in out.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", default=str(REPO_ROOT.parent / "shared" / "cifar10"))
    parser.add_argument("--out", default=str(REPO_ROOT / "wrnlib" / "sample_data"))
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    args = parser.parse_args(argv)
    source, out = Path(args.source), Path(args.out)

    # Loading the full set first verifies its sha256 against its MANIFEST and checks its arrays.
    full = load_cifar10(source)
    print(f"source {full.source}: {len(full.train_labels)} train, {len(full.test_labels)} test")

    for train_pc, test_pc in PER_CLASS_CHOICES:
        with tempfile.TemporaryDirectory() as tmp:
            size = write_sample(source, Path(tmp), train_pc, test_pc)
            print(f"{train_pc}/{test_pc} per class: {size:,} bytes (budget {args.max_bytes:,})")
            if size > args.max_bytes:
                continue
            out.mkdir(parents=True, exist_ok=True)
            for path in Path(tmp).iterdir():
                (out / path.name).write_bytes(path.read_bytes())
        sample = load_cifar10(out)  # the written sample must pass the loader's own checks
        print(f"wrote {out}: {len(sample.train_labels)} train + {len(sample.test_labels)} test images")
        return 0
    raise SystemExit(f"no choice in {PER_CLASS_CHOICES} fits {args.max_bytes} bytes")


if __name__ == "__main__":
    sys.exit(main())
