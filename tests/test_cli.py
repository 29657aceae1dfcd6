"""The ``fastsae`` CLI end to end on a tiny generated corpus (tfidf embeddings, keyword
autointerp): every artefact of a run directory, resume of an interrupted demo (identical
results), feature search and steering, and clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastsae
from fastsae.rundir import RunDir

EXE = [sys.executable, "-m", "fastsae.cli"]
DEMO = ["demo", "--docs", "300", "--embed-backend", "tfidf", "--epochs", "30", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # bit-reproducible training


def _cli(*args, check=True, timeout=300):
    out = subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV)
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> RunDir:
    root = tmp_path_factory.mktemp("cli") / "demo"
    out = _cli(*DEMO, "--run", root)
    assert "fastsae demo summary" not in out.stdout  # --quiet
    return RunDir.open(root)


def test_demo_writes_every_artefact(demo_run):
    r = demo_run
    names = r.sae_names()
    assert len(names) == 3
    sizes = [r.load_sae(n).n_latents for n in names]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    for path in [r.config_path, r.corpus_path, r.embeddings_path, r.families_path, r.splitting_path,
                 r.labels_path, r.labels_summary_path, r.metrics_path, r.report_path,
                 r.root / "summary.json", r.root / "tables" / "table1.md", r.root / "embedder"]:
        assert path.exists(), path
    X = r.embeddings()
    assert X.shape[0] == len(r.corpus()) == 300 and np.isfinite(X).all()
    for n in names:
        codes = r.codes(n)
        assert codes.indices.shape == (300, r.load_sae(n).k)
        cooc = r.cooc(n)
        # C's diagonal is each latent's firing count: check it against the codes directly
        idx, val = codes.indices.numpy(), codes.values.numpy()
        brute = np.bincount(idx[val > 0], minlength=cooc.n_latents)
        np.testing.assert_array_equal(np.asarray(cooc.freq), brute)
    fams = r.families()
    assert fams["sae"] == r.main_sae() and isinstance(fams["families"], list)
    labels = r.labels()
    assert labels and all({"feature", "label", "pearson", "f1"} <= set(x) for x in labels)
    figs = {p.name for p in r.figures_dir.glob("*.png")}
    assert {"fig6_nn_cosines.png", "fig18_encoder_decoder.png", "fig5_log_density.png",
            "autointerp_pearson.png"} <= figs
    for p in r.figures_dir.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = {m["step"] for m in r.metrics()}
    assert {"corpus", "embed", "train", "encode", "cooc", "families", "split", "interpret"} <= steps
    summary = json.loads((r.root / "summary.json").read_text())
    assert set(summary["recovery"]["per_level"]) == {"field", "subfield", "topic"}
    html = r.report_path.read_text()
    assert "<html" in html.lower() and "http://" not in html.split("<body", 1)[0].replace("http://www.w3.org", "")


def test_subcommands_pick_up_the_run(demo_run, tmp_path, capsys):
    out = _cli("families", "--run", demo_run.root, "--method", "precise", "--quiet")
    assert "| SAE | families |" in out.stdout
    assert json.loads(demo_run.families_path.read_text())["method"] == "precise"
    out = _cli("search", "machine learning", "--run", demo_run.root, "--top", "3", "--json")
    res = json.loads(out.stdout)
    assert len(res["hits"]) == 3 and res["active"]
    from fastsae.cli import build_parser

    parser = build_parser()
    for sub in ["demo", "embed", "train", "sweep", "encode", "cooc", "families", "split", "interpret",
                "report", "search", "bench"]:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([sub, "--help"])
        assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: fastsae " + sub)


def test_interrupted_demo_resumes_to_identical_results(demo_run, tmp_path):
    root = tmp_path / "demo"
    proc = subprocess.Popen(EXE + DEMO + ["--run", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ENV, start_new_session=True)
    try:  # kill it while it trains the second SAE
        target = root / "saes"
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            names = [p for p in target.glob("*") if p.is_dir()] if target.exists() else []
            if len(names) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the demo finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (root / "families.json").exists()
    _cli(*DEMO, "--run", root)
    a, b = demo_run, RunDir.open(root)
    assert a.sae_names() == b.sae_names()
    for n in a.sae_names():
        np.testing.assert_array_equal(a.codes(n).indices.numpy(), b.codes(n).indices.numpy())
        np.testing.assert_allclose(a.codes(n).values.numpy(), b.codes(n).values.numpy(), rtol=1e-6, atol=1e-7)
    fa, fb = json.loads(a.families_path.read_text()), json.loads(b.families_path.read_text())
    if fa["method"] == fb["method"]:  # test_subcommands may have rewritten run a with another method
        assert fa["families"] == fb["families"]


def test_steering_toward_a_topic_moves_its_documents_up(demo_run):
    r = demo_run
    corpus = r.corpus()
    main = r.main_sae()
    rec = fastsae.topic_feature_recovery(r.codes(main), corpus, level="topic")
    # the best-matched topic latent, and a query document from another field
    best = max((m for m in rec.matches if m.level == "topic"), key=lambda m: (m.f1, -m.latent))
    assert best.f1 > 0.3, best
    members = np.array([d["path"][2] == best.name for d in corpus])
    field = next(d["path"][0] for d in corpus if d["path"][2] == best.name)
    query_doc = next(i for i, d in enumerate(corpus) if d["path"][0] != field)
    s = fastsae.feature_search.Searcher(r)
    plain = s(corpus[query_doc]["text"], top=10)
    steered = s(corpus[query_doc]["text"], steer={int(best.latent): 8.0}, top=10)
    rank_plain = np.argsort(plain.ranking)[members].mean()
    rank_steered = np.argsort(steered.ranking)[members].mean()
    assert rank_steered < 0.5 * rank_plain, (rank_plain, rank_steered)
    assert any(a.feature == int(best.latent) for a in steered.steered)
    # no edit: plain embedding search (the query document ranks itself first)
    assert plain.hits[0].doc == query_doc
    with pytest.raises(ValueError, match="out of range"):
        s("x", steer={10**6: 1.0})
    with pytest.raises(ValueError, match="no feature label matches"):
        s("x", steer={"zzzz-no-such-label": 1.0})
    with pytest.raises(ValueError, match="non-empty"):
        s("   ")


def test_clear_errors(tmp_path, demo_run):
    # a run directory written by an incompatible version
    cfg = json.loads(demo_run.config_path.read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({**cfg, "run_format": 999}))
    out = _cli("encode", "--run", old, check=False)
    assert out.returncode == 2 and "format" in out.stderr and "Traceback" not in out.stderr
    # a missing column
    (tmp_path / "docs.jsonl").write_text('{"title": "a", "body": "b"}\n')
    out = _cli("embed", tmp_path / "docs.jsonl", "--run", tmp_path / "r1", "--backend", "tfidf",
               "--text-column", "nope", check=False)
    assert out.returncode == 2 and "nope" in out.stderr and "body" in out.stderr
    # empty texts
    (tmp_path / "empty.jsonl").write_text('{"text": "fine"}\n{"text": "   "}\n')
    out = _cli("embed", tmp_path / "empty.jsonl", "--run", tmp_path / "r2", "--backend", "tfidf", check=False)
    assert out.returncode == 2 and "empty" in out.stderr.lower()
    # a step whose input is missing names the command to run
    RunDir.open(tmp_path / "fresh", create=True)
    out = _cli("cooc", "--run", tmp_path / "fresh", check=False)
    assert out.returncode == 2 and "fastsae" in out.stderr and "Traceback" not in out.stderr


def test_interpret_a_run_through_an_openai_compatible_server(demo_run, tmp_path):
    """`fastsae interpret` on a demo run against a loopback chat-completions server: labels come
    from the server, a rerun sends nothing, and the key is written nowhere."""
    import hashlib
    import shutil

    from llm_server import LLMServer, chat_reply

    def oracle(req):
        user = [m["content"] for m in req.messages if m.get("role") == "user"][0]
        if "FINAL: <label>" in user:
            # a label unique to the feature: identical Predictor prompts would be answered from the cache
            tag = hashlib.sha256(user.encode()).hexdigest()[:8]
            return chat_reply(f"The documents share a theme.\nFINAL: oracle {tag}", prompt_tokens=50, completion_tokens=9)
        return chat_reply("Looks related.\nPREDICTION: 0.5", prompt_tokens=40, completion_tokens=6)

    run = tmp_path / "run"
    shutil.copytree(demo_run.root, run)
    for name in ("labels.jsonl", "labels_summary.json", "family_labels.jsonl", "autointerp_cache.sqlite"):
        (run / name).unlink(missing_ok=True)
    secret = "sk-test-do-not-store-0123456789"
    env = {**ENV, "OPENAI_API_KEY": secret}
    args = EXE + ["interpret", "--run", str(run), "--max-features", "4", "--no-families", "--quiet",
                  "--concurrency", "2", "--interpreter-model", "m-interp", "--predictor-model", "m-pred"]
    with LLMServer(chat=oracle) as srv:
        out = subprocess.run(args + ["--base-url", srv.url], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        first = srv.count()
        assert {r.model for r in srv.requests} == {"m-interp", "m-pred"}
        out = subprocess.run(args + ["--base-url", srv.url], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0 and srv.count() == first  # finished: zero new requests
    labels = [json.loads(x) for x in (run / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 4 and all(x["label"].startswith("oracle ") and x["backend"] == "openai" for x in labels)
    assert first == sum(1 + len(x["test_docs"]) for x in labels)  # 1 Interpreter + 1 Predictor per test doc
    assert all(len(x["test_docs"]) >= 5 and x["predictions"] == [0.5] * len(x["test_docs"]) for x in labels)
    # --max-features: a seeded sample of 4 distinct features that fire
    codes = RunDir.open(run).codes(RunDir.open(run).main_sae())
    idx, val = codes.indices.numpy(), codes.values.numpy()
    live = set(np.unique(idx[val > 0]).tolist())
    chosen = [x["feature"] for x in labels]
    assert len(set(chosen)) == 4 and set(chosen) <= live
    for p in run.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
