"""The interpret step of a run directory, once, as a function of plain arguments:
:func:`interpret_run`. ``fastsae interpret`` (:mod:`.cli`) parses its flags and calls it; the
demo's ``pipeline.step_interpret`` calls it too, so the two cannot drift apart.

It reads ``corpus.jsonl``, the codes of the run's main SAE (or ``sae``) and, for hard
negatives, ``embeddings.npy``; writes ``labels.jsonl``, ``labels_summary.json``,
``figures/autointerp_pearson.png`` and the response cache into the run directory, and
``family_labels.jsonl`` when ``families.json`` exists. Rerunning resumes (and a finished job
reruns without a single request). It returns the command's exit code: 0 all done; 2 bad input;
3 stopped by a budget (rerun with a larger one to continue); 4 the endpoint failed (rerun).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Iterable

import numpy as np

from ..errors import is_user_error, user_message
from ..io import read_text
from .api import AutointerpAborted, interpret_families, interpret_features
from .config import INTERPRETER_MODEL, PREDICTOR_MODEL, AutointerpConfig

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_ENDPOINT = 0, 2, 3, 4

_D = AutointerpConfig  # the defaults are the dataclass's


def parse_feature_spec(spec: str, n_latents: int | None = None) -> list[int]:
    """``"0-99,205"`` -> [0, 1, ..., 99, 205] (ranges inclusive; order kept, repeats dropped).

    ``ValueError`` for an item that is not an id or a ``lo-hi`` range of ids >= 0, a reversed
    range, a spec that selects nothing, or (with ``n_latents``) an id >= ``n_latents``, checked
    before a range is expanded."""
    out: dict[int, None] = {}  # an ordered set: order kept, repeats dropped
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
        out.update(dict.fromkeys(range(lo, hi + 1)))
    if not out:
        raise ValueError("--features selects no feature")
    return list(out)


def bad_input(e: BaseException) -> int:
    """The command's one rule for a user error (:mod:`fastsae.errors`): print it, return 2;
    anything else (or with ``FASTSAE_DEBUG`` set) is re-raised."""
    if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
        raise e
    print(f"fastsae interpret: error: {user_message(e)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _n_latents(cfg_path) -> int:
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


def interpret_run(run: Any, *, sae: str | None = None, backend: str = "openai", base_url: str | None = None,
                  interpreter_model: str = INTERPRETER_MODEL, predictor_model: str = PREDICTOR_MODEL,
                  features: str | Iterable[int] | None = None, max_features: int | None = None,
                  concurrency: int = _D.concurrency, timeout: float = _D.timeout,
                  max_cost: float | None = _D.max_cost, max_tokens: int | None = _D.max_tokens,
                  seed: int = _D.seed, negatives: str = _D.negatives, domain: str | None = _D.domain,
                  corpus: str = _D.corpus, families: bool = True, overwrite: bool = False,
                  progress: bool = True) -> int:
    """Labels and scores for a run directory's SAE (``run``: a :class:`fastsae.rundir.RunDir`),
    then for the families of its ``families.json`` (unless ``families=False``); returns the
    exit code (see the module docstring). ``features``: a spec like ``"0-99,205"`` or a list
    of ids (default all); ``max_features``: a seeded random sample of at most that many of the
    selected features that fire. ``max_cost`` / ``max_tokens`` budget the whole call (the
    families get what the features left). The other arguments are :func:`interpret_features`'.
    """
    t0 = time.perf_counter()
    try:
        name = sae or run.main_sae()
        cfg_path = run.sae_dir(name) / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no such SAE in this run")
        n_latents = _n_latents(cfg_path)
        texts = run.texts()
        codes = run.codes(name)
        embeddings = None
        if negatives == "hard":
            embeddings = run.embeddings()
        if features is None:
            features = list(range(n_latents))
        elif isinstance(features, str):
            features = parse_feature_spec(features, n_latents)
        else:
            features = list(features)
        bad = [f for f in features if f >= n_latents]
        if bad:
            raise ValueError(f"--features: {bad[0]} is outside [0, {n_latents}) (the SAE {name!r} has {n_latents} latents)")
        if max_features is not None:
            if max_features < 1:
                raise ValueError("--max-features must be >= 1")
            vals = np.asarray(codes.values)
            fired = np.unique(np.asarray(codes.indices)[vals > 0])
            live = [f for f in features if f in set(fired.tolist())]
            if len(live) > max_features:
                rng = np.random.default_rng([seed, 7])
                live = sorted(int(f) for f in rng.choice(live, size=max_features, replace=False))
            features = live
            if not features:
                raise ValueError("none of the selected features fires on any document")
    except Exception as e:  # the CLI's one rule for what is a user error (fastsae.errors)
        return bad_input(e)

    common = dict(backend=backend, base_url=base_url, interpreter_model=interpreter_model,
                  predictor_model=predictor_model, out_dir=run.root, concurrency=concurrency,
                  timeout=timeout, seed=seed, negatives=negatives, embeddings=embeddings,
                  progress=progress, overwrite=overwrite, domain=domain, corpus=corpus)
    code = EXIT_OK
    spent_cost, spent_tokens = 0.0, 0
    try:
        res = interpret_features(texts, codes, n_latents, features=features, max_cost=max_cost,
                                 max_tokens=max_tokens, **common)
        _print_summary("features", res.summary)
        spent_cost, spent_tokens = res.session.get("cost", 0.0), res.session.get("tokens", 0)
        if res.stopped:
            code = EXIT_BUDGET
        fam_summary = None
        if families and run.families_path.exists() and not res.stopped:
            fams = run.families()
            if fams.get("sae", name) != name:
                print(f"  families.json describes SAE {fams.get('sae')!r}, not {name!r}: families skipped")
            elif fams.get("families"):
                # One budget for the whole command: the families get what the features left.
                fres = interpret_families(
                    texts, codes, fams, n_latents=n_latents,
                    max_cost=None if max_cost is None else max(max_cost - spent_cost, 0.0),
                    max_tokens=None if max_tokens is None else max(max_tokens - spent_tokens, 0),
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
        return bad_input(e)
    else:
        run.update_config("interpret", {**res.summary["settings"], "sae": name,
                                        "base_url": res.summary.get("base_url")})
        print(f"  written: {run.labels_path}, {run.labels_summary_path}"
              + (f", {run.root / 'family_labels.jsonl'}" if fam_summary else ""))
    run.log_metric("interpret", seconds=round(time.perf_counter() - t0, 3), sae=name, backend=backend,
                   cost=round(spent_cost, 6), tokens=spent_tokens, exit_code=code)
    return code
