"""Heatmap between hand-picked features of several SAEs (Figs. 11, 12)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..._plot import save_figure
from .._common import _PNG_DPI, _codes, _ids, _prepared, figure_row
from .activation import _activation_similarity

# ----------------------------------------------------------------------------- 7. heatmap


@dataclass(eq=False)
class SplitHeatmap:
    """Similarities between hand-picked features of several SAEs (Figs. 11, 12)."""

    cosine: np.ndarray
    """``[m, m]`` float64 decoder cosine between all chosen features (all SAEs, in order)."""
    activation_similarity: np.ndarray | None
    """``[m, m]`` float64 activation similarity between them, or None without codes."""
    sae: np.ndarray
    """``[m]`` int64 which SAE (position in ``W_list``) each row belongs to."""
    feature_ids: np.ndarray
    """``[m]`` int64 feature id of each row within its SAE."""
    labels: list
    """``[m]`` tick labels, ``"<sae label>:<id>"``."""


def split_heatmap(W_list: Sequence[Any], feature_ids_list: Sequence[Any], *, labels: Sequence[str] | None = None,
                  codes_list: Sequence[Any] | None = None, device=None) -> SplitHeatmap:
    """Cosine between the decoder rows of the chosen features of each SAE (rows/columns in the
    order of ``W_list``, then of the ids); with ``codes_list`` (each SAE's codes on the same
    documents) also their activation similarity (Fig. 11 colours by it)."""
    if len(W_list) == 0:
        raise ValueError("W_list is empty")
    if len(feature_ids_list) != len(W_list):
        raise ValueError(f"feature_ids_list has {len(feature_ids_list)} entries for {len(W_list)} SAEs")
    labels = [f"SAE{s}" for s in range(len(W_list))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(W_list):
        raise ValueError(f"labels has {len(labels)} entries for {len(W_list)} SAEs")
    if codes_list is not None and len(codes_list) != len(W_list):
        raise ValueError(f"codes_list has {len(codes_list)} entries for {len(W_list)} SAEs")
    Ws = _prepared([(W, f"W_list[{s}]") for s, W in enumerate(W_list)], device)
    ids = [_ids(f, f"feature_ids_list[{s}]", Ws[s].shape[0]) for s, f in enumerate(feature_ids_list)]
    if sum(x.size for x in ids) == 0:
        raise ValueError("feature_ids_list selects no features")
    rows = torch.cat([Ws[s][torch.from_numpy(x).to(Ws[s].device)] for s, x in enumerate(ids)])
    cos = (rows @ rows.T).cpu().numpy().astype(np.float64)
    sae = np.concatenate([np.full(x.size, s, dtype=np.int64) for s, x in enumerate(ids)])
    fid = np.concatenate(ids)
    act = None
    if codes_list is not None:
        codes = [_codes(c, f"codes_list[{s}]") for s, c in enumerate(codes_list)]
        act = np.zeros_like(cos)
        off = np.cumsum([0] + [x.size for x in ids])
        for s in range(len(ids)):
            for t in range(len(ids)):
                if ids[s].size == 0 or ids[t].size == 0:
                    continue
                p = np.stack(np.meshgrid(ids[s], ids[t], indexing="ij"), axis=-1).reshape(-1, 2)
                r = _activation_similarity(codes[s], codes[t], p, 1 << 24)
                act[off[s] : off[s + 1], off[t] : off[t + 1]] = r.similarity.reshape(ids[s].size, ids[t].size)
    return SplitHeatmap(cos, act, sae, fid, [f"{labels[s]}:{i}" for s, i in zip(sae, fid)])


def plot_split_heatmap(W_list: Sequence[Any], feature_ids_list: Sequence[Any], path: str | os.PathLike, *,
                       labels: Sequence[str] | None = None, codes_list: Sequence[Any] | None = None,
                       color_by: str = "cosine", annotate: bool = True, device=None) -> SplitHeatmap:
    """Figs. 11/12: heatmap between the chosen features of several SAEs, coloured by decoder
    cosine (``color_by="cosine"``) or activation similarity (``"activation"``, needs
    ``codes_list``), lines between SAEs. Returns the :class:`SplitHeatmap` drawn."""
    if color_by not in ("cosine", "activation"):
        raise ValueError(f"color_by must be 'cosine' or 'activation', got {color_by!r}")
    if color_by == "activation" and codes_list is None:
        raise ValueError("color_by='activation' needs codes_list")
    h = split_heatmap(W_list, feature_ids_list, labels=labels, codes_list=codes_list, device=device)
    m = h.cosine if color_by == "cosine" else h.activation_similarity
    size = max(4.0, 0.45 * len(h.labels) + 2.0)
    fig, (ax,) = figure_row(width=size + 1.0, height=size)
    im = ax.imshow(m, vmin=min(0.0, float(m.min())), vmax=1.0, cmap="viridis")
    fig.colorbar(im, ax=ax, label="decoder cosine" if color_by == "cosine" else "activation similarity")
    ax.set_xticks(range(len(h.labels)), h.labels, rotation=90, fontsize="small")
    ax.set_yticks(range(len(h.labels)), h.labels, fontsize="small")
    for b in np.flatnonzero(np.diff(h.sae)) + 0.5:
        ax.axhline(b, color="w", linewidth=1.5)
        ax.axvline(b, color="w", linewidth=1.5)
    if annotate and len(h.labels) <= 30:
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=6,
                        color="k" if m[r, c] > 0.6 else "w")
    save_figure(fig, path, dpi=_PNG_DPI)
    return h
