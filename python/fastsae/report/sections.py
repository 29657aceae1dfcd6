"""The report's optional parts, each read from the file its step writes: labels
(``fastsae interpret``), families (``fastsae families``), splitting across sizes
(``fastsae split``) and the permuted co-occurrence figure (``fastsae families``).

Nothing is computed here: a part that is missing, malformed or describes another SAE is left
out with a note naming the command that writes it. Shaping what was read for display (a
family's tree, the co-occurrence block of its members) is not an analysis and stays.
"""

from __future__ import annotations

import json

import numpy as np

from ..io import read_jsonl
from ..run.rundir import RunDir
from .data import family_tree, member_matrix, submatrix, tree_parents
from .render import _num, _ratio

N_SPLIT = 3
"""Nearest features shown per other SAE size."""
FAMILY_HEATMAP_MAX = 60
"""Members drawn in a family's co-occurrence block (larger families are cut)."""
PERMUTED_FIGURE = "fig2_permuted_cooccurrence.png"
"""The file ``fastsae families`` draws the permuted co-occurrence matrix into."""


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
    no_ratio = 0
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
        R = fam.get("R")  # written by `fastsae families`; the report does not compute it
        if R is None:
            no_ratio += 1
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
    if no_ratio:
        notes.append(f"families.json: {no_ratio} famil{'y has' if no_ratio == 1 else 'ies have'} no R(p, C), shown as "
                     f"missing (re-run `fastsae families --run {run.root}`, which writes it)")
    meta = {"method": doc.get("method"), "tau": doc.get("tau"), "n": len(out)}
    return out, f_fams, meta


def _splitting(run: RunDir, main: str, n: int, detail: np.ndarray, notes: list[str]) -> dict | None:
    """Nearest features of each detailed feature in the other SAE sizes, as splitting.json
    (``fastsae split``) holds them; ``None`` with a note naming the step when it is missing or
    describes another SAE."""
    others = [s for s in run.sae_names() if s != main]
    if not others:
        notes.append(f"only one SAE ({main}): no splitting across sizes (train more sizes with `fastsae train`)")
        return None
    if not run.splitting_path.exists():
        notes.append(f"no splitting.json: no nearest features in the other sizes "
                     f"(run `fastsae split --run {run.root}`)")
        return None
    try:
        doc = json.loads(run.splitting_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{run.splitting_path}: not valid JSON ({e})") from e
    if doc.get("main") not in (None, main):
        notes.append(f"splitting.json is for SAE {doc.get('main')!r}, not {main!r}: splitting left out "
                     f"(re-run `fastsae split --run {run.root}`)")
        return None
    nearest: dict[str, list] = {}
    for other, m in (doc.get("nearest") or {}).items():
        index, cos = m.get("index"), m.get("cos")
        if not isinstance(index, list) or not isinstance(cos, list) or len(index) != n or len(cos) != n:
            notes.append(f"splitting.json: the map to {other} does not cover the {n} latents of {main}; skipped "
                         f"(re-run `fastsae split --run {run.root}`)")
            continue
        per = [None] * n
        for j in detail.tolist():
            per[j] = [[int(a), _num(c)] for a, c in zip(index[j][:N_SPLIT], cos[j][:N_SPLIT])]
        nearest[other] = per
    if not nearest:
        return None
    sizes = {}
    for s in run.sae_names():
        try:
            sizes[s] = int(json.loads((run.sae_dir(s) / "config.json").read_text())["n_latents"])
        except (OSError, ValueError, KeyError):
            sizes[s] = None
    order = [s for s in run.sae_names() if s in nearest]
    return {"saes": order, "sizes": sizes, "nn": nearest, "source": "splitting.json", "summary": doc.get("summary")}


def _permuted_figure(run: RunDir, fams: list, notes: list[str]) -> str | None:
    """The permuted co-occurrence figure's file name in RUN/figures (drawn by ``fastsae families``)."""
    if run.figures_dir.is_dir():
        have = sorted(p.name for p in run.figures_dir.glob("*permuted*.png"))
        if have:
            return have[0]
    if fams:
        notes.append(f"no permuted co-occurrence figure ({PERMUTED_FIGURE}) in {run.figures_dir} "
                     f"(run `fastsae families --run {run.root}`, which draws it)")
    return None
