"""The Interpreter and Predictor prompts and the parsers for their answers.

The paper (appendix A.2) has two LLM roles. The *Interpreter* sees the documents with the
top activations of a feature (with their activation values) and documents that do not
activate it, reasons step by step as a domain researcher, and names the feature. The
*Predictor* sees that name and ONE document, and gives its confidence in [-1, 1] that the
feature fires on it. Both answers end with a machine-readable last line, ``FINAL: <label>``
and ``PREDICTION: <number>``, which is what keeps the prompts portable across models:
any chat model can be asked to finish with such a line, and nothing else is parsed.

The wording here is our own (the paper describes the prompts but does not print them).
:data:`PROMPT_VERSION` is part of every cache key and result fingerprint, so changing the
wording can never mix answers to old prompts with new ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

PROMPT_VERSION = "fastsae-autointerp-v1"
"""Bump whenever the wording below changes (it is part of the cache key and the run fingerprint)."""


@dataclass(frozen=True)
class PromptDoc:
    """One document as a prompt shows it."""

    text: str
    """The document text (already truncated to the prompt's per-document budget)."""
    activation: float | None = None
    """The feature's activation on it (shown for activating documents only)."""


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters at a word boundary, marked with an ellipsis.

    Long documents are cut rather than dropped so the prompt size (and cost) per feature is
    bounded no matter what the corpus holds."""
    text = " ".join(text.split())  # newlines inside a document would blur the prompt's structure
    if len(text) <= max_chars:
        return text
    cut = text[: max(max_chars - 1, 1)]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _who(domain: str | None) -> str:
    return f"a meticulous {domain} researcher" if domain else "a meticulous researcher"


def interpreter_messages(top: Sequence[PromptDoc], negatives: Sequence[PromptDoc], *, domain: str | None = None,
                         corpus: str = "documents", max_label_words: int = 8, family: bool = False) -> list[dict]:
    """Chat messages asking the Interpreter to name a feature (or, with ``family``, a family of
    related features: the "superfeature" of section 4.2)."""
    what = "a family of closely related features" if family else "a single feature"
    system = (
        f"You are {_who(domain)} interpreting the features of a sparse autoencoder trained on text "
        f"embeddings of {corpus}. Each feature is a direction in embedding space that activates on "
        "documents sharing some property: a topic, a method, an object of study, a kind of result, "
        "a style or a genre. Your job is to find the property and name it precisely.")
    lines = [
        f"Below are the documents on which {what} activates most strongly, each with its activation "
        "value (higher means stronger), followed by documents on which it does not activate at all.",
        "",
        "ACTIVATING DOCUMENTS",
    ]
    for i, d in enumerate(top, 1):
        act = "" if d.activation is None else f" (activation {d.activation:.4g})"
        lines += [f"[{i}]{act}", d.text, ""]
    lines.append("NON-ACTIVATING DOCUMENTS")
    for i, d in enumerate(negatives, 1):
        lines += [f"[N{i}]", d.text, ""]
    lines += [
        "Think step by step, briefly (at most 150 words): what do all the activating documents have in "
        "common that the non-activating documents lack? Weigh the strongest activations most. Prefer "
        "the most specific description that still covers every activating document.",
        "",
        "Then end your answer with exactly one line of this form, and nothing after it:",
        "FINAL: <label>",
        f"where <label> names the {'family' if family else 'feature'} in 1 to {max_label_words} words, "
        "without quotes.",
    ]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def interpreter_retry_message(max_label_words: int = 8) -> dict:
    """The follow-up sent once when an Interpreter answer could not be parsed."""
    return {"role": "user", "content": (
        "Your answer did not end with a valid label line. Reply with exactly one line of the form\n"
        f"FINAL: <label>\nwhere <label> is 1 to {max_label_words} words, and nothing else.")}


def predictor_messages(label: str, doc: PromptDoc, *, domain: str | None = None,
                       corpus: str = "documents") -> list[dict]:
    """Chat messages asking the Predictor whether the feature named ``label`` fires on ``doc``."""
    system = (
        f"You are {_who(domain)} checking descriptions of the features of a sparse autoencoder trained "
        f"on text embeddings of {corpus}. A feature activates on documents that match its description. "
        "You will see one description and one document, and must judge whether the feature activates "
        "on that document.")
    user = "\n".join([
        f"Feature description: {label}",
        "",
        "DOCUMENT",
        doc.text,
        "",
        "Think step by step, briefly (at most 100 words): does this document match the description?",
        "",
        "Then end your answer with exactly one line of this form, and nothing after it:",
        "PREDICTION: <number>",
        "where <number> is your confidence, between -1 and 1, that the feature activates on this "
        "document: 1 = certainly activates, -1 = certainly does not, 0 = cannot tell.",
    ])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def predictor_retry_message() -> dict:
    """The follow-up sent once when a Predictor answer could not be parsed."""
    return {"role": "user", "content": (
        "Your answer did not end with a valid prediction line. Reply with exactly one line of the form\n"
        "PREDICTION: <number>\nwhere <number> is between -1 and 1, and nothing else.")}


# -- parsing ------------------------------------------------------------------------------------
# Models decorate the answer line (markdown bold, quotes, a trailing period); those are accepted.
# Anything else (no answer line, an empty label, a number outside [-1, 1]) is a parse failure:
# it is retried once and then reported, never guessed.
_FINAL = re.compile(r"^[\s>*_#`-]*FINAL[\s*_`]*:[\s*_`]*(?P<v>.*?)[\s*_`]*$", re.IGNORECASE)
_PREDICTION = re.compile(r"^[\s>*_#`-]*PREDICTION[\s*_`]*:[\s*_`]*(?P<v>.*?)[\s*_`]*$", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class ParsedLabel:
    """An Interpreter answer split into its parts."""

    label: str | None
    """The label, or ``None`` when the answer has no valid ``FINAL:`` line."""
    reasoning: str
    """Everything before the ``FINAL:`` line (the whole answer when unparsable)."""
    error: str | None = None
    """Why the answer was rejected (``None`` when parsed)."""


@dataclass(frozen=True)
class ParsedPrediction:
    """A Predictor answer split into its parts."""

    value: float | None
    """The confidence in [-1, 1], or ``None`` when the answer has no valid ``PREDICTION:`` line."""
    reasoning: str
    """Everything before the ``PREDICTION:`` line (the whole answer when unparsable)."""
    error: str | None = None
    """Why the answer was rejected (``None`` when parsed)."""


def _answer_line(text: str | None, pattern: re.Pattern) -> tuple[str, str | None]:
    """(reasoning, value) of the last line of ``text`` matching ``pattern``: the text before
    that line, and the line's value; ``(whole text, None)`` when no line matches."""
    text = text or ""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        m = pattern.match(lines[i])
        if m:
            return "\n".join(lines[:i]).strip(), m.group("v")
    return text.strip(), None


def parse_label(text: str | None, *, max_label_words: int = 8) -> ParsedLabel:
    """The label on the last ``FINAL: <label>`` line of ``text``.

    Surrounding quotes, markdown emphasis and a trailing period are removed; a label that is
    empty or longer than ``max_label_words`` words is rejected."""
    reasoning, value = _answer_line(text, _FINAL)
    if value is None:
        return ParsedLabel(None, reasoning, "no 'FINAL: <label>' line")
    label = value
    for _ in range(2):  # '"Label".' and '"Label."' alike
        label = label.strip().strip("\"'“”‘’`*_ ").rstrip(".").strip()
    label = " ".join(label.split())
    if not label or label.lower() in {"<label>", "label"}:
        return ParsedLabel(None, reasoning, "empty label")
    n_words = len(label.split())
    if n_words > max_label_words:
        return ParsedLabel(None, reasoning, f"label has {n_words} words (at most {max_label_words})")
    return ParsedLabel(label, reasoning)


def parse_prediction(text: str | None) -> ParsedPrediction:
    """The number on the last ``PREDICTION: <number>`` line of ``text``, if it is in [-1, 1]."""
    reasoning, value = _answer_line(text, _PREDICTION)
    if value is None:
        return ParsedPrediction(None, reasoning, "no 'PREDICTION: <number>' line")
    token = value.strip().strip("\"'`*_ ").rstrip(".").strip()
    if not _NUMBER.match(token):
        return ParsedPrediction(None, reasoning, f"not a number: {token[:40]!r}")
    x = float(token)
    if not math.isfinite(x) or x < -1.0 or x > 1.0:
        return ParsedPrediction(None, reasoning, f"{token} is outside [-1, 1]")
    return ParsedPrediction(x, reasoning)
