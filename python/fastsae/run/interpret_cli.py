"""``fastsae interpret``: automated interpretability of a run directory's SAE features.

Registered on the main parser by :func:`add_parser`; it only parses the flags and calls
:func:`fastsae.autointerp.step.interpret_run`, the interpret step (which the demo calls too).
Flag defaults are read from :class:`~fastsae.autointerp.AutointerpConfig`'s fields.
Rerunning the same command resumes (and a finished job reruns without a single request).

Exit codes: 0 all done; 2 bad input; 3 stopped by a budget (rerun with a larger one to
continue); 4 the endpoint failed (rerun to continue).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..autointerp.config import BACKENDS, INTERPRETER_MODEL, PREDICTOR_MODEL, AutointerpConfig
from ..autointerp.sampling import NEGATIVE_MODES
from ..autointerp.step import (  # noqa: F401 (parse_feature_spec and the exit codes: their old home)
    EXIT_BAD_INPUT,
    EXIT_BUDGET,
    EXIT_ENDPOINT,
    EXIT_OK,
    bad_input,
    interpret_run,
    parse_feature_spec,
)

_D = AutointerpConfig  # every default below is the dataclass's


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
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                   help="'openai': any OpenAI-compatible endpoint (default); 'keywords': the LLM-free "
                        "baseline (distinctive terms; no key, no network, no cost)")
    p.add_argument("--base-url", default=None,
                   help="endpoint base URL, e.g. http://localhost:8000/v1 (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--interpreter-model", default=INTERPRETER_MODEL,
                   help=f"model naming the features (default {INTERPRETER_MODEL})")
    p.add_argument("--predictor-model", default=PREDICTOR_MODEL,
                   help=f"model scoring the labels (default {PREDICTOR_MODEL})")
    p.add_argument("--features", default=None, metavar="SPEC",
                   help="features to interpret, e.g. '0-99,205' (default: all)")
    p.add_argument("--max-features", type=int, default=None, metavar="N",
                   help="interpret a seeded random sample of at most N of the selected features that fire "
                        "(e.g. to estimate the median score cheaply)")
    p.add_argument("--concurrency", type=int, default=_D.concurrency,
                   help=f"requests in flight (default {_D.concurrency})")
    p.add_argument("--timeout", type=float, default=_D.timeout, help=f"seconds per request (default {_D.timeout:g})")
    p.add_argument("--max-cost", type=float, default=_D.max_cost, metavar="USD",
                   help="stop between features once this run's estimated spending reaches USD")
    p.add_argument("--max-tokens", type=int, default=_D.max_tokens, metavar="N",
                   help="stop between features once this run's tokens (input + output) reach N")
    p.add_argument("--seed", type=int, default=_D.seed, help=f"seed of the document choices (default {_D.seed})")
    p.add_argument("--negatives", choices=NEGATIVE_MODES, default=_D.negatives,
                   help=f"non-activating documents: 'random' or 'hard' (nearest to the top "
                        f"activators' mean embedding; needs embeddings.npy); default {_D.negatives!r}")
    p.add_argument("--domain", default=_D.domain,
                   help="the researcher the prompts address, e.g. 'astrophysics' (default: none)")
    p.add_argument("--corpus", default=_D.corpus,
                   help=f"what the texts are, for the prompts, e.g. 'arXiv abstracts' (default {_D.corpus!r})")
    p.add_argument("--no-families", action="store_true", help="do not label the families of families.json")
    p.add_argument("--overwrite", action="store_true",
                   help="discard earlier results made with other settings (the response cache is kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_interpret)
    return p


def run_interpret(args: argparse.Namespace) -> int:
    """The ``interpret`` subcommand: the parsed flags, handed to :func:`interpret_run`; returns
    the exit code."""
    from .rundir import RunDir

    try:
        run = RunDir.open(args.run)
    except Exception as e:  # noqa: BLE001 - bad_input re-raises what is not a user error
        return bad_input(e)
    return interpret_run(run, sae=args.sae, backend=args.backend, base_url=args.base_url,
                         interpreter_model=args.interpreter_model, predictor_model=args.predictor_model,
                         features=args.features or None, max_features=args.max_features, concurrency=args.concurrency,
                         timeout=args.timeout, max_cost=args.max_cost, max_tokens=args.max_tokens, seed=args.seed,
                         negatives=args.negatives, domain=args.domain, corpus=args.corpus,
                         families=not args.no_families, overwrite=args.overwrite, progress=not args.quiet)
