"""Reading documents: JSONL / JSON / CSV / TSV / TXT / Parquet files -> corpus records or texts.

Text files are decoded as UTF-8 by :func:`fastsae.io.read_text`, so a byte that is not UTF-8 is
reported with its file, line and byte offset; every other error names the row (and the line
where the format has lines).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import read_text

__all__ = ["read_records", "read_texts"]

_KEEP_COLUMNS = ("path", "secondary")


def _read_table(path: Path) -> tuple[list[dict], list[str], list[int | None]]:
    """Rows (dicts), column names in first-seen order, and each row's line number if known."""
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f'{path}: reading Parquet needs pyarrow: pip install "fastsae[parquet]"') from None
        table = pq.read_table(path)
        rows = table.to_pylist()
        return rows, list(table.column_names), [None] * len(rows)
    if suffix in (".csv", ".tsv"):
        # decoded whole first, so a byte that is not UTF-8 is reported with its line and offset
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        columns = list(reader.fieldnames or [])
        rows, lines = [], []
        try:
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise ValueError(f"{path}: line {reader.line_num}: malformed {suffix[1:].upper()} ({e})") from None
        return rows, columns, lines
    if suffix == ".txt":
        rows, lines = [], []
        for n, line in enumerate(read_text(path).split("\n"), start=1):
            if line.strip():
                rows.append({"text": line})
                lines.append(n)
        return rows, ["text"], lines
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = read_text(path)
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
            rows, lines = [], []
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: element {i} of the JSON array is not an object")
                rows.append(row)
                lines.append(None)
        else:
            rows, lines = [], []
            for n, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {n} is not a JSON object")
                rows.append(row)
                lines.append(n)
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        return rows, list(columns), lines
    raise ValueError(f"{path}: unknown file type {suffix or '(none)'!r}; "
                     "use .jsonl/.ndjson/.json (JSON lines or an array), .csv, .tsv, .txt (one document "
                     "per line) or .parquet")


def _where(i: int, line: int | None) -> str:
    return f"row {i}" + (f" (line {line})" if line is not None else "")


def _cell(row: Mapping, column: str, path: Path, i: int, line: int | None) -> str:
    v = row.get(column)
    if v is None or (isinstance(v, float) and math.isnan(v)):  # missing cell / Parquet null
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{path}: {_where(i, line)}: column {column!r} holds a {type(v).__name__}, "
                         "expected text")
    return v.strip()


def read_records(
    path: str | os.PathLike,
    *,
    text_column: str | None = None,
    title_column: str = "title",
    abstract_column: str = "abstract",
    keep_columns: Sequence[str] = _KEEP_COLUMNS,
) -> list[dict]:
    """Documents of a JSONL / JSON / CSV / TSV / TXT / Parquet file as corpus records (text
    files are UTF-8; a ``.txt`` file holds one document per non-blank line).

    Each record is ``{"text": ..., "title"?: ..., "abstract"?: ...}`` plus the ``keep_columns``
    present in the row (by default the ground-truth ``path`` / ``secondary`` of a demo corpus),
    ready for :meth:`fastsae.rundir.RunDir.write_corpus`. The text is

    * the ``text_column`` when given;
    * otherwise, when the file has a ``title_column`` or an ``abstract_column``,
      ``"title\\n\\nabstract"`` (as in the paper), or whichever of the two a row has;
    * otherwise the ``text`` column.

    Raises ``ValueError`` for an unknown file type, an empty file, a missing column (naming the
    columns that exist), a non-text cell, or a row whose text is empty or whitespace only
    (naming the row, and the line where the format has lines); ``ImportError`` for Parquet
    without pyarrow.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a documents file (.jsonl, .csv, .txt, ...)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows, columns, lines = _read_table(path)
    if not rows:
        raise ValueError(f"{path}: no documents (the file is empty)")
    if text_column is not None:
        if text_column not in columns:
            raise ValueError(f"{path}: no column {text_column!r}; the columns are {columns}")
        mode = "text"
    elif title_column in columns or abstract_column in columns:
        mode = "title_abstract"
    elif "text" in columns:
        mode, text_column = "text", "text"
    else:
        raise ValueError(f"{path}: no text to embed: no {title_column!r} or {abstract_column!r} column and no "
                         f"'text' column; the columns are {columns} (choose one with --text-column / "
                         "text_column=, or name the title and abstract columns)")
    records = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        rec: dict[str, Any] = {}
        if mode == "text":
            text = _cell(row, text_column, path, i, line)  # type: ignore[arg-type]
            what = f"column {text_column!r} is"
        else:
            title = _cell(row, title_column, path, i, line)
            abstract = _cell(row, abstract_column, path, i, line)
            text = f"{title}\n\n{abstract}" if title and abstract else (title or abstract)
            if title:
                rec["title"] = title
            if abstract:
                rec["abstract"] = abstract
            what = f"columns {title_column!r} and {abstract_column!r} are both"
        if not text:
            raise ValueError(f"{path}: {_where(i, line)} has an empty text ({what} empty or missing)")
        rec = {"text": text, **rec}
        for c in keep_columns:
            if c in row and row[c] is not None:
                rec[c] = row[c]
        records.append(rec)
    return records


def read_texts(
    path: str | os.PathLike,
    *,
    text_column: str | None = None,
    title_column: str = "title",
    abstract_column: str = "abstract",
) -> list[str]:
    """The texts :func:`read_records` builds from ``path`` (same rules, same errors)."""
    return [r["text"] for r in read_records(path, text_column=text_column, title_column=title_column,
                                            abstract_column=abstract_column, keep_columns=())]


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise ValueError("texts must be a list of strings, not a single string (wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError("no texts to embed (the list is empty)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"text {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise ValueError(f"text {i} is empty or whitespace only")
    return texts
