"""Shared helpers for the benchmark scripts: cached generated codes, peak memory, machine info."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("FASTSAE_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} {platform.machine()}"


def zipf_memmap(n_rows: int, n_latents: int, k: int, alpha: float, seed: int = 0):
    """[n_rows, k] int32 indices and float32 values with Zipf(alpha) frequencies, cached on disk."""
    from fastsae.synthetic import zipf_codes

    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"zipf_N{n_rows}_n{n_latents}_k{k}_a{alpha}_s{seed}"
    pi, pv, done = CACHE / f"{tag}_i.npy", CACHE / f"{tag}_v.npy", CACHE / f"{tag}.done"
    if not done.exists():
        print(f"generating {tag} (once; cached in {CACHE})", flush=True)
        I = np.lib.format.open_memmap(pi, mode="w+", dtype=np.int32, shape=(n_rows, k))
        V = np.lib.format.open_memmap(pv, mode="w+", dtype=np.float32, shape=(n_rows, k))
        step = 100_000
        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            i, v = zipf_codes(b - a, n_latents, k, alpha=alpha, seed=seed * 1_000_003 + a + 1, law_seed=seed)
            I[a:b], V[a:b] = i, v
        I.flush(), V.flush()
        del I, V
        done.touch()
    return np.load(pi, mmap_mode="r"), np.load(pv, mmap_mode="r")


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(fn, repeat: int = 1):
    """(best seconds, last result) over ``repeat`` runs."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def save_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **payload}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)  # a run killed mid-write leaves the previous file, never half of one
    return path
