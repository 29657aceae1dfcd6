"""Scores of one feature's predictions, the summary over features, and the Fig. 7 histogram.

Paper, appendix A.2: the Pearson correlation between the Predictor's confidence and the
binary truth (+1 activates, -1 does not), and the F1 score of "active if confidence > 0".
Documents whose answer could not be parsed are left out of both scores (and counted as
parse failures); they are never replaced by a guess.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np


def pearson(predictions: Sequence[float], truth: Sequence[float]) -> float:
    """Pearson correlation of two equal-length vectors; NaN when undefined (fewer than 2
    points, or a constant vector, e.g. a Predictor that gave every document the same score)."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"predictions and truth must be 1-D of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = math.sqrt(float(dx @ dx)), math.sqrt(float(dy @ dy))
    # Relative tolerance: a vector whose spread is rounding noise is constant.
    if sx <= 1e-12 * max(1.0, float(np.abs(x).max())) or sy <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return math.nan
    return float(min(1.0, max(-1.0, float(dx @ dy) / (sx * sy))))


def f1(predictions: Sequence[float], truth: Sequence[float], threshold: float = 0.0) -> float:
    """F1 of "active if prediction > threshold" against "active if truth > 0"; 0 when there are
    no true and no predicted positives (scikit-learn's ``zero_division=0`` convention)."""
    p = np.asarray(predictions, dtype=np.float64) > threshold
    t = np.asarray(truth, dtype=np.float64) > 0
    if p.shape != t.shape:
        raise ValueError(f"predictions and truth must have equal length, got {p.shape} and {t.shape}")
    tp = int(np.sum(p & t))
    denom = int(np.sum(p)) + int(np.sum(t))
    return 2.0 * tp / denom if denom else 0.0


def score(predictions: Sequence[float | None], truth: Sequence[int]) -> tuple[float, float, int]:
    """(pearson, f1, n_scored) over the documents with a parsed prediction (``None`` = failure)."""
    pairs = [(p, t) for p, t in zip(predictions, truth) if p is not None]
    if not pairs:
        return math.nan, math.nan, 0
    ps, ts = [p for p, _ in pairs], [t for _, t in pairs]
    return pearson(ps, ts), f1(ps, ts), len(pairs)


def _finite(xs: Iterable) -> list[float]:
    return [float(x) for x in xs if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]


def _reason_kind(reason: str) -> str:
    # "too few activating documents: 3 (8 needed ...)" -> "too few activating documents"
    return re.split(r":", reason, maxsplit=1)[0].strip()


def summarize(records: Sequence[dict]) -> dict:
    """Counts, medians and totals over result records (the dicts written to ``labels.jsonl``)."""
    pear = _finite(r.get("pearson") for r in records)
    f1s = _finite(r.get("f1") for r in records)
    skipped = [r for r in records if r.get("skipped")]
    labelled = [r for r in records if r.get("label")]
    reasons = Counter(_reason_kind(r["skipped"]) for r in skipped)
    pf_interp = sum(int(r.get("parse_failures_interpreter", 0) or 0) for r in records)
    pf_pred = sum(int(r.get("parse_failures_predictor", 0) or 0) for r in records)

    def stat(fn, xs):
        return float(fn(xs)) if xs else None

    return {
        "n_features": len(records),
        "n_labelled": len(labelled),
        "n_scored": len(pear),
        "n_skipped": len(skipped),
        "skipped_reasons": dict(sorted(reasons.items())),
        "pearson_undefined": sum(1 for r in labelled if r.get("pearson") is None),
        "median_pearson": stat(np.median, pear),
        "mean_pearson": stat(np.mean, pear),
        "median_f1": stat(np.median, f1s),
        "mean_f1": stat(np.mean, f1s),
        "fraction_pearson_ge_0.8": (sum(1 for x in pear if x >= 0.8) / len(pear)) if pear else None,
        "parse_failures": {"total": pf_interp + pf_pred, "interpreter": pf_interp, "predictor": pf_pred,
                           "features_affected": sum(1 for r in records if r.get("parse_failures"))},
        "parse_retries": sum(int(r.get("parse_retries", 0) or 0) for r in records),
        "tokens": {"prompt": sum(int(r.get("prompt_tokens", 0) or 0) for r in records),
                   "completion": sum(int(r.get("completion_tokens", 0) or 0) for r in records),
                   "total": sum(int(r.get("tokens", 0) or 0) for r in records)},
        "cost": round(sum(float(r.get("cost", 0.0) or 0.0) for r in records), 8),
    }


def pearson_histogram_png(values: Sequence[float], *, title: str = "Automated interpretability") -> bytes:
    """PNG bytes of the Fig. 7-style histogram of per-feature Pearson correlations."""
    from .._plot import figure_png, new_figure

    xs = np.asarray(_finite(values), dtype=np.float64)
    fig, ax = new_figure(6.0, 4.0)
    fig.set_dpi(120)  # drawn (and laid out) at the resolution it is saved at
    ax.hist(xs, bins=np.linspace(-1.0, 1.0, 41), color="#4C72B0", edgecolor="white", linewidth=0.5)
    if len(xs):
        med = float(np.median(xs))
        ax.axvline(med, color="#C44E52", linestyle="--", linewidth=1.5, label=f"median {med:.2f}")
        ax.legend(loc="upper left", frameon=False)
    ax.set_xlim(-1.0, 1.0)
    ax.set_xlabel("Pearson correlation (predicted vs. true activation)")
    ax.set_ylabel("features")
    ax.set_title(f"{title} (n = {len(xs)})")
    return figure_png(fig, dpi=120)
