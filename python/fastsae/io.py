"""fastsae's file plumbing: every file it writes goes through :func:`atomic_write` (written to a
temporary file in the same directory, flushed to disk, renamed), JSON lines are appended and
flushed line by line, and text is read as UTF-8 with errors that name the file, line and byte.

It imports nothing from fastsae, so every stage (the model, co-occurrence results, the run
directory, autointerp, the report) can use it without importing another stage.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np


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
