"""Checks of the inputs of :func:`interpret_features` / :func:`interpret_families` (texts,
codes, feature ids, embeddings, families), each before any work starts."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .._checks import check_int
from .sampling import Unit


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__") or not hasattr(texts, "__getitem__"):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: there are no documents to interpret features with")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return texts


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the caller's bad input
        raise TypeError(f"{name} cannot be read as an array: {e}") from e


def _check_codes(codes: Any, n_docs: int, n_latents: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    if hasattr(codes, "indices") and hasattr(codes, "values") and not isinstance(codes, Mapping):
        idx, val = codes.indices, codes.values
    elif isinstance(codes, (tuple, list)) and len(codes) == 2:
        idx, val = codes
    else:
        raise TypeError("codes must be a fastsae.SparseCode (indices [N, k], values [N, k]) or an "
                        f"(indices, values) pair of arrays, got {type(codes).__name__}")
    idx, val = _to_numpy(idx, "codes.indices"), _to_numpy(val, "codes.values")
    if idx.ndim != 2 or val.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"codes.indices and codes.values must both be [N, k]; got {idx.shape} and {val.shape}")
    if idx.shape[0] != n_docs:
        raise ValueError(f"codes has {idx.shape[0]} rows but there are {n_docs} texts (row i must encode texts[i])")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"codes.indices must be integers, got {idx.dtype}")
    if not (np.issubdtype(val.dtype, np.floating) or np.issubdtype(val.dtype, np.integer)):
        raise TypeError(f"codes.values must be numbers, got {val.dtype}")
    if val.size and not np.all(np.isfinite(val)):
        raise ValueError("codes.values holds NaN or infinite activations")
    if val.size and val.min() < 0:
        raise ValueError("codes.values holds negative activations (top-k codes are >= 0; 0 marks an empty slot)")
    active = val > 0
    if n_latents is None:
        n_latents = int(idx[active].max()) + 1 if active.any() else 1
    check_int(n_latents, "n_latents", min=1)
    if active.any():
        lo, hi = int(idx[active].min()), int(idx[active].max())
        if lo < 0 or hi >= n_latents:
            raise ValueError(f"codes.indices holds latent ids in [{lo}, {hi}], outside [0, {n_latents}) "
                             "(is n_latents right?)")
    return idx, val, int(n_latents)


def _check_features(features: Any, n_latents: int) -> list[int]:
    if features is None:
        return list(range(n_latents))
    if isinstance(features, (int, np.integer)) and not isinstance(features, bool):
        features = [features]
    try:
        feats = list(np.asarray(features).ravel().tolist()) if hasattr(features, "__array__") else list(features)
    except TypeError:
        raise TypeError(f"features must be a list of latent ids, got {type(features).__name__}") from None
    out: dict[int, None] = {}  # an ordered set: order kept, repeats dropped
    for f in feats:
        if not _is_int(f):
            raise TypeError(f"features must be integer latent ids, got {f!r}")
        f = int(f)
        if f < 0 or f >= n_latents:
            raise ValueError(f"feature {f} is outside [0, {n_latents})")
        out[f] = None
    if not out:
        raise ValueError("features is empty")
    return list(out)


def _check_embeddings(embeddings: Any, n_docs: int) -> np.ndarray:
    E = embeddings if isinstance(embeddings, np.ndarray) else _to_numpy(embeddings, "embeddings")
    if E.ndim != 2 or E.shape[0] != n_docs:
        raise ValueError(f"embeddings must be [N, d] with N = {n_docs} (one row per text), got {E.shape}")
    if not np.issubdtype(E.dtype, np.number):
        raise TypeError(f"embeddings must be numeric, got {E.dtype}")
    return E


def _family_units(families: Any, n_latents: int) -> list[Unit]:
    if isinstance(families, Mapping) and "families" in families:
        families = families["families"]
    if isinstance(families, (str, bytes)) or not hasattr(families, "__iter__"):
        raise TypeError("families must be a list of {'parent', 'children'} (or objects with .parent/.children)")
    units = []
    for i, f in enumerate(families):
        if isinstance(f, Mapping):
            if "parent" not in f or "children" not in f:
                raise ValueError(f"families[{i}] lacks 'parent' or 'children'")
            parent, children = f["parent"], f["children"]
        elif hasattr(f, "parent") and hasattr(f, "children"):
            parent, children = f.parent, f.children
        else:
            raise TypeError(f"families[{i}] is {type(f).__name__}: need 'parent' and 'children'")
        ids = [parent, *list(children)]
        for x in ids:
            if not _is_int(x):
                raise TypeError(f"families[{i}] holds a non-integer latent id {x!r}")
            if not 0 <= int(x) < n_latents:
                raise ValueError(f"families[{i}] holds latent {int(x)}, outside [0, {n_latents})")
        parent = int(parent)
        kids: list[int] = []
        for c in children:
            c = int(c)
            if c != parent and c not in kids:
                kids.append(c)
        units.append(Unit(key=i, members=(parent, *kids), sources=tuple(kids) or (parent,), family=i))
    if not units:
        raise ValueError("families is empty")
    return units
