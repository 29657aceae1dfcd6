"""Feature search and steering over a run's corpus (the authors' SAErch idea).

A query is embedded with the run's embedder, encoded by the SAE, edited in feature space and
decoded; the corpus documents nearest (cosine) to the edited embedding are returned::

    res = fastsae.search("dark matter halo simulations", run="runs/demo",
                         steer={"gravitational lensing": 2.0, 17: 0.0})

``steer`` maps a feature (an id, or a text matched against the feature labels) to a value:
for a feature the query already activates the value *scales* its activation (0 removes it);
for any other feature it *adds* it with activation ``value x`` its typical activation (the
mean of its non-zero activations over the corpus).

The edit is applied as a difference, ``x' = x + (decode(z') - decode(z))`` with ``x`` the raw
query embedding and ``decode`` returning the same (input) space, so the part of
the query the SAE does not reconstruct is kept: with no edit the search is plain embedding
search, and steering moves the query only along the edited features' input-space directions
(:meth:`TopKSAE.feature_directions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from .rundir import RunDir


@dataclass
class ActiveFeature:
    """One latent of an (edited) query code."""

    feature: int
    """Latent id."""
    activation: float
    """Its activation in the code."""
    label: str | None
    """Its autointerp label, when the run has one."""


@dataclass
class SearchHit:
    """One corpus document of the ranking."""

    doc: int
    """Row of the document in the corpus."""
    score: float
    """Cosine similarity between the (steered) query embedding and the document embedding."""
    text: str
    """The document text."""


@dataclass
class SearchResult:
    """Output of :func:`search`."""

    query: str
    """The query text."""
    active: list[ActiveFeature]
    """The features the query activates, strongest first."""
    steered: list[ActiveFeature]
    """The features of the edited code (equal to ``active`` without ``steer``)."""
    hits: list[SearchHit]
    """The ``top`` nearest documents to the steered embedding, best first."""
    embedding: np.ndarray = field(repr=False)
    """``[d]`` the steered query embedding."""
    ranking: np.ndarray = field(repr=False)
    """``[N]`` every document id ordered by similarity, best first (to locate any document)."""


def _labels(run: RunDir) -> dict[int, str]:
    return {int(r["feature"]): str(r["label"]) for r in run.labels() if r.get("label")}


def resolve_feature(key: Any, labels: Mapping[int, str], n_latents: int) -> int:
    """A feature id from an int (or digit string) or from a label match (case-insensitive
    substring; the shortest matching label wins, ties to the lower id)."""
    if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.strip().isdigit()):
        f = int(key)
        if not 0 <= f < n_latents:
            raise ValueError(f"feature {f} out of range [0, {n_latents})")
        return f
    if not isinstance(key, str) or not key.strip():
        raise TypeError(f"a feature is an id or a label text, got {key!r}")
    q = key.strip().lower()
    matches = sorted((len(lab), f) for f, lab in labels.items() if q in lab.lower())
    if not matches:
        hint = "" if labels else " (this run has no labels yet: run `fastsae interpret`)"
        raise ValueError(f"no feature label matches {key!r}{hint}")
    return matches[0][1]


class Searcher:
    """Holds a run's embedder, SAE, corpus embeddings and labels for repeated queries."""

    def __init__(self, run: RunDir | str, *, sae: str | None = None):
        from ..embed import load_embedder

        self.run = run if isinstance(run, RunDir) else RunDir.open(run)
        self.sae_name = sae or self.run.main_sae()
        self.sae = self.run.load_sae(self.sae_name)
        self.sae.eval()
        emb_dir = self.run.root / "embedder"
        if not emb_dir.exists():
            raise FileNotFoundError(f"{emb_dir}: this run has no saved embedder (run `fastsae embed --run ...`)")
        self.embedder = load_embedder(emb_dir)
        X = np.asarray(self.run.embeddings(), dtype=np.float32)
        if X.shape[1] != self.sae.d_in:
            raise ValueError(f"embeddings have d={X.shape[1]}, SAE {self.sae_name} expects {self.sae.d_in}")
        self.unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        self.texts = self.run.texts()
        self.labels = _labels(self.run)
        self._typical: np.ndarray | None = None

    def typical_activation(self) -> np.ndarray:
        """``[n]`` mean non-zero activation of each latent over the corpus (1 where it never fires)."""
        if self._typical is None:
            codes = self.run.codes(self.sae_name)
            idx = codes.indices.numpy().ravel()
            val = codes.values.numpy().ravel().astype(np.float64)
            on = val > 0
            n = self.sae.n_latents
            s = np.bincount(idx[on], weights=val[on], minlength=n)
            c = np.bincount(idx[on], minlength=n)
            self._typical = np.where(c > 0, s / np.maximum(c, 1), 1.0)
        return self._typical

    def _features(self, idx: torch.Tensor, val: torch.Tensor) -> list[ActiveFeature]:
        out = [ActiveFeature(int(i), float(v), self.labels.get(int(i))) for i, v in zip(idx.tolist(), val.tolist()) if v > 0]
        return sorted(out, key=lambda a: -a.activation)

    @torch.no_grad()
    def __call__(self, query: str, *, steer: Mapping[Any, float] | None = None, top: int = 10) -> SearchResult:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the query must be a non-empty string")
        if top < 1:
            raise ValueError("top must be >= 1")
        x = torch.as_tensor(np.asarray(self.embedder.embed([query], progress=False), dtype=np.float32)).reshape(1, -1)
        if x.shape[1] != self.sae.d_in:
            raise ValueError(f"the embedder returns d={x.shape[1]}, SAE expects {self.sae.d_in}")
        sae = self.sae
        x = x.to(sae.W_enc.dtype)
        code = sae.encode(x)
        idx, val = code.indices[0].clone(), code.values[0].clone()
        active = self._features(idx, val)
        extra_i, extra_v = [], []
        for key, weight in (steer or {}).items():
            w = float(weight)
            if not np.isfinite(w):
                raise ValueError(f"steering weight for {key!r} must be finite, got {weight!r}")
            f = resolve_feature(key, self.labels, sae.n_latents)
            hit = (idx == f) & (val > 0)
            if bool(hit.any()):
                val[hit] *= w
            else:
                extra_i.append(f)
                extra_v.append(w * float(self.typical_activation()[f]))
        new_i = torch.cat([idx, torch.tensor(extra_i, dtype=idx.dtype)])
        new_v = torch.cat([val, torch.tensor(extra_v, dtype=val.dtype)])
        from ..ops import SparseCode

        # x is a raw embedding (input space) and decode() returns the input space too, so the
        # difference is the edit there (the standardisation mean cancels in it).
        before = sae.decode(SparseCode(idx[None], code.values[0][None].clone()))
        after = sae.decode(SparseCode(new_i[None], new_v[None].to(before.dtype)))
        y = (x + (after - before))[0].double().numpy()
        y = y / max(np.linalg.norm(y), 1e-12)
        scores = self.unit.astype(np.float64) @ y
        ranking = np.argsort(-scores, kind="stable")
        hits = [SearchHit(int(d), float(scores[d]), self.texts[d]) for d in ranking[:top]]
        return SearchResult(query, active, self._features(new_i, new_v), hits, y.astype(np.float32), ranking)


def search(query: str, run: RunDir | str, *, steer: Mapping[Any, float] | None = None, top: int = 10,
           sae: str | None = None) -> SearchResult:
    """Embed ``query``, encode it with the run's SAE, apply ``steer`` (see the module
    docstring), decode and return the ``top`` nearest corpus documents."""
    return Searcher(run, sae=sae)(query, steer=steer, top=top)
