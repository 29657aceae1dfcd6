"""fastsae.report: the data of the static explorer against brute-force references, escaping of
hostile documents, missing optional parts, bad input and the CLI hook.

The run directory is real: planted embeddings -> two tiny trained SAEs -> codes ->
co-occurrence -> families (and their permuted figure) -> splitting (the split step), plus
hand-written labels and corpus (module-scoped, ~3 s). The report only reads these files: each
test of a missing part checks that the page names the step that writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import fastsae
from fastsae.datasets import planted_embeddings
from fastsae.report import build_report, collect_report_data, family_tree
from fastsae.report.data import (activation_histograms, decoder_neighbours, top_cooccurring, top_documents,
                                 tree_parents)
from fastsae.rundir import RunDir, atomic_write_json, atomic_write_text

HOSTILE = "</script><script>alert(1)</script>"
HOSTILE_LABEL = '<img src=x onerror="alert(2)">'
WORDS = ["galaxy", "neural", "protein", "quantum", "market"]
SIZES = (("sae16", 16, 3), ("sae48", 48, 4))
MAIN = "sae48"


def tiny_png() -> bytes:
    """A valid 1x1 PNG (no plotting library needed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def dense_activations(run: RunDir, name: str, n: int) -> np.ndarray:
    code = run.codes(name)
    idx, val = code.indices.numpy(), code.values.numpy()
    A = np.zeros((idx.shape[0], n))
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    keep = val.ravel() > 0
    A[rows[keep], idx.ravel()[keep]] = val.ravel()[keep]
    return A


def brute_top_docs(A: np.ndarray, j: int, top: int) -> list[int]:
    order = np.lexsort((np.arange(A.shape[0]), -A[:, j]))  # activation desc, ties to the lower row
    return [int(r) for r in order[:top] if A[r, j] > 0]


def label_of(j: int) -> str | None:
    """The hand-written labels: every 7th feature unlabelled, one hostile label."""
    if j % 7 == 3:
        return None
    if j == 5:
        return HOSTILE_LABEL
    return f"{WORDS[j % len(WORDS)]} topic {j}"


def build_run(root: Path) -> dict:
    """A complete small run directory; returns facts the tests check against."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    try:
        return _build_run(root)
    finally:
        torch.set_num_threads(threads)


def _build_run(root: Path) -> dict:
    run = RunDir.open(root, create=True)
    pc = planted_embeddings(600, 32, n_families=4, children_per_family=(3, 5), n_isolated=8, seed=1)
    X = np.asarray(pc.embeddings, np.float32)
    for name, n, k in SIZES:
        cfg = fastsae.TrainConfig(n_latents=n, k=k, batch_size=64, epochs=10, lr=2e-3, progress=False, device="cpu",
                                  seed=0, median_sample=256, log_every=1000)
        sae = fastsae.train(X, cfg).sae
        sae.save(run.sae_dir(name))
        code = fastsae.encode_dataset(sae, X, out_dir=str(run.codes_dir(name)))
        cooc = fastsae.cooccurrence(code.indices.numpy(), code.values.numpy(), n)
        run.cooc_path(name).parent.mkdir(parents=True, exist_ok=True)
        cooc.save(run.cooc_path(name))
    n = SIZES[-1][1]
    fams = fastsae.feature_families(cooc, tau=0.1, iterations=2)
    assert fams, "the fixture needs at least one family"
    # What `fastsae families` writes: families.json with R(p, C) for every family, and the
    # permuted co-occurrence figure (the report reads both and computes neither).
    from fastsae.analysis.families import family_stats, plot_permuted_cooccurrence
    from fastsae.pipeline import step_split

    stats = family_stats(cooc, fams)
    fam_json = [{**asdict(f), "R": float(r)} for f, r in zip(fams, stats.r_cooc)]
    atomic_write_json(run.families_path, {"sae": MAIN, "method": "paper", "tau": 0.1, "families": fam_json})
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    plot_permuted_cooccurrence(cooc, fams, str(run.figures_dir / "fig2_permuted_cooccurrence.png"))
    atomic_write_text(run.root / "family_labels.jsonl",
                      json.dumps({"parent": fams[0].parent, "label": "family of " + WORDS[0], "pearson": 0.8, "f1": 0.7}) + "\n")
    lines = []
    for j in range(n):
        lab = label_of(j)
        if lab is not None:
            lines.append(json.dumps({"feature": j, "label": lab, "pearson": round(0.5 + j / 100, 3),
                                     "f1": None if j % 5 == 0 else 0.6, "reasoning": f"because {j}", "backend": "hand"}))
    atomic_write_text(run.labels_path, "\n".join(lines) + "\n")
    # The densest feature's top document carries the hostile text.
    A = dense_activations(run, MAIN, n)
    hostile_feature = int(np.argmax((A > 0).sum(axis=0)))
    hostile_row = brute_top_docs(A, hostile_feature, 1)[0]
    docs = [{"text": f"Document {i} about {WORDS[i % len(WORDS)]} number {i}.", "title": f"Title {i}",
             "path": ["science", WORDS[i % len(WORDS)]]} for i in range(X.shape[0])]
    docs[hostile_row] = {"text": f"Hostile {HOSTILE} body", "title": "<b>hostile title</b>"}
    run.write_corpus(docs)
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    (run.figures_dir / "extra_figure.png").write_bytes(tiny_png())
    run.log_metric("train", seconds=1.5, n_latents=n)
    atomic_write_json(run.labels_summary_path, {"n": n, "median_pearson": 0.7})
    # The split step writes splitting.json (what the report reads) and Fig. 6, left out here so
    # the run's figures stay the two the page tests count.
    step_split(run, quiet=True)
    (run.figures_dir / "fig6_nn_cosines.png").unlink()
    return {"run": run, "n": n, "fams": fams, "A": A, "hostile_feature": hostile_feature, "hostile_row": hostile_row,
            "n_docs": X.shape[0]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    facts = build_run(tmp_path_factory.mktemp("report") / "run")
    facts["data"] = collect_report_data(facts["run"], top_docs=6)
    facts["path"] = build_report(facts["run"], top_docs=6)
    return facts


def page_data(path: Path) -> dict:
    html = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="fastsae-data">(.*?)</script>', html, re.S)
    assert m, "data element missing"
    return json.loads(m.group(1))


# ------------------------------------------------------------------------------------------------
# the data against brute force


def test_top_documents_match_brute_force(built):
    data, A, n = built["data"], built["A"], built["n"]
    for j in range(n):
        expect = brute_top_docs(A, j, 6)
        got = [data["docs"][ref][0] for ref, _ in data["top"][j]]
        assert got == expect, j
        assert [a for _, a in data["top"][j]] == pytest.approx([A[r, j] for r in expect], rel=1e-3)
    # a feature that never fires has no documents
    assert any(not data["top"][j] for j in range(n)) == bool(((A > 0).sum(axis=0) == 0).any())


def test_top_documents_blocked_and_ties(rng):
    n, N, k = 9, 200, 3
    idx = np.argsort(rng.random((N, n)), axis=1)[:, :k]
    val = rng.choice([0.0, 0.5, 1.0, 2.0], size=(N, k))  # many ties, padding
    A = np.zeros((N, n))
    for r in range(N):
        for s in range(k):
            if val[r, s] > 0:
                A[r, idx[r, s]] = val[r, s]
    docs, acts = top_documents(idx, val, n, 5, chunk_rows=7)
    for j in range(n):
        expect = brute_top_docs(A, j, 5)
        assert docs[j, : len(expect)].tolist() == expect
        assert (docs[j, len(expect):] == -1).all()
    hist, freq = activation_histograms(idx, val, n, acts[:, 0], bins=4, chunk_rows=11)
    assert freq.tolist() == (A > 0).sum(axis=0).tolist()
    for j in range(n):
        v = A[:, j][A[:, j] > 0]
        assert hist[j].tolist() == np.histogram(v, bins=4, range=(0, v.max()))[0].tolist()


def test_histograms_and_density(built):
    data, A, n = built["data"], built["A"], built["n"]
    assert data["f"]["freq"] == (A > 0).sum(axis=0).tolist()
    assert data["meta"]["n_docs"] == built["n_docs"]
    for j in range(n):
        v = A[:, j][A[:, j] > 0]
        if not v.size:
            continue
        mx, counts = data["hist"][j]
        assert mx == pytest.approx(v.max(), rel=1e-3)
        assert sum(counts) == v.size
        assert counts == np.histogram(v, bins=len(counts), range=(0, v.max()))[0].tolist()


def test_decoder_neighbours_match_brute_force(built, rng):
    run, data, n = built["run"], built["data"], built["n"]
    W = run.load_sae(MAIN).W_dec.detach().double().numpy()
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    for j in range(n):
        expect = np.argsort(-S[j], kind="stable")[:5].tolist()
        assert [a for a, _ in data["nn"][j]] == expect
        assert [c for _, c in data["nn"][j]] == pytest.approx(S[j, expect].tolist(), abs=1e-3)
        assert data["f"]["label"][expect[0]] == (label_of(expect[0]) or "")
    # blocked, selected rows, and exact ties (duplicate rows) go to the lower id
    W2 = rng.normal(size=(30, 8))
    W2[7] = W2[3]
    W2[12] = 2 * W2[3]
    ids, cos = decoder_neighbours(W2, 3, rows=[3, 0, 29], block_rows=2)
    U2 = W2 / np.linalg.norm(W2, axis=1, keepdims=True)
    S2 = U2 @ U2.T
    for r, j in enumerate([3, 0, 29]):
        s = S2[j].copy()
        s[j] = -np.inf
        assert ids[r].tolist() == np.lexsort((np.arange(30), -np.round(s, 6)))[:3].tolist()
    assert ids[0, :2].tolist() == [7, 12]
    one = decoder_neighbours(np.ones((1, 4)), 2)
    assert one[0].tolist() == [[-1, -1]]


def test_top_cooccurring_match_brute_force(built):
    run, data, n = built["run"], built["data"], built["n"]
    cooc = run.cooc(MAIN)
    C = np.asarray(cooc.counts).copy()
    np.fill_diagonal(C, 0)
    for j in range(n):
        order = np.lexsort((np.arange(n), -C[j]))
        expect = [[int(i), int(C[j, i])] for i in order[:5] if C[j, i] > 0]
        assert data["co"][j] == expect
    # the sparse (CSR) form gives the same answer
    import scipy.sparse as sp

    ids_d, cnt_d = top_cooccurring(cooc.counts, cooc.freq, 5, block_rows=5)
    ids_s, cnt_s = top_cooccurring(sp.csr_matrix(cooc.counts), cooc.freq, 5)
    assert ids_d.tolist() == ids_s.tolist() and cnt_d.tolist() == cnt_s.tolist()


def test_splitting_from_the_split_step(built):
    run, data, n = built["run"], built["data"], built["n"]
    split = data["split"]
    assert split["source"] == "splitting.json" and split["saes"] == ["sae16"]
    W_small = run.load_sae("sae16").W_dec.detach().double().numpy()
    W_main = run.load_sae(MAIN).W_dec.detach().double().numpy()
    S = (W_main / np.linalg.norm(W_main, axis=1, keepdims=True)) @ (W_small / np.linalg.norm(W_small, axis=1, keepdims=True)).T
    for j in range(n):
        expect = np.argsort(-S[j], kind="stable")[:3].tolist()
        assert [a for a, _ in split["nn"]["sae16"][j]] == expect
        assert [c for _, c in split["nn"]["sae16"][j]] == pytest.approx(S[j, expect].tolist(), abs=1e-3)
    assert not any("splitting" in note for note in data["notes"])


def test_missing_or_foreign_splitting_names_the_step(built, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(built["run"].root, root)
    run = RunDir.open(root)
    run.splitting_path.unlink()
    data = collect_report_data(run, top_docs=2)
    assert data["split"] is None
    assert any("no splitting.json" in s and f"fastsae split --run {run.root}" in s for s in data["notes"])
    atomic_write_json(run.splitting_path, {"main": "sae16", "nearest": {}})
    data = collect_report_data(run, top_docs=2)
    assert data["split"] is None
    assert any("splitting.json is for SAE 'sae16'" in s and "fastsae split" in s for s in data["notes"])


def test_splitting_json_is_used(built, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(built["run"].root, root)
    run = RunDir.open(root)
    n = built["n"]
    index = [[(j + 1) % 16, (j + 2) % 16, (j + 3) % 16, (j + 4) % 16] for j in range(n)]
    cos = [[0.9, 0.5, 0.25, 0.1]] * n
    atomic_write_json(run.splitting_path, {"main": MAIN, "saes": ["sae16", MAIN],
                                           "nearest": {"sae16": {"index": index, "cos": cos}},
                                           "summary": {"sae48->sae16": {"median_nn_cos": 0.5}}})
    data = collect_report_data(run, top_docs=2)
    assert data["split"]["source"] == "splitting.json"
    assert data["split"]["nn"]["sae16"][4] == [[5, 0.9], [6, 0.5], [7, 0.25]]
    assert data["split"]["summary"] == {"sae48->sae16": {"median_nn_cos": 0.5}}


# ------------------------------------------------------------------------------------------------
# families


def test_family_tree_reconstruction():
    #        10
    #      /  |  \
    #     1   4   6
    #    / \      |
    #   2   3     7
    #       |
    #       5
    tree = family_tree(10, [1, 2, 3, 5, 4, 6, 7], [1, 2, 2, 3, 1, 1, 2])

    def shape(node):
        return (node["id"], [shape(c) for c in node["children"]])

    assert shape(tree) == (10, [(1, [(2, []), (3, [(5, [])])]), (4, []), (6, [(7, [])])])
    assert tree_parents(tree) == {1: 10, 2: 1, 3: 1, 5: 3, 4: 10, 6: 10, 7: 6}
    assert family_tree(3, [], []) == {"id": 3, "children": []}
    with pytest.raises(ValueError, match="depth"):
        family_tree(0, [1, 2], [1, 3])  # depth 3 with no node at depth 2 before it
    with pytest.raises(ValueError, match="depth"):
        family_tree(0, [1], [2])
    with pytest.raises(ValueError, match="2 children but 1 depths"):
        family_tree(0, [1, 2], [1])


def test_families_in_data(built):
    from fastsae.analysis.families import parent_child_ratio

    data, fams, run = built["data"], built["fams"], built["run"]
    C = np.asarray(run.cooc(MAIN).counts)
    freq = run.cooc(MAIN).freq
    assert len(data["fams"]) == len(fams)
    for k, (f, fj) in enumerate(zip(fams, data["fams"])):
        assert fj["parent"] == f.parent and fj["children"] == f.children
        r = parent_child_ratio(C, f.parent, f.children)  # families.json's R against a brute-force one
        assert fj["R"] == ("inf" if np.isinf(r) else pytest.approx(r, rel=1e-3))
        assert fj["tree"] == family_tree(f.parent, f.children, f.depth)
        for c, p in tree_parents(fj["tree"]).items():
            assert fj["edges"][str(c)] == pytest.approx(C[p, c] / freq[c], rel=1e-3)
        ids = fj["heat"]["ids"]
        assert ids == f.members[:60]
        assert np.allclose(fj["heat"]["m"], C[np.ix_(ids, ids)] / (freq[ids, None] + 1.0), rtol=5e-3)  # 3 digits kept
        for m in f.members:
            assert k in data["f"]["fam"][m]
    assert data["fams"][0]["label"] == "family of galaxy"
    assert data["meta"]["families"] == {"method": "paper", "tau": 0.1, "n": len(fams)}
    # the permuted co-occurrence figure the families step drew is listed
    assert (run.figures_dir / "fig2_permuted_cooccurrence.png").exists()
    assert data["heatmap"] == "figures/fig2_permuted_cooccurrence.png"


# ------------------------------------------------------------------------------------------------
# the page


def test_page_is_self_contained_and_escaped(built):
    path, run = built["path"], built["run"]
    assert path == run.report_path and path.exists()
    html = path.read_text(encoding="utf-8")
    # one data element and one script: the hostile document cannot close or open elements
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert HOSTILE not in html and "alert(1)" in html  # present, but only as escaped JSON text
    assert HOSTILE_LABEL not in html and "<b>hostile title</b>" not in html
    # no network: no absolute URLs in src/href, and a CSP that forbids fetching
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)
    assert "default-src 'none'" in html
    data = page_data(path)
    hostile_doc = next(d for d in data["docs"] if d[0] == built["hostile_row"])
    assert HOSTILE in hostile_doc[3] and hostile_doc[2] == "<b>hostile title</b>"
    assert data["f"]["label"][5] == HOSTILE_LABEL
    # labels: missing ones empty, scores carried
    assert data["f"]["label"][3] == "" and data["f"]["pearson"][3] is None
    assert data["f"]["label"][1] == "neural topic 1" and data["f"]["pearson"][1] == 0.51
    assert data["f"]["f1"][10] is None and data["f"]["f1"][11] == 0.6
    # figures copied next to the page, referenced relatively
    names = [f["name"] for f in data["figs"]]
    assert names == sorted(["extra_figure.png", "fig2_permuted_cooccurrence.png"])
    for f in data["figs"]:
        assert f["src"] == "figures/" + f["name"]
        assert (path.parent / f["src"]).read_bytes() == (run.figures_dir / f["name"]).read_bytes()
    assert data["metrics"][0]["step"] == "train"
    assert data["labels_summary"] == {"n": built["n"], "median_pearson": 0.7}


def test_stale_figures_removed_and_out_option(built, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(built["run"].root, root)
    run = RunDir.open(root)
    (run.figures_dir / "extra_figure.png").unlink()
    path = build_report(run, top_docs=2)
    assert not (path.parent / "figures" / "extra_figure.png").exists()
    out = build_report(root, out=tmp_path / "elsewhere", top_docs=2)
    assert out == tmp_path / "elsewhere" / "index.html" and (out.parent / "figures").is_dir()
    out2 = build_report(root, out=tmp_path / "x" / "page.html", top_docs=2)
    assert out2.name == "page.html" and out2.exists()


def test_max_features_keeps_the_densest(built):
    data = collect_report_data(built["run"], top_docs=3, max_features=5)
    freq = np.asarray(data["f"]["freq"])
    kept = [j for j in range(built["n"]) if data["top"][j] is not None]
    assert kept == sorted(np.lexsort((np.arange(len(freq)), -freq))[:5].tolist())
    assert all(data["nn"][j] is None for j in range(built["n"]) if j not in kept)
    assert len(data["f"]["label"]) == built["n"]  # every feature stays in the index
    assert data["meta"]["n_detail"] == 5
    assert any("--max-features" in note for note in data["notes"])


# ------------------------------------------------------------------------------------------------
# missing parts and bad input


def minimal_run(built, root: Path, *, corpus: bool = False) -> RunDir:
    """Only config.json, the main SAE and its codes."""
    src = built["run"].root
    root.mkdir(parents=True)
    shutil.copy(src / "config.json", root / "config.json")
    shutil.copytree(src / "saes" / MAIN, root / "saes" / MAIN)
    shutil.copytree(src / "codes" / MAIN, root / "codes" / MAIN)
    if corpus:
        shutil.copy(src / "corpus.jsonl", root / "corpus.jsonl")
    return RunDir.open(root)


def test_missing_optional_parts(built, tmp_path):
    run = minimal_run(built, tmp_path / "run")
    path = build_report(run, top_docs=3)
    data = page_data(path)
    notes = " | ".join(data["notes"])
    for needle in ("no labels yet: run `fastsae interpret", "no families: run `fastsae families",
                   "no co-occurrence", "no corpus.jsonl", "no figures", "only one SAE"):
        assert needle in notes, needle
    html = path.read_text()
    assert "no labels yet: run `fastsae interpret" in html  # shown in the page header too
    assert data["fams"] == [] and data["split"] is None and data["figs"] == [] and data["heatmap"] is None
    assert all(c is None for c in data["co"])
    # documents still shown, by row
    j = int(np.argmax(data["f"]["freq"]))
    assert [data["docs"][r][0] for r, _ in data["top"][j]] == brute_top_docs(built["A"], j, 3)


def test_missing_family_outputs_name_the_step(built, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(built["run"].root, root)
    run = RunDir.open(root)
    doc = run.families()
    del doc["families"][0]["R"]
    atomic_write_json(run.families_path, doc)
    (run.figures_dir / "fig2_permuted_cooccurrence.png").unlink()
    data = collect_report_data(run, top_docs=2)
    assert data["fams"][0]["R"] is None  # shown as missing, not computed
    assert data["heatmap"] is None and not (run.figures_dir / "fig2_permuted_cooccurrence.png").exists()
    notes = " | ".join(data["notes"])
    assert "1 family has no R(p, C)" in notes and f"fastsae families --run {run.root}" in notes
    assert "no permuted co-occurrence figure" in notes


def test_families_of_another_sae_are_left_out(built, tmp_path):
    run = minimal_run(built, tmp_path / "run", corpus=True)
    atomic_write_json(run.families_path, {"sae": "sae16", "method": "paper", "tau": 0.1,
                                          "families": [{"parent": 0, "children": [1, 2, 3], "depth": [1, 1, 1], "iteration": 0}]})
    data = collect_report_data(run, top_docs=2)
    assert data["fams"] == [] and any("families.json describes SAE 'sae16'" in s for s in data["notes"])


def test_bad_input(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        build_report(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a fastsae run directory"):
        build_report(tmp_path / "plain")
    empty = RunDir.open(tmp_path / "empty", create=True)
    with pytest.raises(FileNotFoundError, match="fastsae train"):
        build_report(empty)
    run = minimal_run(built, tmp_path / "nocodes")
    shutil.rmtree(run.codes_dir(MAIN))
    with pytest.raises(FileNotFoundError, match="fastsae encode"):
        build_report(run)
    run = minimal_run(built, tmp_path / "short")
    run.write_corpus([{"text": "only one"}])
    with pytest.raises(ValueError, match="1 documents but"):
        build_report(run)
    run = minimal_run(built, tmp_path / "badfam", corpus=True)
    atomic_write_json(run.families_path, {"sae": MAIN, "families": [{"parent": 0, "children": [1, 999], "depth": [1, 1]}]})
    with pytest.raises(ValueError, match="outside"):
        build_report(run)
    atomic_write_json(run.families_path, {"sae": MAIN, "families": [{"parent": 0, "children": [1, 2], "depth": [2, 1]}]})
    with pytest.raises(ValueError, match="depth"):
        build_report(run)
    with pytest.raises(ValueError, match="top_docs"):
        build_report(run, top_docs=0)
    with pytest.raises(ValueError, match="max_features"):
        build_report(run, max_features=0)


def test_labels_for_other_features_ignored(built, tmp_path):
    run = minimal_run(built, tmp_path / "run")
    atomic_write_text(run.labels_path, "\n".join([
        json.dumps({"feature": 2, "label": "old"}),
        json.dumps({"feature": 2, "label": "new", "pearson": 0.9}),  # a re-run appends: the last wins
        json.dumps({"feature": 9999, "label": "out of range"}),
        json.dumps({"feature": 1, "label": "other sae", "sae": "sae16"}),
    ]) + "\n")
    data = collect_report_data(run, top_docs=1)
    assert data["f"]["label"][2] == "new" and data["f"]["pearson"][2] == 0.9
    assert data["f"]["label"][1] == ""
    assert any("2 line(s) ignored" in s for s in data["notes"])


def test_cli_hook(built, tmp_path, capsys):
    from fastsae.report.cli import add_parser

    ap = argparse.ArgumentParser(prog="fastsae")
    add_parser(ap.add_subparsers(dest="command", required=True))
    run = minimal_run(built, tmp_path / "run", corpus=True)
    args = ap.parse_args(["report", "--run", str(run.root), "--top-docs", "2"])
    assert args.func(args) == 0
    assert run.report_path.exists() and str(run.report_path) in capsys.readouterr().out
    args = ap.parse_args(["report", "--run", str(tmp_path / "missing")])
    assert args.func(args) == 2
    assert "no such run directory" in capsys.readouterr().err
