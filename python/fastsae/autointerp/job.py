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
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..io import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from .backends import _KeywordBackend, _LLMBackend, _Pred
from .client import (
    PRICES_DATE,
    Accounting,
    ChatClient,
    EndpointError,
    ResponseCache,
    price_for,
    resolve_endpoint,
    sanitize_url,
    warn_unpriced,
)
from .config import (
    BACKENDS,
    CACHE_FILE,
    FAMILY_LABELS_FILE,
    FAMILY_PEARSON_FIGURE,
    FAMILY_SUMMARY_FILE,
    LABELS_FILE,
    LABELS_SUMMARY_FILE,
    PEARSON_FIGURE,
    AutointerpConfig,
    fingerprint,
)
from .inputs import _check_embeddings
from .results import AutointerpAborted, FeatureResult, InterpretResults
from .sampling import ActivationIndex, Sampler, Selection, Unit
from .scoring import pearson_histogram_png, score, summarize

log = logging.getLogger("fastsae.autointerp")


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
