"""Shared test data for the autointerp tests: a topic corpus with known features, and a fake
LLM that answers the fastsae prompts deterministically from their text.

Feature f fires exactly on the documents containing the made-up word ``WORDS[f]``, so the
right label is known ("topic <word>"), and a Predictor that checks for the word is perfect.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Callable

import numpy as np

from llm_server import Reply, chat_reply

WORDS = ["zorblax", "quenfit", "mirvane", "toplish", "draxum", "velquor", "brintel", "caspery"]
FILLER = ("the a study of results on data with methods for new approach shows we report analysis model "
          "sample survey signal measure").split()


def make_corpus(n_docs: int = 60, n_features: int = 4, k: int = 3, p: float = 0.3, seed: int = 0):
    """(texts, indices [N, k], values [N, k]): feature f active (value > 0) iff WORDS[f] is in the text."""
    rng = np.random.default_rng(seed)
    texts = []
    idx = np.zeros((n_docs, k), dtype=np.int64)
    val = np.zeros((n_docs, k), dtype=np.float32)
    for i in range(n_docs):
        act = [f for f in range(n_features) if rng.random() < p][:k]
        vals = rng.uniform(0.1, 2.0, size=len(act))
        for j, o in enumerate(np.argsort(-vals)):
            idx[i, j] = act[o]
            val[i, j] = vals[o]
        words = list(rng.choice(FILLER, 10)) + [WORDS[f] for f in act]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, idx, val


def active_set(idx: np.ndarray, val: np.ndarray, row: int) -> set[int]:
    return {int(i) for i, v in zip(idx[row], val[row]) if v > 0}


def _first_user(req) -> str:
    users = [m for m in req.messages if m.get("role") == "user"]
    return str(users[0]["content"]) if users else ""


class TopicOracle:
    """A deterministic fake Interpreter + Predictor over :data:`WORDS`.

    Interpreter: labels with the topic words found in the most activating documents.
    Predictor: ``predict(words, doc)`` (default: 0.9 if the document holds a label word, else -0.8).
    Hooks make it misbehave: ``interp_text`` replaces the Interpreter's answer,
    ``bad_doc(doc) -> bool`` makes the Predictor unparsable on chosen documents,
    ``first_try_bad`` makes every first attempt unparsable (the retry then succeeds)."""

    def __init__(self, predict: Callable[[set, str], float] | None = None, *, interp_text: str | None = None,
                 bad_doc: Callable[[str], bool] | None = None, first_try_bad: bool = False,
                 prompt_tokens: int = 100, completion_tokens: int = 20, delay: float = 0.0):
        self.predict = predict or (lambda words, doc: 0.9 if words & set(doc.split()) else -0.8)
        self.interp_text = interp_text
        self.bad_doc = bad_doc
        self.first_try_bad = first_try_bad
        self.tokens = dict(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.delay = delay

    def _reply(self, content: str) -> Reply:
        r = chat_reply(content, **self.tokens)
        r.delay = self.delay
        return r

    def __call__(self, req) -> Reply:
        first = _first_user(req)
        is_retry = len(req.messages) > 2
        if self.first_try_bad and not is_retry:
            return self._reply("Let me think about this... I am not sure.")
        if "FINAL: <label>" in first:
            if self.interp_text is not None:
                return self._reply(self.interp_text)
            act = first.split("ACTIVATING DOCUMENTS", 1)[1].split("NON-ACTIVATING DOCUMENTS", 1)[0]
            counts = Counter(w for line in act.splitlines() for w in set(line.split()) if w in WORDS)
            best = max(counts.values())
            words = sorted(w for w, c in counts.items() if c == best) if len(counts) else ["nothing"]
            if "family" in first.split("FINAL: <label>", 1)[1]:
                words = sorted(w for w, c in counts.items() if c >= 1)
            return self._reply(f"The activating documents share the words {', '.join(words)}.\n"
                               f"FINAL: topic {' '.join(words[:7])}")
        if "PREDICTION: <number>" in first:
            label = re.search(r"Feature description: (.*)", first).group(1)
            doc = first.split("DOCUMENT\n", 1)[1].split("\n\nThink step by step", 1)[0]
            if self.bad_doc is not None and self.bad_doc(doc):
                return self._reply("This is hard to say. PREDICTION unclear")
            words = set(label.split()) & set(WORDS)
            return self._reply(f"Checking the document.\nPREDICTION: {self.predict(words, doc):.2f}")
        return self._reply("I do not understand the request.")


def make_run(tmp_path, n_latents=4, families=True):
    """A run directory ``tmp_path/run`` holding a topic corpus, the codes of SAE ``sae4`` (its
    config, no weights) and, with ``families``, one family (0 -> 1, 2) in ``families.json``."""
    from fastsae.rundir import RunDir, atomic_write_json

    texts, idx, val = make_corpus(n_docs=80, n_features=n_latents, seed=7)
    run = RunDir.open(tmp_path / "run", create=True)
    run.write_corpus([{"text": t} for t in texts])
    d = run.codes_dir("sae4")
    d.mkdir(parents=True)
    np.save(d / "indices.npy", idx)
    np.save(d / "values.npy", val)
    s = run.sae_dir("sae4")
    s.mkdir(parents=True)
    (s / "config.json").write_text(json.dumps({"d_in": 8, "n_latents": n_latents, "k": 3}))
    (s / "sae.safetensors").write_bytes(b"")  # never loaded: interpret needs the codes only
    if families:
        atomic_write_json(run.families_path, {"sae": "sae4", "method": "paper", "families": [
            {"parent": 0, "children": [1, 2], "depth": [1, 1], "iteration": 0}]})
    return run
