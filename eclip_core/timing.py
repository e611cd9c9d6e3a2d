"""Cost measurements: medians of repeated calls, ratios to one forward pass, peak memory.

The benchmarks (``benchmarks/``) and the book's cost figures use these functions, so the
figures they print are measured the same way. Ratios to one ``encode_image`` of the same
batch, measured in the same run, are what carry across machines; absolute times do not.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_seconds(model: Any, images: torch.Tensor, repeats: int = 3) -> float:
    """Median time of one ``encode_image`` of ``images`` (the model's preprocessed input)
    without autograd: the unit of cost."""
    from .models import as_model

    clip = as_model(model)
    with torch.no_grad():
        return median_seconds(lambda: clip.encode_image(images), repeats)


def random_targets(k: int, dim: int, seed: int = 0, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """(K, dim) random unit vectors (seeded), on ``like``'s device and dtype if given."""
    t = F.normalize(torch.randn(k, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return t if like is None else t.to(device=like.device, dtype=like.dtype)


def explain_cost(model: Any, images: torch.Tensor, targets: Any, method: str, *, forward: float,
                 repeats: int = 3, **options: Any) -> float:
    """Median time of ``explain(model, images, targets, method, **options)`` divided by
    ``forward`` (see :func:`forward_seconds`, measured in the same run)."""
    from .explainers import explain

    return median_seconds(lambda: explain(model, images, targets, method, **options), repeats) / forward


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


try:
    import os as _os

    _PAGE = _os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):
    _PAGE = 4096


def _trim() -> None:
    """Give freed heap memory back to the system (glibc), so that a call's resident peak is
    not hidden in memory that earlier calls freed but the process kept."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu",
                interval: float = 0.002) -> int | None:
    """Bytes ``fn()`` needed above what was in use when it started, at its peak.

    On CUDA: the allocator's peak (``max_memory_allocated``) minus its use at the start.
    On the CPU: the process's resident memory, sampled every ``interval`` seconds by a
    thread while ``fn`` runs, minus the resident memory at the start, after freed heap
    memory is given back to the system (Linux; ``None`` where ``/proc/self/statm`` cannot
    be read). Run once, not a median; memory the allocator keeps cached between calls can
    still hide part of a peak, so measure in a fresh process where it matters.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    _trim()
    base = _resident_bytes()
    if base is None:
        return None
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _resident_bytes() or 0)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak = max(peak, _resident_bytes() or 0)
    return peak - base
