"""Log feature density (paper Figure 5, Table 2 "Log FD")."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._arrays import to_numpy
from .._plot import new_figure, save_figure
from ._common import _positive_int

# ----------------------------------------------------------------------- feature density


@dataclass(frozen=True)
class LogFeatureDensity:
    """log10 activation density of each latent (paper Figure 5; Table 2 "Log FD")."""

    features: np.ndarray
    """``[n_alive]`` int64: ids of the latents that fired at least once, ascending."""
    log10_density: np.ndarray
    """``[n_alive]`` float64: ``log10(freq / n_rows)`` for ``features`` (all finite, <= 0)."""
    dead: np.ndarray
    """``[n_dead]`` int64: ids of latents that never fired (density 0, log undefined)."""
    n_latents: int
    """Number of latents n (alive + dead)."""
    n_rows: int
    """Number of rows (documents) the counts were taken over."""
    mean: float
    """Mean of ``log10_density`` over alive latents (NaN if all are dead)."""
    median: float
    """Median of ``log10_density`` over alive latents (NaN if all are dead)."""
    std: float
    """Population standard deviation of ``log10_density`` (NaN if all are dead)."""

    @property
    def n_dead(self) -> int:
        """Number of dead latents."""
        return int(self.dead.shape[0])

    @property
    def dead_fraction(self) -> float:
        """``n_dead / n_latents``."""
        return self.n_dead / self.n_latents


def log_feature_density(cooc_or_freq: Any, n_rows: int | None = None) -> LogFeatureDensity:
    """log10 density ``freq / n_rows`` of each latent that fires; dead latents counted apart.

    ``cooc_or_freq`` is a :class:`fastsae.Cooccurrence` (its ``freq`` and ``n_rows`` are used;
    ``n_rows`` may then be omitted, or must agree) or a ``[n]`` array of activation counts, in
    which case ``n_rows`` (the number of documents counted) is required.
    """
    if hasattr(cooc_or_freq, "freq") and hasattr(cooc_or_freq, "n_rows"):
        own = cooc_or_freq.n_rows
        if n_rows is not None and n_rows != own:
            raise ValueError(f"n_rows={n_rows!r} disagrees with the Cooccurrence's n_rows={own!r}")
        freq_in, n_rows = cooc_or_freq.freq, own
    else:
        if n_rows is None:
            raise ValueError("n_rows (the number of rows counted) is required when passing a frequency array")
        freq_in = cooc_or_freq
    n_rows = _positive_int(n_rows, "n_rows")

    freq = to_numpy(freq_in, "freq")
    if freq.dtype.kind not in "fiu" or freq.dtype == np.bool_:
        raise TypeError(f"freq must hold counts (integers or floats), got dtype {freq.dtype}")
    if freq.ndim != 1:
        raise ValueError(f"freq must be 1-dimensional [n_latents], got shape {tuple(freq.shape)}")
    if freq.size == 0:
        raise ValueError("freq is empty: need at least one latent")
    f = freq.astype(np.float64)
    if not np.isfinite(f).all():
        raise ValueError("freq contains NaN or inf")
    if (f < 0).any():
        raise ValueError(f"freq must be non-negative, got minimum {f.min()}")
    if (f > n_rows).any():
        raise ValueError(f"freq exceeds n_rows={n_rows} (maximum {f.max()}): a latent cannot fire in more rows than exist")

    alive = f > 0
    features = np.flatnonzero(alive).astype(np.int64)
    dead = np.flatnonzero(~alive).astype(np.int64)
    logd = np.log10(f[alive] / n_rows)
    if logd.size:
        mean, median, std = float(logd.mean()), float(np.median(logd)), float(logd.std())
    else:
        mean = median = std = math.nan
    return LogFeatureDensity(
        features=features,
        log10_density=logd,
        dead=dead,
        n_latents=int(f.size),
        n_rows=n_rows,
        mean=mean,
        median=median,
        std=std,
    )


def plot_log_density(
    results_by_label: Mapping[str, LogFeatureDensity], path: str | os.PathLike, *, bins: int = 50, dpi: int = 100
) -> str:
    """PNG of Figure 5: overlaid log10 feature density histograms (shared bins), one per SAE,
    each with its mean as a dashed line; the legend gives the mean and the dead count.
    Returns the path written."""
    if not isinstance(results_by_label, Mapping) or len(results_by_label) == 0:
        raise ValueError("results_by_label must be a non-empty mapping of label -> LogFeatureDensity")
    for label, r in results_by_label.items():
        if not isinstance(r, LogFeatureDensity):
            raise TypeError(f"results_by_label[{label!r}] must be a LogFeatureDensity, got {type(r).__name__}")
    bins = _positive_int(bins, "bins")
    values = [r.log10_density for r in results_by_label.values() if r.log10_density.size]
    fig, ax = new_figure(7, 4, layout="constrained")
    if values:
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    colors = [f"C{i % 10}" for i in range(len(results_by_label))]
    for color, (label, r) in zip(colors, results_by_label.items()):
        dead = f", {r.n_dead} dead" if r.n_dead else ""
        if r.log10_density.size == 0:
            ax.plot([], [], color=color, label=f"{label} (all {r.n_latents} dead)")
            continue
        ax.hist(r.log10_density, bins=edges, alpha=0.45, color=color, label=f"{label} (mean {r.mean:.2f}{dead})")
        ax.axvline(r.mean, color=color, ls="--", lw=1)
    ax.set_xlabel("log10 feature density")
    ax.set_ylabel("latents")
    ax.set_title("Log feature density", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=dpi)
