"""The device a run trains on: which one, in which precision, how it is named in the record, and a CPU tweak."""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import setting


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is visible; use {setting('device', 'cpu')} "
                         f"or auto")
    return device


def cpu_bf16_support() -> dict[str, bool]:
    """What torch says this CPU computes natively in bf16: AMX tiles (Intel Sapphire Rapids and
    later) and the AVX512-BF16 dot products (Intel Cooper Lake and later, AMD Zen 4 and later).
    Probed through torch, not /proc; a torch that lacks a probe reports False for it."""
    def probe(name: str) -> bool:
        check = getattr(torch.cpu, name, None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return {"amx_bf16": probe("_is_amx_tile_supported"), "avx512_bf16": probe("_is_avx512_bf16_supported")}


def choose_precision(precision: str, device: torch.device) -> tuple[bool, str]:
    """(bf16 autocast?, why) for a config's ``precision`` on ``device``.

    ``auto`` is bf16 on CUDA and on a CPU that computes bf16 natively; elsewhere fp32, because
    bf16 autocast emulated on a CPU without those instructions is slower than fp32 (pytorch
    issues 86270, 118499).
    """
    if precision != "auto":
        return precision == "bf16", f"{'bf16 autocast' if precision == 'bf16' else 'fp32'} (asked for)"
    if device.type == "cuda":
        return True, "bf16 autocast (auto: a CUDA GPU)"
    support = cpu_bf16_support()
    native = [label for key, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if support[key]]
    if native:
        return True, f"bf16 autocast (auto: this CPU computes bf16 natively, {' and '.join(native)})"
    return False, "fp32 (auto: this CPU has no native bf16, AMX or AVX512-BF16, where bf16 would be slower)"


_KEPT = False


def keep_freed_memory() -> bool:
    """Keep freed buffers in this process's heap instead of handing them back to the OS (glibc).

    A CPU training step frees and reallocates tens of MB of activations. glibc serves blocks over
    its mmap threshold with fresh mappings and unmaps them when freed, so every step faults them
    back in page by page, and the kernel zeroes each page: about 21,000 page faults per WRN-16-2
    step at batch 128. Raising the mmap and trim thresholds (mallopt) keeps those pages mapped for
    reuse; the process keeps its high-water mark of memory. Process-wide, and the same advice as
    using jemalloc or tcmalloc for PyTorch on CPUs. Linux with glibc only (True when applied);
    ``WRNLIB_KEEP_FREED_MEMORY=0`` turns it off.
    """
    global _KEPT
    if _KEPT:
        return True
    if os.environ.get("WRNLIB_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    _KEPT = bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))
    return _KEPT


# --------------------------------------------------------------------------- names for the record


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's marketing name where the OS tells it (for the record only), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def cpu_capability() -> dict[str, Any]:
    """What torch's CPU kernels can use here: its vector ISA and the native bf16 units."""
    return {"model": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability(), **cpu_bf16_support(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
