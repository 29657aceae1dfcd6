"""fastsae.corpus: the built-in demo corpus, its taxonomy, and topic-feature recovery."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources

import numpy as np
import pytest

from fastsae.corpus import (
    LEVELS,
    DemoCorpus,
    Taxonomy,
    demo_corpus,
    load_taxonomy,
    topic_feature_recovery,
)


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy()


@pytest.fixture(scope="module")
def corpus() -> DemoCorpus:
    return demo_corpus(1500, seed=0)


# -- taxonomy ------------------------------------------------------------------------------------


def test_taxonomy_ships_with_the_package():
    # The data file is inside the package directory (fastsae/groundtruth/), which scikit-build-core's
    # wheel.packages = ["python/fastsae"] copies whole into the wheel.
    assert resources.files("fastsae.groundtruth").joinpath("taxonomy.json").is_file()
    assert load_taxonomy() is load_taxonomy()  # parsed once
    import fastsae.datasets as ds

    assert ds.demo_corpus is demo_corpus and ds.topic_feature_recovery is topic_feature_recovery


def test_taxonomy_shape(tax):
    assert 4 <= len(tax.fields) <= 6
    for f in tax.fields:
        assert 3 <= len(f.children) <= 5, f.name
        for s in tax.children_of(f):
            assert s.level == "subfield" and tax.parent_of(s) == f
            assert 3 <= len(s.children) <= 5, s.name
            for t in tax.children_of(s):
                assert t.level == "topic" and tax.parent_of(t) == s
                assert tax.topic_path(t.name) == (f.name, s.name, t.name)
    assert tax.parent_of(tax.fields[0]) is None
    assert len(tax) == sum(len(tax.nodes(lv)) for lv in LEVELS) == len(tax.nodes())
    for lv in LEVELS:
        assert [n.index for n in tax.nodes(lv)] == list(range(len(tax.nodes(lv))))
    assert tax.nodes(0) == tax.fields and tax.nodes("topics") == tax.topics


def test_taxonomy_vocabularies_distinct(tax):
    # Every node has its own vocabulary: no term or method appears in two nodes, and every node
    # sentence template names one of the node's terms or methods (so it carries the node's signal).
    seen: dict[str, str] = {}
    for n in tax.nodes():
        assert len(n.terms) >= 6 and n.methods and n.sentences
        for term in n.terms + n.methods:
            assert term.lower() not in seen, (term, n.name, seen.get(term.lower()))
            seen[term.lower()] = n.name
        for s in n.sentences:
            assert "{term}" in s or "{method}" in s, (n.name, s)


def test_taxonomy_errors(tax):
    with pytest.raises(KeyError, match="no node 'lensing'.*weak_lensing"):
        tax.node("lensing")
    with pytest.raises(ValueError, match="level must be one of"):
        tax.nodes("planet")
    with pytest.raises(ValueError, match="belongs under"):
        tax.check_path(["biology", "cosmology"])
    with pytest.raises(ValueError, match="is a subfield, expected a field"):
        tax.check_path(["cosmology"])
    with pytest.raises(ValueError, match="is a subfield, not a topic"):
        tax.topic_path("cosmology")
    data = tax.to_dict()
    data["fields"][1]["name"] = data["fields"][0]["name"]
    with pytest.raises(ValueError, match="used twice"):
        Taxonomy(data)
    data = tax.to_dict()
    data["fields"][0]["subfields"][0]["topics"][0]["sentences"] = ["Bad {slot} here."]
    with pytest.raises(ValueError, match="unknown slots"):
        Taxonomy(data)
    data = tax.to_dict()
    data["fields"][0]["subfields"][0]["topics"] = []
    with pytest.raises(ValueError, match="non-empty 'topics'"):
        Taxonomy(data)


def test_custom_taxonomy_file(tmp_path, tax):
    data = tax.to_dict()
    data["fields"] = data["fields"][:2]
    p = tmp_path / "tax.json"
    p.write_text(json.dumps(data))
    small = load_taxonomy(p)
    c = demo_corpus(50, taxonomy=p)
    assert len(small.fields) == 2 and {path[0] for path in c.paths} <= {f.name for f in small.fields}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_taxonomy(tmp_path / "bad.json")


# -- generation ------------------------------------------------------------------------------------


def test_deterministic_and_prefix_stable():
    a = demo_corpus(120, seed=3)
    b = demo_corpus(120, seed=3)
    assert a.texts == b.texts and a.paths == b.paths and a.secondary == b.secondary
    c = demo_corpus(120, seed=4)
    assert sum(x != y for x, y in zip(a.texts, c.texts)) > 110
    short = demo_corpus(40, seed=3)
    assert short.texts == a.texts[:40] and short.paths == a.paths[:40]


def test_golden_output():
    # Pins the generator (only Generator.random() doubles and our own arithmetic) and the
    # taxonomy: a change here means the demo corpus changed for everyone. Update deliberately.
    c = demo_corpus(20, seed=0)
    digest = hashlib.sha256("\x1e".join(c.texts).encode()).hexdigest()
    assert digest == GOLDEN_SHA256, digest


GOLDEN_SHA256 = "706480f7b69d4802fe3c8f8335059197048926380dc02dfe54ac0550be7a95f9"


def test_documents_and_records(corpus, tax):
    assert len(corpus) == corpus.n_docs == 1500
    recs = list(corpus.records())
    for i in (0, 7, 1499):
        assert corpus.texts[i] == corpus.titles[i] + "\n\n" + corpus.abstracts[i]
        assert recs[i]["text"] == corpus.texts[i] and recs[i]["path"] == list(corpus.paths[i])
        assert set(recs[i]) == {"text", "title", "abstract", "path", "secondary"}
    json.dumps(recs)  # serialisable as corpus.jsonl lines
    for p, s in zip(corpus.paths, corpus.secondary):
        assert tax.check_path(p) == p and len(p) == 3
        if s is not None:
            assert tax.check_path(s) == s and s[2] != p[2]
    for t in corpus.texts:
        assert "{" not in t and "}" not in t and "  " not in t
        assert 40 <= len(t.split()) <= 160
    for lv in LEVELS:
        lab = corpus.labels(lv)
        assert lab.dtype == np.int64 and lab.shape == (1500,)
        names = [tax.nodes(lv)[j].name for j in lab]
        assert names == [p[LEVELS.index(lv)] for p in corpus.paths]
    assert sum(corpus.counts("field").values()) == 1500
    assert min(corpus.counts("topic").values()) > 0  # every topic is populated at this size
    sec = corpus.labels("topic", secondary=True)
    assert ((sec >= 0) == np.array([s is not None for s in corpus.secondary])).all()
    m = corpus.membership("subfield")
    assert m.shape == (1500, len(tax.subfields)) and (m.sum(1) >= 1).all() and (m.sum(1) <= 2).all()
    assert (corpus.membership("field", include_secondary=False).sum(1) == 1).all()


def test_documents_carry_every_level_of_their_path(corpus, tax):
    for text, (f, s, t) in zip(corpus.texts[:500], corpus.paths[:500]):
        low = text.lower()
        hits = {lv: sum(w.lower() in low for w in tax.node(name).terms + tax.node(name).methods)
                for lv, name in zip(LEVELS, (f, s, t))}
        assert hits["field"] >= 1 and hits["subfield"] >= 1 and hits["topic"] >= 2, (text, hits)


def test_hierarchy_is_the_main_signal(corpus):
    # Held-out nearest-centroid classification on TF-IDF separates fields almost perfectly and
    # topics well; and mean cosine similarity falls at every step up the hierarchy.
    from sklearn.feature_extraction.text import TfidfVectorizer

    test = demo_corpus(400, seed=99)
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    X = vec.fit_transform(corpus.texts)
    Y = vec.transform(test.texts)
    acc = {}
    for lv in LEVELS:
        lab, n = corpus.labels(lv), int(corpus.labels(lv).max()) + 1
        cent = np.stack([np.asarray(X[lab == j].mean(axis=0)).ravel() for j in range(n)])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
        acc[lv] = float(((Y @ cent.T).argmax(axis=1) == test.labels(lv)).mean())
    assert acc["field"] >= 0.97 and acc["subfield"] >= 0.9 and acc["topic"] >= 0.8, acc

    S = (X[:600] @ X[:600].T).toarray()
    f, s, t = (corpus.labels(lv)[:600] for lv in LEVELS)
    same_t = t[:, None] == t[None, :]
    same_s = (s[:, None] == s[None, :]) & ~same_t
    same_f = (f[:, None] == f[None, :]) & (s[:, None] != s[None, :])
    diff_f = f[:, None] != f[None, :]
    np.fill_diagonal(same_t, False)
    means = [S[m].mean() for m in (same_t, same_s, same_f, diff_f)]
    assert means[0] > means[1] > means[2] > means[3], means


def test_cross_topic_fraction():
    none = demo_corpus(300, cross_topic=0.0)
    assert all(s is None for s in none.secondary)
    c = demo_corpus(3000, seed=5, cross_topic=0.25)
    frac = np.mean([s is not None for s in c.secondary])
    assert abs(frac - 0.25) < 0.03, frac  # binomial sd ~0.008
    tax = c.taxonomy
    for text, s in zip(c.texts, c.secondary):
        if s is not None:
            assert any(term.lower() in text.lower() for term in tax.node(s[2]).terms)
    # Secondary topics are spread over the taxonomy, not stuck in the primary's field.
    other_field = np.mean([s[0] != p[0] for p, s in zip(c.paths, c.secondary) if s is not None])
    assert other_field > 0.6


def test_imbalance():
    flat = demo_corpus(3000, imbalance=0.0).counts("topic").values()
    skew = demo_corpus(3000, imbalance=1.5).counts("topic").values()
    assert max(flat) / max(min(flat), 1) < 3
    assert max(skew) / max(min(skew), 1) > 20


@pytest.mark.parametrize("kwargs, match", [
    ({"n_docs": 0}, "n_docs must be >= 1"),
    ({"n_docs": 2.5}, "n_docs must be an int"),
    ({"n_docs": True}, "n_docs must be an int"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"seed": "0"}, "seed must be an int"),
    ({"cross_topic": 1.0}, r"cross_topic must be in \[0.0, 1.0\)"),
    ({"cross_topic": -0.1}, "cross_topic must be in"),
    ({"cross_topic": math.nan}, "cross_topic must be finite"),
    ({"imbalance": -1}, "imbalance must be >="),
])
def test_bad_arguments(kwargs, match):
    args = {"n_docs": 10, **kwargs}
    n = args.pop("n_docs")
    with pytest.raises(ValueError, match=match):
        demo_corpus(n, **args)


def test_bad_taxonomy_argument():
    with pytest.raises(TypeError, match="taxonomy must be"):
        demo_corpus(5, taxonomy=42)


# -- topic-feature recovery ------------------------------------------------------------------------


def brute_force(indices, values, paths, secondary, tax, level, n_latents):
    """Best latent and F1 per node of ``level`` by explicit set arithmetic."""
    depth = LEVELS.index(level)
    fires = [set() for _ in range(n_latents)]
    for i in range(indices.shape[0]):
        for j, v in zip(indices[i], values[i]):
            if v > 0:
                fires[int(j)].add(i)
    out = {}
    for node in tax.nodes(level):
        docs = {i for i, p in enumerate(paths) if p is not None and p[depth] == node.name}
        docs |= {i for i, p in enumerate(secondary or []) if p is not None and p[depth] == node.name}
        best, best_f1 = -1, 0.0
        for j in range(n_latents):
            inter = len(docs & fires[j])
            denom = len(docs) + len(fires[j])
            f1 = 2 * inter / denom if denom else 0.0
            if inter and f1 > best_f1 + 1e-12:
                best, best_f1 = j, f1
        out[node.name] = (len(docs), best, best_f1)
    return out


def planted_codes(c: DemoCorpus, rng, n_latents=600, k=6, noise=0.05):
    """Codes where latent (offset + node id) fires on the node's documents, with noise.

    Planted latents are ids below 150; the other slots hold random ids from 150 up."""
    tax = c.taxonomy
    offsets = {"field": 0, "subfield": 10, "topic": 40}
    idx = rng.integers(150, n_latents, size=(len(c), k))
    val = rng.uniform(0.1, 2.0, size=(len(c), k)).astype(np.float32)
    for i, p in enumerate(c.paths):
        for slot, lv in enumerate(LEVELS):
            if rng.random() > noise:
                idx[i, slot] = offsets[lv] + tax.node(p[slot]).index
    pad = rng.random(val.shape) < 0.2
    pad[:, :3] = False
    val[pad] = 0.0  # padding slots must not count
    idx[:, -1] = idx[:, 0]  # a repeated id within a row fires once
    return idx, val


@pytest.mark.parametrize("include_secondary", [True, False])
def test_recovery_matches_brute_force(include_secondary):
    rng = np.random.default_rng(0)
    c = demo_corpus(400, seed=2, cross_topic=0.2)
    idx, val = planted_codes(c, rng)
    res = topic_feature_recovery((idx, val), c, include_secondary=include_secondary, n_latents=600)
    assert res.n_latents == 600 and [m.level for m in res.matches] == (
        ["field"] * 5 + ["subfield"] * len(c.taxonomy.subfields) + ["topic"] * len(c.taxonomy.topics))
    for lv in LEVELS:
        ref = brute_force(idx, val, c.paths, c.secondary if include_secondary else None, c.taxonomy, lv, 600)
        populated = []
        for m in res.level(lv):
            n_docs, best, f1 = ref[m.name]
            assert m.n_docs == n_docs and m.latent == best, (m, ref[m.name])
            assert m.f1 == pytest.approx(f1, abs=1e-12)
            if best >= 0:
                assert 2 * m.precision * m.recall / (m.precision + m.recall) == pytest.approx(f1)
            if n_docs:
                populated.append(f1)
        assert res.share_recovered[lv] == pytest.approx(np.mean([f >= 0.5 for f in populated]))
        assert res.mean_f1[lv] == pytest.approx(np.mean(populated))
    # The planted latents are the ones found at every level.
    offsets = {"field": 0, "subfield": 10, "topic": 40}
    for m in res.matches:
        if m.n_docs >= 8:
            assert m.latent == offsets[m.level] + c.taxonomy.node(m.name).index, m
    assert res.share_recovered["field"] == 1.0
    json.dumps(res.to_dict())
    assert "fields" in res.summary() and "topics" in res.summary()


def test_recovery_inputs():
    import torch

    from fastsae.ops import SparseCode

    rng = np.random.default_rng(1)
    c = demo_corpus(120, seed=1)
    idx, val = planted_codes(c, rng, n_latents=300, noise=0.0)
    base = topic_feature_recovery((idx, val), c, include_secondary=False)
    code = SparseCode(torch.from_numpy(idx), torch.from_numpy(val))
    from_torch = topic_feature_recovery(code, list(c.paths), taxonomy=c.taxonomy)
    from_records = topic_feature_recovery((idx, val), list(c.records()), level="topic", include_secondary=False)
    assert from_torch.matches == [m for m in base.matches]
    assert from_records.matches == base.level("topic") and list(from_records.share_recovered) == ["topic"]
    assert all(m.f1 == 1.0 for m in base.matches if m.n_docs)
    assert topic_feature_recovery((idx, val), c).level("field") != base.level("field")  # secondary counted
    two = topic_feature_recovery((idx, val), c, level=["topic", 0])
    assert list(two.share_recovered) == ["field", "topic"]
    # Documents without a path belong to no node.
    paths = [None] * 10 + list(c.paths[10:])
    part = topic_feature_recovery((idx, val), paths, level="field")
    assert sum(m.n_docs for m in part.matches) == len(c) - 10
    # No firing at all: every node unmatched.
    empty = topic_feature_recovery((idx, np.zeros_like(val)), c, level="field")
    assert all(m.latent == -1 and m.f1 == 0.0 for m in empty.matches) and empty.n_latents == 0


def test_recovery_errors():
    c = demo_corpus(20)
    idx = np.zeros((20, 3), dtype=np.int64)
    val = np.ones((20, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="codes have 19 rows"):
        topic_feature_recovery((idx[:19], val[:19]), c)
    with pytest.raises(ValueError, match="must both be"):
        topic_feature_recovery((idx, val[:, :2]), c)
    with pytest.raises(TypeError, match="SparseCode"):
        topic_feature_recovery(idx, c)
    with pytest.raises(ValueError, match="n_latents=1"):
        topic_feature_recovery((idx + 3, val), c, n_latents=1)
    with pytest.raises(ValueError, match="document 2: .*no node"):
        topic_feature_recovery((idx, val), [("astrophysics", "cosmology", "weak_lensing")] * 2 + [("x",)] * 18)
    with pytest.raises(ValueError, match="threshold"):
        topic_feature_recovery((idx, val), c, threshold=2.0)
