"""The settings of an automated-interpretability run: :class:`AutointerpConfig`, the output file
names, and the fingerprint a result carries of the settings it depends on.

:class:`AutointerpConfig` *is* a :class:`~fastsae.autointerp.client.ClientConfig` (dataclass
inheritance): the request settings (concurrency, timeout, retries, backoff, sampling parameters,
prices) are declared once, there, and the job's own settings are added here; the flat field
names are the keyword arguments of :func:`~fastsae.autointerp.interpret_features`, and the
command line reads its defaults from these fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from .._checks import ArgumentTypeError, check_choice, check_int, check_number
from .client import ClientConfig
from .prompts import PROMPT_VERSION
from .sampling import NEGATIVE_MODES, SamplingConfig

BACKENDS = ("openai", "keywords")

INTERPRETER_MODEL = "gpt-4o"
"""Default model naming the features (paper: gpt-4o)."""
PREDICTOR_MODEL = "gpt-4o-mini"
"""Default model scoring the labels (paper: gpt-4o-mini)."""

LABELS_FILE = "labels.jsonl"
LABELS_SUMMARY_FILE = "labels_summary.json"
FAMILY_LABELS_FILE = "family_labels.jsonl"
FAMILY_SUMMARY_FILE = "family_labels_summary.json"
CACHE_FILE = "autointerp_cache.sqlite"
PEARSON_FIGURE = "figures/autointerp_pearson.png"
FAMILY_PEARSON_FIGURE = "figures/autointerp_family_pearson.png"


@dataclass
class AutointerpConfig(ClientConfig):
    """Every setting of an automated-interpretability run (the keyword arguments of
    :func:`interpret_features` / :func:`interpret_families` are these fields).

    The request settings are :class:`ClientConfig`'s fields, inherited (``concurrency`` here
    also bounds the features in progress at once); the rest are the job's."""

    n_top: int = 5
    """Top-activating documents shown to the Interpreter (paper: 5)."""
    n_negatives: int = 5
    """Non-activating documents shown to the Interpreter."""
    n_test_positive: int = 3
    """Activating documents, not among the top ones, the Predictor scores (paper: 3)."""
    n_test_negative: int = 3
    """Non-activating documents the Predictor scores (paper: 3)."""
    negatives: str = "random"
    """The Interpreter's non-activating documents: ``"random"`` (seeded) or ``"hard"`` (nearest
    to the mean embedding of the top documents; needs ``embeddings``)."""
    test_negatives: str | None = None
    """The Predictor's non-activating documents, ``"random"`` or ``"hard"``; ``None``: like
    ``negatives``."""
    max_doc_chars: int = 2000
    """Each document is cut to this many characters in a prompt (bounds the cost per feature)."""
    domain: str | None = None
    """The researcher the prompts address, e.g. ``"astrophysics"`` ("a meticulous astrophysics
    researcher"); ``None`` leaves the field out."""
    corpus: str = "documents"
    """What the embedded texts are, for the prompts, e.g. ``"arXiv abstracts"``."""
    max_label_words: int = 8
    """Longest accepted label; longer ones count as unparsable (paper: a short label)."""
    seed: int = 0
    """Seed of every document choice (per feature, independent of the other features)."""
    max_cost: float | None = None
    """Stop (between features) once this session's estimated spending reaches this many USD."""
    max_tokens: int | None = None
    """Stop (between features) once this session's tokens (input + output) reach this many."""
    max_consecutive_failures: int = 3
    """Abort after this many features in a row fail at the endpoint (it is down, or refusing)."""
    n_keywords: int = 5
    """Keyword backend: terms in a label."""
    keyword_background: int = 5000
    """Keyword backend: background documents (seeded sample) the term statistics compare against."""

    def __post_init__(self) -> None:
        for name in ("n_top", "n_test_positive", "max_doc_chars", "max_label_words", "n_keywords",
                     "max_consecutive_failures", "keyword_background"):
            check_int(getattr(self, name), name, min=1)
        for name in ("n_negatives", "n_test_negative", "seed"):
            check_int(getattr(self, name), name, min=0)
        if self.n_test_positive + self.n_test_negative < 2:
            raise ValueError("the test set needs at least 2 documents (n_test_positive + n_test_negative)")
        check_choice(self.negatives, "negatives", NEGATIVE_MODES)
        check_choice(self.test_negatives, "test_negatives", (*NEGATIVE_MODES, None))
        check_number(self.max_cost, "max_cost", min=0, none=True)
        check_int(self.max_tokens, "max_tokens", min=0, none=True)
        if not isinstance(self.corpus, str):
            raise ArgumentTypeError(f"corpus must be a string, e.g. 'arXiv abstracts', got {type(self.corpus).__name__}")
        if not self.corpus.strip():
            raise ValueError("corpus must be a non-empty description, e.g. 'arXiv abstracts'")
        if self.domain is not None and not isinstance(self.domain, str):
            raise ArgumentTypeError(f"domain must be a string or None, got {type(self.domain).__name__}")
        if self.domain is not None and not self.domain.strip():
            raise ValueError("domain must be a non-empty string or None")
        super().__post_init__()  # concurrency, timeout, retries, sampling parameters, prices

    @property
    def effective_test_negatives(self) -> str:
        return self.test_negatives or self.negatives

    def client_config(self) -> ClientConfig:
        """The request settings alone (a plain :class:`ClientConfig`, for the chat client)."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(ClientConfig)}
        return ClientConfig(**{**kw, "timeout": float(self.timeout)})

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(n_top=self.n_top, n_negatives=self.n_negatives, n_test_positive=self.n_test_positive,
                              n_test_negative=self.n_test_negative, negatives=self.negatives,
                              test_negatives=self.effective_test_negatives, seed=self.seed)

    def result_settings(self, backend: str, interpreter_model: str, predictor_model: str) -> dict:
        """The settings a result depends on (not concurrency, timeouts, budgets or prices)."""
        s: dict[str, Any] = {"prompt_version": PROMPT_VERSION, "backend": backend, "n_top": self.n_top,
                             "n_negatives": self.n_negatives, "n_test_positive": self.n_test_positive,
                             "n_test_negative": self.n_test_negative, "negatives": self.negatives,
                             "test_negatives": self.effective_test_negatives, "seed": self.seed,
                             "max_label_words": self.max_label_words}
        if backend == "openai":
            s.update(interpreter_model=interpreter_model, predictor_model=predictor_model,
                     max_doc_chars=self.max_doc_chars, domain=self.domain, corpus=self.corpus,
                     temperature=self.temperature, max_output_tokens=self.max_output_tokens)
        else:
            s.update(n_keywords=self.n_keywords, keyword_background=self.keyword_background)
        return s


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Short hash of :meth:`AutointerpConfig.result_settings`, stored in every result."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:16]


def make_config(options: dict, **explicit: Any) -> AutointerpConfig:
    """An :class:`AutointerpConfig` from a call's ``**options`` and its explicit keywords;
    ``TypeError`` naming an option that is not a field."""
    names = {f.name for f in dataclasses.fields(AutointerpConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid options: {sorted(names)}")
    return AutointerpConfig(**{**options, **explicit})
