"""One run directory per job: what every ``fastsae`` subcommand reads and writes.

A run directory holds everything a run computed, so a user can stop after any step and
continue later (each subcommand picks up what earlier ones wrote)::

    RUN/
      config.json              run_format, fastsae version, and one section per step
      corpus.jsonl             documents: {"id", "text", "title"?, "abstract"?, "path"?: [field, subfield, topic]}
      embeddings.npy           [N, d] float32, row i embeds corpus line i
      saes/<name>/             a TopKSAE checkpoint (sae.safetensors + config.json); names like "sae16"
      codes/<name>/            indices.npy [N, k] int64, values.npy [N, k] float32 (memmaps)
      cooc/<name>.npz          the Cooccurrence (C, D, freq) of those codes
      families.json            {"sae": name, "method": ..., "families": [{"parent", "children", "depth", "iteration"}]}
      splitting.json           nearest-neighbour maps and split statistics across the SAE sizes
      labels.jsonl             autointerp results, one feature per line (fastsae.autointerp)
      labels_summary.json      their summary
      metrics.jsonl            one line per step: {"step", "seconds", ...}
      figures/*.png
      report/index.html        the static explorer (opens from disk)

Every file is written to a temporary name and renamed, so a killed run never leaves a torn
file behind. :func:`RunDir.open` refuses directories written by an incompatible ``run_format``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

RUN_FORMAT = 1
"""Bumped whenever a file above changes meaning; older run directories are then refused."""


from ..io import (  # noqa: F401 (re-exported: fastsae.rundir.atomic_write etc. keep working)
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_json,
    atomic_save_npy,
    append_jsonl,
    decode_utf8,
    read_text,
    iter_jsonl,
    read_jsonl,
    open_npy,
    _json_default,
)


class RunDir:
    """Paths and readers/writers of one run directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike, *, create: bool = False) -> "RunDir":
        """The run directory at ``root``; with ``create``, a new one is initialised if absent.

        Raises ``FileNotFoundError`` for a missing directory (without ``create``) and
        ``ValueError`` for one written by an incompatible version of fastsae.
        """
        run = cls(root)
        if run.root.exists() and not run.root.is_dir():
            raise ValueError(f"{run.root}: not a directory (a run directory is a folder; see `fastsae demo`)")
        if run.config_path.exists():
            cfg = run.config()
            fmt = cfg.get("run_format")
            if fmt != RUN_FORMAT:
                raise ValueError(
                    f"{run.root}: run directory format {fmt!r} written by fastsae "
                    f"{cfg.get('fastsae_version', '?')}; this fastsae reads format {RUN_FORMAT}. "
                    "Start a new run directory (or use the fastsae version that wrote it).")
            return run
        if not create:
            if not run.root.exists():
                raise FileNotFoundError(f"{run.root}: no such run directory")
            raise ValueError(f"{run.root}: not a fastsae run directory (no config.json)")
        from .._version import __version__

        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.config_path, {"run_format": RUN_FORMAT, "fastsae_version": __version__,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return run

    # -- config --------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    def config(self) -> dict:
        try:
            cfg = json.loads(read_text(self.config_path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.config_path}: corrupt config ({e})") from e
        if not isinstance(cfg, dict):
            raise ValueError(f"{self.config_path}: corrupt config (not an object)")
        return cfg

    def update_config(self, section: str, values: dict) -> dict:
        """Set ``config[section] = values`` (atomically) and return the whole config."""
        cfg = self.config()
        cfg[section] = values
        atomic_write_json(self.config_path, cfg)
        return cfg

    # -- paths ---------------------------------------------------------------------------------
    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def embeddings_path(self) -> Path:
        return self.root / "embeddings.npy"

    def sae_dir(self, name: str) -> Path:
        return self.root / "saes" / name

    def codes_dir(self, name: str) -> Path:
        return self.root / "codes" / name

    def cooc_path(self, name: str) -> Path:
        return self.root / "cooc" / f"{name}.npz"

    @property
    def families_path(self) -> Path:
        return self.root / "families.json"

    @property
    def splitting_path(self) -> Path:
        return self.root / "splitting.json"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.jsonl"

    @property
    def labels_summary_path(self) -> Path:
        return self.root / "labels_summary.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def report_path(self) -> Path:
        return self.root / "report" / "index.html"

    # -- readers -------------------------------------------------------------------------------
    def sae_names(self) -> list[str]:
        """Trained SAEs, smallest first (by number of latents)."""
        base = self.root / "saes"
        if not base.is_dir():
            return []
        names = [p.name for p in base.iterdir() if (p / "sae.safetensors").exists()]

        def size(name: str) -> int:
            try:
                return int(json.loads((base / name / "config.json").read_text())["n_latents"])
            except (OSError, ValueError, KeyError):
                return 0

        return sorted(names, key=lambda s: (size(s), s))

    def main_sae(self) -> str:
        """The SAE the analyses use by default: ``config["main_sae"]`` or the largest trained."""
        name = self.config().get("main_sae")
        names = self.sae_names()
        if name and name in names:
            return name
        if not names:
            raise FileNotFoundError(f"{self.root}: no trained SAE (run `fastsae train --run {self.root}`)")
        return names[-1]

    def load_sae(self, name: str, *, device=None):
        from ..sae.model import TopKSAE

        path = self.sae_dir(name)
        if not (path / "sae.safetensors").exists():
            raise FileNotFoundError(f"{path}: no such SAE in this run")
        return TopKSAE.load(path, device=device)

    def corpus(self) -> list[dict]:
        """The documents of ``corpus.jsonl``; a ``ValueError`` naming the file and the line for
        text that is not UTF-8, a line that is not a JSON object (fastsae writes the file in
        one piece, so a torn line is damage, not an interrupted write), or a document without
        a string ``"text"``."""
        if not self.corpus_path.exists():
            raise FileNotFoundError(f"{self.corpus_path}: no corpus in this run")
        docs = []
        for line, doc in iter_jsonl(self.corpus_path):
            if not isinstance(doc, dict):
                raise ValueError(f"{self.corpus_path}: line {line} is a JSON {type(doc).__name__}, "
                                 "expected an object with a 'text'")
            if not isinstance(doc.get("text"), str):
                what = "has no 'text'" if "text" not in doc else f"has a {type(doc['text']).__name__} 'text'"
                raise ValueError(f"{self.corpus_path}: line {line} {what}; every document needs a text string")
            docs.append(doc)
        return docs

    def texts(self) -> list[str]:
        return [doc["text"] for doc in self.corpus()]

    def write_corpus(self, docs: Iterable[dict]) -> None:
        lines = []
        for i, doc in enumerate(docs):
            if "text" not in doc:
                raise ValueError(f"document {i} has no 'text'")
            lines.append(json.dumps({"id": i, **doc}, default=_json_default))
        atomic_write_text(self.corpus_path, "\n".join(lines) + "\n")

    def embeddings(self, *, mmap: bool = True) -> np.ndarray:
        """``embeddings.npy``, checked from its header (:func:`open_npy`): a 2-D float array."""
        if not self.embeddings_path.exists():
            raise FileNotFoundError(f"{self.embeddings_path}: no embeddings in this run (run `fastsae embed`)")
        return open_npy(self.embeddings_path, what="the run's embeddings", mmap=mmap)

    def checked_embeddings(self, *, mmap: bool = True) -> np.ndarray:
        """:meth:`embeddings` after checking their contents against the run: one row per document
        of ``corpus.jsonl`` (row i embeds document i) and every value finite. The steps that
        consume the embeddings (``train``, ``encode``) call it before any work, so a wrong file
        is refused there, not several steps later. ``ValueError`` naming both files and counts,
        or the first row that holds NaN or infinity."""
        X = self.embeddings(mmap=mmap)
        n_docs = len(self.corpus())
        if X.shape[0] != n_docs:
            raise ValueError(f"{self.embeddings_path} has {X.shape[0]} rows but {self.corpus_path} has {n_docs} "
                             f"documents (row i must embed document i): re-run `fastsae embed --run {self.root}`")
        step = max(1, (1 << 24) // max(X.shape[1], 1))  # ~64 MiB of float32 per block, whatever N is
        for a in range(0, X.shape[0], step):
            bad = ~np.isfinite(np.asarray(X[a : a + step])).all(axis=1)
            if bad.any():
                r = a + int(np.argmax(bad))
                raise ValueError(f"{self.embeddings_path}: row {r} (document {r} of {self.corpus_path}) holds NaN "
                                 "or infinite values; re-embed the corpus")
        return X

    def codes(self, name: str):
        """The SparseCode of every document under SAE ``name`` (numpy memmaps wrapped as tensors)."""
        import torch

        from ..ops import SparseCode

        d = self.codes_dir(name)
        if not (d / "indices.npy").exists():
            raise FileNotFoundError(f"{d}: no codes for {name} (run `fastsae encode`)")
        # copy-on-write maps: the tensors are writable without reading the files into memory
        idx = np.load(d / "indices.npy", mmap_mode="c", allow_pickle=False)
        val = np.load(d / "values.npy", mmap_mode="c", allow_pickle=False)
        return SparseCode(torch.from_numpy(idx), torch.from_numpy(val))

    def cooc(self, name: str):
        from ..cooc import Cooccurrence

        path = self.cooc_path(name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no co-occurrence for {name} (run `fastsae cooc`)")
        return Cooccurrence.load(path)

    def families(self) -> dict:
        if not self.families_path.exists():
            raise FileNotFoundError(f"{self.families_path}: no families (run `fastsae families`)")
        try:
            return json.loads(read_text(self.families_path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.families_path}: not valid JSON ({e})") from None

    def labels(self) -> list[dict]:
        return read_jsonl(self.labels_path)

    def log_metric(self, step: str, **values: Any) -> None:
        append_jsonl(self.metrics_path, {"step": step, "time": time.time(), **values})

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)
