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


# -- issue 13: no traceback for a user error ------------------------------------------------------
# Each case runs through the real entry point (fastsae.cli.main, or a subprocess) and asserts the
# README's promise: exit status 2, exactly one line on stderr naming the problem, no traceback.

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon").split()


def _fail(argv, capsys, *needles):
    from fastsae.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert code == 2, (code, out.err[-2000:])
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err + out.out
    line = lines[0]
    assert line.startswith(f"fastsae {argv[0]}") or line.startswith("fastsae: error:"), line
    for n in needles:
        assert str(n) in line, (n, line)
    return line


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> RunDir:
    """80 documents, tfidf embeddings (d=16), two tiny SAEs and their codes: built in a few seconds."""
    from fastsae.cli import main

    base = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    docs = base / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS, 12))}) + "\n" for _ in range(80)))
    root = base / "run"
    assert main(["embed", str(docs), "--run", str(root), "--backend", "tfidf", "--dim", "16", "--quiet"]) == 0
    assert main(["train", "--run", str(root), "--sizes", "32:4,64:8", "--epochs", "2", "--quiet"]) == 0
    assert main(["encode", "--run", str(root), "--quiet"]) == 0
    return RunDir.open(root)


@pytest.fixture
def run_copy(small_run, tmp_path) -> RunDir:
    import shutil

    shutil.copytree(small_run.root, tmp_path / "run")
    return RunDir.open(tmp_path / "run")


def _files(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("device, needle", [("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available"),
                                            ("mps", "MPS"), ("gpu", "not a device"), ("cuda:x", "not a device"),
                                            ("", "give cpu, cuda")])
def test_device_not_on_this_machine(small_run, tmp_path, capsys, device, needle):
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    before = _files(small_run.root)
    X = small_run.embeddings_path
    for argv in (["train", "--run", small_run.root, "--sizes", "16:2"],
                 ["train", X, "--out", tmp_path / "o", "--n-latents", "16", "--k", "2"],
                 ["sweep", X, "--k", "2", "--n", "16", "--out", tmp_path / "sw"],
                 ["encode", "--run", small_run.root, "--force"],
                 ["demo", "--run", tmp_path / "demo", "--docs", "50"],
                 ["embed", small_run.corpus_path, "--out", tmp_path / "e.npy", "--backend", "local"]):
        _fail([*argv, "--device", device, "--quiet"], capsys, "--device", needle)
    assert _files(small_run.root) == before  # nothing was written: checked before any work
    assert not any(tmp_path.iterdir())


def test_device_index_past_the_last_gpu(small_run, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _fail(["train", "--run", small_run.root, "--sizes", "16:2", "--device", "cuda:3"], capsys,
          "cuda:3", "1 CUDA device(s)", "cuda:0 to cuda:0")


def test_device_error_in_a_real_subprocess(small_run):
    out = _cli("train", "--run", small_run.root, "--sizes", "16:2", "--device", "nonsense", check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "--device 'nonsense'" in out.stderr


@pytest.mark.parametrize("sizes, needle", [
    ("128:4,256", "'256'"), ("a:b", "'a:b'"), ("128:0", "must be >= 1"), ("4:8", "K=8"), ("32:32", "K=32"),
    ("", "empty"), ("  ", "empty"), ("32:4,", "stray comma"), ("32:4,32:4", "32:4 twice"), ("1:2:3", "'1:2:3'"),
    ("-64:4", "must be >= 1"),
])
def test_malformed_sizes(run_copy, capsys, sizes, needle):
    before = _files(run_copy.root)
    _fail(["train", "--run", run_copy.root, f"--sizes={sizes}", "--quiet"], capsys, "--sizes", needle)
    assert _files(run_copy.root) == before


def test_parse_sizes_accepts_and_names():
    from fastsae.cli import parse_sizes

    specs = parse_sizes(" 64:4, 128:4 ,128:8")
    assert [(s.name, s.n_latents, s.k) for s in specs] == [("sae4", 64, 4), ("sae4_n128", 128, 4), ("sae8", 128, 8)]


@pytest.mark.parametrize("argv, needles", [
    (["--n-latents", "16"], ["--n-latents and --k"]),
    (["--k", "40", "--n-latents", "32"], ["K=40", "N=32"]),
    (["--sizes", "16:2", "--n-latents", "16", "--k", "2"], ["not both"]),
    (["--sizes", "16:2", "--epochs", "-1"], ["epochs must be > 0"]),
    (["--sizes", "16:2", "--batch-size", "100000"], ["batch size 100000", "76 training rows", "embeddings.npy"]),
    (["--sizes", "16:2", "--batch-size", "0"], ["batch_size"]),
    (["--sizes", "16:2", "--lr", "nan"], ["lr"]),
    (["--sizes", "16:2", "--epochs", "x"], ["invalid float value: 'x'", "--help"]),
    (["--sizes", "16:2,8:1,4:4"], ["'4:4'"]),  # the last size is refused before the first trains
])
def test_train_option_errors(run_copy, capsys, argv, needles):
    before = _files(run_copy.root)
    _fail(["train", "--run", run_copy.root, "--quiet", *argv], capsys, *needles)
    assert _files(run_copy.root) == before and not (run_copy.root / "saes" / "sae2").exists()


@pytest.mark.parametrize("steer, needle", [("=2", "FEATURE=WEIGHT"), ("3", "FEATURE=WEIGHT"), ("3=x", "'x' is not a number"),
                                           ("3=", "not a number"), ("3=nan", "finite"), ("3=inf", "finite")])
def test_malformed_steer(small_run, capsys, steer, needle):
    _fail(["search", "alpha beta", "--run", small_run.root, "--steer", steer], capsys, "--steer", needle)


def test_steer_twice_and_features_spec(small_run, capsys):
    _fail(["search", "alpha", "--run", small_run.root, "--steer", "3=1", "--steer", "3=2"], capsys, "twice")
    for spec, needle in [("5-3", "reversed"), ("a-b", "'a-b'"), ("-3", "'-3'"), ("1-2-3", "'1-2-3'"), (",", "no feature"),
                         ("0-99999999999", "outside [0, 64)"), ("64", "outside [0, 64)")]:
        _fail(["interpret", "--run", small_run.root, "--backend", "keywords", "--features", spec, "--quiet"],
              capsys, needle)
    assert not small_run.labels_path.exists()


def _save(path, array, **kw):
    with open(path, "wb") as f:
        np.save(f, array, **kw)


@pytest.mark.parametrize("damage, needles", [
    ("fewer rows", ["has 50 rows", "has 80 documents", "embeddings.npy", "corpus.jsonl"]),
    ("more rows", ["has 81 rows", "has 80 documents"]),
    ("nan", ["row 3", "NaN or infinite"]),
    ("inf", ["row 79", "NaN or infinite"]),
    ("1-d", ["2-D", "(80,)"]),
    ("int", ["floats", "int64"]),
    ("not npy", ["not a .npy file (no NumPy header)"]),
    ("pickled", ["pickled objects"]),
    ("directory", ["is a directory"]),
    ("other d", ["d=8", "expects d=16"]),
])
def test_damaged_embeddings_are_refused_at_train_and_encode(run_copy, capsys, damage, needles):
    path = run_copy.embeddings_path
    X = np.load(path)
    if damage == "fewer rows":
        _save(path, X[:50])
    elif damage == "more rows":
        _save(path, np.vstack([X, X[:1]]))
    elif damage in ("nan", "inf"):
        X[3 if damage == "nan" else 79, 2] = np.nan if damage == "nan" else np.inf
        _save(path, X)
    elif damage == "1-d":
        _save(path, X[:, 0])
    elif damage == "int":
        _save(path, (X * 10).astype(np.int64))
    elif damage == "not npy":
        path.write_text("this is not an array\n")
    elif damage == "pickled":
        _save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        _save(path, X[:, :8])
    before = _files(run_copy.root)
    _fail(["encode", "--run", run_copy.root, "--force", "--quiet"], capsys, *needles)
    if damage != "other d":  # (a new SAE of the other width would train fine)
        _fail(["train", "--run", run_copy.root, "--sizes", "16:2", "--quiet"], capsys, *needles)
    assert _files(run_copy.root) == before


def test_embeddings_rows_are_counted_against_the_corpus(run_copy, capsys):
    # the reference for "documents": the lines of corpus.jsonl, counted here directly
    n_docs = sum(1 for line in run_copy.corpus_path.read_text().splitlines() if line.strip())
    X = np.load(run_copy.embeddings_path)
    assert X.shape[0] == n_docs == 80
    with open(run_copy.corpus_path, "a") as f:
        f.write(json.dumps({"text": "one document more"}) + "\n")
    _fail(["encode", "--run", run_copy.root, "--force", "--quiet"], capsys, f"has {n_docs} rows",
          f"has {n_docs + 1} documents")


@pytest.mark.parametrize("tail, needles", [
    (b'{"text": "caf\xe9 au lait"}\n', ["line 81 is not valid UTF-8", "byte 0xe9", "column 14"]),
    (b'{"text": "torn"\n', ["line 81 is not valid JSON"]),
    (b'[1, 2]\n', ["line 81 is a JSON list"]),
    (b'{"title": "no text"}\n', ["line 81 has no 'text'"]),
    (b'{"text": 5}\n{"text": "x"}\n', ["line 81 has a int 'text'"]),
])
def test_damaged_corpus_names_file_and_line(run_copy, capsys, tail, needles):
    size = run_copy.corpus_path.stat().st_size
    with open(run_copy.corpus_path, "ab") as f:
        f.write(tail)
    bad = tail.find(b"\xe9")
    if bad >= 0:  # the offset of the bad byte in the file, counted here
        needles = [*needles, f"byte offset {size + bad}"]
    for argv in (["encode", "--run", run_copy.root, "--force"], ["train", "--run", run_copy.root, "--sizes", "16:2"],
                 ["interpret", "--run", run_copy.root, "--backend", "keywords"],
                 ["search", "alpha", "--run", run_copy.root]):
        _fail([*argv, "--quiet"] if argv[0] != "search" else argv, capsys, "corpus.jsonl", *needles)


def test_first_hour_mistakes(small_run, tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "a document"}\n')
    fresh = RunDir.open(tmp_path / "fresh", create=True)
    X = small_run.embeddings_path
    cases = [
        (["encode", "--run", tmp_path / "missing"], ["no such run directory"]),
        (["encode", "--run", docs], ["not a directory"]),
        (["demo", "--run", docs, "--docs", "50"], ["not a directory"]),
        (["cooc", "--run", tmp_path], ["not a fastsae run directory"]),
        (["train", "--run", fresh.root, "--sizes", "16:2"], ["no embeddings", "fastsae embed"]),
        (["encode", "--run", fresh.root], ["no embeddings"]),
        (["families", "--run", small_run.root], ["no co-occurrence", "fastsae cooc"]),
        (["report", "--run", fresh.root], []),
        (["interpret", "--run", fresh.root, "--backend", "keywords"], ["no trained SAE"]),
        (["search", "x", "--run", small_run.root, "--sae", "nope"], ["nope"]),
        (["train", docs, "--out", tmp_path / "o", "--n-latents", "16", "--k", "2"], ["not a .npy file"]),
        (["train", small_run.root, "--out", tmp_path / "o", "--n-latents", "16", "--k", "2"], ["is a directory"]),
        (["train", tmp_path / "nothere.npy", "--out", tmp_path / "o", "--n-latents", "16", "--k", "2"], ["no such file"]),
        (["train", X, "--out", docs, "--n-latents", "16", "--k", "2"], ["not a directory"]),
        (["train", X, "--out", tmp_path / "o", "--n-latents", "16", "--k", "20"], ["k=20", "n_latents=16"]),
        (["train", X, "--out", tmp_path / "o", "--sizes", "16:2"], ["--sizes applies with --run"]),
        (["train", X, "--run", small_run.root], ["not both"]),
        (["train"], ["DATA.npy --out DIR"]),
        (["sweep", X, "--k", "20", "--n", "16", "--out", tmp_path / "sw"], ["k < n"]),
        (["embed", tmp_path / "nothere.jsonl", "--out", tmp_path / "e.npy", "--backend", "tfidf"], ["no such file"]),
        (["embed", tmp_path, "--out", tmp_path / "e.npy", "--backend", "tfidf"], ["is a directory"]),
        (["embed", docs, "--out", tmp_path, "--backend", "tfidf"], ["--out", "is a directory"]),
        (["bench", "cooc", "--rows", "0"], ["--rows must be >= 1"]),
        (["bench", "cooc", "--rows", "10", "--k", "50", "--latents", "40"], ["--k 50"]),
        (["demo", "--run", tmp_path / "d", "--docs", "0"], ["--docs must be >= 1"]),
        (["families", "--run"], ["expected one argument"]),
        (["nosuchcommand"], ["invalid choice"]),
    ]
    for argv, needles in cases:
        _fail(argv, capsys, *needles)
    assert not (tmp_path / "o").exists() and not (tmp_path / "e.npy").exists() and not (tmp_path / "d").exists()


def test_which_exceptions_count_as_user_errors(small_run, capsys, monkeypatch):
    """Validation raised by fastsae is a user error (one line, exit 2); the same type raised
    inside a dependency, or another type, is a bug and keeps its traceback."""
    import fastsae.pipeline as P
    from fastsae.cli import main
    from fastsae.errors import UsageError, is_user_error

    def numpy_fails(*a, **k):
        np.zeros(3).reshape(2, 2)  # ValueError from inside numpy: a bug, not a user error

    monkeypatch.setattr(P, "step_cooc", numpy_fails)
    with pytest.raises(ValueError, match="reshape"):
        main(["cooc", "--run", str(small_run.root)])

    def internal_bug(*a, **k):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(P, "step_cooc", internal_bug)
    with pytest.raises(RuntimeError):
        main(["cooc", "--run", str(small_run.root)])

    def validation(*a, **k):
        P.default_schedule(0)  # a ValueError raised by fastsae's own validation

    monkeypatch.setattr(P, "step_cooc", validation)
    assert main(["cooc", "--run", str(small_run.root)]) == 2
    assert capsys.readouterr().err == "fastsae cooc: error: the corpus is empty\n"

    def usage(*a, **k):  # a UsageError is a user error wherever it is raised; one line always
        raise UsageError("tau must be in [0, 1]\n(the paper uses 0.1)")

    monkeypatch.setattr(P, "step_cooc", usage)
    assert main(["cooc", "--run", str(small_run.root)]) == 2
    assert capsys.readouterr().err == "fastsae cooc: error: tau must be in [0, 1] (the paper uses 0.1)\n"
    monkeypatch.setenv("FASTSAE_DEBUG", "1")
    with pytest.raises(ValueError, match="tau"):
        main(["cooc", "--run", str(small_run.root)])
    assert is_user_error(UsageError("x")) and is_user_error(FileNotFoundError(2, "No such file", "f.npy"))
    assert not is_user_error(KeyError("text")) and not is_user_error(ConnectionError("reset"))
