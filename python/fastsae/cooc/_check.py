"""Validation of co-occurrence results (:class:`fastsae.Cooccurrence`) and their ``.npz`` files.

Two levels:

* :func:`check_structure` -- types, dtypes kinds, shapes and the raw structure of sparse
  matrices: what every reader needs before touching the arrays (O(n + nnz), run whenever a
  result is built or consumed);
* :func:`check_contents` -- the invariants every true result satisfies (non-negative integer
  counts, ``C_ii = freq_i``, ``C_ij <= min(freq_i, freq_j)``, symmetry, finite non-negative D,
  ``D_ij = 0`` where ``C_ij = 0``, ``0 <= freq <= n_rows``): run on what comes from outside
  (a loaded file, a merged result), so a damaged one is refused instead of silently summed.

Dense checks of int64 C / float64 D run in the native core (one tiled pass, the transpose read
tile by tile, OpenMP); other dtypes and layouts take an equivalent numpy pass over square tiles
(bounded temporaries). Both report the same first violation.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import _native
from .._arrays import check_sparse, sparse_csr

#: Tile side of the numpy dense check: 1024 x 1024 x 8 bytes = 8 MB per temporary.
_BLOCK = 1024
#: D is summed in different orders on the two sides of the diagonal only after a multi-rank
#: all-reduce; exact symmetry holds everywhere else. Relative tolerance for that case.
_SYM_RTOL = 1e-9


def _int_scalar(x: Any, name: str) -> int:
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    return int(x)


def check_structure(counts: Any, act_sim: Any, freq: Any, n_rows: Any) -> None:
    """Types, shapes and sparse structure of the four fields (no value is trusted yet)."""
    if not isinstance(freq, np.ndarray):
        raise TypeError(f"freq must be a numpy array, got {type(freq).__name__}")
    if freq.ndim != 1:
        raise ValueError(f"freq must be 1-dimensional [n_latents], got shape {freq.shape}")
    if freq.dtype.kind not in "iu":
        raise TypeError(f"freq must hold integer counts, got dtype {freq.dtype}")
    _int_scalar(n_rows, "n_rows")
    n = freq.shape[0]
    sparse = [sp.issparse(m) for m in (counts, act_sim)]
    if sparse[0] != sparse[1]:
        raise TypeError("counts and act_sim must be both dense arrays or both scipy sparse matrices")
    for m, name, kinds in ((counts, "counts", "iu"), (act_sim, "act_sim", "iuf")):
        if sparse[0]:
            check_sparse(m, name, kinds=kinds)
            shape = m.shape
        else:
            if not isinstance(m, np.ndarray):
                raise TypeError(f"{name} must be a numpy array or scipy sparse matrix, got {type(m).__name__}")
            if m.dtype.kind not in kinds:
                raise TypeError(f"{name} must hold {'integer counts' if kinds == 'iu' else 'real numbers'}, got dtype {m.dtype}")
            shape = m.shape
        if tuple(shape) != (n, n):
            raise ValueError(f"{name} has shape {tuple(shape)}, expected ({n}, {n}) to match freq")


def _fail(where: str, msg: str) -> None:
    raise ValueError(f"{where}{msg}")


def check_contents(counts: Any, act_sim: Any, freq: np.ndarray, n_rows: Any, where: str = "") -> None:
    """The invariants of a true result (after :func:`check_structure`); ``where`` prefixes errors."""
    check_structure(counts, act_sim, freq, n_rows)
    n_rows = _int_scalar(n_rows, "n_rows")
    if n_rows < 0:
        _fail(where, f"n_rows = {n_rows} is negative")
    f = freq.astype(np.int64)
    bad = np.flatnonzero((freq < 0) | (freq > n_rows))
    if bad.size:
        _fail(where, f"freq[{bad[0]}] = {freq[bad[0]]} is outside [0, n_rows={n_rows}]")
    if sp.issparse(counts):
        _check_sparse_contents(sparse_csr(counts, "counts"), sparse_csr(act_sim, "act_sim"), f, where)
    else:
        _check_dense_contents(counts, act_sim, f, where)


# Dense checks report the first violation in row-major order (smallest (i, j); at one position,
# the first kind listed here), after the diagonal. Both paths below give the same answer.
_DENSE_MESSAGES = {
    "negative_count": "counts hold a negative count",
    "count_above_min_freq": "counts exceed min(freq_i, freq_j)",
    "counts_asymmetric": "counts are not symmetric",
    "act_sim_not_finite": "act_sim holds a NaN or infinite value",
    "act_sim_negative": "act_sim holds a negative value",
    "act_sim_without_count": "act_sim is non-zero where counts are 0",
    "act_sim_asymmetric": "act_sim is not symmetric",
}
_DENSE_KINDS = tuple(_DENSE_MESSAGES)
#: The native pass (csrc/cooc_check.cpp) runs when C is C-contiguous int64 and D C-contiguous
#: float64, the layout of every loaded or accumulated result. Tests set this to False to run
#: the numpy path on the same inputs.
_USE_NATIVE = True


def _check_dense_contents(C: np.ndarray, D: np.ndarray, f: np.ndarray, where: str) -> None:
    found = _first_dense_violation(C, D, f)
    if found is None:
        return
    kind, i, j = found
    if kind == "diagonal_not_freq":
        _fail(where, f"counts[{i}, {i}] = {C[i, i]} differs from freq[{i}] = {f[i]}")
    _fail(where, f"{_DENSE_MESSAGES[kind]} at ({i}, {j})")


def _first_dense_violation(C: np.ndarray, D: np.ndarray, f: np.ndarray) -> tuple[str, int, int] | None:
    """(kind, i, j) of the first violated invariant, or None."""
    if (_USE_NATIVE and C.dtype == np.int64 and D.dtype == np.float64 and C.flags.c_contiguous
            and D.flags.c_contiguous and C.shape == D.shape == (f.shape[0], f.shape[0])):
        kind, i, j = _native.check_dense_cooc(C, D, np.ascontiguousarray(f, dtype=np.int64), _SYM_RTOL)
        return None if kind == "ok" else (kind, int(i), int(j))
    return _first_dense_violation_numpy(C, D, f)


def _first_dense_violation_numpy(C: np.ndarray, D: np.ndarray, f: np.ndarray) -> tuple[str, int, int] | None:
    n = f.shape[0]
    bad = np.flatnonzero(np.diagonal(C) != f)
    if bad.size:
        return "diagonal_not_freq", int(bad[0]), int(bad[0])
    # Square tiles: the mirror tile C[c:e, a:b] is read as _BLOCK contiguous row segments
    # (a column slice C[:, a:b] over all n rows was most of the cost). A row block's candidates
    # are all gathered before comparing, since a later tile may hold an earlier row.
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        found: list[tuple[int, int, int]] = []  # (i, j, kind index)
        for c0 in range(0, n, _BLOCK):
            c1 = min(n, c0 + _BLOCK)
            c, d = C[a:b, c0:c1], D[a:b, c0:c1]
            ct, dt = C[c0:c1, a:b].T, D[c0:c1, a:b].T
            if d.dtype.kind != "f":  # compare as the native pass does (no unsigned wrap-around)
                d, dt = d.astype(np.float64), dt.astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                masks = (
                    c < 0,
                    c > np.minimum(f[a:b, None], f[None, c0:c1]),
                    c != ct,
                    ~np.isfinite(d),
                    d < 0,
                    (c == 0) & (d != 0),
                    np.abs(d - dt) > _SYM_RTOL * np.maximum(np.abs(d), np.abs(dt)),
                )
            for k, mask in enumerate(masks):
                if mask.any():
                    r, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
                    found.append((a + int(r), c0 + int(col), k))
        if found:
            i, j, k = min(found)
            return _DENSE_KINDS[k], i, j
    return None


def _check_sparse_contents(C: sp.csr_matrix, D: sp.csr_matrix, f: np.ndarray, where: str) -> None:
    rows = np.repeat(np.arange(C.shape[0], dtype=np.int64), np.diff(C.indptr))
    cols = C.indices.astype(np.int64)
    c = C.data
    diag = C.diagonal()
    bad = np.flatnonzero(diag != f)
    if bad.size:
        i = int(bad[0])
        _fail(where, f"counts[{i}, {i}] = {diag[i]} differs from freq[{i}] = {f[i]}")
    for mask, msg in ((c < 0, "counts hold a negative count"),
                      (c > np.minimum(f[rows], f[cols]), "counts exceed min(freq_i, freq_j)")):
        if mask.any():
            p = int(np.argmax(mask))
            _fail(where, f"{msg} at ({rows[p]}, {cols[p]})")
    d = D.data
    drows = np.repeat(np.arange(D.shape[0], dtype=np.int64), np.diff(D.indptr))
    for mask, msg in ((~np.isfinite(d), "act_sim holds a NaN or infinite value"), (d < 0, "act_sim holds a negative value")):
        if mask.any():
            p = int(np.argmax(mask))
            _fail(where, f"{msg} at ({drows[p]}, {D.indices[p]})")
    # D may be non-zero only where C is (no co-firing row, empty sum).
    if D.nnz:
        c_at_d = np.asarray(C[drows, D.indices.astype(np.int64)]).ravel()
        mask = (c_at_d == 0) & (d != 0)
        if mask.any():
            p = int(np.argmax(mask))
            _fail(where, f"act_sim is non-zero where counts are 0 at ({drows[p]}, {D.indices[p]})")
    for M, name, exact in ((C, "counts", True), (D, "act_sim", False)):
        # Canonical CSR of M and of its transpose: symmetric iff the same arrays.
        T = M.T.tocsr()
        T.sum_duplicates()
        Mr = np.repeat(np.arange(M.shape[0], dtype=np.int64), np.diff(M.indptr))
        if not np.array_equal(M.indptr, T.indptr) or not np.array_equal(M.indices, T.indices):
            row = int(np.argmax(np.diff(M.indptr) != np.diff(T.indptr))) if not np.array_equal(M.indptr, T.indptr) \
                else int(Mr[np.argmax(M.indices != T.indices)])
            _fail(where, f"{name} is not symmetric (its stored pattern differs from its transpose's in row {row})")
        a_, b_ = M.data.astype(np.float64), T.data.astype(np.float64)
        bad = a_ != b_ if exact else np.abs(a_ - b_) > _SYM_RTOL * np.maximum(np.abs(a_), np.abs(b_))
        if bad.any():
            p = int(np.argmax(bad))
            _fail(where, f"{name} is not symmetric at ({Mr[p]}, {M.indices[p]})")


# ----------------------------------------------------------------------------------------------
# Reading a saved result. Each member's .npy header is checked against the zip entry before
# numpy allocates anything (a flipped bit in a shape would otherwise allocate terabytes); a
# flipped bit in the data fails the zip's CRC.

_DENSE_KEYS = {"format", "freq", "n_rows", "counts", "act_sim"}
_CSR_KEYS = _DENSE_KEYS | {"indptr", "indices"}
_DTYPES = {"freq": "iu", "n_rows": "iu", "counts": "iu", "act_sim": "f", "indptr": "iu", "indices": "iu", "format": "U"}
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, OverflowError,
                zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError,
                RuntimeError)  # zipfile: a flipped flag bit reads as "encrypted, password required"


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> np.ndarray:
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ValueError(f"member {info.filename} declares {info.file_size} bytes but stores {info.compress_size}")
    if info.compress_size > archive_size:
        raise ValueError(f"member {info.filename} is larger than the file")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"member {info.filename} has unsupported .npy version {version}")
        if dtype.hasobject:
            raise ValueError(f"member {info.filename} holds Python objects")
        header = fh.tell()
    expect = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if expect != info.file_size - header:
        raise ValueError(f"member {info.filename}: header says {shape} {dtype} ({expect} bytes) "
                         f"but {info.file_size - header} bytes are stored")
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a co-occurrence ``.npz``; ``ValueError`` naming ``path`` for anything
    unreadable, missing, extra or of the wrong dtype."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
                raise ValueError(f"unexpected members {sorted(names)}")
            arrays = {i.filename[:-4]: _read_member(zf, i, size) for i in infos}
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: not a readable co-occurrence file ({type(e).__name__}: {e})") from e
    fmt = arrays.get("format")
    if fmt is None or fmt.dtype.kind != "U" or fmt.shape != () or str(fmt) not in ("dense", "csr"):
        raise ValueError(f"{path}: corrupt co-occurrence file (missing or unknown 'format')")
    want = _DENSE_KEYS if str(fmt) == "dense" else _CSR_KEYS
    if set(arrays) != want:
        missing, extra = sorted(want - set(arrays)), sorted(set(arrays) - want)
        raise ValueError(f"{path}: corrupt co-occurrence file (missing keys {missing}, unexpected keys {extra})")
    for key, kinds in _DTYPES.items():
        if key in arrays and (arrays[key].dtype.kind not in kinds or arrays[key].dtype == np.bool_):
            raise ValueError(f"{path}: corrupt co-occurrence file ({key} has dtype {arrays[key].dtype})")
    if arrays["n_rows"].shape != ():
        raise ValueError(f"{path}: corrupt co-occurrence file (n_rows has shape {arrays['n_rows'].shape})")
    return arrays
