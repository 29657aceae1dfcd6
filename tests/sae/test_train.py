"""Training recipe: initialisation, AuxK, checkpoints/resume, data parallelism, bad input."""

from __future__ import annotations

import json
import re
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
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
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


# ------------------------------------------------------------------------------------------------
# Resume: the same run or an error, from the newest complete checkpoint, with the same metrics.

import shutil  # noqa: E402
import warnings  # noqa: E402

from fastsae.checkpoints import pid_alive  # noqa: E402
from fastsae.trainer import RESUME_FREE_FIELDS  # noqa: E402


def records(path):
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}
            for line in path.read_text().splitlines()]


def assert_identical_run(ref, res, ref_dir, res_dir):
    """Bit-for-bit: every parameter and buffer, every history record and every metrics.jsonl
    record (all fields but examples_per_s)."""
    assert res.steps == ref.steps
    for name, a in ref.sae.state_dict().items():
        assert torch.equal(a, res.sae.state_dict()[name]), name
    drop = lambda hs: [{k: v for k, v in h.items() if k != "examples_per_s"} for h in hs]  # noqa: E731
    assert drop(res.history) == drop(ref.history)
    assert records(res_dir / "metrics.jsonl") == records(ref_dir / "metrics.jsonl") == drop(ref.history)


OFF = dict(epochs=3, log_every=5, checkpoint_every=4, dead_window=600)  # checkpoints off the log steps


@pytest.fixture(scope="module")
def off_grid(tmp_path_factory):
    """The uninterrupted run (42 steps: log every 5, checkpoint every 4) and its data."""
    X = planted(n_rows=3000)
    d = tmp_path_factory.mktemp("full")
    return X, train(X, small_config(checkpoint_dir=str(d), **OFF)), d


def test_resume_off_the_log_steps_logs_exactly_the_uninterrupted_metrics(off_grid, tmp_path):
    """Checkpoints that fall inside a log interval carry its running sums: the first record after
    a resume averages the same steps as the uninterrupted run's. Three interruptions: a time
    budget ending off a log step (its interim record at step 13 is replaced), a kill after the
    step-12 checkpoint (latest names it, step 13 is logged but its checkpoint is lost), and a
    second budget stop before the end (two resumes in a row)."""
    X, full, full_dir = off_grid
    assert full.steps == 42 and [h["step"] for h in full.history][-2:] == [40, 42]
    cut = tmp_path / "budget"
    part = train(X, small_config(checkpoint_dir=str(cut), max_steps=13, **OFF))
    assert [h["step"] for h in part.history] == [5, 10, 13]  # the interim record is returned and logged
    assert [r["step"] for r in records(cut / "metrics.jsonl")] == [5, 10, 13]
    assert_identical_run(full, train(X, small_config(checkpoint_dir=str(cut), resume=True, **OFF)), full_dir, cut)

    killed = tmp_path / "killed"
    train(X, small_config(checkpoint_dir=str(killed), max_steps=13, **OFF))
    (killed / "latest").write_text("step-000000012\n")  # steps 11 and 12 are in the open interval
    assert_identical_run(full, train(X, small_config(checkpoint_dir=str(killed), resume=True, **OFF)), full_dir, killed)

    twice = tmp_path / "twice"
    train(X, small_config(checkpoint_dir=str(twice), max_steps=7, **OFF))
    train(X, small_config(checkpoint_dir=str(twice), max_steps=23, resume=True, **OFF))
    assert_identical_run(full, train(X, small_config(checkpoint_dir=str(twice), resume=True, **OFF)), full_dir, twice)


def test_without_latest_the_newest_complete_checkpoint_resumes(off_grid, tmp_path):
    X, full, full_dir = off_grid
    cut = tmp_path / "cut"
    train(X, small_config(checkpoint_dir=str(cut), max_steps=18, **OFF))  # keeps step-16 and step-18
    (cut / "latest").unlink()
    with pytest.warns(UserWarning, match=r"resuming from .*step-000000018, the newest complete .*latest is missing"):
        res = train(X, small_config(checkpoint_dir=str(cut), resume=True, **OFF))
    assert_identical_run(full, res, full_dir, cut)


def test_a_half_written_newer_folder_is_skipped_for_the_complete_one(off_grid, tmp_path):
    """A step folder newer than the complete one but missing trainer.pt (and, second case, one
    whose weights are torn), with latest gone or naming it: resume from the complete one."""
    X, full, full_dir = off_grid
    for case in ("no_trainer_state", "torn_weights"):
        cut = tmp_path / case
        train(X, small_config(checkpoint_dir=str(cut), max_steps=12, **OFF))  # step-8, step-12
        newer = cut / "step-000000016"
        shutil.copytree(cut / "step-000000012", newer)
        if case == "no_trainer_state":
            (newer / "trainer.pt").unlink()
            (cut / "latest").unlink()
            match = r"step-000000016: incomplete checkpoint \(trainer.pt is missing\)"
        else:
            data = (newer / "sae.safetensors").read_bytes()
            (newer / "sae.safetensors").write_bytes(data[: len(data) // 2])
            (cut / "latest").write_text("step-000000016\n")
            match = r"step-000000016.sae.safetensors: not a loadable"
        with pytest.warns(UserWarning, match=r"resuming from .*step-000000012, the newest complete") as rec:
            res = train(X, small_config(checkpoint_dir=str(cut), resume=True, **OFF))
        assert any(re.search(match, str(w.message)) for w in rec), [str(w.message) for w in rec]
        assert_identical_run(full, res, full_dir, cut)
        assert (cut / "latest").read_text().strip() == "step-000000042"


def test_latest_naming_a_missing_folder_falls_back_with_a_warning(off_grid, tmp_path):
    X, full, full_dir = off_grid
    cut = tmp_path / "cut"
    train(X, small_config(checkpoint_dir=str(cut), max_steps=9, **OFF))  # step-8, step-9
    (cut / "latest").write_text("step-000000099\n")
    with pytest.warns(UserWarning, match=r"step-000000009, the newest complete.*step-000000099: incomplete"):
        res = train(X, small_config(checkpoint_dir=str(cut), resume=True, **OFF))
    assert_identical_run(full, res, full_dir, cut)


def test_step_folders_none_of_which_is_complete_are_an_error_and_kept(tmp_path):
    X = planted(n_rows=1000)
    cut = tmp_path / "cut"
    train(X, small_config(checkpoint_dir=str(cut), max_steps=2))
    (cut / "latest").unlink()
    (cut / "step-000000002" / "sae.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no complete checkpoint to resume from .*sae.safetensors is missing"):
        train(X, small_config(checkpoint_dir=str(cut), resume=True))
    assert (cut / "step-000000002" / "trainer.pt").exists()  # nothing was overwritten
    (cut / "latest").write_text("../../elsewhere\n")
    with pytest.raises(ValueError, match=r"latest names '../../elsewhere', not a step folder"):
        train(X, small_config(checkpoint_dir=str(cut), resume=True))


def test_stale_temporary_folders_are_removed_and_the_run_resumes(off_grid, tmp_path):
    """A writer killed mid-checkpoint leaves .tmp-step-...-<pid>: the next start removes those of
    dead processes (any pid) and keeps one of a live process (it may be writing it)."""
    X, full, full_dir = off_grid
    cut = tmp_path / "cut"
    train(X, small_config(checkpoint_dir=str(cut), max_steps=10, **OFF))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    assert not pid_alive(dead_pid)
    stale = [cut / f".tmp-step-000000012-{dead_pid}", cut / ".tmp-step-000000016-99999999"]
    for p in stale:  # as a killed writer leaves them: a partial model, no trainer state
        shutil.copytree(cut / "step-000000010", p)
        (p / "trainer.pt").unlink()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = cut / f".tmp-step-000000020-{live.pid}"
        busy.mkdir()
        res = train(X, small_config(checkpoint_dir=str(cut), resume=True, **OFF))
        assert busy.exists()
    finally:
        live.kill()
        live.wait()
    assert not any(p.exists() for p in stale)
    assert_identical_run(full, res, full_dir, cut)


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    """Two-step checkpoints of one configuration: without and with eval data."""
    X = planted(n_rows=1000)
    root = tmp_path_factory.mktemp("base")
    train(X, small_config(checkpoint_dir=str(root / "plain"), max_steps=2))
    train(X[:800], small_config(checkpoint_dir=str(root / "eval"), max_steps=2), eval_data=X[800:])
    return X, root


def copy_ckpt(base_ckpt, which, tmp_path):
    _, root = base_ckpt
    return str(shutil.copytree(root / which, tmp_path / which))


@pytest.mark.parametrize(
    "field, value, shown",
    [("batch_size", 100, "batch_size: 200 (checkpoint) vs 100 (this run)"),
     ("seed", 1, "seed: 0 (checkpoint) vs 1 (this run)"),
     ("lr", 2e-3, "lr: 0.001 (checkpoint) vs 0.002 (this run)"),
     ("betas", (0.8, 0.999), "betas: [0.9, 0.999] (checkpoint) vs [0.8, 0.999] (this run)"),
     ("eps", 1e-6, "eps: 1e-08 (checkpoint) vs 1e-06 (this run)"),
     ("grad_clip", 0.5, "grad_clip: 1.0 (checkpoint) vs 0.5 (this run)"),
     ("epochs", 3, "epochs: 2 (checkpoint) vs 3 (this run)"),
     ("aux_alpha", 0.0, "aux_alpha: 0.03125 (checkpoint) vs 0.0 (this run)"),
     ("k_aux", 5, "k_aux: 6 (checkpoint) vs 5 (this run)"),
     ("dead_window", 500, "dead_window: 950 (checkpoint) vs 500 (this run)"),
     ("standardize", False, "standardize: True (checkpoint) vs False (this run)"),
     ("median_sample", 500, "median_sample: 2000 (checkpoint) vs 500 (this run)"),
     ("eval_fraction", 0.1, "eval_fraction: 0.05 (checkpoint) vs 0.1 (this run)"),
     ("dtype", "float64", "dtype: 'float32' (checkpoint) vs 'float64' (this run)"),
     ("compute_dtype", "bfloat16", "compute_dtype: None (checkpoint) vs 'bfloat16' (this run)")],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_resume_refuses_another_configuration(base_ckpt, tmp_path, field, value, shown):
    X, _ = base_ckpt
    d = copy_ckpt(base_ckpt, "plain", tmp_path)
    before = sorted(os.listdir(d))
    with pytest.raises(ValueError, match="cannot resume, the checkpoint is from another run") as err:
        train(X, small_config(checkpoint_dir=d, resume=True, **{field: value}))
    assert shown in str(err.value) and "step-000000002" in str(err.value) and "resume_mismatch='allow'" in str(err.value)
    assert str(err.value).count("(checkpoint) vs") == 1  # only the field that differs
    assert sorted(os.listdir(d)) == before


@pytest.mark.parametrize(
    "which, data, eval_data, shown",
    [("plain", lambda X: X[:-1], None, "data n_rows: 1000 (checkpoint) vs 999 (this run)"),
     ("plain", lambda X: np.concatenate([X[:-1], X[:1]]), None, "data rows_sha256: "),
     ("plain", lambda X: np.concatenate([X[1:2], X[1:]]), None, "data rows_sha256: "),
     ("plain", lambda X: X.astype(np.float64), None, "data dtype: 'float32' (checkpoint) vs 'float64' (this run)"),
     ("plain", lambda X: X, lambda X: X[:100], "eval_data: none (checkpoint) vs given (this run)"),
     ("eval", lambda X: X[:800], None, "eval_data: given (checkpoint) vs none (this run)"),
     ("eval", lambda X: X[:800], lambda X: X[801:], "eval_data n_rows: 200 (checkpoint) vs 199 (this run)"),
     ("eval", lambda X: X[:800], lambda X: X[800:][::-1], "eval_data rows_sha256: ")],
    ids=["fewer_rows", "last_row", "first_row", "dtype", "eval_added", "eval_removed", "eval_shorter", "eval_order"],
)
def test_resume_refuses_other_data(base_ckpt, tmp_path, which, data, eval_data, shown):
    X, _ = base_ckpt
    d = copy_ckpt(base_ckpt, which, tmp_path)
    with pytest.raises(ValueError, match="cannot resume, the checkpoint is from another run") as err:
        train(data(X), small_config(checkpoint_dir=d, resume=True), eval_data=eval_data and eval_data(X))
    assert shown in str(err.value), str(err.value)


def test_fields_that_may_change_on_resume(base_ckpt, tmp_path):
    """RESUME_FREE_FIELDS and k_aux/dead_window spelled as their defaults resume silently."""
    X, _ = base_ckpt
    assert RESUME_FREE_FIELDS == {"max_steps", "log_every", "checkpoint_dir", "checkpoint_every", "resume",
                                  "resume_mismatch", "device", "progress", "prefetch", "data_on_device"}
    d = copy_ckpt(base_ckpt, "plain", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = train(X, small_config(checkpoint_dir=d, resume=True, max_steps=4, log_every=3, checkpoint_every=7,
                                    device="cpu", prefetch=True, data_on_device=True, k_aux=6, dead_window=950))
    assert res.steps == 4 and [h["step"] for h in res.history] == [3, 4]


def test_resume_mismatch_allow_continues_with_a_warning(tmp_path):
    """"allow": a change that does not affect the steps after the checkpoint (median_sample acts
    at initialisation) gives exactly the uninterrupted run; a new lr takes effect (the Adam
    moments come from the checkpoint, the hyperparameters from this run)."""
    X = planted(n_rows=2000)
    kw = dict(epochs=2, log_every=4, checkpoint_every=3, dead_window=400)
    full = train(X, small_config(checkpoint_dir=str(tmp_path / "full"), **kw))
    for name in ("a", "b"):
        train(X, small_config(checkpoint_dir=str(tmp_path / name), max_steps=5, **kw))
    with pytest.warns(UserWarning, match=r"another run \(resume_mismatch='allow'\): median_sample: 2000 "
                                         r"\(checkpoint\) vs 1000 \(this run\)"):
        res = train(X, small_config(checkpoint_dir=str(tmp_path / "a"), resume=True, resume_mismatch="allow",
                                    median_sample=1000, **kw))
    assert_identical_run(full, res, tmp_path / "full", tmp_path / "a")
    with pytest.warns(UserWarning, match=r"lr: 0.001 \(checkpoint\) vs 0.003 \(this run\)"):
        fast = train(X, small_config(checkpoint_dir=str(tmp_path / "b"), resume=True, resume_mismatch="allow",
                                     lr=3e-3, **kw))
    assert fast.steps == full.steps
    assert not torch.equal(fast.sae.W_enc, full.sae.W_enc)
    last = tmp_path / "b" / (tmp_path / "b" / "latest").read_text().strip() / "trainer.pt"
    state = torch.load(last, weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 3e-3  # the optimiser ran at the new lr
    assert json.loads(state["config"])["lr"] == 3e-3
    with warnings.catch_warnings():  # the checkpoints written after an allowed change record the new config
        warnings.simplefilter("error")
        again = train(X, small_config(checkpoint_dir=str(tmp_path / "b"), resume=True, lr=3e-3, **kw))
    assert again.steps == fast.steps
    with pytest.raises(ValueError, match="resume_mismatch must be"):
        small_config(resume_mismatch="ignore")


def test_a_checkpoint_of_the_previous_version_still_resumes(off_grid, tmp_path):
    """Checkpoints written before fingerprints and interval sums (no "data", no "interval"):
    resumed with a warning, to the same parameters; the configuration is still checked."""
    X, full, full_dir = off_grid
    cut = tmp_path / "old"
    train(X, small_config(checkpoint_dir=str(cut), max_steps=12, **OFF))
    tp = cut / "step-000000012" / "trainer.pt"
    state = torch.load(tp, weights_only=True)
    del state["data"], state["interval"]
    torch.save(state, tp)
    with pytest.raises(ValueError, match=r"lr: 0.001 \(checkpoint\) vs 0.002"):
        train(X, small_config(checkpoint_dir=str(cut), resume=True, **{**OFF, "lr": 2e-3}))
    with pytest.warns(UserWarning, match="written before fastsae recorded the data in checkpoints"):
        res = train(X, small_config(checkpoint_dir=str(cut), resume=True, **OFF))
    for name, a in full.sae.state_dict().items():
        assert torch.equal(a, res.sae.state_dict()[name]), name
    got, want = records(cut / "metrics.jsonl"), records(full_dir / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    # Only the first record after the resume (step 15) differs: it averages steps 13-15, not 11-15.
    assert [g == w for g, w in zip(got, want)] == [r["step"] != 15 for r in want]


def test_a_restart_replaces_the_earlier_runs_checkpoints(off_grid, tmp_path):
    """resume=False owns the directory: its first checkpoint removes the earlier run's later step
    folders, so that a resume after a kill finds this run's checkpoints, not the earlier run's."""
    X, full, full_dir = off_grid
    d = tmp_path / "d"
    train(X, small_config(checkpoint_dir=str(d), **{**OFF, "seed": 1}))  # an earlier run, to step 42
    train(X, small_config(checkpoint_dir=str(d), max_steps=9, **OFF))
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("step-")) == ["step-000000008", "step-000000009"]
    (d / "latest").unlink()  # killed before latest landed
    with pytest.warns(UserWarning, match="step-000000009, the newest complete"):
        assert_identical_run(full, train(X, small_config(checkpoint_dir=str(d), resume=True, **OFF)), full_dir, d)
