"""The static HTML explorer of a run directory: ``RUN/report/index.html``, opened from disk.

:func:`build_report` reads what the run computed (:mod:`fastsae.rundir`) and writes one page
plus a copy of the run's figures::

    RUN/report/index.html      the page: inline CSS and JS, the data as one JSON script tag
    RUN/report/figures/*.png   copies of RUN/figures/*.png (the folder can be moved or zipped)

The page holds no per-feature DOM: the feature data (labels, scores, top documents,
histograms, neighbours, co-occurring features, splitting, families) is one JSON blob, and the
script renders the view the URL hash asks for (``#feature/12``, ``#family/3``, ``#families``,
``#figures``, ``#run``; the feature index otherwise). A ``file://`` page cannot ``fetch()``
local files in Chromium, hence the script tag. Nothing is loaded from the network (a
Content-Security-Policy forbids it), and document text is user data: it only ever reaches the
page through ``textContent`` and JSON escaped for a script element.

Optional inputs (labels, families, splitting, co-occurrence, corpus, figures, other SAE sizes)
may be missing: the report is still built and lists what is missing and the command that
computes it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import RunDir, atomic_write_bytes, atomic_write_text, read_jsonl
from .data import (
    activation_histograms,
    decoder_neighbours,
    family_tree,
    member_matrix,
    submatrix,
    top_cooccurring,
    top_documents,
    tree_parents,
)

__all__ = [
    "build_report",
    "collect_report_data",
    "render_html",
    "family_tree",
    "top_documents",
    "activation_histograms",
    "decoder_neighbours",
    "top_cooccurring",
]

SNIPPET_CHARS = 400
"""Characters of each top document's text kept in the page."""
HIST_BINS = 20
N_NEIGHBOURS = 5
N_COOCCURRING = 5
N_SPLIT = 3
"""Nearest features shown per other SAE size."""
FAMILY_HEATMAP_MAX = 60
"""Members drawn in a family's co-occurrence block (larger families are cut)."""
PERMUTED_FIGURE_MAX_LATENTS = 16384
"""The permuted co-occurrence figure densifies n x n float64; beyond this it is not drawn here."""
PERMUTED_FIGURE = "fig2_permuted_cooccurrence.png"

_TEMPLATES = Path(__file__).parent / "templates"


# ------------------------------------------------------------------------------------------------
# small helpers


def _num(x: Any, digits: int = 4) -> float | None:
    """A JSON-safe float rounded to ``digits`` significant digits (None for nan/inf/missing)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _ratio(x: Any) -> float | str | None:
    """R(p, C) for JSON: inf (children never co-occur with each other) is kept as "inf"."""
    if x is None:
        return None
    v = float(x)
    if math.isinf(v) and v > 0:
        return "inf"
    return _num(v)


def _snippet(text: Any, limit: int = SNIPPET_CHARS) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "\u2026"


def _script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&``
    only occur inside JSON strings, where their \\u escapes mean the same, so no ``</script>``
    or ``<!--`` in a document can end the element early."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s


def _labels_by_feature(records: list[dict], n: int, sae: str, notes: list[str], what: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    skipped = 0
    for r in records:
        f = r.get("feature")
        if r.get("sae") not in (None, sae) or isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < n:
            skipped += 1
            continue
        out[f] = r  # the last line for a feature wins (a re-run appends)
    if skipped:
        notes.append(f"{what}: {skipped} line(s) ignored (another SAE or a feature id outside 0..{n - 1})")
    return out


# ------------------------------------------------------------------------------------------------
# data collection


def collect_report_data(run: RunDir | str | os.PathLike, *, top_docs: int = 10,
                        max_features: int | None = None) -> dict:
    """Everything the page shows, as one JSON-serialisable dict (see ``templates/report.js``).

    Also writes the permuted co-occurrence figure into ``RUN/figures/`` when families exist and
    no such figure is there yet. ``max_features`` keeps the details (documents, histogram,
    neighbours, splitting) of the most frequently active features only; every feature stays
    in the index.
    """
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    if isinstance(top_docs, bool) or not isinstance(top_docs, int) or top_docs < 1:
        raise ValueError(f"top_docs must be a positive int, got {top_docs!r}")
    if max_features is not None and (isinstance(max_features, bool) or not isinstance(max_features, int)
                                     or max_features < 1):
        raise ValueError(f"max_features must be a positive int or None, got {max_features!r}")
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
    # Within one SAE (and, below, across the sizes of this run, which share its standardisation)
    # decoder rows are compared in the SAE's own standardised space, as the split step does.
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
    split = _splitting(run, main, W_dec, detail, notes)

    # -- figures, tables, metrics --------------------------------------------------------------
    heatmap = _permuted_figure(run, cooc, fams_json, notes)
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


def _families(run: RunDir, main: str, n: int, cooc, notes: list[str]) -> tuple[list, list, dict | None]:
    """(families for the page, family indices per feature, families.json's settings)."""
    f_fams: list = [None] * n
    if not run.families_path.exists():
        notes.append(f"no families: run `fastsae families --run {run.root}`")
        return [], f_fams, None
    try:
        doc = run.families()
    except json.JSONDecodeError as e:
        raise ValueError(f"{run.families_path}: not valid JSON ({e})") from e
    if doc.get("sae") not in (None, main):
        notes.append(f"families.json describes SAE {doc.get('sae')!r}, the report shows {main!r}: families "
                     f"left out (re-run `fastsae families --run {run.root}`)")
        return [], f_fams, None
    fam_labels = {}
    for r in read_jsonl(run.root / "family_labels.jsonl"):
        if isinstance(r.get("parent"), int):
            fam_labels[r["parent"]] = r
    freq = cooc.freq if cooc is not None else None
    out = []
    for i, fam in enumerate(doc.get("families", [])):
        try:
            parent = int(fam["parent"])
            children = [int(c) for c in fam["children"]]
            depth = [int(d) for d in fam.get("depth", [1] * len(children))]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{run.families_path}: family {i} is malformed ({e})") from e
        members = [parent, *children]
        if any(not 0 <= m < n for m in members):
            raise ValueError(f"{run.families_path}: family {i} has a latent id outside 0..{n - 1}")
        tree = family_tree(parent, children, depth)
        R = fam.get("R")
        if R is None and cooc is not None:
            from ..analysis.families import parent_child_ratio

            # R(p, C) only reads the members' rows and columns: compute it on that block.
            R = parent_child_ratio(submatrix(cooc.counts, members), 0, list(range(1, len(members))))
        # How strongly each child is tied to the node it hangs under: P(that node | child).
        edges = {}
        heat = None
        if cooc is not None:
            up = tree_parents(tree)
            if up:
                nodes = sorted(set(up) | set(up.values()))
                sub = submatrix(cooc.counts, nodes)
                pos = {m: k for k, m in enumerate(nodes)}
                for c, p in up.items():
                    edges[str(c)] = _num(sub[pos[c], pos[p]] / freq[c]) if freq[c] > 0 else None
            shown = members[:FAMILY_HEATMAP_MAX]
            heat = {"ids": shown, "m": [[_num(v, 3) for v in row] for row in member_matrix(cooc.counts, freq, shown)]}
        lab = fam_labels.get(parent, {})
        out.append({"parent": parent, "children": children, "depth": depth, "iteration": fam.get("iteration"),
                    "R": _ratio(R), "tree": tree, "edges": edges, "heat": heat, "label": str(lab.get("label") or ""),
                    "pearson": _num(lab.get("pearson")), "f1": _num(lab.get("f1"))})
        for m in members:
            if f_fams[m] is None:
                f_fams[m] = []
            if i not in f_fams[m]:
                f_fams[m].append(i)
    if not out:
        notes.append("families.json lists no families")
    meta = {"method": doc.get("method"), "tau": doc.get("tau"), "n": len(out)}
    return out, f_fams, meta


def _splitting(run: RunDir, main: str, W_main: np.ndarray, detail: np.ndarray, notes: list[str]) -> dict | None:
    """Nearest features of each detailed feature in the other SAE sizes: from splitting.json
    when it matches this SAE, else computed from the decoders."""
    others = [s for s in run.sae_names() if s != main]
    n = W_main.shape[0]
    nearest: dict[str, list] = {}
    source = None
    summary = None
    if run.splitting_path.exists():
        try:
            doc = json.loads(run.splitting_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{run.splitting_path}: not valid JSON ({e})") from e
        summary = doc.get("summary")
        if doc.get("main") not in (None, main):
            notes.append(f"splitting.json is for SAE {doc.get('main')!r}, not {main!r}: recomputed from the decoders")
        else:
            for other, m in (doc.get("nearest") or {}).items():
                index, cos = m.get("index"), m.get("cos")
                if not isinstance(index, list) or not isinstance(cos, list) or len(index) != n or len(cos) != n:
                    notes.append(f"splitting.json: the map to {other} does not cover the {n} latents of {main}; skipped")
                    continue
                per = [None] * n
                for j in detail.tolist():
                    per[j] = [[int(a), _num(c)] for a, c in zip(index[j][:N_SPLIT], cos[j][:N_SPLIT])]
                nearest[other] = per
            source = "splitting.json"
    if not nearest and others:
        from ..analysis.splitting import decoder_similarity

        for other in others:
            W_o = run.load_sae(other).W_dec.detach().float()  # same run: same standardised space
            nn = decoder_similarity(W_o, W_main[detail], top=min(N_SPLIT, W_o.shape[0]))
            per = [None] * n
            for r, j in enumerate(detail.tolist()):
                per[j] = [[int(a), _num(c)] for a, c in zip(nn.indices[r].tolist(), nn.cosines[r].tolist())]
            nearest[other] = per
        source = "decoders"
        if not run.splitting_path.exists():
            notes.append(f"no splitting.json: nearest features in other sizes computed from the decoders "
                         f"(run `fastsae split --run {run.root}` for the statistics and figures)")
    if not others:
        notes.append(f"only one SAE ({main}): no splitting across sizes (train more sizes with `fastsae train`)")
    if not nearest:
        return None
    sizes = {}
    for s in run.sae_names():
        try:
            sizes[s] = int(json.loads((run.sae_dir(s) / "config.json").read_text())["n_latents"])
        except (OSError, ValueError, KeyError):
            sizes[s] = None
    order = [s for s in run.sae_names() if s in nearest]
    return {"saes": order, "sizes": sizes, "nn": nearest, "source": source, "summary": summary}


def _permuted_figure(run: RunDir, cooc, fams: list, notes: list[str]) -> str | None:
    """The permuted co-occurrence figure's file name in RUN/figures (drawn when missing)."""
    if run.figures_dir.is_dir():
        have = sorted(p.name for p in run.figures_dir.glob("*permuted*.png"))
        if have:
            return have[0]
    if not fams or cooc is None:
        return None
    if cooc.n_latents > PERMUTED_FIGURE_MAX_LATENTS:
        notes.append(f"permuted co-occurrence figure not drawn: {cooc.n_latents} latents is more than "
                     f"{PERMUTED_FIGURE_MAX_LATENTS} (each family view still shows its own block)")
        return None
    from ..analysis.families import Family, plot_permuted_cooccurrence

    families = [Family(f["parent"], f["children"], f["depth"], f.get("iteration") or 0) for f in fams]
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    final = run.figures_dir / PERMUTED_FIGURE
    tmp = run.figures_dir / f".{PERMUTED_FIGURE}.{os.getpid()}.tmp.png"
    try:
        plot_permuted_cooccurrence(cooc, families, str(tmp))
        os.replace(tmp, final)  # atomic: a killed build never leaves half a PNG
    finally:
        if tmp.exists():
            tmp.unlink()
    return PERMUTED_FIGURE


# ------------------------------------------------------------------------------------------------
# rendering and writing


def render_html(data: dict) -> str:
    """The page for :func:`collect_report_data`'s dict (Jinja2 template, inline CSS/JS/data)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    css = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
    js = (_TEMPLATES / "report.js").read_text(encoding="utf-8")
    for name, text in (("report.css", css), ("report.js", js)):
        if "</" in text.replace("<\\/", ""):  # would end the inline element early
            raise RuntimeError(f"templates/{name} must not contain '</'")
    return env.get_template("index.html.j2").render(
        meta=data["meta"], notes=data["notes"], css=_markup(css),
        js=_markup(js), data_json=_markup(_script_json(data)))


def _markup(s: str):
    from markupsafe import Markup

    return Markup(s)


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
