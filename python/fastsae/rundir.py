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
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

RUN_FORMAT = 1
"""Bumped whenever a file above changes meaning; older run directories are then refused."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Write ``path`` through ``write(tmp_path)`` on a temporary file in the same directory,
    flushed to disk, then renamed over ``path``: readers see the old file or the new one, never
    a torn one. The one primitive behind every file fastsae writes (run directories,
    checkpoints, co-occurrence results, sweeps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save(path) would append ".npy"
            np.save(f, np.asarray(array), allow_pickle=False)

    atomic_write(path, write)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (a killed run keeps every complete line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def decode_utf8(data: bytes, path: str | os.PathLike) -> str:
    """``data`` (the bytes of the file ``path``) as text: UTF-8, a leading byte-order mark
    dropped. A ``ValueError`` naming the file, the line, the column and the byte offset of the
    first byte that is not UTF-8 (e.g. a Latin-1 or UTF-16 file)."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        pos = start + e.start
        line_start = data.rfind(b"\n", 0, pos) + 1
        line = data.count(b"\n", 0, pos) + 1
        raise ValueError(f"{path}: line {line} is not valid UTF-8 (byte 0x{data[pos]:02x} at column "
                         f"{pos - line_start + 1}, byte offset {pos}); save the file as UTF-8") from None


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file ``path`` (see :func:`decode_utf8` for the error)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory, expected a file", str(path))
    return decode_utf8(path.read_bytes(), path)


def iter_jsonl(path: str | os.PathLike, *, strict: bool = True) -> Iterable[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON-lines file. ``ValueError``
    naming the file and line for text that is not UTF-8 or a line that is not JSON; with
    ``strict=False`` a torn last line (a killed writer) is skipped instead."""
    lines = read_text(path).split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            if not strict and i >= len(lines) - 2:  # only the last line may be torn
                return
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e.msg}, column {e.colno})") from None
        yield i + 1, value


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete line of a JSON-lines file; a torn last line (a killed writer) is skipped.
    A missing file reads as no lines; text that is not UTF-8, or a bad line before the last,
    is a ``ValueError`` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    return [value for _, value in iter_jsonl(path, strict=False)]


def open_npy(path: str | os.PathLike, *, what: str = "array", mmap: bool = True) -> np.ndarray:
    """The ``[N, d]`` float array of the ``.npy`` file ``path`` (memory-mapped by default), after
    checking from its header that it is one: a ``ValueError`` or ``FileNotFoundError`` naming
    the file for a missing file, a directory, a file that is not ``.npy`` (or holds pickled
    objects), another number of dimensions, or a dtype that is not floating point."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file ({what})")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; {what} must be a .npy file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":  # np.load would take any other file for a pickle
        kind = "an .npz archive" if magic[:2] == b"PK" else "no NumPy header"
        raise ValueError(f"{path}: not a .npy file ({kind}); {what} must be a .npy file written by numpy.save")
    try:
        X = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        pickled = "pickled" in str(e) or "Python objects" in str(e)
        detail = "it holds pickled objects" if pickled else f"{type(e).__name__}: {e}"
        raise ValueError(f"{path}: not a readable .npy array ({detail}); {what} must be a .npy file "
                         "written by numpy.save") from None
    if X.ndim != 2:
        raise ValueError(f"{path}: {what} must be a 2-D [N, d] array, got shape {X.shape}")
    if X.dtype.kind != "f":
        raise ValueError(f"{path}: {what} must hold floats (float32), got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{path}: {what} is empty (shape {X.shape})")
    return X


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


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
        from . import __version__

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
        from .model import TopKSAE

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

        from .ops import SparseCode

        d = self.codes_dir(name)
        if not (d / "indices.npy").exists():
            raise FileNotFoundError(f"{d}: no codes for {name} (run `fastsae encode`)")
        # copy-on-write maps: the tensors are writable without reading the files into memory
        idx = np.load(d / "indices.npy", mmap_mode="c", allow_pickle=False)
        val = np.load(d / "values.npy", mmap_mode="c", allow_pickle=False)
        return SparseCode(torch.from_numpy(idx), torch.from_numpy(val))

    def cooc(self, name: str):
        from .cooc import Cooccurrence

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
