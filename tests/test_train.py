"""Training recipe: initialisation, AuxK, checkpoints/resume, data parallelism, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.optimize
import torch

import fastsae
from fastsae import TrainConfig, encode_dataset, geometric_median, train


def planted(n_rows=6000, d=24, n_true=48, k_true=3, seed=0, noise=0.01):
    """Embeddings that are sparse non-negative mixtures of known unit directions."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(n_true, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    H = np.zeros((n_rows, n_true))
    rows = np.repeat(np.arange(n_rows), k_true)
    H[rows, np.argsort(rng.random((n_rows, n_true)), axis=1)[:, :k_true].ravel()] = rng.exponential(1.0, n_rows * k_true)
    return (H @ D + noise * rng.normal(size=(n_rows, d))).astype(np.float32)


def small_config(**kw):
    base = dict(n_latents=96, k=3, epochs=2, batch_size=200, lr=1e-3, log_every=10, progress=False, median_sample=2000)
    base.update(kw)
    return TrainConfig(**base)


def test_geometric_median_matches_scipy():
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.normal(size=(300, 5)), rng.normal(loc=8.0, size=(40, 5))])  # outliers
    ours = geometric_median(torch.from_numpy(pts)).numpy()
    ref = scipy.optimize.minimize(lambda y: np.linalg.norm(pts - y, axis=1).sum(), pts.mean(0), method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000}).x
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert np.linalg.norm(pts - ours, axis=1).sum() <= np.linalg.norm(pts - ref, axis=1).sum() + 1e-9


def test_training_on_planted_data_reaches_stated_nmse_and_keeps_unit_decoder():
    X = planted()
    res = train(X, small_config(epochs=12))
    last = res.history[-1]
    assert last["nmse_eval"] < 0.3, last
    assert res.history[0]["nmse_eval"] > last["nmse_eval"]
    torch.testing.assert_close(res.sae.W_dec.norm(dim=1), torch.ones(96), atol=1e-5, rtol=0)
    assert last["l0"] == pytest.approx(3.0)
    for key in ("step", "epoch", "examples", "nmse", "aux_loss", "dead_fraction", "log10_density_eval",
                "never_fired_eval", "mean_activation_eval", "flops", "examples_per_s"):
        assert key in last
    assert last["flops"] == pytest.approx(6 * 24 * (96 + 3) * last["examples"])
    # Standardisation statistics are stored with the model.
    np.testing.assert_allclose(res.sae.data_mean.numpy(), X.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    assert bool(res.sae.standardized)


def test_initialisation_paper_recipe():
    X = planted(n_rows=3000)
    res = train(X, small_config(max_steps=1, lr=1e-12))  # one negligible step: the initial state
    sae = res.sae
    z = sae.standardize(torch.from_numpy(X[:2000]))
    gm = geometric_median(z.double())
    torch.testing.assert_close(sae.b_pre.double(), gm, atol=5e-2, rtol=0)  # from a different 2000-row sample
    cos = torch.nn.functional.cosine_similarity(sae.W_enc, sae.W_dec, dim=1)
    assert cos.min() > 0.999
    with torch.no_grad():
        out = sae(torch.from_numpy(X[:500]))
        ratio = ((out.recon_standardized - sae.b_pre).norm(dim=1).mean()
                 / (out.target_standardized - sae.b_pre).norm(dim=1).mean())  # b_pre: SAE space
    assert 0.8 < float(ratio) < 1.25  # initial reconstructions match input magnitudes


def test_auxk_revives_dead_latents():
    """40% of the latents start with tiny encoder rows: positive pre-activations that never
    make the top-k, so they never fire and get no gradient from the main loss. Without AuxK
    they stay dead; with AuxK (the default alpha = 1/32) they come back."""
    X = planted(n_rows=4000, d=16, n_true=96, k_true=3, seed=3)
    base = train(X, small_config(n_latents=64, k=3, max_steps=1, lr=1e-12)).sae
    with torch.no_grad():
        base.W_enc[:26].mul_(1e-3)
    common = dict(n_latents=64, k=3, epochs=8, batch_size=200, lr=2e-3, dead_window=400, log_every=20)
    without = train(X, small_config(aux_alpha=0.0, **common), init=base).history[-1]
    with_aux = train(X, small_config(**common), init=base).history
    assert without["dead_fraction"] >= 0.4, without
    assert any(h["aux_loss"] > 0 for h in with_aux)
    assert with_aux[-1]["dead_fraction"] < 0.5 * without["dead_fraction"], (with_aux[-1], without)
    assert with_aux[-1]["nmse_eval"] < without["nmse_eval"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    X = planted(n_rows=3000)
    cfg = dict(epochs=3, log_every=5, checkpoint_every=5, dead_window=600)
    full = train(X, small_config(checkpoint_dir=str(tmp_path / "full"), **cfg))
    part = train(X, small_config(checkpoint_dir=str(tmp_path / "cut"), max_steps=15, **cfg))
    assert part.steps == 15
    # "Killed" after logging step 15 but before its checkpoint landed: the latest is step 10.
    (tmp_path / "cut" / "latest").write_text("step-000000010\n")
    resumed = train(X, small_config(checkpoint_dir=str(tmp_path / "cut"), resume=True, **cfg))
    assert resumed.steps == full.steps
    for (name, a), (_, b) in zip(full.sae.state_dict().items(), resumed.sae.state_dict().items()):
        assert torch.equal(a, b), name
    drop = {"examples_per_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in full.history] == \
           [{k: v for k, v in h.items() if k not in drop} for h in resumed.history]
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(full.history)
    resumed_lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(a)["step"] for a in resumed_lines] == [json.loads(a)["step"] for a in lines]
    # Only the last two checkpoints are kept, and `latest` names the final one.
    assert (tmp_path / "full" / "latest").read_text().strip() == f"step-{full.steps:09d}"
    assert len([d for d in os.listdir(tmp_path / "full") if d.startswith("step-")]) == 2


def test_encode_dataset_in_memory_and_memmapped(tmp_path):
    X = planted(n_rows=1500)
    sae = train(X, small_config(max_steps=3)).sae
    direct = sae.encode(torch.from_numpy(X))
    for out_dir in (None, str(tmp_path / "codes")):
        code = encode_dataset(sae, X, batch_size=333, out_dir=out_dir)
        assert torch.equal(code.indices, direct.indices)
        torch.testing.assert_close(code.values, direct.values)
    assert (tmp_path / "codes" / "indices.npy").exists() and (tmp_path / "codes" / "values.npy").exists()
    assert not any(p.name.startswith(".") for p in (tmp_path / "codes").iterdir())


def test_bf16_mixed_precision_trains_like_fp32_with_fp32_state(monkeypatch):
    """compute_dtype="bfloat16": the encode and decode really run in bf16, while parameters
    and Adam state stay fp32 and the decoder rows unit norm; the run reaches the fp32 run's
    held-out nMSE (within 10%) with the same L0, AuxK included."""
    X = planted()
    kw = dict(epochs=12, dead_window=600, k_aux=6)
    ref = train(X, small_config(**kw))
    seen = []
    real = fastsae.ops.topk_encode_aux

    def spy(x, *a, **kw):
        seen.append(x.dtype)
        return real(x, *a, **kw)

    monkeypatch.setattr(fastsae.ops, "topk_encode_aux", spy)
    res = train(X, small_config(compute_dtype="bfloat16", **kw))
    assert seen and set(seen) == {torch.bfloat16}, "AuxK steps did not run the bf16 encode"
    assert all(p.dtype == torch.float32 for p in res.sae.parameters())
    assert any(h["aux_loss"] > 0 for h in res.history)
    torch.testing.assert_close(res.sae.W_dec.norm(dim=1), torch.ones(96), atol=1e-5, rtol=0)
    a, b = res.history[-1], ref.history[-1]
    assert a["nmse_eval"] == pytest.approx(b["nmse_eval"], rel=0.1) and a["nmse_eval"] < 0.3
    assert a["l0"] == pytest.approx(b["l0"])
    with pytest.raises(ValueError, match="compute_dtype"):
        small_config(compute_dtype="float16")


def assert_same_run(a, b):
    """Two runs over the same batches in the same order: every metric but the throughput, and
    every parameter, equal up to the last bits (kernels may split work differently)."""
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history):
        for key in ha:
            if key != "examples_per_s":
                assert hb[key] == pytest.approx(ha[key], rel=1e-6, abs=1e-9, nan_ok=True), key
    for name, p in a.sae.state_dict().items():
        torch.testing.assert_close(b.sae.state_dict()[name], p, rtol=1e-6, atol=1e-7, msg=name)


def test_prefetching_batches_changes_nothing(monkeypatch):
    """prefetch=True loads batches on a background thread (the GPU default): the same batches,
    so the same metrics and parameters as loading them in the loop."""
    import threading

    from fastsae.data import ArraySource

    X = planted(n_rows=2000)
    kw = dict(epochs=3, dead_window=400, batch_size=150)  # 2 epochs' permutations, AuxK on
    plain = train(X, small_config(prefetch=False, **kw))
    threads = []
    real = ArraySource.rows

    def spy(self, index, dtype=torch.float32):
        threads.append(threading.current_thread().name)
        return real(self, index, dtype)

    monkeypatch.setattr(ArraySource, "rows", spy)
    pre = train(X, small_config(prefetch=True, **kw))
    assert sum(t.startswith("fastsae-batches") for t in threads) >= pre.steps - 1
    assert_same_run(plain, pre)  # only thread scheduling differs


def test_data_on_device_gives_the_same_run():
    """data_on_device=True (the GPU default when it fits): the data is copied to the device
    once, from float64 too, and batches are gathered there; the same batches as from the host."""
    X = planted(n_rows=2000).astype(np.float64)  # converted to the parameter dtype on the way
    kw = dict(epochs=3, dead_window=400, batch_size=150)
    host = train(X, small_config(data_on_device=False, **kw))
    dev = train(X, small_config(data_on_device=True, **kw))
    assert_same_run(host, dev)


def test_bad_input(tmp_path):
    X = planted(n_rows=1000)
    bad = X.copy()
    bad[777, 3] = np.nan
    with pytest.raises(ValueError, match="row 777"):
        train(bad, small_config())
    with pytest.raises(ValueError, match="smaller than n_latents"):
        small_config(k=96)
    with pytest.raises(ValueError, match="positive int"):
        small_config(k=0)
    with pytest.raises(ValueError, match="empty"):
        train(np.zeros((0, 24), np.float32), small_config())
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(X[:100], small_config())
    with pytest.raises(TypeError, match="floats"):
        train(np.zeros((10, 3), np.int64), small_config())
    # Resuming into another shape, and a corrupt checkpoint.
    train(X, small_config(checkpoint_dir=str(tmp_path / "c"), max_steps=2))
    with pytest.raises(ValueError, match="checkpoint is d=24"):
        train(X[:, :20], small_config(checkpoint_dir=str(tmp_path / "c"), resume=True))
    latest = (tmp_path / "c" / "latest").read_text().strip()
    (tmp_path / "c" / latest / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        train(X, small_config(checkpoint_dir=str(tmp_path / "c"), resume=True))
    with pytest.raises(ValueError, match="expects d=24"):
        encode_dataset(train(X, small_config(max_steps=1)).sae, X[:, :5])


WORKER = textwrap.dedent(
    """
    import sys, torch, numpy as np, torch.distributed as dist
    import fastsae
    dist.init_process_group("gloo")
    X = np.load(sys.argv[1])
    cfg = fastsae.TrainConfig(n_latents=64, k=3, epochs=2, batch_size=200, lr=1e-3, log_every=5, progress=False,
                              median_sample=1000, dead_window=400)
    res = fastsae.train(X, cfg)
    if dist.get_rank() == 0:
        res.sae.save(sys.argv[2])
    dist.destroy_process_group()
    """
)


def test_data_parallel_two_processes_equal_one(tmp_path):
    X = planted(n_rows=2400)
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "worker.py").write_text(WORKER)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(tmp_path / "worker.py"), str(tmp_path / "x.npy"), str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    ddp = fastsae.TopKSAE.load(tmp_path / "ddp")
    single = train(X, TrainConfig(n_latents=64, k=3, epochs=2, batch_size=200, lr=1e-3, log_every=5, progress=False,
                                  median_sample=1000, dead_window=400)).sae
    for (name, a), (_, b) in zip(single.state_dict().items(), ddp.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
