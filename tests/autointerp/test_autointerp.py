"""fastsae.autointerp without a network: scores against scipy/scikit-learn, answer parsing,
document sampling against independent numpy references, the keyword backend end to end, bad
input, and the ``interpret`` CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from autointerp_fixtures import WORDS, active_set, make_corpus
from autointerp_fixtures import make_run as _make_run
from fastsae.autointerp import (
    AutointerpConfig,
    FeatureResult,
    estimate_cost,
    f1,
    interpret_families,
    interpret_features,
    parse_label,
    parse_prediction,
    pearson,
    price_for,
)
from fastsae.autointerp.cli import add_parser, parse_feature_spec
from fastsae.autointerp.prompts import interpreter_messages, PromptDoc, truncate
from fastsae.autointerp.scoring import score

KW = dict(backend="keywords", progress=False)


# -- scores ---------------------------------------------------------------------------------------
FIXED = [
    ([0.9, 0.8, 0.7, -0.8, -0.9, -0.7], [1, 1, 1, -1, -1, -1]),
    ([0.9, -0.2, 0.7, 0.3, -0.9, -0.7], [1, 1, 1, -1, -1, -1]),
    ([0.1, 0.1, 0.0, 0.0, -1.0, 1.0], [1, -1, 1, -1, -1, 1]),
    ([-0.5, -0.4, -0.9, 0.5, 0.9, 0.2], [1, 1, 1, -1, -1, -1]),
    ([1.0, 0.5, 0.25, 0.0, -0.25, -0.5, -1.0], [1, -1, 1, -1, 1, -1, -1]),
    ([0.3, 0.2], [1, -1]),
]


@pytest.mark.parametrize("pred,truth", FIXED)
def test_pearson_and_f1_match_scipy_and_sklearn(pred, truth):
    assert pearson(pred, truth) == pytest.approx(pearsonr(pred, truth).statistic, abs=1e-12)
    expected_f1 = f1_score(np.array(truth) > 0, np.array(pred) > 0, zero_division=0)
    assert f1(pred, truth) == pytest.approx(expected_f1, abs=1e-12)


def test_pearson_undefined_cases_are_nan_and_f1_threshold_is_strict():
    assert math.isnan(pearson([0.5, 0.5, 0.5], [1, -1, 1]))  # constant predictions (scipy: nan too)
    assert math.isnan(pearson([0.5], [1]))
    assert math.isnan(pearson([0.2, 0.9], [1, 1]))  # constant truth
    # confidence exactly 0 is "inactive" (the paper: active if above 0)
    assert f1([0.0, 0.0, -1.0], [1, 1, -1]) == f1_score([1, 1, 0], [0, 0, 0], zero_division=0) == 0.0
    assert f1([-1, -1], [-1, -1]) == 0.0


def test_score_leaves_parse_failures_out():
    preds = [0.9, None, 0.7, -0.8, None, -0.7]
    truth = [1, 1, 1, -1, -1, -1]
    p, f, n = score(preds, truth)
    keep = [i for i, x in enumerate(preds) if x is not None]
    assert n == 4
    assert p == pytest.approx(pearsonr([preds[i] for i in keep], [truth[i] for i in keep]).statistic)
    assert f == pytest.approx(1.0)
    p, f, n = score([None, None], [1, -1])
    assert n == 0 and math.isnan(p) and math.isnan(f)


# -- parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,label", [
    ("They are all about dark matter.\nFINAL: Dark matter halos", "Dark matter halos"),
    ("reasoning\n**FINAL:** \"Gibbs sampling variants\".", "Gibbs sampling variants"),
    ("final: sparsity in neural networks", "sparsity in neural networks"),
    ("FINAL: first\nmore thoughts\nFINAL: second label", "second label"),
    ("  FINAL:   X-ray   reflection spectra  ", "X-ray reflection spectra"),
])
def test_parse_label_accepts_decorated_answers(text, label):
    assert parse_label(text).label == label


@pytest.mark.parametrize("text", [
    "", None, "I think it is about galaxies.", "FINAL:", "FINAL: <label>",
    "FINAL: one two three four five six seven eight nine",
])
def test_parse_label_rejects(text):
    p = parse_label(text)
    assert p.label is None and p.error


def test_parse_label_keeps_reasoning():
    p = parse_label("Step 1: all mention CMB.\nStep 2: maps.\nFINAL: CMB map-making")
    assert p.reasoning == "Step 1: all mention CMB.\nStep 2: maps." and p.label == "CMB map-making"


@pytest.mark.parametrize("text,value", [
    ("It matches.\nPREDICTION: 0.8", 0.8), ("PREDICTION: -1", -1.0), ("PREDICTION: **+.5**", 0.5),
    ("prediction: 1.0.", 1.0), ("PREDICTION: 0", 0.0), ("PREDICTION: 2\nPREDICTION: -0.25", -0.25),
])
def test_parse_prediction(text, value):
    assert parse_prediction(text).value == value


@pytest.mark.parametrize("text", ["PREDICTION: 1.5", "PREDICTION: high", "PREDICTION: 80%", "no answer", "",
                                  "PREDICTION: nan", "PREDICTION: -1.01"])
def test_parse_prediction_rejects(text):
    p = parse_prediction(text)
    assert p.value is None and p.error


def test_prompts_follow_the_paper():
    msgs = interpreter_messages([PromptDoc("doc one", 0.5)], [PromptDoc("doc two")], domain="astrophysics",
                                corpus="arXiv abstracts")
    assert "astrophysics researcher" in msgs[0]["content"] and "arXiv abstracts" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert "step by step" in user and user.rstrip().splitlines()[-2] == "FINAL: <label>"
    assert "(activation 0.5)" in user and "doc two" in user
    assert truncate("word " * 1000, 50).endswith("…") and len(truncate("word " * 1000, 50)) <= 50


def test_prices():
    assert price_for("gpt-4o") == (2.50, 10.00)
    assert price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.60)  # longest prefix, not gpt-4o
    assert price_for("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert price_for("llama-3-8b") is None and estimate_cost("llama-3-8b", 10**6, 10**6) == 0.0
    assert estimate_cost("my-model", 10**6, 2 * 10**6, {"my-model": (1.0, 3.0)}) == pytest.approx(7.0)


# -- sampling against an independent reference -----------------------------------------------------
def test_test_sets_match_independent_reference():
    texts, idx, val = make_corpus(n_docs=80, n_features=4, seed=1)
    res = interpret_features(texts, (idx, val), 4, seed=3, **KW)
    assert [r.feature for r in res] == [0, 1, 2, 3]
    for r in res:
        f = r.feature
        act = np.array([(val[i][idx[i] == f]).max() if (idx[i] == f).any() and (val[i][idx[i] == f] > 0).any()
                        else 0.0 for i in range(len(texts))])
        order = sorted(np.nonzero(act > 0)[0], key=lambda i: (-act[i], i))
        assert r.top_docs == [int(i) for i in order[:5]]
        assert r.top_activations == pytest.approx([float(act[i]) for i in order[:5]])
        assert r.n_active == int((act > 0).sum())
        truth = [1 if f in active_set(idx, val, d) else -1 for d in r.test_docs]
        assert r.truth == truth and truth.count(1) == 3 and truth.count(-1) == 3
        shown = set(r.top_docs) | set(r.negative_docs)
        assert not shown & set(r.test_docs), "the Predictor must be tested on documents the Interpreter never saw"
        assert all(act[d] == 0 for d in r.negative_docs) and len(r.negative_docs) == 5
        assert len(set(r.test_docs)) == 6
    # seeded: the same seed gives the same documents, another seed other ones
    again = interpret_features(texts, (idx, val), 4, seed=3, **KW)
    assert [r.test_docs for r in again] == [r.test_docs for r in res]
    other = interpret_features(texts, (idx, val), 4, seed=4, **KW)
    assert [r.test_docs for r in other] != [r.test_docs for r in res]
    # a feature's documents do not depend on which other features are in the run
    alone = interpret_features(texts, (idx, val), 4, seed=3, features=[2], **KW)
    assert alone[0].test_docs == res[2].test_docs and alone[0].negative_docs == res[2].negative_docs


def test_hard_negatives_are_the_nearest_non_activating_documents():
    texts, idx, val = make_corpus(n_docs=70, n_features=3, seed=2)
    rng = np.random.default_rng(0)
    E = rng.normal(size=(len(texts), 16)).astype(np.float32)
    for mode, test_mode, pool in (("hard", None, 8), ("hard", "random", 5)):
        res = interpret_features(texts, (idx, val), 3, embeddings=E, negatives=mode, test_negatives=test_mode, **KW)
        for r in res:
            En = E / np.linalg.norm(E, axis=1, keepdims=True)
            m = En[r.top_docs].mean(axis=0)
            sim = En @ (m / np.linalg.norm(m))
            candidates = [i for i in np.argsort(-sim, kind="stable") if r.feature not in active_set(idx, val, i)]
            expected = set(int(i) for i in candidates[:pool])
            hard = set(r.negative_docs) | (set(r.test_docs[3:]) if test_mode is None else set())
            assert hard == expected
            if test_mode == "random":
                assert all(r.feature not in active_set(idx, val, d) for d in r.test_docs[3:])
    with pytest.raises(ValueError, match="embeddings"):
        interpret_features(texts, (idx, val), 3, negatives="hard", **KW)
    with pytest.raises(ValueError, match="embeddings"):
        interpret_features(texts, (idx, val), 3, negatives="hard", embeddings=E[:10], **KW)


def test_rare_and_dead_features_are_skipped_with_a_reason():
    texts, idx, val = make_corpus(n_docs=60, n_features=3, seed=0)
    # feature 3 fires on exactly 4 documents (fewer than 5 + 3), feature 4 never
    rows = [0, 1, 2, 3]
    idx[rows, -1], val[rows, -1] = 3, 0.5
    res = interpret_features(texts, (idx, val), 5, **KW)
    by = {r.feature: r for r in res}
    assert by[3].skipped.startswith("too few activating documents: 4") and by[3].label is None
    assert by[4].skipped.startswith("never activates")
    assert math.isnan(by[3].pearson) and by[0].skipped is None
    assert res.summary["n_skipped"] == 2
    assert res.summary["skipped_reasons"] == {"never activates": 1, "too few activating documents": 1}


# -- the keyword backend ---------------------------------------------------------------------------
def test_keyword_backend_end_to_end(tmp_path):
    texts, idx, val = make_corpus(n_docs=150, n_features=6, seed=5)
    res = interpret_features(texts, (idx, val), 6, out_dir=tmp_path, **KW)
    assert len(res) == 6
    for r in res:
        assert WORDS[r.feature] in r.label.split(", ")  # the distinctive term is the feature's word
        assert r.backend == "keywords" and r.cost == 0 and r.tokens == 0
        assert all(-1 <= p <= 1 for p in r.predictions)
        assert r.pearson == pytest.approx(pearsonr(r.predictions, r.truth).statistic)
        assert r.f1 == pytest.approx(f1_score(np.array(r.truth) > 0, np.array(r.predictions) > 0))
        assert "z=" in r.reasoning
    assert res.summary["median_pearson"] > 0.8 and res.summary["median_f1"] == 1.0
    lines = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert sorted(x["feature"] for x in lines) == list(range(6))
    need = {"feature", "label", "reasoning", "predictions", "truth", "test_docs", "top_docs", "pearson", "f1",
            "tokens", "cost", "interpreter_model", "predictor_model", "backend", "parse_failures", "skipped"}
    assert need <= set(lines[0])
    summary = json.loads((tmp_path / "labels_summary.json").read_text())
    assert summary["median_pearson"] == pytest.approx(np.median([r.pearson for r in res]))
    assert summary["n_scored"] == 6 and summary["parse_failures"]["total"] == 0
    png = (tmp_path / "figures" / "autointerp_pearson.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # a rerun recomputes nothing and returns the same results
    again = interpret_features(texts, (idx, val), 6, out_dir=tmp_path, **KW)
    assert again.session["features_done"] == 0
    assert [r.to_record() for r in again] == [r.to_record() for r in res]


def test_keyword_backend_families():
    texts, idx, val = make_corpus(n_docs=120, n_features=5, seed=6)
    fams = [{"parent": 0, "children": [1, 2]}, {"parent": 3, "children": [4]}]
    res = interpret_families(texts, (idx, val), fams, **KW)
    assert [r.family for r in res] == [0, 1] and [r.feature for r in res] == [0, 3]
    for r, fam in zip(res, fams):
        members = {fam["parent"], *fam["children"]}
        assert r.children == fam["children"]
        assert r.truth == [1 if members & active_set(idx, val, d) else -1 for d in r.test_docs]
        assert all(set(fam["children"]) & active_set(idx, val, d) for d in r.top_docs + r.test_docs[:3])
    # documents are drawn across the children in turn: both children of family 0 are represented
    tops = res[0].top_docs
    assert any(1 in active_set(idx, val, d) for d in tops) and any(2 in active_set(idx, val, d) for d in tops)


def test_inside_a_running_event_loop():
    texts, idx, val = make_corpus(n_docs=60, n_features=2, seed=0)

    async def notebook_cell():
        return interpret_features(texts, (idx, val), 2, **KW)

    assert len(asyncio.run(notebook_cell())) == 2


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_is_refused_clearly(monkeypatch):
    texts, idx, val = make_corpus(n_docs=60, n_features=3, seed=0)
    codes = (idx, val)
    cases = [
        (lambda: interpret_features(texts[:-1], codes, 3, **KW), ValueError, "59 texts"),
        (lambda: interpret_features([], (idx[:0], val[:0]), 3, **KW), ValueError, "empty"),
        (lambda: interpret_features("a text", codes, 3, **KW), TypeError, "list of strings"),
        (lambda: interpret_features(texts[:-1] + [None], codes, 3, **KW), TypeError, r"texts\[59\]"),
        (lambda: interpret_features(texts, codes, 3, features=[0, 3], **KW), ValueError, "outside"),
        (lambda: interpret_features(texts, codes, 3, features=[-1], **KW), ValueError, "outside"),
        (lambda: interpret_features(texts, codes, 3, features=[], **KW), ValueError, "empty"),
        (lambda: interpret_features(texts, codes, 3, features=[0.5], **KW), TypeError, "integer"),
        (lambda: interpret_features(texts, codes, 2, **KW), ValueError, "n_latents"),
        (lambda: interpret_features(texts, codes, 0, **KW), ValueError, "n_latents"),
        (lambda: interpret_features(texts, (idx, -val), 3, **KW), ValueError, "negative"),
        (lambda: interpret_features(texts, (idx, val * np.nan), 3, **KW), ValueError, "NaN"),
        (lambda: interpret_features(texts, (idx[:, :2], val), 3, **KW), ValueError, r"\[N, k\]"),
        (lambda: interpret_features(texts, idx, 3, **KW), TypeError, "SparseCode"),
        (lambda: interpret_features(texts, (idx.astype(float), val), 3, **KW), TypeError, "integers"),
        (lambda: interpret_features(texts, codes, 3, backend="anthropic", progress=False), ValueError, "backend"),
        (lambda: interpret_features(texts, codes, 3, n_topp=4, **KW), TypeError, "n_topp"),
        (lambda: interpret_features(texts, codes, 3, negatives="easy", **KW), ValueError, "negatives"),
        (lambda: interpret_features(texts, codes, 3, concurrency=0, **KW), ValueError, "concurrency"),
        (lambda: interpret_features(texts, codes, 3, timeout=-1, **KW), ValueError, "timeout"),
        (lambda: interpret_features(texts, codes, 3, max_cost=-1, **KW), ValueError, "max_cost"),
        (lambda: interpret_features([" "] * 60, codes, 3, **KW), ValueError, "blank"),
        (lambda: interpret_families(texts, codes, [{"parent": 0}], **KW), ValueError, "children"),
        (lambda: interpret_families(texts, codes, [{"parent": 0, "children": [9]}], n_latents=3, **KW),
         ValueError, "outside"),
        (lambda: interpret_families(texts, codes, [], **KW), ValueError, "empty"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        interpret_features(texts, codes, 3, progress=False)


def test_torch_sparse_code_and_blank_documents():
    import torch

    from fastsae.ops import SparseCode

    texts, idx, val = make_corpus(n_docs=60, n_features=2, seed=0)
    texts[0] = "   "
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # blank documents are logged, not a crash
        res = interpret_features(texts, SparseCode(torch.from_numpy(idx), torch.from_numpy(val)), 2, **KW)
    assert all(0 not in r.top_docs + r.test_docs + r.negative_docs for r in res)


def test_settings_mismatch_is_refused_then_overwritten(tmp_path):
    texts, idx, val = make_corpus(n_docs=60, n_features=2, seed=0)
    interpret_features(texts, (idx, val), 2, out_dir=tmp_path, seed=0, **KW)
    with pytest.raises(ValueError, match="other settings"):
        interpret_features(texts, (idx, val), 2, out_dir=tmp_path, seed=1, **KW)
    res = interpret_features(texts, (idx, val), 2, out_dir=tmp_path, seed=1, overwrite=True, **KW)
    assert len((tmp_path / "labels.jsonl").read_text().splitlines()) == 2 and len(res) == 2


def test_torn_last_line_is_repaired_on_resume(tmp_path):
    texts, idx, val = make_corpus(n_docs=60, n_features=3, seed=0)
    full = interpret_features(texts, (idx, val), 3, out_dir=tmp_path, **KW)
    path = tmp_path / "labels.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed in the middle of a write
    res = interpret_features(texts, (idx, val), 3, out_dir=tmp_path, **KW)
    assert res.session["features_done"] == 2
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(r["feature"] for r in recs) == [0, 1, 2]
    assert [r.to_record() for r in res] == [r.to_record() for r in full]


def test_config_validation_and_record_round_trip():
    with pytest.raises(ValueError, match="n_top"):
        AutointerpConfig(n_top=0)
    with pytest.raises(ValueError, match="test_negatives"):
        AutointerpConfig(test_negatives="nope")
    with pytest.raises(ValueError, match="token_param"):
        AutointerpConfig(token_param="max_output")
    r = FeatureResult(feature=3, label="x", pearson=math.nan, f1=0.5)
    rec = r.to_record()
    assert rec["pearson"] is None and "family" not in rec
    back = FeatureResult.from_record(json.loads(json.dumps(rec)))
    assert math.isnan(back.pearson) and back.f1 == 0.5 and back.feature == 3


# -- CLI -------------------------------------------------------------------------------------------
def _cli(argv):
    ap = argparse.ArgumentParser(prog="fastsae")
    add_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli_keywords_end_to_end(tmp_path, capsys):
    run = _make_run(tmp_path)
    rc = _cli(["interpret", "--run", str(run.root), "--backend", "keywords", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "median Pearson" in out
    labels = run.labels()
    assert sorted(r["feature"] for r in labels) == [0, 1, 2, 3]
    fam = [json.loads(x) for x in (run.root / "family_labels.jsonl").read_text().splitlines()]
    assert len(fam) == 1 and fam[0]["parent"] == 0 and fam[0]["children"] == [1, 2]
    assert fam[0]["members"] == [0, 1, 2]
    assert run.labels_summary_path.exists() and (run.figures_dir / "autointerp_pearson.png").exists()
    assert any(m["step"] == "interpret" for m in run.metrics())
    assert run.config()["interpret"]["backend"] == "keywords"
    # rerun: nothing to do
    assert _cli(["interpret", "--run", str(run.root), "--backend", "keywords", "--quiet"]) == 0


def test_cli_feature_selection_and_errors(tmp_path, capsys):
    run = _make_run(tmp_path, families=False)
    assert _cli(["interpret", "--run", str(run.root), "--backend", "keywords", "--quiet", "--features", "1-3",
                 "--max-features", "2", "--seed", "1"]) == 0
    feats = sorted(r["feature"] for r in run.labels())
    assert len(feats) == 2 and set(feats) <= {1, 2, 3}
    assert _cli(["interpret", "--run", str(run.root), "--backend", "keywords", "--features", "9"]) == 2
    assert "outside" in capsys.readouterr().err
    assert _cli(["interpret", "--run", str(tmp_path / "nope"), "--backend", "keywords"]) == 2
    assert _cli(["interpret", "--run", str(run.root), "--backend", "keywords", "--negatives", "hard"]) == 2
    assert "embeddings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _cli(["interpret", "--help"])
    assert e.value.code == 0
    helptext = capsys.readouterr().out
    for flag in ("--run", "--backend", "--base-url", "--interpreter-model", "--predictor-model", "--features",
                 "--max-features", "--concurrency", "--timeout", "--max-cost", "--max-tokens", "--seed",
                 "--negatives", "OPENAI_API_KEY"):
        assert flag in helptext


def test_parse_feature_spec():
    assert parse_feature_spec("0-3,7, 2") == [0, 1, 2, 3, 7]
    assert parse_feature_spec("5") == [5]
    for bad in ("", "a", "3-1", "-2", "1-b"):
        with pytest.raises(ValueError):
            parse_feature_spec(bad)


def test_hard_negative_pools_do_not_depend_on_chunking():
    from fastsae.autointerp.sampling import ActivationIndex, Sampler, SamplingConfig, Unit

    texts, idx, val = make_corpus(n_docs=50, n_features=4, seed=3)
    E = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    cfg = SamplingConfig(negatives="hard", test_negatives="hard")
    units = [Unit(f, (f,), (f,)) for f in range(4)] + [Unit(0, (0, 1, 2), (1, 2), family=0)]
    usable = np.ones(50, dtype=bool)
    usable[5] = False
    pools = []
    for chunk, block in ((256, 8192), (2, 7), (1, 1)):
        s = Sampler(ActivationIndex(idx, val, 4), usable, cfg, E)
        s.prepare_hard(units, chunk=chunk, block_rows=block)
        pools.append([s.select(u) for u in units])
    for sels in pools[1:]:
        for a, b in zip(pools[0], sels):
            assert (a.negatives, a.test_docs) == (b.negatives, b.test_docs)
    for u, sel in zip(units, pools[0]):
        assert 5 not in sel.negatives + sel.test_docs
        assert all(not set(u.members) & active_set(idx, val, d) for d in sel.negatives + sel.test_docs[3:])
