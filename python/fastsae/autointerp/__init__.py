"""Automated interpretability of SAE features (paper: section 3, appendix A.2, appendix B).

An *Interpreter* LLM names each feature from the documents that activate it most (and some
that do not); a *Predictor* LLM, given only that name, says for one held-out document at a
time how confident it is that the feature fires; the Pearson correlation and F1 of those
confidences against the truth score the label. Feature families get a "superfeature" label
the same way (section 4.2).

* :func:`interpret_features`, :func:`interpret_families`: the jobs (any OpenAI-compatible
  endpoint, or ``backend="keywords"``, an LLM-free baseline), budgeted, cached and resumable;
* :class:`FeatureResult`, :class:`InterpretResults`, :class:`AutointerpConfig`;
* :func:`pearson`, :func:`f1`, :func:`summarize`: the scores;
* :mod:`.prompts` (the prompts and answer parsers), :mod:`.client` (the async client, the
  response cache, prices), :mod:`.sampling` (which documents are shown), :mod:`.keywords`.

Layout, in the order a job runs: :mod:`.config` (the settings), :mod:`.inputs` (their
checks), :mod:`.sampling`, :mod:`.prompts` and :mod:`.backends` (naming and predicting),
:mod:`.scoring`, :mod:`.job` (the budgeted, resumable loop), :mod:`.results`, :mod:`.api`
(the two public functions); :mod:`.step` is the interpret step of a run directory, which
:mod:`.cli` (``fastsae interpret``) and the demo call. ``fastsae.autointerp.core`` is the old
path of :mod:`.api`.
"""

from .client import PRICES, PRICES_DATE, ChatClient, ClientConfig, EndpointError, ResponseCache, estimate_cost, price_for
from .api import (
    AutointerpAborted,
    AutointerpConfig,
    FeatureResult,
    InterpretResults,
    interpret_families,
    interpret_features,
)
from .prompts import PROMPT_VERSION, parse_label, parse_prediction
from .scoring import f1, pearson, summarize

__all__ = [
    "AutointerpAborted",
    "AutointerpConfig",
    "ChatClient",
    "ClientConfig",
    "EndpointError",
    "FeatureResult",
    "InterpretResults",
    "PRICES",
    "PRICES_DATE",
    "PROMPT_VERSION",
    "ResponseCache",
    "estimate_cost",
    "f1",
    "interpret_families",
    "interpret_features",
    "parse_label",
    "parse_prediction",
    "pearson",
    "price_for",
    "summarize",
]
