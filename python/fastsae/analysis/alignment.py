"""Encoder/decoder alignment (paper appendix A.4, Figure 18)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.stats

from .._plot import new_figure, save_figure
from ._common import (
    DEFAULT_BLOCK_SIZE,
    _as_weights,
    _blocks,
    _correlation,
    _positive_int,
    _row_norms,
    _tiles,
)

# --------------------------------------------------------------- encoder/decoder alignment


@dataclass(frozen=True)
class EncoderDecoderAlignment:
    """Encoder-decoder cosines against feature distinctiveness (paper Figure 18)."""

    enc_dec_cosine: np.ndarray
    """``[n]`` float64: cosine between latent i's encoder row and its decoder row."""
    max_other_cosine: np.ndarray
    """``[n]`` float64: largest (signed) decoder cosine between latent i and any other latent."""
    nearest_other: np.ndarray
    """``[n]`` int64: the other latent attaining ``max_other_cosine`` (lowest index on ties)."""
    mean_enc_dec_cosine: float
    """Mean of ``enc_dec_cosine`` (0.57 for SAE64 on cs.LG in the paper)."""
    mean_max_other_cosine: float
    """Mean of ``max_other_cosine``."""
    spearman: float
    """Spearman rank correlation of ``enc_dec_cosine`` with ``max_other_cosine`` (NaN if either
    is constant up to rounding: spread <= 64 machine epsilons of the weights' dtype)."""
    spearman_pvalue: float
    """Two-sided p-value of ``spearman`` (scipy.stats.spearmanr)."""
    pearson: float
    """Pearson correlation of ``enc_dec_cosine`` with ``max_other_cosine`` (NaN as for ``spearman``)."""
    pearson_pvalue: float
    """Two-sided p-value of ``pearson`` (scipy.stats.pearsonr)."""

    @property
    def n_latents(self) -> int:
        """Number of latents n."""
        return int(self.enc_dec_cosine.shape[0])


def encoder_decoder_alignment(W_enc: Any, W_dec: Any, *, block_size: int = DEFAULT_BLOCK_SIZE) -> EncoderDecoderAlignment:
    """Per latent: cos(encoder row, decoder row) and the max decoder cosine to another latent.

    ``W_enc`` and ``W_dec`` are ``[n, d]`` (numpy or torch, e.g. ``sae.W_enc``, ``sae.W_dec``);
    decoder rows need not be unit norm. The max over other latents is computed in
    ``block_size`` tiles (each pair once, using symmetry), in the weights' precision
    (float32 stays float32); the diagonal (a latent with itself) is excluded. Needs n >= 2.
    """
    block_size = _positive_int(block_size, "block_size")
    enc = _as_weights(W_enc, "W_enc")
    dec = _as_weights(W_dec, "W_dec")
    if enc.shape != dec.shape:
        raise ValueError(
            f"W_enc and W_dec must have the same shape [n_latents, d_in], got {tuple(enc.shape)} and {tuple(dec.shape)}"
        )
    n = dec.shape[0]
    if n < 2:
        raise ValueError("need at least 2 latents to compare a latent with the others, got 1")
    enc_norm = _row_norms(enc, "W_enc")
    dec_norm = _row_norms(dec, "W_dec")

    enc_dec = np.empty(n, dtype=np.float64)
    for i0, i1 in _blocks(n, block_size):
        dots = np.einsum("ij,ij->i", enc[i0:i1], dec[i0:i1], dtype=np.float64)
        enc_dec[i0:i1] = dots / (enc_norm[i0:i1] * dec_norm[i0:i1])

    unit = (dec / dec_norm[:, None]).astype(dec.dtype, copy=False)
    best = np.full(n, -np.inf, dtype=np.float64)
    arg = np.full(n, -1, dtype=np.int64)
    # Candidates for latent f arrive in increasing index order (column updates from earlier row
    # blocks, then f's own row block left to right), so strict ">" keeps the lowest index on ties.
    for i0, i1, j0, j1, s in _tiles(unit, block_size):
        s = s.astype(np.float64, copy=False)
        if i0 == j0:
            np.fill_diagonal(s, -np.inf)
        else:  # the transposed tile: column latents see row latents
            cmax_at = np.argmax(s, axis=0)
            cmax = s[cmax_at, np.arange(j1 - j0)]
            upd = cmax > best[j0:j1]
            best[j0:j1][upd] = cmax[upd]
            arg[j0:j1][upd] = cmax_at[upd] + i0
        rmax_at = np.argmax(s, axis=1)
        rmax = s[np.arange(i1 - i0), rmax_at]
        upd = rmax > best[i0:i1]
        best[i0:i1][upd] = rmax[upd]
        arg[i0:i1][upd] = rmax_at[upd] + j0

    np.clip(enc_dec, -1.0, 1.0, out=enc_dec)
    np.clip(best, -1.0, 1.0, out=best)
    # Cosines of float32 weights carry ~1e-7 of rounding: a spread below 64 eps is no signal.
    tol = 64 * float(max(np.finfo(enc.dtype).eps, np.finfo(dec.dtype).eps))
    rho, rho_p = _correlation(scipy.stats.spearmanr, enc_dec, best, tol)
    r, r_p = _correlation(scipy.stats.pearsonr, enc_dec, best, tol)
    return EncoderDecoderAlignment(
        enc_dec_cosine=enc_dec,
        max_other_cosine=best,
        nearest_other=arg,
        mean_enc_dec_cosine=float(enc_dec.mean()),
        mean_max_other_cosine=float(best.mean()),
        spearman=rho,
        spearman_pvalue=rho_p,
        pearson=r,
        pearson_pvalue=r_p,
    )


def plot_encoder_decoder_alignment(
    result: EncoderDecoderAlignment, path: str | os.PathLike, *, bins: int = 50, dpi: int = 100
) -> str:
    """PNG of Figure 18: (left) histogram of encoder-decoder cosines with their mean; (right)
    encoder-decoder cosine against each latent's max decoder cosine to another latent.
    Returns the path written."""
    if not isinstance(result, EncoderDecoderAlignment):
        raise TypeError(f"result must be an EncoderDecoderAlignment, got {type(result).__name__}")
    bins = _positive_int(bins, "bins")
    fig, (left, right) = new_figure(10, 4, ncols=2, layout="constrained")
    left.hist(result.enc_dec_cosine, bins=bins, color="tab:blue", alpha=0.8)
    left.axvline(result.mean_enc_dec_cosine, color="k", ls="--", lw=1, label=f"mean {result.mean_enc_dec_cosine:.3f}")
    left.set_xlabel("cos(encoder row, decoder row)")
    left.set_ylabel("latents")
    left.legend(loc="upper left")
    right.scatter(result.max_other_cosine, result.enc_dec_cosine, s=4, alpha=0.4, rasterized=True, edgecolors="none")
    right.set_xlabel("max decoder cosine to another latent")
    right.set_ylabel("cos(encoder row, decoder row)")
    right.set_title(f"Spearman {result.spearman:.3f}, Pearson {result.pearson:.3f}", fontsize=10)
    fig.suptitle(f"Encoder-decoder alignment (n = {result.n_latents})")
    return save_figure(fig, path, dpi=dpi)
