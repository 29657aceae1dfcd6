"""The two ways a feature is named and its test documents scored: an OpenAI-compatible LLM
(:class:`_LLMBackend`: Interpreter and Predictor, one retry of an unparsable answer) and the
LLM-free keyword baseline (:class:`_KeywordBackend`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
        p, reasoning, usage, retried = await self._ask(self.interpreter_model, msgs, lambda text: parse_label(
            text, max_label_words=cfg.max_label_words), "label", interpreter_retry_message(cfg.max_label_words))
        if p.label is not None:
            return _Interp(p.label, reasoning, usage, parse_retries=int(retried))
        return _Interp(None, reasoning, usage, parse_failures=1, parse_retries=1,
                       skip_reason=f"unparsable interpreter answer: {p.error} (after one retry)")

    async def predict(self, interp: _Interp, row: int) -> _Pred:
        cfg = self.cfg
        msgs = predictor_messages(interp.label or "", self._doc(row), domain=cfg.domain, corpus=cfg.corpus)
        p, reasoning, usage, retried = await self._ask(self.predictor_model, msgs, parse_prediction, "value",
                                                       predictor_retry_message())
        return _Pred(p.value, reasoning, usage, parse_failures=int(p.value is None), parse_retries=int(retried))

    async def _ask(self, model: str, msgs: list[dict], parse: Callable[[str], Any], answer: str,
                   retry_message: dict) -> tuple[Any, str, Usage, bool]:
        """(parsed answer, reasoning, usage, retried): ask once; when the answer's ``answer``
        attribute does not parse, ask once more."""
        c = await self.client.complete(model, msgs)
        p = parse(c.content)
        if getattr(p, answer) is not None:
            return p, p.reasoning, c.usage, False
        # One retry, continuing the conversation (a different request, so a cached bad answer
        # is not simply replayed; and deterministic, so a rerun finds the retry cached too).
        c2 = await self.client.complete(model, msgs + [{"role": "assistant", "content": c.content}, retry_message])
        p2 = parse(c2.content)
        ok = getattr(p2, answer) is not None
        reasoning = p.reasoning if ok else "\n\n".join(x for x in (p.reasoning, p2.reasoning) if x)
        return p2, reasoning, c.usage + c2.usage, True


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
