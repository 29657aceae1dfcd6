"""``interpret_features`` and ``interpret_families``: label, predict, score; budgeted and resumable.

One job, for each feature (or family) in turn:

1. choose its documents (:mod:`.sampling`): the top activators, the non-activating ones the
   Interpreter sees, and the Predictor's test set;
2. the Interpreter names it (one request; an unparsable answer is asked again once);
3. the Predictor scores each test document separately (one request each, concurrently);
4. Pearson and F1 against the ±1 truth (:mod:`.scoring`);
5. the result is appended to ``labels.jsonl`` at once (flushed and fsynced).

A rerun reads ``labels.jsonl`` and skips every feature already there, and the response cache
answers any request that was made before a kill; so a run killed at any point loses nothing it
finished, and a finished job reruns without a single request. Budgets (``max_cost``,
``max_tokens``) are checked before each feature starts: the run stops cleanly between features,
the in-flight ones finish and are saved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..io import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl
from .client import (
    PRICES_DATE,
    Accounting,
    ChatClient,
    ClientConfig,
    EndpointError,
    ResponseCache,
    Usage,
    price_for,
    resolve_endpoint,
    sanitize_url,
    warn_unpriced,
)
from .prompts import (
    PROMPT_VERSION,
    PromptDoc,
    interpreter_messages,
    interpreter_retry_message,
    parse_label,
    parse_prediction,
    predictor_messages,
    predictor_retry_message,
    truncate,
)
from .sampling import NEGATIVE_MODES, ActivationIndex, Sampler, SamplingConfig, Selection, Unit
from .scoring import pearson_histogram_png, score, summarize

log = logging.getLogger("fastsae.autointerp")

BACKENDS = ("openai", "keywords")

LABELS_FILE = "labels.jsonl"
LABELS_SUMMARY_FILE = "labels_summary.json"
FAMILY_LABELS_FILE = "family_labels.jsonl"
FAMILY_SUMMARY_FILE = "family_labels_summary.json"
CACHE_FILE = "autointerp_cache.sqlite"
PEARSON_FIGURE = "figures/autointerp_pearson.png"
FAMILY_PEARSON_FIGURE = "figures/autointerp_family_pearson.png"


# -- configuration -------------------------------------------------------------------------------
@dataclass
class AutointerpConfig:
    """Every setting of an automated-interpretability run (the keyword arguments of
    :func:`interpret_features` / :func:`interpret_families` are these fields)."""

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
    concurrency: int = 8
    """Requests in flight at once (and features in progress at once)."""
    timeout: float = 60.0
    """Seconds per request before it is abandoned and retried."""
    max_retries: int = 6
    """Retries per request on 429, 5xx, timeouts and connection errors."""
    backoff_base: float = 1.0
    """First backoff in seconds; doubles per retry, with jitter."""
    backoff_max: float = 60.0
    """Longest single backoff (and cap on a server's Retry-After)."""
    malformed_retries: int = 2
    """Retries per request when a 200 answer is not a chat completion (non-JSON, no choices)."""
    temperature: float | None = 0.0
    """Sampling temperature (0: as reproducible as the endpoint allows); ``None`` omits it."""
    max_output_tokens: int | None = 1024
    """Cap on each answer's length in tokens; ``None`` omits it."""
    token_param: str = "max_tokens"
    """Request field for ``max_output_tokens``: ``"max_tokens"`` or ``"max_completion_tokens"``
    (OpenAI's reasoning models)."""
    prices: dict[str, tuple[float, float]] | None = None
    """Extra or overriding prices, model -> (USD per 1M input, per 1M output tokens)."""
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
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("n_negatives", "n_test_negative", "seed"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.n_test_positive + self.n_test_negative < 2:
            raise ValueError("the test set needs at least 2 documents (n_test_positive + n_test_negative)")
        if self.negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {self.negatives!r}")
        if self.test_negatives is not None and self.test_negatives not in NEGATIVE_MODES:
            raise ValueError(f"test_negatives must be one of {NEGATIVE_MODES} or None, got {self.test_negatives!r}")
        if self.max_cost is not None and not (_is_number(self.max_cost) and self.max_cost >= 0):
            raise ValueError(f"max_cost must be a number of USD >= 0 or None, got {self.max_cost!r}")
        if self.max_tokens is not None and not (_is_int(self.max_tokens) and self.max_tokens >= 0):
            raise ValueError(f"max_tokens must be an integer >= 0 or None, got {self.max_tokens!r}")
        if not isinstance(self.corpus, str) or not self.corpus.strip():
            raise ValueError("corpus must be a non-empty description, e.g. 'arXiv abstracts'")
        if self.domain is not None and (not isinstance(self.domain, str) or not self.domain.strip()):
            raise ValueError("domain must be a non-empty string or None")
        self.client_config()  # validates concurrency, timeout, retries, sampling parameters, prices

    @property
    def effective_test_negatives(self) -> str:
        return self.test_negatives or self.negatives

    def client_config(self) -> ClientConfig:
        return ClientConfig(concurrency=self.concurrency, timeout=float(self.timeout), max_retries=self.max_retries,
                            backoff_base=self.backoff_base, backoff_max=self.backoff_max,
                            malformed_retries=self.malformed_retries,
                            temperature=self.temperature, max_output_tokens=self.max_output_tokens,
                            token_param=self.token_param, prices=self.prices)

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


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Short hash of :meth:`AutointerpConfig.result_settings`, stored in every result."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:16]


# -- results -------------------------------------------------------------------------------------
@dataclass
class FeatureResult:
    """The outcome for one feature (or one family: then ``feature`` is its parent)."""

    feature: int
    """Feature id (for a family: the parent's id)."""
    label: str | None
    """The Interpreter's label; ``None`` when skipped or unparsable."""
    pearson: float
    """Pearson correlation of the Predictor's confidences with the ±1 truth (NaN if undefined)."""
    f1: float
    """F1 of "confidence > 0" against the truth (NaN when nothing was scored)."""
    reasoning: str = ""
    """The Interpreter's reasoning (the text before its ``FINAL:`` line)."""
    predictions: list[float | None] = field(default_factory=list)
    """Confidence per test document, ``None`` where the answer stayed unparsable."""
    prediction_reasoning: list[str] = field(default_factory=list)
    """The Predictor's reasoning per test document."""
    truth: list[int] = field(default_factory=list)
    """+1 / -1 per test document."""
    test_docs: list[int] = field(default_factory=list)
    """Corpus rows of the test documents (positives first)."""
    top_docs: list[int] = field(default_factory=list)
    """Corpus rows shown to the Interpreter as activating, strongest first."""
    top_activations: list[float] = field(default_factory=list)
    """Their activations."""
    negative_docs: list[int] = field(default_factory=list)
    """Corpus rows shown to the Interpreter as non-activating."""
    n_active: int = 0
    """Documents the feature (family) activates on."""
    n_scored: int = 0
    """Test documents with a parsed prediction (the scores use these)."""
    tokens: int = 0
    """Input + output tokens of all its answers (what they cost when made, cached or not)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """Estimated USD of all its answers."""
    interpreter_model: str = ""
    predictor_model: str = ""
    backend: str = ""
    """``"openai"`` (any compatible endpoint) or ``"keywords"``."""
    parse_failures: int = 0
    """Answers still unparsable after their one retry (interpreter + predictor)."""
    parse_failures_interpreter: int = 0
    parse_failures_predictor: int = 0
    parse_retries: int = 0
    """Answers that needed the retry."""
    skipped: str | None = None
    """Why there is no score (too few documents, unparsable label), else ``None``."""
    family: int | None = None
    """Family index (position in the families list), for family results."""
    children: list[int] | None = None
    """The family's children, for family results."""
    fingerprint: str = ""
    """Hash of the settings that produced it (a rerun only reuses matching results)."""

    def to_record(self) -> dict:
        """The JSON-lines record (NaN written as null)."""
        d = dataclasses.asdict(self)
        for k in ("pearson", "f1"):
            if d[k] is None or not math.isfinite(d[k]):
                d[k] = None
        if self.family is None:
            del d["family"], d["children"]
        else:
            d["parent"] = self.feature
            d["members"] = [self.feature, *(self.children or [])]
        return d

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "FeatureResult":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in rec.items() if k in names}
        for k in ("pearson", "f1"):
            kw[k] = math.nan if kw.get(k) is None else float(kw[k])
        return cls(**kw)


class InterpretResults(list):
    """The list of :class:`FeatureResult` (requested order, done ones only), plus the run's
    ``summary`` dict, ``stopped`` (``None``, ``"max_cost"``, ``"max_tokens"`` or
    ``"endpoint"``) and ``session`` (requests, cache hits, tokens and cost of this call)."""

    summary: dict
    stopped: str | None
    session: dict

    def __init__(self, items: Iterable[FeatureResult] = (), *, summary: dict | None = None,
                 stopped: str | None = None, session: dict | None = None):
        super().__init__(items)
        self.summary = summary or {}
        self.stopped = stopped
        self.session = session or {}


class AutointerpAborted(EndpointError):
    """The endpoint kept failing (or refused the key or model): the run stopped. Everything
    finished is saved; ``results`` holds it. Rerun to continue where it stopped."""

    def __init__(self, message: str, results: InterpretResults, *, fatal: bool = False, status: int | None = None):
        super().__init__(message, fatal=fatal, status=status)
        self.results = results


# -- input validation ----------------------------------------------------------------------------
def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__") or not hasattr(texts, "__getitem__"):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: there are no documents to interpret features with")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return texts


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the caller's bad input
        raise TypeError(f"{name} cannot be read as an array: {e}") from e


def _check_codes(codes: Any, n_docs: int, n_latents: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    if hasattr(codes, "indices") and hasattr(codes, "values") and not isinstance(codes, Mapping):
        idx, val = codes.indices, codes.values
    elif isinstance(codes, (tuple, list)) and len(codes) == 2:
        idx, val = codes
    else:
        raise TypeError("codes must be a fastsae.SparseCode (indices [N, k], values [N, k]) or an "
                        f"(indices, values) pair of arrays, got {type(codes).__name__}")
    idx, val = _to_numpy(idx, "codes.indices"), _to_numpy(val, "codes.values")
    if idx.ndim != 2 or val.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"codes.indices and codes.values must both be [N, k]; got {idx.shape} and {val.shape}")
    if idx.shape[0] != n_docs:
        raise ValueError(f"codes has {idx.shape[0]} rows but there are {n_docs} texts (row i must encode texts[i])")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"codes.indices must be integers, got {idx.dtype}")
    if not (np.issubdtype(val.dtype, np.floating) or np.issubdtype(val.dtype, np.integer)):
        raise TypeError(f"codes.values must be numbers, got {val.dtype}")
    if val.size and not np.all(np.isfinite(val)):
        raise ValueError("codes.values holds NaN or infinite activations")
    if val.size and val.min() < 0:
        raise ValueError("codes.values holds negative activations (top-k codes are >= 0; 0 marks an empty slot)")
    active = val > 0
    if n_latents is None:
        n_latents = int(idx[active].max()) + 1 if active.any() else 1
    if not _is_int(n_latents) or n_latents < 1:
        raise ValueError(f"n_latents must be a positive integer, got {n_latents!r}")
    if active.any():
        lo, hi = int(idx[active].min()), int(idx[active].max())
        if lo < 0 or hi >= n_latents:
            raise ValueError(f"codes.indices holds latent ids in [{lo}, {hi}], outside [0, {n_latents}) "
                             "(is n_latents right?)")
    return idx, val, int(n_latents)


def _check_features(features: Any, n_latents: int) -> list[int]:
    if features is None:
        return list(range(n_latents))
    if isinstance(features, (int, np.integer)) and not isinstance(features, bool):
        features = [features]
    try:
        feats = list(np.asarray(features).ravel().tolist()) if hasattr(features, "__array__") else list(features)
    except TypeError:
        raise TypeError(f"features must be a list of latent ids, got {type(features).__name__}") from None
    out: list[int] = []
    seen: set[int] = set()
    for f in feats:
        if not _is_int(f):
            raise TypeError(f"features must be integer latent ids, got {f!r}")
        f = int(f)
        if f < 0 or f >= n_latents:
            raise ValueError(f"feature {f} is outside [0, {n_latents})")
        if f not in seen:
            seen.add(f)
            out.append(f)
    if not out:
        raise ValueError("features is empty")
    return out


def _check_embeddings(embeddings: Any, n_docs: int) -> np.ndarray:
    E = embeddings if isinstance(embeddings, np.ndarray) else _to_numpy(embeddings, "embeddings")
    if E.ndim != 2 or E.shape[0] != n_docs:
        raise ValueError(f"embeddings must be [N, d] with N = {n_docs} (one row per text), got {E.shape}")
    if not np.issubdtype(E.dtype, np.number):
        raise TypeError(f"embeddings must be numeric, got {E.dtype}")
    return E


def _family_units(families: Any, n_latents: int) -> list[Unit]:
    if isinstance(families, Mapping) and "families" in families:
        families = families["families"]
    if isinstance(families, (str, bytes)) or not hasattr(families, "__iter__"):
        raise TypeError("families must be a list of {'parent', 'children'} (or objects with .parent/.children)")
    units = []
    for i, f in enumerate(families):
        if isinstance(f, Mapping):
            if "parent" not in f or "children" not in f:
                raise ValueError(f"families[{i}] lacks 'parent' or 'children'")
            parent, children = f["parent"], f["children"]
        elif hasattr(f, "parent") and hasattr(f, "children"):
            parent, children = f.parent, f.children
        else:
            raise TypeError(f"families[{i}] is {type(f).__name__}: need 'parent' and 'children'")
        ids = [parent, *list(children)]
        for x in ids:
            if not _is_int(x):
                raise TypeError(f"families[{i}] holds a non-integer latent id {x!r}")
            if not 0 <= int(x) < n_latents:
                raise ValueError(f"families[{i}] holds latent {int(x)}, outside [0, {n_latents})")
        parent = int(parent)
        kids: list[int] = []
        for c in children:
            c = int(c)
            if c != parent and c not in kids:
                kids.append(c)
        units.append(Unit(key=i, members=(parent, *kids), sources=tuple(kids) or (parent,), family=i))
    if not units:
        raise ValueError("families is empty")
    return units


# -- backends ------------------------------------------------------------------------------------
@dataclass
class _Interp:
    label: str | None
    reasoning: str
    usage: Usage
    parse_failures: int = 0
    parse_retries: int = 0
    skip_reason: str | None = None
    state: Any = None


@dataclass
class _Pred:
    value: float | None
    reasoning: str
    usage: Usage
    parse_failures: int = 0
    parse_retries: int = 0


class _LLMBackend:
    name = "openai"

    def __init__(self, client: ChatClient, cfg: AutointerpConfig, texts: list[str],
                 interpreter_model: str, predictor_model: str):
        self.client, self.cfg, self.texts = client, cfg, texts
        self.interpreter_model, self.predictor_model = interpreter_model, predictor_model

    def _doc(self, row: int, activation: float | None = None) -> PromptDoc:
        return PromptDoc(truncate(self.texts[row], self.cfg.max_doc_chars), activation)

    async def interpret(self, unit: Unit, sel: Selection) -> _Interp:
        cfg = self.cfg
        msgs = interpreter_messages([self._doc(r, a) for r, a in zip(sel.top, sel.top_activations)],
                                    [self._doc(r) for r in sel.negatives], domain=cfg.domain, corpus=cfg.corpus,
                                    max_label_words=cfg.max_label_words, family=unit.family is not None)
        c = await self.client.complete(self.interpreter_model, msgs)
        p = parse_label(c.content, max_label_words=cfg.max_label_words)
        if p.label is not None:
            return _Interp(p.label, p.reasoning, c.usage)
        # One retry, continuing the conversation (a different request, so a cached bad answer
        # is not simply replayed; and deterministic, so a rerun finds the retry cached too).
        c2 = await self.client.complete(self.interpreter_model, msgs + [
            {"role": "assistant", "content": c.content}, interpreter_retry_message(cfg.max_label_words)])
        p2 = parse_label(c2.content, max_label_words=cfg.max_label_words)
        reasoning = p.reasoning if p2.label is not None else "\n\n".join(x for x in (p.reasoning, p2.reasoning) if x)
        if p2.label is not None:
            return _Interp(p2.label, reasoning, c.usage + c2.usage, parse_retries=1)
        return _Interp(None, reasoning, c.usage + c2.usage, parse_failures=1, parse_retries=1,
                       skip_reason=f"unparsable interpreter answer: {p2.error} (after one retry)")

    async def predict(self, interp: _Interp, row: int) -> _Pred:
        cfg = self.cfg
        msgs = predictor_messages(interp.label or "", self._doc(row), domain=cfg.domain, corpus=cfg.corpus)
        c = await self.client.complete(self.predictor_model, msgs)
        p = parse_prediction(c.content)
        if p.value is not None:
            return _Pred(p.value, p.reasoning, c.usage)
        c2 = await self.client.complete(self.predictor_model, msgs + [
            {"role": "assistant", "content": c.content}, predictor_retry_message()])
        p2 = parse_prediction(c2.content)
        reasoning = p.reasoning if p2.value is not None else "\n\n".join(x for x in (p.reasoning, p2.reasoning) if x)
        return _Pred(p2.value, reasoning, c.usage + c2.usage, parse_failures=int(p2.value is None), parse_retries=1)


class _KeywordBackend:
    name = "keywords"
    interpreter_model = "keywords"
    predictor_model = "keywords"

    def __init__(self, texts: list[str], usable: np.ndarray, index: ActivationIndex, cfg: AutointerpConfig):
        from .keywords import KeywordModel

        self.index = index
        self.model = KeywordModel(texts, usable, background=cfg.keyword_background, seed=cfg.seed,
                                  n_keywords=cfg.n_keywords, max_label_words=cfg.max_label_words)

    async def interpret(self, unit: Unit, sel: Selection) -> _Interp:
        kl = self.model.label(sel.top, sel.negatives, self.index.active_rows(unit.members))
        skip = None if kl.label else f"no distinctive terms: {kl.reasoning}"
        return _Interp(kl.label, kl.reasoning, Usage(), skip_reason=skip, state=kl)

    async def predict(self, interp: _Interp, row: int) -> _Pred:
        kl = interp.state
        m = self.model.match(kl, row)
        return _Pred(self.model.predict(kl, row), f"term match {m:.3f} (threshold {kl.threshold:.3f})", Usage())


# -- the job -------------------------------------------------------------------------------------
def _record_key(rec: Mapping[str, Any], families: bool) -> Any:
    if families:
        return (rec.get("family"), tuple(rec.get("members") or ()))
    return rec.get("feature")


def _unit_key(unit: Unit) -> Any:
    return (unit.family, unit.members) if unit.family is not None else unit.key


class _Job:
    def __init__(self, *, texts: list[str], idx: np.ndarray, val: np.ndarray, n_latents: int, units: list[Unit],
                 families: bool, cfg: AutointerpConfig, backend: str, base_url: str | None, api_key: str | None,
                 interpreter_model: str, predictor_model: str, out_dir: Any, cache_path: Any,
                 embeddings: Any, progress: bool, overwrite: bool):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        for name, m in (("interpreter_model", interpreter_model), ("predictor_model", predictor_model)):
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"{name} must be a non-empty model name")
        self.texts, self.units, self.families, self.cfg = texts, units, families, cfg
        self.backend_name = backend
        if backend == "keywords":
            interpreter_model = predictor_model = "keywords"
        self.interpreter_model, self.predictor_model = interpreter_model, predictor_model
        self.progress = progress
        if backend == "openai":  # first: a missing key should fail before any work
            self.base_url, self.api_key = resolve_endpoint(base_url, api_key)
            warn_unpriced([interpreter_model, predictor_model], cfg.prices, cfg.max_cost)
        else:
            self.base_url, self.api_key = None, None
        # Blank documents are never shown: a label drawn from an empty text means nothing.
        self.usable = np.fromiter((bool(t.strip()) for t in texts), dtype=bool, count=len(texts))
        if not self.usable.any():
            raise ValueError("every text is empty or blank")
        n_blank = int((~self.usable).sum())
        if n_blank:
            log.warning("%d of %d texts are empty or blank; they are never shown to the models", n_blank, len(texts))
        if cfg.negatives == "hard" or cfg.effective_test_negatives == "hard":
            if embeddings is None:
                raise ValueError("negatives='hard' needs embeddings=[N, d] (the texts' embeddings)")
            embeddings = _check_embeddings(embeddings, len(texts))
        self.embeddings = embeddings
        members = {m for u in units for m in u.members}
        self.index = ActivationIndex(idx, val, n_latents, keep=members)
        self.sampler = Sampler(self.index, self.usable, cfg.sampling_config(), embeddings)
        self.settings = cfg.result_settings(backend, interpreter_model, predictor_model)
        self.fingerprint = fingerprint(self.settings)

        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.labels_path = self.out_dir / (FAMILY_LABELS_FILE if families else LABELS_FILE)
            self.summary_path = self.out_dir / (FAMILY_SUMMARY_FILE if families else LABELS_SUMMARY_FILE)
            self.figure_path = self.out_dir / (FAMILY_PEARSON_FIGURE if families else PEARSON_FIGURE)
        if cache_path is None and self.out_dir is not None:
            cache_path = self.out_dir / CACHE_FILE
        self.cache_path = Path(cache_path) if cache_path is not None and backend == "openai" else None

        self.accounting = Accounting()
        self.done: dict[Any, FeatureResult] = {}
        self.n_failed = 0
        self.n_completed = 0
        self.n_saved = 0
        self.stopped: str | None = None
        self.error: EndpointError | None = None
        self._load_previous(overwrite)

    # -- resume ------------------------------------------------------------------------------
    def _load_previous(self, overwrite: bool) -> None:
        if self.out_dir is None:
            return
        if overwrite and self.labels_path.exists():
            atomic_write_text(self.labels_path, "")
            return
        _repair_jsonl(self.labels_path)
        records = read_jsonl(self.labels_path)
        other = sorted({r.get("fingerprint") for r in records} - {self.fingerprint}, key=str)
        if other:
            raise ValueError(
                f"{self.labels_path} holds results made with other settings (fingerprint {other[0]}, now "
                f"{self.fingerprint}; settings now: {json.dumps(self.settings, sort_keys=True)}). Rerun with the "
                "same settings to resume, or pass overwrite=True (CLI: --overwrite) or another out_dir. The "
                "response cache keeps every answer already paid for.")
        wanted = {_unit_key(u) for u in self.units}
        keep: dict[Any, dict] = {}
        stale = 0
        for r in records:
            k = _record_key(r, self.families)
            if self.families and k not in wanted:
                stale += 1  # a family of an older families.json: its label describes other latents
                continue
            keep[k] = r  # the last line for a key wins (a duplicate can only repeat the same result)
        if stale:
            log.info("%s: dropping %d results of families that are no longer in the families list",
                     self.labels_path, stale)
            atomic_write_text(self.labels_path, "".join(json.dumps(r) + "\n" for r in keep.values()))
        for k, r in keep.items():
            if k in wanted:
                self.done[k] = FeatureResult.from_record(r)

    # -- budgets -----------------------------------------------------------------------------
    def _budget_stop(self, in_flight: int) -> str | None:
        acc, cfg = self.accounting, self.cfg
        n = max(self.n_completed, 1)
        # Before starting another feature, also reserve what the features already in flight will
        # likely spend (the mean of this session's finished ones): stopping "between features"
        # then overshoots the budget by about one feature, not by a whole window of them.
        if cfg.max_cost is not None:
            expected = acc.cost / n * (in_flight + 1) if self.n_completed else 0.0
            if acc.cost >= cfg.max_cost or (self.n_completed and acc.cost + expected > cfg.max_cost):
                return "max_cost"
        if cfg.max_tokens is not None:
            expected = acc.tokens / n * (in_flight + 1) if self.n_completed else 0.0
            if acc.tokens >= cfg.max_tokens or (self.n_completed and acc.tokens + expected > cfg.max_tokens):
                return "max_tokens"
        return None

    # -- one unit ----------------------------------------------------------------------------
    async def _process(self, backend: Any, unit: Unit, sel: Selection) -> FeatureResult:
        res = FeatureResult(
            feature=unit.parent if unit.family is not None else unit.key, label=None, pearson=math.nan,
            f1=math.nan, top_docs=sel.top, top_activations=sel.top_activations, negative_docs=sel.negatives,
            test_docs=sel.test_docs, truth=sel.truth, n_active=sel.n_active, backend=self.backend_name,
            interpreter_model=self.interpreter_model, predictor_model=self.predictor_model,
            family=unit.family, children=list(unit.children) if unit.family is not None else None,
            fingerprint=self.fingerprint, skipped=sel.skipped)
        if sel.skipped:
            return res
        interp = await backend.interpret(unit, sel)
        usage = interp.usage
        res.reasoning = interp.reasoning
        res.parse_failures_interpreter = interp.parse_failures
        res.parse_retries = interp.parse_retries
        if interp.label is None:
            res.skipped = interp.skip_reason or "no label"
        else:
            res.label = interp.label
            outs = await asyncio.gather(*(backend.predict(interp, r) for r in sel.test_docs), return_exceptions=True)
            for o in outs:  # every prediction has finished (none left running) before an error propagates
                if isinstance(o, BaseException):
                    raise o
            preds: list[_Pred] = list(outs)  # type: ignore[arg-type]
            for p in preds:
                usage = usage + p.usage
            res.predictions = [p.value for p in preds]
            res.prediction_reasoning = [p.reasoning for p in preds]
            res.parse_failures_predictor = sum(p.parse_failures for p in preds)
            res.parse_retries += sum(p.parse_retries for p in preds)
            res.pearson, res.f1, res.n_scored = score(res.predictions, res.truth)
        res.parse_failures = res.parse_failures_interpreter + res.parse_failures_predictor
        res.prompt_tokens, res.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        res.tokens, res.cost = usage.total_tokens, usage.cost
        return res

    def _save(self, res: FeatureResult, unit: Unit) -> None:
        self.done[_unit_key(unit)] = res
        self.n_saved += 1
        if self.out_dir is not None:
            append_jsonl(self.labels_path, res.to_record())

    # -- the loop ----------------------------------------------------------------------------
    async def _run_async(self, pending: list[Unit]) -> None:
        from tqdm.auto import tqdm

        client = None
        cache = None
        if self.backend_name == "openai":
            cache = ResponseCache(self.cache_path) if self.cache_path is not None else None
            client = ChatClient(base_url=self.base_url, api_key=self.api_key, config=self.cfg.client_config(),
                                cache=cache, accounting=self.accounting)
            backend: Any = _LLMBackend(client, self.cfg, self.texts, self.interpreter_model, self.predictor_model)
            window = self.cfg.concurrency
        else:
            backend = _KeywordBackend(self.texts, self.usable, self.index, self.cfg)
            window = 1  # CPU only: nothing to overlap
        what = "families" if self.families else "features"
        bar = tqdm(total=len(pending), desc=f"autointerp {what}", unit="family" if self.families else "feature",
                   disable=not self.progress, dynamic_ncols=True)
        n_parse = 0
        consecutive = 0
        in_flight: dict[asyncio.Task, Unit] = {}
        order = {u: i for i, u in enumerate(pending)}
        try:
            it = iter(pending)
            exhausted = False
            while True:
                while not self.stopped and not exhausted and len(in_flight) < window:
                    reason = self._budget_stop(len(in_flight))
                    if reason:
                        self.stopped = reason
                        log.warning("budget reached (%s): stopping after the %d features in flight; "
                                    "rerun with a larger budget to continue", reason, len(in_flight))
                        break
                    unit = next(it, None)
                    if unit is None:
                        exhausted = True
                        break
                    sel = self.sampler.select(unit)
                    in_flight[asyncio.ensure_future(self._process(backend, unit, sel))] = unit
                if not in_flight:
                    break
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for t in sorted(finished, key=lambda t: order[in_flight[t]]):  # same batch: requested order
                    unit = in_flight.pop(t)
                    try:
                        res = t.result()
                    except EndpointError as e:
                        self.n_failed += 1
                        consecutive += 1
                        if self.error is None or e.fatal:
                            self.error = e
                        if not self.stopped and (e.fatal or consecutive >= self.cfg.max_consecutive_failures):
                            self.stopped = "endpoint"
                            log.error("stopping: %s", e)
                        else:
                            log.warning("%s %d failed (will be retried by the next run): %s",
                                        "family" if self.families else "feature", unit.key, e)
                    else:
                        consecutive = 0
                        if res.skipped is None or res.tokens:
                            self.n_completed += 1  # the budget's mean cost counts features that asked
                        n_parse += res.parse_failures
                        self._save(res, unit)
                    bar.update(1)
                    acc = self.accounting
                    bar.set_postfix({"failed": self.n_failed, "parse_failures": n_parse, "tokens": _si(acc.tokens),
                                     "cost": f"${acc.cost:.4f}"}, refresh=False)
        finally:
            for t in in_flight:
                t.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            bar.close()
            if client is not None:
                await client.aclose()
            if cache is not None:
                cache.close()

    def run(self) -> InterpretResults:
        t0 = time.perf_counter()
        pending = [u for u in self.units if _unit_key(u) not in self.done]
        if pending and self.sampler.needs_hard():
            from tqdm.auto import tqdm

            with tqdm(total=len(pending), desc="hard negatives", disable=not self.progress) as bar:
                self.sampler.prepare_hard(pending, progress=bar)
        try:
            if pending:
                _run_coroutine(self._run_async(pending))
        finally:
            results = self._finish(time.perf_counter() - t0)
        if self.stopped == "endpoint" and self.error is not None:
            where = f"; the finished ones are saved in {self.labels_path}" if self.out_dir is not None else ""
            raise AutointerpAborted(
                f"autointerp stopped: the endpoint failed ({self.error}). {len(results)} of {len(self.units)} done"
                f"{where}; rerun to continue.", results, fatal=self.error.fatal, status=self.error.status)
        return results

    def _finish(self, seconds: float) -> InterpretResults:
        ordered = [self.done[_unit_key(u)] for u in self.units if _unit_key(u) in self.done]
        session = {**self.accounting.as_dict(), "features_done": self.n_saved, "features_failed": self.n_failed,
                   "seconds": round(seconds, 3)}
        if self.out_dir is not None:
            records = read_jsonl(self.labels_path)
            if self.families:
                wanted = {_unit_key(u) for u in self.units}
                records = [r for r in records if _record_key(r, True) in wanted]
            dedup = {_record_key(r, self.families): r for r in records}
            records = list(dedup.values())
        else:
            records = [r.to_record() for r in ordered]
        summary = summarize(records)
        models = sorted({self.interpreter_model, self.predictor_model})
        summary.update({
            "kind": "families" if self.families else "features",
            "n_requested": len(self.units),
            "n_done": len(ordered),
            "n_remaining": len(self.units) - len(ordered),
            "stopped": self.stopped,
            "error": str(self.error) if self.error is not None else None,
            "backend": self.backend_name,
            "interpreter_model": self.interpreter_model,
            "predictor_model": self.predictor_model,
            "base_url": sanitize_url(self.base_url),
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "budget": {"max_cost": self.cfg.max_cost, "max_tokens": self.cfg.max_tokens},
            "prices_usd_per_1m_tokens": {m: price_for(m, self.cfg.prices) for m in models}
            if self.backend_name == "openai" else {},
            "prices_date": PRICES_DATE,
            "session": session,
        })
        if self.out_dir is not None:
            summary["files"] = {"labels": str(self.labels_path), "figure": str(self.figure_path),
                                "cache": str(self.cache_path) if self.cache_path else None}
            try:
                title = "Family interpretability" if self.families else "Automated interpretability"
                png = pearson_histogram_png([r.get("pearson") for r in records], title=title)
                atomic_write_bytes(self.figure_path, png)
            except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the summary
                log.warning("could not draw %s: %s", self.figure_path, e)
                summary["files"]["figure"] = None
            atomic_write_json(self.summary_path, summary)
        return InterpretResults(ordered, summary=summary, stopped=self.stopped, session=session)


def _repair_jsonl(path: Path) -> None:
    """Drop a torn last line (a run killed mid-write), so the next append starts a clean line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data[: data.rfind(b"\n") + 1]
        log.info("%s: dropping an incomplete last line (%d bytes) left by an interrupted run", path,
                 len(data) - len(keep))
        atomic_write_bytes(path, keep)


def _si(n: int) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _run_coroutine(coro) -> Any:
    """Run ``coro`` to completion, also from inside a running event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is running in this thread (Jupyter): run ours in a helper thread and wait for it.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(asyncio.run, coro).result()


def _make_config(options: dict, **explicit: Any) -> AutointerpConfig:
    names = {f.name for f in dataclasses.fields(AutointerpConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid options: {sorted(names)}")
    return AutointerpConfig(**{**options, **explicit})


# -- public API ----------------------------------------------------------------------------------
def interpret_features(texts: Sequence[str], codes: Any, n_latents: int, *, features: Iterable[int] | None = None,
                       backend: str = "openai", base_url: str | None = None, api_key: str | None = None,
                       interpreter_model: str = "gpt-4o", predictor_model: str = "gpt-4o-mini",
                       out_dir: str | Path | None = None, cache_path: str | Path | None = None,
                       concurrency: int = 8, timeout: float = 60.0, max_cost: float | None = None,
                       seed: int = 0, max_tokens: int | None = None, embeddings: Any = None,
                       negatives: str = "random", progress: bool = True, overwrite: bool = False,
                       **options: Any) -> InterpretResults:
    """Label SAE features with an Interpreter LLM and score the labels with a Predictor LLM.

    Parameters
    ----------
    texts : list of str
        The documents; row i of ``codes`` (and of ``embeddings``) encodes ``texts[i]``.
    codes : SparseCode or (indices, values)
        Top-k codes of the texts, ``[N, k]`` each; activation 0 marks an empty slot.
    n_latents : int
        Number of SAE latents (feature ids are ``0 .. n_latents - 1``).
    features : iterable of int, optional
        Features to interpret (default: all). Features that never fire, or fire on too few
        documents, get a result with ``skipped`` set instead of a score.
    backend : ``"openai"`` or ``"keywords"``
        ``"openai"``: any OpenAI-compatible chat endpoint. ``"keywords"``: the LLM-free baseline
        (distinctive terms; no key, no network), scored on the same test sets.
    base_url, api_key : str, optional
        The endpoint; default ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (the key is never saved).
    interpreter_model, predictor_model : str
        Models of the two roles (paper: gpt-4o and gpt-4o-mini).
    out_dir : path, optional
        Where ``labels.jsonl`` (appended per feature, resumable), ``labels_summary.json``,
        ``figures/autointerp_pearson.png`` and the response cache go.
    cache_path : path, optional
        The sqlite response cache (default ``out_dir/autointerp_cache.sqlite``; none without
        either).
    concurrency, timeout : int, float
        Requests in flight; seconds per request.
    max_cost, max_tokens : float, int, optional
        Budgets (estimated USD; tokens) of this call; the run stops cleanly between features.
    seed : int
        Seed of every document choice.
    embeddings : [N, d] array, optional
        Needed for ``negatives="hard"``.
    negatives : ``"random"`` or ``"hard"``
        How the non-activating documents are chosen (for the Interpreter and, unless
        ``test_negatives`` says otherwise, for the test set).
    progress : bool
        Show a progress bar (features, failures, tokens, cost).
    overwrite : bool
        Discard results in ``out_dir`` made with other settings instead of refusing to mix them.
    **options
        Any other :class:`AutointerpConfig` field (``n_top``, ``n_test_positive``, ``domain``,
        ``corpus``, ``prices``, ``max_retries``, ``backoff_base``, ...).

    Returns
    -------
    InterpretResults
        A list of :class:`FeatureResult` (``.feature``, ``.label``, ``.pearson``, ``.f1``, ...)
        in the order requested, for every feature done (also in earlier runs into ``out_dir``),
        with ``.summary``, ``.stopped`` and ``.session``.

    Raises
    ------
    AutointerpAborted
        The endpoint kept failing or refused the key/model; what finished is saved (and in
        the exception's ``results``); rerun to continue.
    """
    texts = _check_texts(texts)
    cfg = _make_config(options, concurrency=concurrency, timeout=timeout, max_cost=max_cost, seed=seed,
                       max_tokens=max_tokens, negatives=negatives)
    if not _is_int(n_latents) or n_latents < 1:
        raise ValueError(f"n_latents must be a positive integer, got {n_latents!r}")
    idx, val, n_latents = _check_codes(codes, len(texts), int(n_latents))
    feats = _check_features(features, n_latents)
    units = [Unit(key=f, members=(f,), sources=(f,)) for f in feats]
    job = _Job(texts=texts, idx=idx, val=val, n_latents=n_latents, units=units, families=False, cfg=cfg,
               backend=backend, base_url=base_url, api_key=api_key, interpreter_model=interpreter_model,
               predictor_model=predictor_model, out_dir=out_dir, cache_path=cache_path, embeddings=embeddings,
               progress=progress, overwrite=overwrite)
    return job.run()


def interpret_families(texts: Sequence[str], codes: Any, families: Any, *, n_latents: int | None = None,
                       backend: str = "openai", base_url: str | None = None, api_key: str | None = None,
                       interpreter_model: str = "gpt-4o", predictor_model: str = "gpt-4o-mini",
                       out_dir: str | Path | None = None, cache_path: str | Path | None = None,
                       concurrency: int = 8, timeout: float = 60.0, max_cost: float | None = None,
                       seed: int = 0, max_tokens: int | None = None, embeddings: Any = None,
                       negatives: str = "random", progress: bool = True, overwrite: bool = False,
                       **options: Any) -> InterpretResults:
    """A "superfeature" label and score for each feature family (paper, section 4.2).

    ``families`` is a list of ``{"parent": int, "children": [int, ...]}`` (or objects with
    ``.parent`` / ``.children``, e.g. :func:`fastsae.feature_families`' result, or the whole
    ``families.json`` dict). The Interpreter sees high-activating documents sampled across the
    children in turn; a document counts as activating when any member (parent or child) is
    active on it; the Predictor is scored on such documents exactly as for single features.
    Results (``.family`` = index in ``families``, ``.feature`` = parent, ``.children``) go to
    ``out_dir/family_labels.jsonl``. Other arguments as in :func:`interpret_features`;
    ``n_latents`` defaults to one more than the largest latent id seen.
    """
    texts = _check_texts(texts)
    cfg = _make_config(options, concurrency=concurrency, timeout=timeout, max_cost=max_cost, seed=seed,
                       max_tokens=max_tokens, negatives=negatives)
    if n_latents is not None and (not _is_int(n_latents) or n_latents < 1):
        raise ValueError(f"n_latents must be a positive integer, got {n_latents!r}")
    idx, val, n_inferred = _check_codes(codes, len(texts), None if n_latents is None else int(n_latents))
    if n_latents is None:
        fam_list = families["families"] if isinstance(families, Mapping) and "families" in families else families
        ids = [n_inferred - 1]
        try:
            for f in fam_list:
                p = f["parent"] if isinstance(f, Mapping) else getattr(f, "parent", 0)
                cs = f["children"] if isinstance(f, Mapping) else getattr(f, "children", [])
                ids += [int(p), *[int(c) for c in cs]]
        except (TypeError, ValueError, KeyError):
            pass  # malformed: _family_units reports it precisely
        n_latents = max(ids) + 1
    units = _family_units(families, int(n_latents))
    job = _Job(texts=texts, idx=idx, val=val, n_latents=int(n_latents), units=units, families=True, cfg=cfg,
               backend=backend, base_url=base_url, api_key=api_key, interpreter_model=interpreter_model,
               predictor_model=predictor_model, out_dir=out_dir, cache_path=cache_path, embeddings=embeddings,
               progress=progress, overwrite=overwrite)
    return job.run()
