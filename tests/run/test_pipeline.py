"""Run-directory pipeline pieces: ground-truth taxonomy recovery against brute force, the run
directory's format check, atomic writers and torn JSON lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastsae.ops import SparseCode
from fastsae.pipeline import SAESpec, paper_like_sizes, taxonomy_recovery
from fastsae.rundir import RUN_FORMAT, RunDir, append_jsonl, read_jsonl


def _brute_f1(active: np.ndarray, member: np.ndarray) -> float:
    tp = np.sum(active & member)
    return 0.0 if active.sum() + member.sum() == 0 else 2 * tp / (active.sum() + member.sum())


def test_taxonomy_recovery_matches_brute_force():
    rng = np.random.default_rng(0)
    topics = [("A", "a1", "t1"), ("A", "a1", "t2"), ("A", "a2", "t3"), ("B", "b1", "t4"), ("B", "b1", "t5")]
    N, n, k = 300, 20, 3
    records = []
    for i in range(N):
        p = topics[rng.integers(len(topics))]
        sec = topics[rng.integers(len(topics))] if rng.random() < 0.1 else None
        records.append({"text": str(i), "path": list(p), "secondary": list(sec) if sec else None})
    # latents 0..4 fire on their topic, 5 on field A, 6 on subfield b1, the rest at random
    idx = np.zeros((N, k), np.int64)
    val = np.zeros((N, k), np.float32)
    for i, r in enumerate(records):
        t = topics.index(tuple(r["path"]))
        ids = [t, 5 if r["path"][0] == "A" else 6]
        ids.append(int(rng.integers(7, n)))
        idx[i], val[i] = ids, [1.0, 0.5, 0.2 if rng.random() < 0.5 else 0.0]
    fams = [{"parent": 5, "children": [0, 1, 2]}, {"parent": 6, "children": [3, 4, 0]}, {"parent": 0, "children": [1, 2]}]
    out = taxonomy_recovery(SparseCode(idx, val), records, fams, n)

    # brute force: node membership and latent activity as boolean vectors
    nodes = sorted({tuple(p[:L]) for r in records for p in [r["path"], r["secondary"]] if p for L in (1, 2, 3)})
    member = {nd: np.array([any(p and tuple(p[: len(nd)]) == nd for p in (r["path"], r["secondary"])) for r in records])
              for nd in nodes}
    active = [np.array([(val[i][idx[i] == j] > 0).any() for i in range(N)]) for j in range(n)]
    best = {nd: max(_brute_f1(active[j], member[nd]) for j in range(n)) for nd in nodes}
    for lvl, L in (("field", 1), ("subfield", 2), ("topic", 3)):
        sel = [best[nd] for nd in nodes if len(nd) == L]
        assert out["per_level"][lvl]["nodes"] == len(sel)
        assert out["per_level"][lvl]["matched"] == sum(b >= 0.5 for b in sel)
        assert out["per_level"][lvl]["median_best_f1"] == pytest.approx(float(np.median(sel)))
    lat_node = {}
    for j in range(n):
        f1s = [(_brute_f1(active[j], member[nd]), nd) for nd in nodes]
        b = max(f1s, key=lambda t: t[0])
        lat_node[j] = b[1] if b[0] >= 0.3 else None
    consistent = 0
    for f in fams:
        pn = lat_node[f["parent"]]
        if pn is None or len(pn) >= 3:
            continue
        ok = sum(1 for c in f["children"] if lat_node[c] and len(lat_node[c]) > len(pn) and lat_node[c][: len(pn)] == pn)
        consistent += 2 * ok >= len(f["children"])
    assert out["consistent_families"] == consistent == 2


def test_paper_like_sizes_reproduce_the_paper_at_its_scale():
    specs = paper_like_sizes(272_000, 1536)
    assert [(s.n_latents, s.k) for s in specs] == [(3072, 16), (6144, 32), (9216, 64)]
    small = paper_like_sizes(3000, 384)
    assert [s.k for s in small] == [4, 8, 16] and small[0].n_latents * 3 == small[2].n_latents
    with pytest.raises(ValueError, match="k <= n_latents"):
        SAESpec("x", 4, 8)
    with pytest.raises(ValueError, match="bad SAE name"):
        SAESpec("../x", 8, 4)


def test_run_directory_format_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        RunDir.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a fastsae run directory"):
        RunDir.open(tmp_path / "plain")
    run = RunDir.open(tmp_path / "r", create=True)
    assert run.config()["run_format"] == RUN_FORMAT
    cfg = run.config()
    cfg["run_format"] = RUN_FORMAT + 1
    run.config_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="incompatible|format"):
        RunDir.open(run.root)
    run.config_path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt config"):
        RunDir.open(run.root)
    with pytest.raises(FileNotFoundError, match="fastsae train"):
        RunDir.open(tmp_path / "r2", create=True).main_sae()


def test_jsonl_keeps_complete_lines_and_skips_a_torn_tail(tmp_path):
    p = tmp_path / "x.jsonl"
    for i in range(3):
        append_jsonl(p, {"i": i, "v": np.float32(0.5)})
    with open(p, "a") as f:
        f.write('{"i": 3, "v"')  # a writer killed mid-line
    assert [r["i"] for r in read_jsonl(p)] == [0, 1, 2]
    p.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)


@pytest.mark.parametrize("n_docs", [100, 300, 3000, 20_000, 272_000])
def test_default_schedule_fits_the_corpus(n_docs):
    from fastsae.pipeline import default_schedule

    s = default_schedule(n_docs)
    train_rows = int(n_docs * 0.95)  # the trainer holds out 5% for evaluation
    assert 64 <= s["batch_size"] <= min(1024, train_rows) and s["batch_size"] & (s["batch_size"] - 1) == 0
    steps = s["epochs"] * n_docs / s["batch_size"]
    assert steps >= 2500 or s["epochs"] == 1.0
    assert s["lr"] == (1e-4 if n_docs >= 100_000 else 1e-3)
    with pytest.raises(ValueError, match="empty"):
        default_schedule(0)
