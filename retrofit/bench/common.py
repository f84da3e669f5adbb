"""Timing, memory and machine-report helpers shared by the benchmarks."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from retrofit.dtypes import torch_dtype


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a number was measured: host, CPU count, load average, torch version / threads, GPU name."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        # other processes competing for the CPUs make every CPU number noisier
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def summarize(samples_s: list[float]) -> dict[str, float]:
    """Median and spread of repeated timings (seconds)."""
    ordered = sorted(samples_s)
    return {
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "spread_pct": 100.0 * (ordered[-1] - ordered[0]) / max(statistics.median(ordered), 1e-12),
        "repeats": len(ordered),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time (s) of one ``fn()`` call, with the CUDA device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_calls(fn: Callable[[int], Any], *, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Run `fn(i)` warmup + repeats times; return the wall times (s) of the timed calls."""
    for i in range(warmup):
        fn(i)
    return [time_once(lambda i=i: fn(warmup + i), device) for i in range(repeats)]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device):
    """Yield a dict that holds, after the block, ``peak_mib`` and ``transient_mib`` (MiB).

    CUDA: ``peak_mib`` = torch.cuda.max_memory_allocated during the block (everything resident
    included), ``transient_mib`` = that minus the memory allocated at entry. CPU: both are the
    peak RSS above the RSS at entry (sampled every 5 ms; approximate).
    """
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        peak = torch.cuda.max_memory_allocated(device)
        result.update(
            peak_mib=peak / 2**20, transient_mib=(peak - start) / 2**20, kind="cuda max_memory_allocated"
        )
        return
    base, peak, stop = _rss_bytes(), [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        above = max(peak[0] - base, 0) / 2**20
        result.update(peak_mib=above, transient_mib=above, kind="cpu rss above start (sampled)")


def resident_mib(*objects: Any) -> float:
    """MiB held by the parameters (and their .grad) of modules and the state of optimizers, each
    storage counted once."""
    seen, total = set(), 0
    tensors: list[torch.Tensor] = []
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                tensors += [p] + ([p.grad] if p.grad is not None else [])
        elif isinstance(obj, torch.optim.Optimizer):
            tensors += [v for state in obj.state.values() for v in state.values() if torch.is_tensor(v)]
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / 2**20


def release_memory(device: torch.device | str = "cpu") -> None:
    """Free cached memory between benchmark variants so each one's peak starts from a clean state.

    Runs the garbage collector, then empties the CUDA cache (CUDA) or asks glibc to return freed
    heap pages to the OS (CPU; `malloc_trim`, skipped where libc lacks it).
    """
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        return
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch CPU threads (None = unchanged), restoring them after.

    On a shared 2-core machine 1 thread can beat 2: OpenMP workers spin while other processes
    hold the cores.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_dtype(name: str) -> torch.dtype:
    """Torch dtype of a `--dtype` spelling (any of `retrofit.dtypes`; the benchmarks use fp32 / bf16).

    Raises:
        ValueError: an unknown spelling.
    """
    return torch_dtype(name, "--dtype")


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast context on ``device`` when dtype is bf16, else a no-op context."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)
    return path


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain-text table of `rows` restricted to `columns` (floats with 3 significant digits)."""

    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(b[i].ljust(w) for i, w in enumerate(widths)) for b in body]
    return "\n".join(lines)
