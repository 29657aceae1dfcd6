"""fastsae.autointerp against a real HTTP server on loopback speaking the chat-completions
protocol (tests/support/llm_server.py), through the real ``openai`` client: known-answer scores,
retries (429, 5xx, timeouts, malformed bodies), parse failures, a server that dies, the cache,
resume after a killed subprocess, budgets, and the API key never reaching a file."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from autointerp_fixtures import WORDS, TopicOracle, active_set, make_corpus
from fastsae.autointerp import AutointerpAborted, interpret_families, interpret_features
from llm_server import CHAT_PATH, LLMServer, Reply, chat_completion, error, malformed, slow

TEXTS, IDX, VAL = make_corpus(n_docs=60, n_features=4, seed=0)
N_LAT = 4
REQS_PER_FEATURE = 1 + 6  # one label, six predictions


def run(srv, **kw):
    opts = dict(base_url=srv.url, api_key="sk-test", interpreter_model="test-interp", predictor_model="test-pred",
                progress=False, concurrency=4, timeout=5.0, backoff_base=0.01, backoff_max=0.05, max_retries=3)
    opts.update(kw)
    return interpret_features(TEXTS, (IDX, VAL), N_LAT, **opts)


@pytest.fixture
def server():
    srv = LLMServer(chat=TopicOracle()).start()
    yield srv
    srv.stop()


def _records(path):
    return {r["feature"]: r for r in map(json.loads, Path(path).read_text().splitlines())}


# -- known answers ---------------------------------------------------------------------------------
def test_known_answer_scores(server):
    res = run(server)
    assert [r.feature for r in res] == [0, 1, 2, 3]
    assert server.count(CHAT_PATH) == 4 * REQS_PER_FEATURE
    for r in res:
        assert r.label == f"topic {WORDS[r.feature]}"
        assert r.pearson == pytest.approx(1.0) and r.f1 == pytest.approx(1.0)
        assert r.predictions == [0.9, 0.9, 0.9, -0.8, -0.8, -0.8]
        assert r.truth == [1 if r.feature in active_set(IDX, VAL, d) else -1 for d in r.test_docs]
        assert r.reasoning.startswith("The activating documents share")
        assert r.prompt_tokens == 7 * 100 and r.completion_tokens == 7 * 20 and r.tokens == 840
        assert r.interpreter_model == "test-interp" and r.predictor_model == "test-pred" and r.backend == "openai"
    # the models asked are the ones configured, one request per test document
    models = [q.model for q in server.requests]
    assert models.count("test-interp") == 4 and models.count("test-pred") == 24
    # an inverted Predictor: every label is anti-correlated, F1 0
    with LLMServer(chat=TopicOracle(lambda w, doc: -0.6 if w & set(doc.split()) else 0.7)) as srv:
        inv = run(srv)
    assert all(r.pearson == pytest.approx(-1.0) and r.f1 == 0.0 for r in inv)


def test_scores_of_graded_predictions_match_scipy_and_sklearn():
    def graded(words, doc):  # a deterministic, imperfect Predictor
        hit = bool(words & set(doc.split()))
        return round((0.2 if hit else -0.3) + (len(doc) % 7) / 10 - 0.3, 2)

    with LLMServer(chat=TopicOracle(graded)) as srv:
        res = run(srv)
    for r in res:
        label_words = set(r.label.split()) & set(WORDS)
        expected = [graded(label_words, " ".join(TEXTS[d].split())) for d in r.test_docs]
        assert r.predictions == pytest.approx(expected)
        assert r.pearson == pytest.approx(pearsonr(expected, r.truth).statistic, abs=1e-9)
        assert r.f1 == pytest.approx(f1_score(np.array(r.truth) > 0, np.array(expected) > 0, zero_division=0))
    assert res.summary["median_pearson"] == pytest.approx(np.median([r.pearson for r in res]))


# -- retries and misbehaving endpoints ------------------------------------------------------------
def test_429_and_5xx_are_retried(server):
    server.script(error(429, headers={"Retry-After": "0.02"}), error(500), error(503), Reply(status=502, body="bad gw"))
    res = run(server, concurrency=1, max_retries=4)
    assert all(r.pearson == pytest.approx(1.0) for r in res)
    assert server.count(CHAT_PATH) == 4 * REQS_PER_FEATURE + 4
    assert res.session["retries"] == 4 and res.session["requests"] == 28 and res.session["failures"] == 0


def test_slow_responses_time_out_and_are_retried(server):
    oracle = TopicOracle()
    # the timeout leaves the other (fast) requests room on a loaded machine: at 0.3 s one of them
    # was seen to time out too while the rest of the suite ran on the same two cores
    server.script(lambda req: slow(oracle(req), 4.0))
    t0 = time.monotonic()
    res = run(server, concurrency=1, timeout=1.0, features=[0])
    assert time.monotonic() - t0 < 4.0, "the slow request must be abandoned at the timeout"
    assert res[0].pearson == pytest.approx(1.0)
    assert res.session["retries"] == 1 and server.count(CHAT_PATH) == REQS_PER_FEATURE + 1


def test_malformed_bodies_are_retried_then_reported(server):
    server.script(malformed(), {"object": "chat.completion"}, {"choices": []}, {"choices": [{"index": 0}]})
    res = run(server, concurrency=1, malformed_retries=4, features=[0])
    assert res[0].pearson == pytest.approx(1.0) and res.session["retries"] == 4
    # always malformed: each feature fails after its retries; after 3 in a row the run stops
    with LLMServer(chat=lambda req: malformed()) as bad:
        with pytest.raises(AutointerpAborted, match="not JSON") as e:
            run(bad, concurrency=1, malformed_retries=1)
        assert bad.count() == 3 * 2 and e.value.results == []


def test_empty_content_is_an_unparsable_answer_and_retried_once(server):
    server.script(chat_completion(""))  # the Interpreter's first answer is empty
    res = run(server, concurrency=1, features=[1])
    assert res[0].label == f"topic {WORDS[1]}" and res[0].parse_retries == 1 and res[0].parse_failures == 0
    assert server.requests[1].messages[-2] == {"role": "assistant", "content": ""}


def test_unparsable_answers_are_retried_once_then_counted(tmp_path):
    # every first attempt is unparsable, every retry fine: no failure, one retry per answer
    with LLMServer(chat=TopicOracle(first_try_bad=True)) as srv:
        res = run(srv, features=[0])
    assert res[0].parse_retries == 7 and res[0].parse_failures == 0 and res[0].pearson == pytest.approx(1.0)
    assert srv.count() == 14
    # an Interpreter that never gives a label: reported, not scored
    with LLMServer(chat=TopicOracle(interp_text="It is hard to say what these share.")) as srv:
        res = run(srv, features=[0, 1], out_dir=tmp_path / "a")
        assert srv.count() == 4  # two tries per feature, no predictions
    for r in res:
        assert r.label is None and r.parse_failures == 1 and r.parse_failures_interpreter == 1
        assert r.skipped.startswith("unparsable interpreter answer") and math.isnan(r.pearson)
        assert r.predictions == [] and r.tokens == 240
    s = json.loads((tmp_path / "a" / "labels_summary.json").read_text())
    assert s["parse_failures"] == {"total": 2, "interpreter": 2, "predictor": 0, "features_affected": 2}
    assert s["n_scored"] == 0 and s["median_pearson"] is None
    # a Predictor that cannot answer about one document: that document is left out of the scores
    with LLMServer(chat=TopicOracle()) as srv:
        ref = run(srv, features=[2])[0]
    bad_doc = " ".join(TEXTS[ref.test_docs[4]].split())
    with LLMServer(chat=TopicOracle(lambda w, d: 0.9 if w & set(d.split()) else -0.2 - len(d) % 5 / 10,
                                    bad_doc=lambda d: d == bad_doc)) as srv:
        r = run(srv, features=[2])[0]
    assert r.test_docs == ref.test_docs
    assert r.predictions[4] is None and r.parse_failures_predictor == 1 and r.parse_failures == 1
    assert r.n_scored == 5
    keep = [i for i in range(6) if i != 4]
    assert r.pearson == pytest.approx(pearsonr([r.predictions[i] for i in keep], [r.truth[i] for i in keep]).statistic)


def test_fatal_errors_stop_at_once(server):
    with LLMServer(chat=lambda req: error(401, "Incorrect API key provided")) as srv:
        with pytest.raises(AutointerpAborted, match="HTTP 401") as e:
            run(srv, concurrency=1)
        assert srv.count() == 1 and e.value.fatal
    with LLMServer(chat=lambda req: error(404, "model not found")) as srv:
        with pytest.raises(AutointerpAborted, match="404"):
            run(srv, concurrency=1)
        assert srv.count() == 1


def test_a_server_that_dies_mid_run(tmp_path):
    oracle = TopicOracle()
    box = {}

    def dying(req):
        if req.index >= 10:  # feature 0 done (7 requests), feature 1 has 3 answers; then it dies
            if req.index == 10:
                threading.Thread(target=box["srv"].stop, daemon=True).start()
            return Reply(drop=True)
        return oracle(req)

    srv = box["srv"] = LLMServer(chat=dying).start()
    out = tmp_path / "out"
    with pytest.raises(AutointerpAborted) as e:
        run(srv, concurrency=1, out_dir=out, max_consecutive_failures=2, max_retries=2)
    srv.stop()
    assert "rerun to continue" in str(e.value)
    assert [r.feature for r in e.value.results] == [0]
    assert list(_records(out / "labels.jsonl")) == [0]
    summary = json.loads((out / "labels_summary.json").read_text())
    assert summary["stopped"] == "endpoint" and summary["n_features"] == 1 and summary["n_remaining"] == 3
    # rerun against a live server: only the missing requests are made
    with LLMServer(chat=TopicOracle()) as srv2:
        res = run(srv2, concurrency=1, out_dir=out)
        assert srv2.count() == 4 * REQS_PER_FEATURE - 10
    assert [r.feature for r in res] == [0, 1, 2, 3] and all(r.pearson == pytest.approx(1.0) for r in res)


def test_concurrency_is_bounded():
    with LLMServer(chat=TopicOracle(delay=0.03)) as srv:
        run(srv, concurrency=2)
        assert 1 <= srv.max_concurrent <= 2
    with LLMServer(chat=TopicOracle(delay=0.03)) as srv:
        run(srv, concurrency=6)
        assert 2 < srv.max_concurrent <= 6


# -- cache, resume, budgets ------------------------------------------------------------------------
def test_cache_makes_a_rerun_send_nothing(tmp_path):
    with LLMServer(chat=TopicOracle()) as srv:
        first = run(srv, out_dir=tmp_path / "a")
        assert srv.count() == 28
    with LLMServer(chat=TopicOracle()) as srv:  # another server, another port: same cache keys
        again = run(srv, out_dir=tmp_path / "a")
        assert srv.count() == 0 and again.session["requests"] == 0
        # a fresh output directory with the same cache: every answer from the cache
        fresh = run(srv, out_dir=tmp_path / "b", cache_path=tmp_path / "a" / "autointerp_cache.sqlite")
        assert srv.count() == 0 and fresh.session["cache_hits"] == 28 and fresh.session["cost"] == 0
    assert [r.to_record() for r in again] == [r.to_record() for r in first]
    assert [r.to_record() for r in fresh] == [r.to_record() for r in first]
    # the cache key covers the model: another Predictor model is asked anew
    with LLMServer(chat=TopicOracle()) as srv:
        run(srv, out_dir=tmp_path / "c", cache_path=tmp_path / "a" / "autointerp_cache.sqlite",
            predictor_model="other-pred")
        assert srv.count() == 24


CHILD = r"""
import json, sys
import numpy as np
from fastsae.autointerp import interpret_features
data = np.load(sys.argv[1])
texts = json.loads(open(sys.argv[2]).read())
res = interpret_features(texts, (data["idx"], data["val"]), int(data["n"]), base_url=sys.argv[3],
                         api_key="sk-child", out_dir=sys.argv[4], interpreter_model="test-interp",
                         predictor_model="test-pred", progress=False, concurrency=1, timeout=60,
                         backoff_base=0.01, max_retries=2)
print("DONE", len(res), res.session["requests"], flush=True)
"""


def test_resume_after_kill_is_identical_to_an_uninterrupted_run(tmp_path):
    np.savez(tmp_path / "codes.npz", idx=IDX, val=VAL, n=N_LAT)
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    (tmp_path / "child.py").write_text(CHILD)
    env = dict(os.environ)  # the child imports the fastsae this interpreter has (installed, or PYTHONPATH)
    env.pop("OPENAI_API_KEY", None)

    def child(url, out):
        return subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "codes.npz"),
                                 str(tmp_path / "texts.json"), url, str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # the reference: one uninterrupted run
    with LLMServer(chat=TopicOracle()) as srv:
        full = run(srv, out_dir=tmp_path / "full", concurrency=1)
        n_full = srv.count()
    out = tmp_path / "killed"
    with LLMServer(chat=TopicOracle()) as srv:
        srv.block_after(17)  # features 0 and 1 finish (14 answers), feature 2 gets 3, the 18th hangs
        p = child(srv.url, out)
        try:
            assert srv.wait_for(18, timeout=60), "the child never reached the blocking request"
            deadline = time.monotonic() + 10
            while len(_records_or_empty(out / "labels.jsonl")) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == -signal.SIGKILL
        assert sorted(_records_or_empty(out / "labels.jsonl")) == [0, 1]
        with sqlite3.connect(out / "autointerp_cache.sqlite") as db:
            cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert cached == 17
        srv.release()
        before = srv.count()
        p = child(srv.url, out)
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        resumed_requests = srv.count() - before
    assert resumed_requests == n_full - cached  # nothing finished is asked again
    assert "DONE 4" in stdout
    assert _records(out / "labels.jsonl") == _records(tmp_path / "full" / "labels.jsonl")
    assert sorted(_records(out / "labels.jsonl")) == [r.feature for r in full]


def _records_or_empty(path):
    try:
        return _records(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_budgets_stop_between_features_and_a_rerun_continues(tmp_path):
    prices = {"test-interp": (1000.0, 1000.0), "test-pred": (1000.0, 1000.0)}  # $0.12 per request
    with LLMServer(chat=TopicOracle()) as srv:
        res = run(srv, concurrency=1, out_dir=tmp_path, prices=prices, max_cost=1.0)
        assert res.stopped == "max_cost" and [r.feature for r in res] == [0]
        assert srv.count() == 7 and res.session["cost"] == pytest.approx(0.84) and res.session["cost"] <= 1.0
        assert res[0].cost == pytest.approx(0.84)
        s = json.loads((tmp_path / "labels_summary.json").read_text())
        assert s["stopped"] == "max_cost" and s["n_features"] == 1 and s["n_remaining"] == 3
        assert s["cost"] == pytest.approx(0.84) and s["prices_usd_per_1m_tokens"]["test-pred"] == [1000.0, 1000.0]
        # the token budget: 840 tokens per feature
        res = run(srv, concurrency=1, out_dir=tmp_path, prices=prices, max_tokens=2000)
        assert res.stopped == "max_tokens" and [r.feature for r in res] == [0, 1, 2]
        assert res.session["tokens"] == 1680
        # no budget: the rest, and nothing twice
        res = run(srv, concurrency=1, out_dir=tmp_path, prices=prices)
        assert res.stopped is None and [r.feature for r in res] == [0, 1, 2, 3]
        assert srv.count() == 28
    # a zero budget starts nothing; a cost budget on unpriced models warns that it cannot bind
    with LLMServer(chat=TopicOracle()) as srv:
        res = run(srv, max_cost=0.0, prices=prices)
        assert res == [] and srv.count() == 0 and res.stopped == "max_cost"
        with pytest.warns(UserWarning, match="no price is known"):
            run(srv, max_cost=5.0, features=[0])


def test_api_key_never_written(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    secret = "sk-SECRET-leak-check-0123456789abcdef"
    oracle = TopicOracle()

    def echo_then_answer(req):  # a server that echoes the Authorization header in its errors
        return error(500, f"upstream rejected {req.headers.get('authorization')}")

    with LLMServer(chat=oracle) as srv:
        srv.script(echo_then_answer, echo_then_answer)
        run(srv, api_key=secret, out_dir=tmp_path, concurrency=1)
        assert srv.requests[0].headers["authorization"] == f"Bearer {secret}"  # it was sent
    with LLMServer(chat=lambda req: error(403, f"key {req.headers.get('authorization')} not allowed")) as srv:
        with pytest.raises(AutointerpAborted) as e:
            run(srv, api_key=secret, out_dir=tmp_path / "b", cache_path=tmp_path / "cache2.sqlite",
                concurrency=1)
    assert secret not in str(e.value) and "***" in str(e.value)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files) and any(p.name == "labels.jsonl" for p in files)
    for p in files:
        assert secret.encode() not in p.read_bytes(), f"the API key leaked into {p}"
    assert caplog.records and secret not in caplog.text


def test_environment_variables_configure_the_endpoint(monkeypatch, server):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    res = interpret_features(TEXTS, (IDX, VAL), N_LAT, features=[0], interpreter_model="m1", predictor_model="m2",
                             progress=False)
    assert res[0].pearson == pytest.approx(1.0)
    assert {q.headers["authorization"] for q in server.requests} == {"Bearer sk-from-env"}
    # arguments win over the environment
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    run(server, features=[1])
    assert server.count() == 14


def test_families_over_http(tmp_path):
    texts, idx, val = make_corpus(n_docs=120, n_features=5, seed=6)
    fams = {"sae": "x", "method": "paper", "families": [{"parent": 0, "children": [1, 2]},
                                                         {"parent": 3, "children": [4]}]}
    with LLMServer(chat=TopicOracle()) as srv:
        res = interpret_families(texts, (idx, val), fams, base_url=srv.url, api_key="k", out_dir=tmp_path,
                                 progress=False, backoff_base=0.01)
        assert srv.count() == 2 * REQS_PER_FEATURE
        assert "a family of closely related features" in srv.requests[0].messages[1]["content"]
    for r, fam in zip(res, fams["families"]):
        members = {fam["parent"], *fam["children"]}
        assert r.truth == [1 if members & active_set(idx, val, d) else -1 for d in r.test_docs]
        assert all(WORDS[c] in r.label for c in fam["children"])
        assert r.pearson == pytest.approx(pearsonr(r.predictions, r.truth).statistic)
        assert r.predictions[:3] == [0.9, 0.9, 0.9]  # the positives hold a child's word
    # appended as they complete (concurrently): compare in family order
    recs = sorted((json.loads(x) for x in (tmp_path / "family_labels.jsonl").read_text().splitlines()),
                  key=lambda x: x["family"])
    assert [(x["family"], x["parent"], x["children"]) for x in recs] == [(0, 0, [1, 2]), (1, 3, [4])]
    assert (tmp_path / "figures" / "autointerp_family_pearson.png").exists()
    assert not (tmp_path / "labels.jsonl").exists()


def test_keyword_and_llm_backends_share_test_sets(server):
    llm = run(server, seed=5)
    kw = interpret_features(TEXTS, (IDX, VAL), N_LAT, backend="keywords", seed=5, progress=False)
    for a, b in zip(llm, kw):
        assert (a.top_docs, a.negative_docs, a.test_docs, a.truth) == (b.top_docs, b.negative_docs, b.test_docs,
                                                                        b.truth)


def test_cli_over_http_with_a_budget(tmp_path, monkeypatch, capsys):
    from test_autointerp import _cli, _make_run

    run_dir = _make_run(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test")
    with LLMServer(chat=TopicOracle()) as srv:
        argv = ["interpret", "--run", str(run_dir.root), "--base-url", srv.url, "--concurrency", "1", "--quiet"]
        # gpt-4o + gpt-4o-mini at 100 input / 20 output tokens per answer: $0.000612 per feature
        assert _cli(argv + ["--max-cost", "0.001"]) == 3
        out = capsys.readouterr().out
        assert "stopped by the budget" in out
        assert [r["feature"] for r in run_dir.labels()] == [0] and srv.count() == 7
        assert not (run_dir.root / "family_labels.jsonl").exists()
        assert _cli(argv) == 0
        assert srv.count() == 4 * 7 + 7  # the other three features, then the family
    labels = {r["feature"]: r for r in run_dir.labels()}
    assert sorted(labels) == [0, 1, 2, 3] and all(r["pearson"] == pytest.approx(1.0) for r in labels.values())
    assert labels[0]["interpreter_model"] == "gpt-4o" and labels[0]["predictor_model"] == "gpt-4o-mini"
    assert labels[0]["cost"] == pytest.approx(0.000612)
    fam = json.loads((run_dir.root / "family_labels.jsonl").read_text().splitlines()[0])
    assert fam["children"] == [1, 2]
    for p in run_dir.root.rglob("*"):
        if p.is_file():
            assert b"sk-cli-test" not in p.read_bytes()


@pytest.mark.parametrize("how", ["userinfo", "query"])
def test_key_in_base_url_authenticates_and_reaches_no_log(tmp_path, caplog, monkeypatch, how):
    """A key inside base_url (http://user:KEY@host/v1, ?api_key=KEY) is sent as the bearer
    token and appears in no log record (httpx logs request URLs at INFO), no file, no summary."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for name in ("openai", "httpx", "httpcore", "httpx2", "httpcore2", None):
        caplog.set_level(logging.DEBUG, logger=name)
    secret = "sk-url-key-7d1e0c4b9a"
    with LLMServer(chat=TopicOracle()) as srv:
        host = srv.url.split("://", 1)[1]
        url = f"http://user:{secret}@{host}" if how == "userinfo" else f"{srv.url}?api_key={secret}"
        res = run(srv, base_url=url, api_key=None, out_dir=tmp_path)
        auth = {r.headers.get("authorization") for r in srv.requests}
    assert auth == {f"Bearer {secret}"} and len(res) == N_LAT
    assert any(host in r.getMessage() for r in caplog.records)  # the request URLs were logged...
    for r in caplog.records:  # ...without the key
        assert secret not in r.getMessage() and secret not in str(r.args), (r.name, r.getMessage())
    assert res.summary["base_url"] == srv.url
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    # a different explicit key is refused without echoing either
    with pytest.raises(ValueError, match="two different API keys") as e:
        run(srv, base_url=url, api_key="sk-other-key", out_dir=tmp_path / "b")
    assert secret not in str(e.value) and "sk-other-key" not in str(e.value)
