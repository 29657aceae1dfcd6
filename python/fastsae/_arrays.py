"""Conversion of user inputs (numpy arrays, memmaps, torch tensors) for the native core.

The native core accepts only C-contiguous CPU arrays of a few dtypes and raises on anything
else; this module turns what users reasonably pass into that, and rejects the rest with a
message naming the argument.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np
import scipy.sparse as sp

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch" and hasattr(x, "detach")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy view of ``x`` (a torch tensor is detached and moved to the CPU)."""
    if is_torch_tensor(x):
        import torch

        t = x.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()  # exact: every bf16/fp16 value is a float32 value
        return t.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def as_indices(x: Any, name: str = "indices") -> np.ndarray:
    a = to_numpy(x, name)
    if a.dtype in _INDEX_DTYPES:
        return np.ascontiguousarray(a)
    if a.dtype.kind in "iu":
        if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds values beyond int64")
        return np.ascontiguousarray(a, dtype=np.int64)
    raise TypeError(f"{name} must hold integers (int32 or int64), got dtype {a.dtype}")


def as_values(x: Any, name: str = "values") -> np.ndarray:
    a = to_numpy(x, name)
    if a.dtype in _VALUE_DTYPES:
        return np.ascontiguousarray(a)
    if a.dtype == np.float16:
        return np.ascontiguousarray(a, dtype=np.float32)
    raise TypeError(f"{name} must hold floats (float32 or float64), got dtype {a.dtype}")


def check_codes_shape(indices: np.ndarray, values: np.ndarray) -> None:
    if indices.ndim != 2 or values.ndim != 2:
        raise ValueError(
            f"indices and values must be 2-dimensional [B, k], got shapes {indices.shape} and {values.shape}"
        )
    if indices.shape != values.shape:
        raise ValueError(f"indices and values must have the same [B, k] shape, got {indices.shape} and {values.shape}")


def check_n_latents(n_latents: Any) -> int:
    if isinstance(n_latents, bool) or not isinstance(n_latents, (int, np.integer)):
        raise TypeError(f"n_latents must be an int, got {type(n_latents).__name__}")
    if n_latents <= 0:
        raise ValueError(f"n_latents must be positive, got {n_latents}")
    if n_latents >= 2**31:
        raise ValueError(f"n_latents must be < 2**31, got {n_latents}")
    return int(n_latents)


def release_pages(chunk: np.ndarray) -> None:
    """Drop the resident pages of a chunk of a read-only/shared ``np.memmap``.

    Streaming over a file-backed memmap would otherwise leave every page it touched resident
    in this process, so memory would grow with the number of rows. The data stays in the
    file (and the OS page cache); a later access faults it back in.
    """
    m = getattr(chunk, "_mmap", None)
    if m is None or getattr(chunk, "mode", "r") not in ("r", "r+", "readonly", "readwrite"):
        return
    try:
        base = np.frombuffer(m, dtype=np.uint8).ctypes.data
        start = chunk.ctypes.data - base
        end = start + chunk.nbytes
        page = mmap.PAGESIZE
        lo = (start // page) * page
        hi = min(len(m), -(-end // page) * page)
        if hi > lo:
            m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - best effort only
        pass


# ----------------------------------------------------------------------------------------------
# Structural validation of scipy sparse matrices.
#
# scipy trusts the structure of a sparse matrix: its C++ routines (canonicalisation, format
# conversion, even the ``has_canonical_format`` property) index memory through ``indptr`` and
# ``indices`` without bounds checks, so a matrix whose attributes were set by hand can make
# them write out of bounds or allocate gigabytes. Every sparse input is therefore checked here,
# on its raw attributes, before any scipy method touches it. All checks are vectorised: O(nnz +
# rows) numpy passes, negligible next to whatever the caller then does with the matrix.

_INT64_MAX = np.iinfo(np.int64).max
_KIND_WORDS = {"iu": "integers"}


def available_memory() -> int | None:
    """Bytes the kernel reports as available (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_allocation(nbytes: int, what: str) -> None:
    """MemoryError naming ``what`` when ``nbytes`` exceeds the available memory."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what} needs {nbytes / 2**30:.1f} GiB but about {avail / 2**30:.1f} GiB is available")


def _first(mask: np.ndarray) -> int | None:
    if not mask.size:
        return None
    p = int(np.argmax(mask))
    return p if mask[p] else None


def _raw_index_array(a: Any, name: str) -> np.ndarray:
    """A 1-D integer ndarray (signed view: unsigned values beyond int64 are refused)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {a.shape}")
    if a.dtype.kind not in "iu" or a.dtype == np.bool_:
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.dtype.itemsize >= 8 and a.size:
        p = _first(a > _INT64_MAX)
        if p is not None:
            raise ValueError(f"{name}[{p}] = {a[p]} is beyond int64")
    return a


def _raw_values(a: Any, name: str, n: int, kinds: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in kinds:
        raise TypeError(f"{name} must hold {_KIND_WORDS.get(kinds, 'real numbers')}, got dtype {a.dtype}")
    if a.shape[:1] != (n,):
        raise ValueError(f"{name} has shape {a.shape}, expected {n} entries to match the indices")
    return a


def _check_shape(matrix: Any, name: str) -> tuple[int, int]:
    shape = getattr(matrix, "_shape", None)
    if shape is None:
        shape = matrix.shape
    if not isinstance(shape, tuple) or len(shape) != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {shape}")
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 or s > _INT64_MAX:
            raise ValueError(f"{name} has an invalid shape {shape}")
    return int(shape[0]), int(shape[1])


def _check_compressed(name: str, indptr: Any, indices: Any, major: int, minor: int, major_name: str) -> None:
    """indptr / indices of a CSR (major = rows) or CSC (major = columns) structure."""
    indptr = _raw_index_array(indptr, f"{name}.indptr")
    indices = _raw_index_array(indices, f"{name}.indices")
    if indptr.shape[0] != major + 1:
        raise ValueError(f"{name}.indptr has {indptr.shape[0]} entries, expected {major + 1} (one per {major_name} + 1)")
    if indptr[0] != 0:
        raise ValueError(f"{name}.indptr must start at 0, got {indptr[0]}")
    p = _first(indptr[1:] < indptr[:-1])  # no subtraction: it could wrap for unsigned or huge values
    if p is not None:
        raise ValueError(
            f"{name}.indptr is not non-decreasing at position {p + 1} ({indptr[p]} > {indptr[p + 1]})"
        )
    nnz = indices.shape[0]
    if int(indptr[-1]) != nnz:
        raise ValueError(f"{name}.indptr ends at {indptr[-1]} but {name}.indices holds {nnz} entries")
    p = _first((indices < 0) | (indices >= minor))
    if p is not None:
        at = int(np.searchsorted(indptr, p, side="right")) - 1
        raise ValueError(
            f"{name}.indices[{p}] = {indices[p]} is outside [0, {minor}) (in {major_name} {at})"
        )


def _check_coords(name: str, coords: Any, shape: tuple[int, int]) -> int:
    if not isinstance(coords, tuple) or len(coords) != 2:
        raise ValueError(f"{name} must have 2 coordinate arrays (row, col)")
    row = _raw_index_array(coords[0], f"{name}.row")
    col = _raw_index_array(coords[1], f"{name}.col")
    if row.shape != col.shape:
        raise ValueError(f"{name}.row has {row.shape[0]} entries but {name}.col has {col.shape[0]}")
    for arr, axis, dim in ((row, "row", shape[0]), (col, "col", shape[1])):
        p = _first((arr < 0) | (arr >= dim))
        if p is not None:
            raise ValueError(f"{name}.{axis}[{p}] = {arr[p]} is outside [0, {dim})")
    return int(row.shape[0])


def check_sparse(matrix: Any, name: str, *, square: bool = False, kinds: str = "biuf") -> str:
    """Check the structure of a scipy sparse matrix on its raw attributes; returns its format.

    CSR, CSC, COO, BSR and DIA are checked in place; LIL's row lists are checked before any
    conversion; DOK (a dict) is checked after conversion to COO. ``kinds``: the numpy dtype
    kinds allowed for the values (default real numbers and booleans). Errors name the array
    and the first bad position.
    """
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy sparse matrix, got {type(matrix).__name__}")
    fmt = getattr(matrix, "format", None)
    shape = _check_shape(matrix, name)
    if square and shape[0] != shape[1]:
        raise ValueError(f"{name} must be square, got shape {shape}")
    if fmt in ("csr", "csc"):
        major, minor = shape if fmt == "csr" else shape[::-1]
        _check_compressed(name, matrix.indptr, matrix.indices, major, minor, "row" if fmt == "csr" else "column")
        _raw_values(matrix.data, f"{name}.data", matrix.indices.shape[0], kinds)
        if matrix.data.ndim != 1:
            raise ValueError(f"{name}.data must be 1-dimensional, got shape {matrix.data.shape}")
    elif fmt == "coo":
        coords = getattr(matrix, "coords", None)
        if coords is None:
            coords = (matrix.row, matrix.col)
        nnz = _check_coords(name, coords, shape)
        _raw_values(matrix.data, f"{name}.data", nnz, kinds)
        if matrix.data.ndim != 1:
            raise ValueError(f"{name}.data must be 1-dimensional, got shape {matrix.data.shape}")
    elif fmt == "bsr":
        data = matrix.data
        if not isinstance(data, np.ndarray) or data.ndim != 3:
            raise ValueError(f"{name}.data must be a 3-dimensional array of blocks")
        r, c = int(data.shape[1]), int(data.shape[2])
        if r < 1 or c < 1 or shape[0] % r or shape[1] % c:
            raise ValueError(f"{name} has blocks of {r}x{c}, which do not tile its shape {shape}")
        _check_compressed(name, matrix.indptr, matrix.indices, shape[0] // r, shape[1] // c, "block row")
        _raw_values(data, f"{name}.data", matrix.indices.shape[0], kinds)
    elif fmt == "dia":
        data, offsets = matrix.data, _raw_index_array(matrix.offsets, f"{name}.offsets")
        if not isinstance(data, np.ndarray) or data.ndim != 2:
            raise ValueError(f"{name}.data must be a 2-dimensional array (one row per diagonal)")
        _raw_values(data, f"{name}.data", offsets.shape[0], kinds)
        p = _first((offsets <= -max(shape[0], 1)) | (offsets >= max(shape[1], 1)))
        if p is not None:
            raise ValueError(f"{name}.offsets[{p}] = {offsets[p]} is outside ({-shape[0]}, {shape[1]})")
    elif fmt == "lil":
        rows, data = matrix.rows, matrix.data
        for arr, what in ((rows, "rows"), (data, "data")):
            if not isinstance(arr, np.ndarray) or arr.shape != (shape[0],):
                raise ValueError(f"{name}.{what} must be an array of {shape[0]} lists")
        for i in range(shape[0]):
            ri, di = rows[i], data[i]
            if not isinstance(ri, list) or not isinstance(di, list) or len(ri) != len(di):
                raise ValueError(f"{name}.rows[{i}] and {name}.data[{i}] must be lists of one length")
            if ri:
                cols = np.asarray(ri)
                if cols.dtype.kind not in "iu":
                    raise TypeError(f"{name}.rows[{i}] must hold integer column indices")
                p = _first((cols < 0) | (cols >= shape[1]))
                if p is not None:
                    raise ValueError(f"{name}.rows[{i}][{p}] = {cols[p]} is outside [0, {shape[1]})")
        if np.dtype(matrix.dtype).kind not in kinds:
            raise TypeError(f"{name} must hold {_KIND_WORDS.get(kinds, 'real numbers')}, got dtype {matrix.dtype}")
    elif fmt == "dok":
        check_sparse(_dok_to_coo(matrix, name, shape), name, square=square, kinds=kinds)
    else:
        raise TypeError(f"{name}: unsupported sparse format {fmt!r}; convert it to CSR or COO")
    return fmt


def _dok_to_coo(matrix: Any, name: str, shape: tuple[int, int]) -> sp.coo_matrix:
    """DOK is a dict of (i, j) -> value: read it in Python (no native code trusts it)."""
    keys = list(dict.keys(matrix))
    try:
        ij = np.array(keys, dtype=np.int64).reshape(len(keys), 2)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{name} has keys that are not (row, col) integer pairs") from e
    vals = np.array(list(dict.values(matrix)), dtype=matrix.dtype)
    out = sp.coo_matrix(shape, dtype=matrix.dtype)
    out.data, out.coords = vals, (ij[:, 0].copy(), ij[:, 1].copy())
    return out


def sparse_coo(matrix: Any, name: str, *, square: bool = False, kinds: str = "biuf"):
    """``(row, col, data, shape)`` of a validated sparse matrix: int64 coordinates, raw data
    (duplicates are not summed; no conversion allocates more than O(nnz))."""
    fmt = check_sparse(matrix, name, square=square, kinds=kinds)
    shape = _check_shape(matrix, name)
    if fmt in ("csr", "csc"):
        indptr = matrix.indptr.astype(np.int64)
        major = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
        minor = matrix.indices.astype(np.int64)
        row, col = (major, minor) if fmt == "csr" else (minor, major)
        return row, col, matrix.data, shape
    if fmt == "coo":
        coords = getattr(matrix, "coords", None) or (matrix.row, matrix.col)
        return coords[0].astype(np.int64), coords[1].astype(np.int64), matrix.data, shape
    if fmt == "dok":
        m = _dok_to_coo(matrix, name, shape)
    elif fmt == "dia":
        # scipy converts DIA through CSR, one index per row: read the diagonals directly.
        data, offsets = matrix.data, matrix.offsets.astype(np.int64)
        cols = np.arange(min(data.shape[1], shape[1]), dtype=np.int64)
        r = cols[None, :] - offsets[:, None]
        keep = (r >= 0) & (r < shape[0])
        return r[keep], np.broadcast_to(cols, r.shape)[keep], data[:, : cols.shape[0]][keep], shape
    else:  # bsr, dia, lil: structure checked above, so scipy's conversion is safe
        m = matrix.tocoo()
        check_sparse(m, name, square=square, kinds=kinds)
    return m.row.astype(np.int64), m.col.astype(np.int64), m.data, shape


def sparse_csr(matrix: Any, name: str, *, square: bool = False, kinds: str = "biuf", dtype: Any = None) -> sp.csr_matrix:
    """A validated, canonical (sorted, duplicate-free) CSR matrix of any sparse input.

    The input is never modified; a valid canonical CSR is wrapped without copying its arrays
    (except for a dtype change). Converting to CSR allocates one index per row: a shape with
    more rows than memory allows raises ``MemoryError`` naming ``name``.
    """
    fmt = check_sparse(matrix, name, square=square, kinds=kinds)
    shape = _check_shape(matrix, name)
    # A CSR (and what callers derive from it: transposes, per-row arrays) holds a few arrays
    # of one entry per row: refuse up front an order that memory cannot hold 4 times over,
    # rather than have the process killed halfway.
    check_allocation(4 * 8 * (max(shape) + 1), f"{name}: a CSR matrix of shape {shape}")
    if fmt == "csr":
        indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    else:
        row, col, data, _ = sparse_coo(matrix, name, square=square, kinds=kinds)
        order = np.lexsort((col, row))
        row, indices, data = row[order], col[order], data[order]
        indptr = np.zeros(shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=shape[0]), out=indptr[1:])
    # One index dtype for both arrays (scipy's routines require it), wide enough for both.
    idx = np.int32 if max(shape) < 2**31 and indices.shape[0] < 2**31 else np.int64
    indptr = indptr.astype(idx, copy=False)
    indices = indices.astype(idx, copy=False)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    rows_of = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(indptr))
    canonical = not ((rows_of[1:] == rows_of[:-1]) & (indices[1:] <= indices[:-1])).any()
    # The constructor's own (shallow) check is safe on the validated arrays; it copies nothing.
    out = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    if not canonical:
        out = out.copy()  # sum_duplicates works in place: never on the caller's arrays
        out.sum_duplicates()
    out.has_canonical_format = True
    return out
