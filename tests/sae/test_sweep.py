"""Sweeps, Table 2 outputs, power-law fits (against scipy.stats), figures, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch

import fastsae
from fastsae import fit_power_law, sweep

from test_train import planted


def test_power_law_fit_recovers_exact_law_and_matches_linregress():
    n = np.array([1000, 2000, 4000, 8000, 16000], dtype=float)
    fit = fit_power_law(n, 0.61 * n**-0.12)
    assert fit.coef == pytest.approx(0.61, rel=1e-10) and fit.exponent == pytest.approx(-0.12, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    y = 0.5 * n**-0.15 * np.exp(rng.normal(0, 0.02, n.size))
    fit = fit_power_law(n, y)
    ref = scipy.stats.linregress(np.log(n), np.log(y))
    assert fit.exponent == pytest.approx(ref.slope, rel=1e-10)
    assert fit.coef == pytest.approx(np.exp(ref.intercept), rel=1e-10)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-10)
    lo, hi = fit.exponent_ci
    assert lo <= fit.exponent <= hi and hi - lo < 0.2
    np.testing.assert_allclose(fit(n), fit.coef * n**fit.exponent)


@pytest.mark.parametrize(
    "x, y, match",
    [([1.0], [1.0], "two distinct"), ([2.0, 2.0], [1.0, 3.0], "two distinct"), ([1.0, 2.0], [0.0, 1.0], "positive"),
     ([1.0, np.nan], [1.0, 2.0], "positive"), ([1.0, 2.0], [1.0], "equal length")],
    ids=["one_point", "same_x", "zero_y", "nan_x", "length"],
)
def test_power_law_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y)


def test_sweep_writes_table_fits_and_figures_and_resumes(tmp_path, monkeypatch):
    X = planted(n_rows=2000, d=16, n_true=64, k_true=3)
    kw = dict(epochs=3, batch_size=200, lr=2e-3, log_every=10, progress=False, median_sample=1000)
    res = sweep(X, [2, 4], [16, 32, 64], str(tmp_path), **kw)
    assert len(res.runs) == 6
    assert set(res.fits_n) == {2, 4} and set(res.fits_flops) == {2, 4}
    for k in (2, 4):  # more latents reconstruct better: the fitted exponent is negative
        assert res.fits_n[k].exponent < 0
    lines = (tmp_path / "table2.csv").read_text().splitlines()
    assert lines[0].startswith("k,n,nmse,log10_feature_density,activation_mean") and len(lines) == 7
    assert "| k | n | nMSE |" in (tmp_path / "table2.md").read_text()
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert set(fits["L(n)"]) == {"2", "4"} and "formula" in fits["L(n)"]["2"]
    for png in ("scaling_n.png", "scaling_flops.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = res.runs[0]
    assert fastsae.TopKSAE.load(run.model_dir).n_latents == run.n_latents
    # A second call reuses the finished runs: no training at all.
    import importlib

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(importlib.import_module("fastsae.sweeps"), "train", no_training)
    again = sweep(X, [2, 4], [16, 32, 64], str(tmp_path), **kw)
    assert [r.nmse for r in again.runs] == [r.nmse for r in res.runs]


def test_sweep_rejects_bad_grids(tmp_path):
    X = planted(n_rows=500, d=8)
    with pytest.raises(ValueError, match="k < n"):
        sweep(X, [64], [16, 32], str(tmp_path))
    with pytest.raises(ValueError, match="non-empty"):
        sweep(X, [], [16], str(tmp_path))
    with pytest.raises(ValueError, match="batch_size"):
        sweep(X, [2], [16], str(tmp_path), batch_size=0)


def test_cli_train_and_sweep(tmp_path):
    X = planted(n_rows=1200, d=12, n_true=32)
    np.save(tmp_path / "x.npy", X)
    exe = [sys.executable, "-m", "fastsae.cli"]
    common = ["--epochs", "2", "--batch-size", "100", "--lr", "2e-3", "--quiet", "--log-every", "5"]
    out = subprocess.run(exe + ["train", str(tmp_path / "x.npy"), "--n-latents", "40", "--k", "3",
                                "--out", str(tmp_path / "run")] + common, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "trained k=3 n=40" in out.stdout
    sae = fastsae.TopKSAE.load(tmp_path / "run" / "model")
    assert (sae.n_latents, sae.k, sae.d_in) == (40, 3, 12)
    assert (tmp_path / "run" / "checkpoints" / "metrics.jsonl").exists()
    out = subprocess.run(exe + ["train", str(tmp_path / "x.npy"), "--n-latents", "40", "--k", "3", "--compute-dtype",
                                "bfloat16", "--out", str(tmp_path / "bf16")] + common, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    ckpt = tmp_path / "bf16" / "checkpoints"
    state = torch.load(ckpt / (ckpt / "latest").read_text().strip() / "trainer.pt", weights_only=True)
    assert json.loads(state["config"])["compute_dtype"] == "bfloat16"
    assert fastsae.TopKSAE.load(tmp_path / "bf16" / "model").W_enc.dtype == torch.float32
    out = subprocess.run(exe + ["sweep", str(tmp_path / "x.npy"), "--k", "2", "--n", "16", "32",
                                "--out", str(tmp_path / "sw")] + common, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| k | n | nMSE |" in out.stdout and "L(n) =" in out.stdout
    bad = subprocess.run(exe + ["train", str(tmp_path / "x.npy"), "--n-latents", "4", "--k", "4", "--out",
                                str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "smaller than n_latents" in bad.stderr


def test_sweep_refuses_to_continue_an_unfinished_run_with_other_settings(tmp_path):
    X = planted(n_rows=1000, d=12, n_true=32)
    kw = dict(epochs=2, batch_size=100, lr=2e-3, log_every=5, progress=False, median_sample=500)
    sweep(X, [2], [16], str(tmp_path / "sw"), figures=False, max_steps=3, **kw)
    (tmp_path / "sw" / "k2_n16" / "result.json").unlink()  # unfinished: only its checkpoints are left
    with pytest.raises(ValueError, match=r"lr: 0.002 \(checkpoint\) vs 0.001 \(this run\)"):
        sweep(X, [2], [16], str(tmp_path / "sw"), figures=False, **{**kw, "lr": 1e-3})
    res = sweep(X, [2], [16], str(tmp_path / "sw"), figures=False, **kw)  # the same settings continue it
    ref = sweep(X, [2], [16], str(tmp_path / "ref"), figures=False, **kw)
    assert (res.runs[0].steps, res.runs[0].nmse) == (ref.runs[0].steps, ref.runs[0].nmse) and ref.runs[0].steps > 3


def test_cli_train_refuses_other_settings_unless_allowed(tmp_path, capsys):
    from fastsae.cli import main

    X = planted(n_rows=600, d=8, n_true=16)
    np.save(tmp_path / "x.npy", X)
    base = ["train", str(tmp_path / "x.npy"), "--n-latents", "16", "--k", "2", "--out", str(tmp_path / "run"),
            "--epochs", "1", "--batch-size", "100", "--quiet", "--log-every", "2"]
    assert main(base + ["--max-steps", "2"]) == 0
    capsys.readouterr()
    assert main(base + ["--lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr: 0.0001 (checkpoint) vs 0.001 (this run)" in err and "--allow-resume-mismatch" in err
    with pytest.warns(UserWarning, match=r"lr: 0.0001 \(checkpoint\) vs 0.001"):
        assert main(base + ["--lr", "1e-3", "--allow-resume-mismatch"]) == 0
    assert "trained k=2 n=16: 5 steps" in capsys.readouterr().out
    assert main(["train", "--run", str(tmp_path / "nowhere"), "--allow-resume-mismatch"]) == 2
    assert "--allow-resume-mismatch applies to DATA.npy" in capsys.readouterr().err
