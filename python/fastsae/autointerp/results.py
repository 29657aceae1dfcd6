"""What a job returns: :class:`FeatureResult` per feature (or family), the list
:class:`InterpretResults`, and :class:`AutointerpAborted` when the endpoint stopped the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .client import EndpointError


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
