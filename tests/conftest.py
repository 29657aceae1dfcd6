"""Shared helpers: independent references (scipy.sparse, numpy) and code generators."""

from __future__ import annotations

import os

import torch

# Triton kernels run on CPU tensors under the interpreter; it must be on before any kernel is
# defined (fastsae imports its kernel modules lazily, so setting it here is early enough).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
import subprocess
import sys
from pathlib import Path

# The tests mirror the package (tests/sae/, tests/cooc/, ...); shared helper modules (the
# loopback LLM server, the DevTools client, autointerp fixtures) live in tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import numpy as np
import pytest
import scipy.sparse as sp


def random_codes(rng, n_rows, k, n_latents, *, index_dtype=np.int64, value_dtype=np.float32, pad_frac=0.2):
    """[n_rows, k] codes: distinct ids per row, some entries padding (value exactly 0)."""
    k_eff = min(k, n_latents)
    idx = np.argsort(rng.random((n_rows, n_latents)), axis=1)[:, :k_eff]
    if k_eff < k:  # more slots than latents: the rest is padding repeating a valid id
        idx = np.concatenate([idx, np.repeat(idx[:, :1], k - k_eff, axis=1)], axis=1)
    val = rng.uniform(0.05, 3.0, size=(n_rows, k))
    val[:, k_eff:] = 0.0
    val[rng.random((n_rows, k)) < pad_frac] = 0.0
    return idx.astype(index_dtype), val.astype(value_dtype)


def scipy_reference(indices, values, n_latents):
    """C, D, freq from sparse matrix products A^T A and B^T B (float64)."""
    indices = np.asarray(indices, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    active = values > 0
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])[active.ravel()]
    cols = indices.ravel()[active.ravel()]
    shape = (indices.shape[0], n_latents)
    A = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=shape)
    B = sp.csr_matrix((values.ravel()[active.ravel()], (rows, cols)), shape=shape)
    C = (A.T @ A).toarray().astype(np.int64)
    D = (B.T @ B).toarray()
    freq = np.asarray(A.sum(axis=0)).ravel().astype(np.int64)
    return C, D, freq


def run_python(code: str, *, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (crash isolation, thread-count control)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
