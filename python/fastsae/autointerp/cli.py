"""``fastsae interpret``: automated interpretability of a run directory's SAE features.

Registered on the main parser by :func:`add_parser`; reads ``corpus.jsonl``, the codes of the
run's main SAE (or ``--sae``) and, for hard negatives, ``embeddings.npy``; writes
``labels.jsonl``, ``labels_summary.json``, ``figures/autointerp_pearson.png`` and the response
cache into the run directory, and ``family_labels.jsonl`` when ``families.json`` exists.
Rerunning the same command resumes (and a finished job reruns without a single request).

Exit codes: 0 all done; 2 bad input; 3 stopped by a budget (rerun with a larger one to
continue); 4 the endpoint failed (rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

from ..errors import is_user_error, user_message

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_ENDPOINT = 0, 2, 3, 4


def parse_feature_spec(spec: str, n_latents: int | None = None) -> list[int]:
    """``"0-99,205"`` -> [0, 1, ..., 99, 205] (ranges inclusive; order kept, repeats dropped).

    ``ValueError`` for an item that is not an id or a ``lo-hi`` range of ids >= 0, a reversed
    range, a spec that selects nothing, or (with ``n_latents``) an id >= ``n_latents``, checked
    before a range is expanded."""
    out: list[int] = []
    seen: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        a, dash, b = (x.strip() for x in part.partition("-"))
        if not (a.isdecimal() and (not dash or b.isdecimal())):
            raise ValueError(f"bad --features item {part!r}: expected feature ids >= 0 and ranges like '0-99,205'")
        lo = int(a)
        hi = int(b) if dash else lo
        if hi < lo:
            raise ValueError(f"bad --features item {part!r}: the range is reversed (write {hi}-{lo})")
        if n_latents is not None and hi >= n_latents:
            raise ValueError(f"--features: {hi} is outside [0, {n_latents}) (the SAE has {n_latents} latents)")
        for i in range(lo, hi + 1):
            if i not in seen:
                seen.add(i)
                out.append(i)
    if not out:
        raise ValueError("--features selects no feature")
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``interpret`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "interpret",
        help="label SAE features with an Interpreter LLM and score the labels with a Predictor LLM",
        description=(
            "Automated interpretability (paper: section 3, appendix A.2). For each feature of the run's SAE "
            "an Interpreter model names it from its top-activating documents and some non-activating ones; "
            "a Predictor model, given only the name, rates held-out documents one at a time; Pearson and F1 "
            "against the truth score the label. Writes labels.jsonl (one line per feature, appended as they "
            "finish), labels_summary.json and figures/autointerp_pearson.png into the run directory, and "
            "family_labels.jsonl for the families in families.json. Any OpenAI-compatible endpoint works "
            "(OpenAI, vLLM, llama.cpp, Ollama): the key comes from OPENAI_API_KEY only (never a flag, so it "
            "stays out of shell history) and is never written anywhere. Rerun the same command to resume."),
        epilog="exit codes: 0 done; 2 bad input; 3 stopped by --max-cost/--max-tokens (rerun with a larger "
               "budget to continue); 4 the endpoint failed (rerun to continue)",
    )
    p.add_argument("--run", required=True, metavar="DIR", help="the run directory (see fastsae.rundir)")
    p.add_argument("--sae", default=None, help="which SAE of the run (default: the run's main SAE)")
    p.add_argument("--backend", choices=("openai", "keywords"), default="openai",
                   help="'openai': any OpenAI-compatible endpoint (default); 'keywords': the LLM-free "
                        "baseline (distinctive terms; no key, no network, no cost)")
    p.add_argument("--base-url", default=None,
                   help="endpoint base URL, e.g. http://localhost:8000/v1 (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--interpreter-model", default="gpt-4o", help="model naming the features (default gpt-4o)")
    p.add_argument("--predictor-model", default="gpt-4o-mini",
                   help="model scoring the labels (default gpt-4o-mini)")
    p.add_argument("--features", default=None, metavar="SPEC",
                   help="features to interpret, e.g. '0-99,205' (default: all)")
    p.add_argument("--max-features", type=int, default=None, metavar="N",
                   help="interpret a seeded random sample of at most N of the selected features that fire "
                        "(e.g. to estimate the median score cheaply)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--max-cost", type=float, default=None, metavar="USD",
                   help="stop between features once this run's estimated spending reaches USD")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="stop between features once this run's tokens (input + output) reach N")
    p.add_argument("--seed", type=int, default=0, help="seed of the document choices (default 0)")
    p.add_argument("--negatives", choices=("random", "hard"), default="random",
                   help="non-activating documents: 'random' (default) or 'hard' (nearest to the top "
                        "activators' mean embedding; needs embeddings.npy)")
    p.add_argument("--domain", default=None,
                   help="the researcher the prompts address, e.g. 'astrophysics' (default: none)")
    p.add_argument("--corpus", default="documents",
                   help="what the texts are, for the prompts, e.g. 'arXiv abstracts' (default 'documents')")
    p.add_argument("--no-families", action="store_true", help="do not label the families of families.json")
    p.add_argument("--overwrite", action="store_true",
                   help="discard earlier results made with other settings (the response cache is kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_interpret)
    return p


def _n_latents(cfg_path) -> int:
    from ..rundir import read_text

    try:
        n = json.loads(read_text(cfg_path)).get("n_latents")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{cfg_path}: not a valid SAE config (expected a JSON object)") from None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{cfg_path}: 'n_latents' must be a positive integer, got {n!r}")
    return n


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _print_summary(what: str, s: dict) -> None:
    sess = s.get("session", {})
    print(f"{what}: {s['n_done']} done of {s['n_requested']} requested; in the output file {s['n_features']} "
          f"({s['n_scored']} scored, "
          f"{s['n_skipped']} skipped); median Pearson {_fmt(s['median_pearson'])}, median F1 {_fmt(s['median_f1'])}; "
          f"parse failures {s['parse_failures']['total']}")
    print(f"  this run: {sess.get('requests', 0)} requests, {sess.get('cache_hits', 0)} cache hits, "
          f"{sess.get('tokens', 0):,} tokens, ${sess.get('cost', 0.0):.4f} (estimated; prices of {s['prices_date']})")
    if s.get("skipped_reasons"):
        print("  skipped: " + ", ".join(f"{k} ({v})" for k, v in s["skipped_reasons"].items()))


def run_interpret(args: argparse.Namespace) -> int:
    """The ``interpret`` subcommand; returns the exit code."""
    from ..rundir import RunDir
    from .core import AutointerpAborted, interpret_families, interpret_features

    t0 = time.perf_counter()
    try:
        run = RunDir.open(args.run)
        name = args.sae or run.main_sae()
        cfg_path = run.sae_dir(name) / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no such SAE in this run")
        n_latents = _n_latents(cfg_path)
        texts = run.texts()
        codes = run.codes(name)
        embeddings = None
        if args.negatives == "hard":
            embeddings = run.embeddings()
        features = parse_feature_spec(args.features, n_latents) if args.features else list(range(n_latents))
        bad = [f for f in features if f >= n_latents]
        if bad:
            raise ValueError(f"--features: {bad[0]} is outside [0, {n_latents}) (the SAE {name!r} has {n_latents} latents)")
        if args.max_features is not None:
            if args.max_features < 1:
                raise ValueError("--max-features must be >= 1")
            vals = np.asarray(codes.values)
            fired = np.unique(np.asarray(codes.indices)[vals > 0])
            live = [f for f in features if f in set(fired.tolist())]
            if len(live) > args.max_features:
                rng = np.random.default_rng([args.seed, 7])
                live = sorted(int(f) for f in rng.choice(live, size=args.max_features, replace=False))
            features = live
            if not features:
                raise ValueError("none of the selected features fires on any document")
    except Exception as e:  # the CLI's one rule for what is a user error (fastsae.errors)
        if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
            raise
        print(f"fastsae interpret: error: {user_message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT

    common = dict(backend=args.backend, base_url=args.base_url, interpreter_model=args.interpreter_model,
                  predictor_model=args.predictor_model, out_dir=run.root, concurrency=args.concurrency,
                  timeout=args.timeout, seed=args.seed, negatives=args.negatives, embeddings=embeddings,
                  progress=not args.quiet, overwrite=args.overwrite, domain=args.domain, corpus=args.corpus)
    code = EXIT_OK
    spent_cost, spent_tokens = 0.0, 0
    try:
        res = interpret_features(texts, codes, n_latents, features=features, max_cost=args.max_cost,
                                 max_tokens=args.max_tokens, **common)
        _print_summary("features", res.summary)
        spent_cost, spent_tokens = res.session.get("cost", 0.0), res.session.get("tokens", 0)
        if res.stopped:
            code = EXIT_BUDGET
        fam_summary = None
        if not args.no_families and run.families_path.exists() and not res.stopped:
            fams = run.families()
            if fams.get("sae", name) != name:
                print(f"  families.json describes SAE {fams.get('sae')!r}, not {name!r}: families skipped")
            elif fams.get("families"):
                # One budget for the whole command: the families get what the features left.
                fres = interpret_families(
                    texts, codes, fams, n_latents=n_latents,
                    max_cost=None if args.max_cost is None else max(args.max_cost - spent_cost, 0.0),
                    max_tokens=None if args.max_tokens is None else max(args.max_tokens - spent_tokens, 0),
                    **common)
                _print_summary("families", fres.summary)
                fam_summary = fres.summary
                spent_cost += fres.session.get("cost", 0.0)
                spent_tokens += fres.session.get("tokens", 0)
                if fres.stopped:
                    code = EXIT_BUDGET
        if code == EXIT_BUDGET:
            print("  stopped by the budget; rerun with a larger --max-cost/--max-tokens to continue")
    except AutointerpAborted as e:
        print(f"fastsae interpret: {user_message(e)}", file=sys.stderr)
        code = EXIT_ENDPOINT
    except Exception as e:
        if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
            raise
        print(f"fastsae interpret: error: {user_message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    else:
        run.update_config("interpret", {**res.summary["settings"], "sae": name,
                                        "base_url": res.summary.get("base_url")})
        print(f"  written: {run.labels_path}, {run.labels_summary_path}"
              + (f", {run.root / 'family_labels.jsonl'}" if fam_summary else ""))
    run.log_metric("interpret", seconds=round(time.perf_counter() - t0, 3), sae=name, backend=args.backend,
                   cost=round(spent_cost, 6), tokens=spent_tokens, exit_code=code)
    return code
