"""The two ways a feature is named and its test documents scored: an OpenAI-compatible LLM
(:class:`_LLMBackend`: Interpreter and Predictor, one retry of an unparsable answer) and the
LLM-free keyword baseline (:class:`_KeywordBackend`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .client import ChatClient, Usage
from .config import AutointerpConfig
from .prompts import (
    PromptDoc,
    interpreter_messages,
    interpreter_retry_message,
    parse_label,
    parse_prediction,
    predictor_messages,
    predictor_retry_message,
    truncate,
)
from .sampling import ActivationIndex, Selection, Unit


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
