"""Build the page: :func:`collect_report_data` reads what the run directory holds and
:func:`build_report` writes ``RUN/report/index.html`` plus a copy of the run's figures.

The report computes no analysis: what it shows comes from the run's files (codes, co-occurrence,
families.json, splitting.json, labels, figures) and from the main SAE's own weights (its
decoder neighbours); a missing output is listed with the step and command that computes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .._checks import check_int
from ..io import atomic_write_bytes, atomic_write_text
from ..run.rundir import RunDir
from .data import activation_histograms, decoder_neighbours, top_cooccurring, top_documents
from .render import _num, _snippet, render_html
from .sections import _families, _labels_by_feature, _permuted_figure, _splitting

__all__ = ["build_report", "collect_report_data"]

HIST_BINS = 20
N_NEIGHBOURS = 5
N_COOCCURRING = 5



def collect_report_data(run: RunDir | str | os.PathLike, *, top_docs: int = 10,
                        max_features: int | None = None) -> dict:
    """Everything the page shows, as one JSON-serialisable dict (see ``templates/report.js``).

    Reads only: every analysis comes from the file its step wrote, and a missing one is listed
    in ``notes`` with the command that computes it. ``max_features`` keeps the details
    (documents, histogram, neighbours, splitting) of the most frequently active features only;
    every feature stays in the index.
    """
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    top_docs = check_int(top_docs, "top_docs", min=1)
    max_features = check_int(max_features, "max_features", min=1, none=True)
    notes: list[str] = []
    main = run.main_sae()  # FileNotFoundError naming `fastsae train` when none
    sae = run.load_sae(main)
    n = int(sae.n_latents)
    code = run.codes(main)  # FileNotFoundError naming `fastsae encode` when missing
    idx, val = code.indices.numpy(), code.values.numpy()
    if idx.shape[0] and int(idx.shape[1]) != int(sae.k):
        notes.append(f"codes/{main} have {idx.shape[1]} slots per row but the SAE has k={sae.k}")
    n_docs = int(idx.shape[0])

    # -- corpus --------------------------------------------------------------------------------
    corpus: list[dict] | None = None
    if run.corpus_path.exists():
        corpus = run.corpus()
        if len(corpus) != n_docs:
            raise ValueError(f"{run.corpus_path} has {len(corpus)} documents but {run.codes_dir(main)} has "
                             f"{n_docs} rows; re-run `fastsae embed` and `fastsae encode --run {run.root}`")
    else:
        notes.append("no corpus.jsonl: documents are shown by row number (run `fastsae corpus`)")

    # -- per-feature activations ---------------------------------------------------------------
    tdocs, tacts = top_documents(idx, val, n, top_docs)
    hist, freq = activation_histograms(idx, val, n, tacts[:, 0], bins=HIST_BINS)
    if max_features is None or max_features >= n:
        detail = np.arange(n, dtype=np.int64)
    else:
        detail = np.sort(np.lexsort((np.arange(n), -freq))[:max_features])
        notes.append(f"details are included for the {max_features} most frequently active of {n} features "
                     "(rebuild with a larger --max-features for all)")
    has_detail = np.zeros(n, dtype=bool)
    has_detail[detail] = True

    doc_ref: dict[int, int] = {}
    docs: list[list] = []

    def ref(row: int) -> int:
        if row not in doc_ref:
            doc_ref[row] = len(docs)
            if corpus is not None:
                d = corpus[row]
                path = d.get("path")
                path_s = " \u203a ".join(map(str, path)) if isinstance(path, (list, tuple)) else (str(path) if path else "")
                docs.append([row, str(d.get("id", row)), _snippet(d.get("title"), 200), _snippet(d.get("text")), path_s])
            else:
                docs.append([row, str(row), "", "", ""])
        return doc_ref[row]

    top_json: list = [None] * n
    hist_json: list = [None] * n
    for j in detail.tolist():
        top_json[j] = [[ref(int(r)), _num(a)] for r, a in zip(tdocs[j].tolist(), tacts[j].tolist()) if r >= 0]
        hist_json[j] = [_num(tacts[j, 0]), hist[j].tolist()]

    # -- decoder neighbours --------------------------------------------------------------------
    # Read from the model itself (its decoder, for display): decoder rows are compared in the
    # SAE's own standardised space, as the split step does.
    W_dec = sae.W_dec.detach().float().cpu().numpy()
    nn_ids, nn_cos = decoder_neighbours(W_dec, N_NEIGHBOURS, rows=detail)
    nn_json: list = [None] * n
    for r, j in enumerate(detail.tolist()):
        nn_json[j] = [[int(a), _num(c)] for a, c in zip(nn_ids[r].tolist(), nn_cos[r].tolist()) if a >= 0]

    # -- co-occurrence -------------------------------------------------------------------------
    cooc = None
    co_json: list = [None] * n
    if run.cooc_path(main).exists():
        cooc = run.cooc(main)
        if cooc.n_latents != n:
            raise ValueError(f"{run.cooc_path(main)} has {cooc.n_latents} latents but SAE {main} has {n}; "
                             f"re-run `fastsae cooc --run {run.root}`")
        co_ids, co_cnt = top_cooccurring(cooc.counts, cooc.freq, N_COOCCURRING)
        for j in detail.tolist():
            co_json[j] = [[int(a), int(c)] for a, c in zip(co_ids[j].tolist(), co_cnt[j].tolist()) if a >= 0]
    else:
        notes.append(f"no co-occurrence for {main}: no co-occurring features or family heatmaps "
                     f"(run `fastsae cooc --run {run.root}`)")

    # -- labels --------------------------------------------------------------------------------
    labels = _labels_by_feature(run.labels(), n, main, notes, "labels.jsonl")
    if not labels:
        notes.append(f"no labels yet: run `fastsae interpret --run {run.root}`")
    f_label = [str(labels[j].get("label") or "") if j in labels else "" for j in range(n)]
    f_pearson = [_num(labels[j].get("pearson")) if j in labels else None for j in range(n)]
    f_f1 = [_num(labels[j].get("f1")) if j in labels else None for j in range(n)]
    f_reason = [str(labels[j].get("reasoning") or "") if j in labels else "" for j in range(n)]
    f_backend = [str(labels[j].get("backend") or "") if j in labels else "" for j in range(n)]

    # -- families ------------------------------------------------------------------------------
    fams_json, f_fams, fam_meta = _families(run, main, n, cooc, notes)

    # -- splitting -----------------------------------------------------------------------------
    split = _splitting(run, main, n, detail, notes)

    # -- figures, tables, metrics --------------------------------------------------------------
    heatmap = _permuted_figure(run, fams_json, notes)
    figs = sorted(p.name for p in run.figures_dir.glob("*.png")) if run.figures_dir.is_dir() else []
    if not figs:
        notes.append(f"no figures in {run.figures_dir}")
    tables = []
    if (run.root / "tables").is_dir():
        for p in sorted((run.root / "tables").glob("*.md")):
            tables.append({"name": p.name, "text": p.read_text(encoding="utf-8", errors="replace")[:100_000]})
    metrics = []
    for m in run.metrics():
        extra = {k: v for k, v in m.items() if k not in ("step", "time", "seconds")}
        metrics.append({"step": str(m.get("step", "")), "seconds": _num(m.get("seconds")),
                        "extra": _snippet(json.dumps(extra, default=str), 300)})
    try:
        config = run.config()
    except (OSError, ValueError):
        config = {}
    labels_summary = None
    if run.labels_summary_path.exists():
        try:
            labels_summary = json.loads(run.labels_summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            notes.append(f"{run.labels_summary_path} is not valid JSON; left out")
    from .._version import __version__

    return {
        "meta": {
            "run": run.root.resolve().name,
            "root": str(run.root.resolve()),
            "sae": main,
            "saes": run.sae_names(),
            "n_latents": n,
            "k": int(sae.k),
            "d": int(sae.d_in),
            "n_docs": n_docs,
            "top_docs": top_docs,
            "n_detail": int(len(detail)),
            "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "version": __version__,
            "families": fam_meta,
        },
        "notes": notes,
        "f": {"label": f_label, "pearson": f_pearson, "f1": f_f1, "freq": freq.tolist(), "fam": f_fams,
              "reason": f_reason, "backend": f_backend},
        "docs": docs,
        "top": top_json,
        "hist": hist_json,
        "nn": nn_json,
        "co": co_json,
        "split": split,
        "fams": fams_json,
        "figs": [{"name": f, "src": f"figures/{f}"} for f in figs],
        "heatmap": f"figures/{heatmap}" if heatmap else None,
        "tables": tables,
        "metrics": metrics,
        "config": config,
        "labels_summary": labels_summary,
    }


def build_report(run: RunDir | str | os.PathLike, *, out: str | os.PathLike | None = None, top_docs: int = 10,
                 max_features: int | None = None) -> Path:
    """Write the static explorer of ``run`` and return the path of its ``index.html``.

    ``out``: the page's path (``*.html``) or a directory for ``index.html``; default
    ``RUN/report/index.html``. The run's figures are copied next to it (``figures/``), so the
    folder opens from disk anywhere. ``top_docs``: documents shown per feature.
    ``max_features``: keep details for the most frequently active features only (for very
    large SAEs); every feature stays in the index.

    Raises ``FileNotFoundError``/``ValueError`` (with the command to run) when the run has
    no trained SAE or no codes, or its files disagree.
    """
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    if out is None:
        path = run.report_path
    else:
        out = Path(out)
        path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
    data = collect_report_data(run, top_docs=top_docs, max_features=max_features)
    html = render_html(data)
    fig_dir = path.parent / "figures"
    wanted = {f["name"] for f in data["figs"]}
    for name in sorted(wanted):
        src = run.figures_dir / name
        dst = fig_dir / name
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime or dst.stat().st_size != src.stat().st_size:
            atomic_write_bytes(dst, src.read_bytes())
    if fig_dir.is_dir():
        for stale in fig_dir.glob("*.png"):  # figures the run no longer has
            if stale.name not in wanted:
                stale.unlink()
    atomic_write_text(path, html)
    return path
