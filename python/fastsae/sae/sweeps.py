"""Sweeps over (k, n) and the paper's scaling laws (appendix A.3, Table 2, Figure 4).

``sweep`` trains one SAE per (k, n) on the same data (each run checkpointed and resumable;
finished runs are reused), writes Table 2 (nMSE, mean log10 feature density, mean non-zero
activation) as CSV and Markdown, fits L(n) = c * n^-alpha per k and L(C) = a * C^b per k
against training FLOPs (R^2 and bootstrap confidence intervals), and draws both as PNGs.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .._checks import check_int
from .._plot import new_figure, save_figure
from ..io import atomic_write, atomic_write_text
from .config import TrainConfig
from .trainer import train


@dataclass
class PowerLawFit:
    """``y = coef * x ** exponent``, fitted by least squares in log-log space."""

    coef: float
    exponent: float
    r2: float
    """Coefficient of determination of the log-log fit."""
    exponent_ci: tuple[float, float]
    """95% bootstrap percentile interval of the exponent (nan when too few points)."""
    coef_ci: tuple[float, float]
    n_points: int

    def __call__(self, x):
        return self.coef * np.asarray(x, dtype=np.float64) ** self.exponent

    def formula(self, var: str = "n") -> str:
        return f"L({var}) = {self.coef:.3g} {var}^{self.exponent:+.3f}"


def fit_power_law(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> PowerLawFit:
    """Fit ``y = c x^b`` (log-log least squares) with R^2 and bootstrap 95% intervals."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D of equal length")
    if len(x) < 2 or len(np.unique(x)) < 2:
        raise ValueError("a power law needs at least two distinct x values")
    if np.any(x <= 0) or np.any(y <= 0) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("power-law fits need finite, positive x and y")
    lx, ly = np.log(x), np.log(y)
    b, a = np.polyfit(lx, ly, 1)
    resid = ly - (a + b * lx)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if len(np.unique(lx[i])) < 2:
            continue  # a resample with one distinct x has no slope
        bb, aa = np.polyfit(lx[i], ly[i], 1)
        boots.append((bb, aa))
    if len(boots) >= 20 and len(x) >= 3:
        bs = np.array(boots)
        exp_ci = tuple(np.percentile(bs[:, 0], [2.5, 97.5]).tolist())
        coef_ci = tuple(np.exp(np.percentile(bs[:, 1], [2.5, 97.5])).tolist())
    else:
        exp_ci = coef_ci = (float("nan"), float("nan"))
    return PowerLawFit(float(np.exp(a)), float(b), r2, exp_ci, coef_ci, len(x))


@dataclass
class SweepRun:
    k: int
    n_latents: int
    nmse: float
    """Held-out normalised MSE at the end of training."""
    log10_density: float
    """Mean over latents of log10(activation density) on the held-out rows."""
    mean_activation: float
    """Mean non-zero activation on the held-out rows."""
    dead_fraction: float
    flops: float
    """Training FLOPs (6 d (n + k) per example)."""
    steps: int
    model_dir: str


@dataclass
class SweepResult:
    runs: list[SweepRun]
    fits_n: dict[int, PowerLawFit] = field(default_factory=dict)
    """L(n) per k (k with at least two sizes)."""
    fits_flops: dict[int, PowerLawFit] = field(default_factory=dict)
    """L(C) per k."""
    files: dict[str, str] = field(default_factory=dict)
    """Written outputs: table2.csv, table2.md, fits.json, scaling_n.png, scaling_flops.png."""


def sweep(data: Any, ks: Sequence[int], ns: Sequence[int], out_dir: str, *, eval_data: Any = None,
          figures: bool = True, **train_kwargs) -> SweepResult:
    """Train every (k, n) with ``TrainConfig(n_latents=n, k=k, **train_kwargs)`` into
    ``out_dir/k{k}_n{n}/`` and summarise. Rerunning continues unfinished runs and reuses
    finished ones (their ``result.json``)."""
    if not ks or not ns:
        raise ValueError("ks and ns must be non-empty")
    ks = [check_int(k, "ks[]", min=1) for k in ks]
    ns = [check_int(n, "ns[]", min=1) for n in ns]
    pairs = [(k, n) for k in ks for n in ns if k < n]
    if not pairs:
        raise ValueError("no (k, n) with k < n")
    for k, n in pairs:  # validate every config before training anything
        TrainConfig(n_latents=n, k=k, **train_kwargs)
    os.makedirs(out_dir, exist_ok=True)
    runs = []
    for k, n in pairs:
        run_dir = os.path.join(out_dir, f"k{k}_n{n}")
        done = os.path.join(run_dir, "result.json")
        if os.path.exists(done):
            with open(done) as f:
                runs.append(SweepRun(**json.load(f)))
            continue
        cfg = TrainConfig(n_latents=n, k=k, checkpoint_dir=os.path.join(run_dir, "checkpoints"), resume=True,
                          **train_kwargs)
        res = train(data, cfg, eval_data=eval_data)
        model_dir = os.path.join(run_dir, "model")
        res.sae.save(model_dir)
        last = res.history[-1]
        run = SweepRun(k, n, last.get("nmse_eval", last["nmse"]), last.get("log10_density_eval", float("nan")),
                       last.get("mean_activation_eval", float("nan")), last["dead_fraction"], last["flops"],
                       res.steps, model_dir)
        atomic_write_text(done, json.dumps(asdict(run), indent=2) + "\n")
        runs.append(run)
    result = SweepResult(runs)
    for k in sorted({r.k for r in runs}):
        rk = sorted((r for r in runs if r.k == k), key=lambda r: r.n_latents)
        if len({r.n_latents for r in rk}) >= 2 and all(r.nmse > 0 for r in rk):
            result.fits_n[k] = fit_power_law([r.n_latents for r in rk], [r.nmse for r in rk])
            result.fits_flops[k] = fit_power_law([r.flops for r in rk], [r.nmse for r in rk])
    result.files = write_sweep_outputs(result, out_dir, figures=figures)
    return result


def write_sweep_outputs(result: SweepResult, out_dir: str, *, figures: bool = True) -> dict[str, str]:
    files = {}
    rows = sorted(result.runs, key=lambda r: (r.k, r.n_latents))
    csv_path = os.path.join(out_dir, "table2.csv")

    def write_csv(p):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["k", "n", "nmse", "log10_feature_density", "activation_mean", "dead_fraction", "flops", "steps"])
            for r in rows:
                w.writerow([r.k, r.n_latents, f"{r.nmse:.6g}", f"{r.log10_density:.4g}", f"{r.mean_activation:.4g}",
                            f"{r.dead_fraction:.4g}", f"{r.flops:.4g}", r.steps])

    atomic_write(csv_path, write_csv)
    files["table2.csv"] = csv_path
    md = ["| k | n | nMSE | log feature density | activation mean |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r.k} | {r.n_latents} | {r.nmse:.4f} | {r.log10_density:.2f} | {r.mean_activation:.3f} |" for r in rows]
    atomic_write_text(os.path.join(out_dir, "table2.md"), "\n".join(md) + "\n")
    files["table2.md"] = os.path.join(out_dir, "table2.md")
    fits = {
        "L(n)": {str(k): asdict(f) | {"formula": f.formula("n")} for k, f in result.fits_n.items()},
        "L(C)": {str(k): asdict(f) | {"formula": f.formula("C")} for k, f in result.fits_flops.items()},
    }
    atomic_write_text(os.path.join(out_dir, "fits.json"), json.dumps(fits, indent=2) + "\n")
    files["fits.json"] = os.path.join(out_dir, "fits.json")
    if figures:
        files.update(plot_scaling(result, out_dir))
    return files


def plot_scaling(result: SweepResult, out_dir: str) -> dict[str, str]:
    """Figure 4: nMSE against n (left) and against training FLOPs (right), per k, log-log."""
    out = {}
    for key, attr, fits, xlabel, var in (
        ("scaling_n.png", "n_latents", result.fits_n, "number of latents n", "n"),
        ("scaling_flops.png", "flops", result.fits_flops, "training compute C (FLOPs)", "C"),
    ):
        fig, ax = new_figure(5.5, 4)
        for i, k in enumerate(sorted({r.k for r in result.runs})):
            rk = sorted((r for r in result.runs if r.k == k), key=lambda r: getattr(r, attr))
            x = np.array([getattr(r, attr) for r in rk], dtype=float)
            y = np.array([r.nmse for r in rk])
            color = f"C{i}"
            ax.scatter(x, y, color=color, zorder=3)
            label = f"k={k}"
            if k in fits:
                xs = np.geomspace(x.min(), x.max(), 50)
                ax.plot(xs, fits[k](xs), color=color)
                label += f": {fits[k].formula(var)} (R²={fits[k].r2:.3f})"
            ax.plot([], [], color=color, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("normalised MSE")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        out[key] = save_figure(fig, os.path.join(out_dir, key), dpi=130)
    return out


def load_sweep(out_dir: str) -> list[SweepRun]:
    """The finished runs of a sweep directory."""
    runs = []
    for name in sorted(os.listdir(out_dir)):
        p = os.path.join(out_dir, name, "result.json")
        if os.path.exists(p):
            with open(p) as f:
                runs.append(SweepRun(**json.load(f)))
    return runs


__all__ = ["PowerLawFit", "SweepResult", "SweepRun", "fit_power_law", "load_sweep", "plot_scaling", "sweep"]
