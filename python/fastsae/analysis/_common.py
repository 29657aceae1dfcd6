"""What the analyses share: argument checks (through :mod:`fastsae._checks`), weight and code
inputs (torch for the splitting analyses, numpy for geometry), blocked tiles of cosines, and the
figure helper on top of :mod:`fastsae._plot`."""

from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .._arrays import to_numpy
from .._checks import check_int, check_number
from .._plot import new_figure

_PNG_DPI = 120
"""Resolution of the splitting figures."""


# ----------------------------------------------------------------------------- scalar arguments


def _positive_int(x: Any, name: str) -> int:
    """An int >= 1: the type through :func:`fastsae._checks.check_int` (TypeError), the value
    with the analyses' own wording (ValueError)."""
    v = check_int(x, name)
    if v < 1:
        raise ValueError(f"{name} must be a positive int, got {v}")
    return v


def _finite_float(x: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    """A finite number in ``[lo, hi]``."""
    return check_number(x, name, min=lo, max=hi)


# ----------------------------------------------------------------------------- torch weights and codes


def _weights(W: Any, name: str, input_space: bool = False) -> torch.Tensor:
    """``W`` as a 2-D floating torch tensor with finite entries and no zero rows (not normalised).

    A module gives its ``W_dec`` (its standardised space), or with ``input_space`` its
    ``feature_directions()`` (the input space, comparable across standardisations)."""
    if isinstance(W, torch.nn.Module):
        if not hasattr(W, "W_dec"):
            raise TypeError(f"{name}: a module must have a W_dec decoder matrix (e.g. fastsae.TopKSAE)")
        W = W.feature_directions() if input_space and hasattr(W, "feature_directions") else W.W_dec
    if isinstance(W, torch.Tensor):
        t = W.detach()
    else:
        try:
            a = np.asarray(W)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be a torch tensor, numpy array or TopKSAE, got {type(W).__name__}") from exc
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-dimensional [n_features, d] matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); it needs at least one feature and one dimension")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite entries")
    return t


def _compute_dtype(*ts: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _pick_device(device, *inputs) -> torch.device:
    if device is not None:
        return torch.device(device)
    for x in inputs:
        if isinstance(x, torch.nn.Module) and hasattr(x, "W_dec"):
            x = x.W_dec
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


def _unit_rows(t: torch.Tensor, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = t.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(t, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        first = int(torch.nonzero(zero)[0, 0])
        raise ValueError(f"{name} has {int(zero.sum())} all-zero rows (first: row {first}); their cosine is undefined")
    return t / norms[:, None]


def _unit_rows_or_zero(W: Any) -> np.ndarray:
    """Rows of ``W`` (numpy, memmap or torch) scaled to unit norm, float32; all-zero rows stay
    zero (the report's neighbours of a dead latent are then arbitrary, not an error)."""
    a = W.detach().cpu().numpy() if isinstance(W, torch.Tensor) else np.asarray(W)
    a = a.astype(np.float32)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)


def _prepared(named: Sequence[tuple[Any, str]], device=None, input_space: bool = False) -> list[torch.Tensor]:
    """Checked, unit-row versions of several weight matrices sharing one dtype, device and d."""
    raw = [_weights(W, name, input_space) for W, name in named]
    d = {t.shape[1] for t in raw}
    if len(d) > 1:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for t, (_, name) in zip(raw, named))
        raise ValueError(f"the weight matrices must share the embedding dimension d: {shapes}")
    dtype = _compute_dtype(*raw)
    dev = _pick_device(device, *(W for W, _ in named))
    return [_unit_rows(t, name, dtype, dev) for t, (_, name) in zip(raw, named)]


def _ids(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """1-D int64 ids (each in ``[0, n)`` when ``n`` is given)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional list of feature ids, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer feature ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0 or (n is not None and a.max() >= n):
        bound = f"[0, {n})" if n is not None else ">= 0"
        raise ValueError(f"{name} has ids out of range (must be {bound}; min {a.min()}, max {a.max()})")
    return a


class _Codes(NamedTuple):
    rows: np.ndarray  # int64 document of each non-zero entry
    cols: np.ndarray  # int64 feature id of each non-zero entry
    vals: np.ndarray  # float64 activation of each non-zero entry
    n_docs: int


def _codes(codes: Any, name: str) -> _Codes:
    """Non-zero entries of top-k codes (a SparseCode or an (indices, values) pair)."""
    if not (isinstance(codes, tuple) and len(codes) == 2):
        raise TypeError(f"{name} must be a fastsae.SparseCode or an (indices, values) pair, got {type(codes).__name__}")
    idx, val = codes

    def np_of(x, what):
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.is_floating_point() and x.dtype != torch.float64:
                x = x.float()
            return x.cpu().numpy()
        return np.asarray(x)

    idx, val = np_of(idx, "indices"), np_of(val, "values")
    if idx.ndim != 2 or val.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"{name}: indices and values must both be [N, k] with the same shape, "
                         f"got {idx.shape} and {val.shape}")
    if idx.shape[0] == 0:
        raise ValueError(f"{name} holds no documents (0 rows)")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}: indices must be integers, got dtype {idx.dtype}")
    if val.dtype.kind not in "fiu":
        raise TypeError(f"{name}: values must be real numbers, got dtype {val.dtype}")
    val = val.astype(np.float64, copy=False)
    if not np.isfinite(val).all():
        raise ValueError(f"{name}: values hold {int((~np.isfinite(val)).sum())} NaN or infinite entries")
    nz = val != 0
    flat_nz = np.flatnonzero(nz)
    cols = idx.reshape(-1)[flat_nz].astype(np.int64)
    if cols.size and cols.min() < 0:
        raise ValueError(f"{name}: indices of non-zero activations must be >= 0, found {cols.min()}")
    rows = flat_nz // idx.shape[1]
    return _Codes(rows.astype(np.int64), cols, val.reshape(-1)[flat_nz], int(idx.shape[0]))


def _select_docs(c: _Codes, rows: np.ndarray | None, name: str) -> _Codes:
    """The codes restricted to documents ``rows`` (renumbered 0..len(rows)-1, in that order)."""
    if rows is None:
        return c
    rows = _ids(rows, name, c.n_docs)
    if rows.size == 0:
        raise ValueError(f"{name} selects no documents")
    # A document may be listed more than once: expand through a sorted lookup.
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    lo = np.searchsorted(sorted_rows, c.rows, side="left")
    hi = np.searchsorted(sorted_rows, c.rows, side="right")
    reps = hi - lo
    entry = np.repeat(np.arange(len(c.rows)), reps)
    pos = np.arange(entry.size) - np.repeat(np.cumsum(reps) - reps, reps)
    new_rows = order[np.repeat(lo, reps) + pos]
    return _Codes(new_rows.astype(np.int64), c.cols[entry], c.vals[entry], int(rows.size))


# ----------------------------------------------------------------------------- numpy weights, cosine tiles

#: Tile edge for blocked decoder cosines: a tile is ``block_size**2`` floats (128 MiB in float64).
DEFAULT_BLOCK_SIZE = 4096


def _as_weights(w: Any, name: str) -> np.ndarray:
    """``[n, d]`` float32/float64 numpy array with finite entries and ``n, d >= 1``."""
    a = to_numpy(w, name)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional [n_latents, d_in], got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}); need at least one latent and one dimension")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        raise ValueError(f"{name} contains NaN or inf in {bad.size} row(s), first latent {int(bad[0])}")
    return a


def _row_norms(a: np.ndarray, name: str) -> np.ndarray:
    """float64 row norms; a zero row has no direction, so no cosine: reject it."""
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{name} has {zero.size} all-zero row(s) (first latent {int(zero[0])}); "
            f"the cosine of a zero vector is undefined"
        )
    return norms


def _unit_rows_np(a: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit norm, in ``a``'s dtype (a copy)."""
    return (a / _row_norms(a, name)[:, None]).astype(a.dtype, copy=False)


def _blocks(n: int, block_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def _tiles(unit: np.ndarray, block_size: int) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """Upper-triangular tiles ``(i0, i1, j0, j1, S)`` of the cosine matrix, ``j0 >= i0``,
    ``S = unit[i0:i1] @ unit[j0:j1].T``; row blocks in order, column blocks in order."""
    blocks = _blocks(unit.shape[0], block_size)
    for bi, (i0, i1) in enumerate(blocks):
        rows = unit[i0:i1]
        for j0, j1 in blocks[bi:]:
            yield i0, i1, j0, j1, rows @ unit[j0:j1].T


def _correlation(fn, x: np.ndarray, y: np.ndarray, tol: float) -> tuple[float, float]:
    """(statistic, p-value) of a scipy.stats correlation of two cosine arrays; NaN (without
    scipy's warning) when either spans no more than ``tol``, i.e. is constant up to rounding."""
    if x.size < 2 or np.ptp(x) <= tol or np.ptp(y) <= tol:
        return math.nan, math.nan
    r = fn(x, y)
    return float(r.statistic), float(r.pvalue)


# ----------------------------------------------------------------------------- figures


def figure_row(ncols: int = 1, *, width: float = 5.0, height: float = 3.8):
    """``(fig, [axes...])``: ``ncols`` axes side by side, each ``width x height`` inches, on
    :func:`fastsae._plot.new_figure`'s Agg canvas.

    The histograms of the analyses clip to their range: a cosine of 1 may round to 1 + 1e-16 and
    would otherwise fall outside the last bin."""
    fig, axes = new_figure(width * ncols, height, ncols=ncols)
    return fig, (axes if isinstance(axes, list) else [axes])
