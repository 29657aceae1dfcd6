"""The public API of automated interpretability: :func:`interpret_features` and
:func:`interpret_families` (check the inputs, build the :class:`AutointerpConfig`, run the
job of :mod:`.job`), and every name :mod:`fastsae.autointerp.core` had (that old module path
is this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .._checks import check_int
from .backends import _Interp, _KeywordBackend, _LLMBackend, _Pred  # noqa: F401 (re-exported)
from .client import (  # noqa: F401 (re-exported: fastsae.autointerp.core had these names)
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
from .config import (  # noqa: F401 (re-exported)
    BACKENDS,
    CACHE_FILE,
    FAMILY_LABELS_FILE,
    FAMILY_PEARSON_FIGURE,
    FAMILY_SUMMARY_FILE,
    INTERPRETER_MODEL,
    LABELS_FILE,
    LABELS_SUMMARY_FILE,
    PEARSON_FIGURE,
    PREDICTOR_MODEL,
    AutointerpConfig,
    fingerprint,
    make_config,
)
from .config import make_config as _make_config  # noqa: F401 (the old private name)
from .inputs import (  # noqa: F401 (re-exported)
    _check_codes,
    _check_embeddings,
    _check_features,
    _check_texts,
    _family_units,
    _is_int,
    _to_numpy,
)
from .job import _Job, _record_key, _repair_jsonl, _run_coroutine, _si, _unit_key, log  # noqa: F401
from .prompts import (  # noqa: F401 (re-exported)
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
from .results import AutointerpAborted, FeatureResult, InterpretResults  # noqa: F401 (re-exported)
from .sampling import (  # noqa: F401
    NEGATIVE_MODES,
    ActivationIndex,
    Sampler,
    SamplingConfig,
    Selection,
    Unit,
)
from .scoring import pearson_histogram_png, score, summarize  # noqa: F401 (re-exported)

_D = AutointerpConfig  # the defaults below are the dataclass's, read from its fields


def interpret_features(texts: Sequence[str], codes: Any, n_latents: int, *, features: Iterable[int] | None = None,
                       backend: str = "openai", base_url: str | None = None, api_key: str | None = None,
                       interpreter_model: str = INTERPRETER_MODEL, predictor_model: str = PREDICTOR_MODEL,
                       out_dir: str | Path | None = None, cache_path: str | Path | None = None,
                       concurrency: int = _D.concurrency, timeout: float = _D.timeout,
                       max_cost: float | None = _D.max_cost, seed: int = _D.seed,
                       max_tokens: int | None = _D.max_tokens, embeddings: Any = None,
                       negatives: str = _D.negatives, progress: bool = True, overwrite: bool = False,
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
    cfg = make_config(options, concurrency=concurrency, timeout=timeout, max_cost=max_cost, seed=seed,
                       max_tokens=max_tokens, negatives=negatives)
    check_int(n_latents, "n_latents", min=1)
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
                       interpreter_model: str = INTERPRETER_MODEL, predictor_model: str = PREDICTOR_MODEL,
                       out_dir: str | Path | None = None, cache_path: str | Path | None = None,
                       concurrency: int = _D.concurrency, timeout: float = _D.timeout,
                       max_cost: float | None = _D.max_cost, seed: int = _D.seed,
                       max_tokens: int | None = _D.max_tokens, embeddings: Any = None,
                       negatives: str = _D.negatives, progress: bool = True, overwrite: bool = False,
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
    cfg = make_config(options, concurrency=concurrency, timeout=timeout, max_cost=max_cost, seed=seed,
                       max_tokens=max_tokens, negatives=negatives)
    check_int(n_latents, "n_latents", min=1, none=True)
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
