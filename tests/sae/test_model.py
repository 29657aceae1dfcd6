"""TopKSAE: the paper's architecture, initialisation, standardisation and checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import fastsae
from fastsae import SparseCode, TopKSAE


def test_forward_matches_the_paper_formula():
    torch.manual_seed(0)
    sae = TopKSAE(12, 40, 5, dtype=torch.float64)
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.b_enc.normal_()
    x = torch.randn(7, 12, dtype=torch.float64)
    out = sae(x)
    pre = torch.relu((x - sae.b_pre) @ sae.W_enc.T + sae.b_enc)
    top, idx = pre.topk(5, dim=1)
    h = torch.zeros_like(pre).scatter(1, idx, top)
    recon = h @ sae.W_dec + sae.b_pre  # b_dec tied to b_pre
    torch.testing.assert_close(out.recon, recon)
    torch.testing.assert_close(out.mse, (recon - x).pow(2).sum(1).mean())
    torch.testing.assert_close(sae.decode(sae.encode(x)), recon)
    assert sae.b_dec is sae.b_pre
    assert torch.equal(out.code.indices.sort(1).values, idx.sort(1).values)
    torch.testing.assert_close(sae(x, mse_scale=2.0).nmse, out.mse / 2.0)


def test_initialisation_unit_decoder_and_parallel_encoder():
    sae = TopKSAE(32, 100, 8)
    norms = sae.W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(100))
    cos = torch.nn.functional.cosine_similarity(sae.W_enc, sae.W_dec, dim=1)
    torch.testing.assert_close(cos, torch.ones(100))
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(100))


def test_standardisation_is_applied_and_stored(tmp_path):
    sae = TopKSAE(6, 20, 3)
    mean, std = torch.randn(6), torch.rand(6) + 0.5
    sae.set_standardization(mean, std)
    x = torch.randn(4, 6) * 3 + 1
    z = (x - mean) / std
    a, b = sae.encode(x), sae.encode(z, standardized=True)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(sae(x).target_standardized, z)
    torch.testing.assert_close(sae(x).target, x)  # the input as given (issue 13: was z)
    torch.testing.assert_close(sae.destandardize(sae.standardize(x)), x)
    sae.save(tmp_path / "m")
    loaded = TopKSAE.load(tmp_path / "m")
    assert bool(loaded.standardized)
    torch.testing.assert_close(loaded.encode(x).values, a.values)
    loaded.load_state_dict(TopKSAE(6, 20, 3).state_dict())  # the flag follows the loaded state
    assert torch.equal(loaded.standardize(x), x)
    with pytest.raises(ValueError, match="> 0"):
        sae.set_standardization(mean, torch.zeros(6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_save_load_roundtrip_exact(tmp_path, dtype):
    sae = TopKSAE(10, 30, 4, dtype=dtype)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p))
    sae.save(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["d_in"] == 10 and cfg["n_latents"] == 30 and cfg["k"] == 4
    loaded = TopKSAE.load(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(sae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.W_enc.dtype == dtype


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    sae = TopKSAE(10, 30, 4)
    sae.save(tmp_path / "ok")
    with pytest.raises(ValueError, match="not a loadable"):
        TopKSAE.load(tmp_path / "missing")
    data = (tmp_path / "ok" / "sae.safetensors").read_bytes()
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    (tmp_path / "trunc" / "sae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a loadable"):
        TopKSAE.load(tmp_path / "trunc")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    cfg["n_latents"] = 31  # a checkpoint of another shape
    (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not a loadable"):
        TopKSAE.load(tmp_path / "ok")


@pytest.mark.parametrize(
    "args, match",
    [((8, 4, 5), "must not exceed"), ((8, 4, 0), "k must be >= 1"), ((0, 4, 1), "d_in must be >= 1"),
     ((8, 4.0, 1), "n_latents must be an int")],
    ids=["k_gt_n", "k_zero", "d_zero", "n_float"],
)
def test_bad_constructor_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        TopKSAE(*args)


def test_wrong_input_width():
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        TopKSAE(6, 10, 2)(torch.randn(3, 5))


def test_top_level_exports():
    assert fastsae.SparseCode is fastsae.ops.SparseCode
    code = TopKSAE(4, 9, 2).encode(torch.randn(3, 4))
    assert isinstance(code, fastsae.SparseCode) and code.indices.dtype == torch.int64


# -- issue 13: the model speaks the user's space ----------------------------------------------
D_A, N_A, K_A = 12, 40, 5


def _anisotropic(n_rows: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 rows with per-dimension std from 0.1 to 10 and a mean far from 0, and the
    (mean, std) they were drawn with."""
    g = torch.Generator().manual_seed(seed)
    std = torch.logspace(-1, 1, D_A, dtype=torch.float64)[torch.randperm(D_A, generator=g)]
    mean = 50.0 + 20.0 * torch.randn(D_A, generator=g, dtype=torch.float64)
    return mean + std * torch.randn(n_rows, D_A, generator=g, dtype=torch.float64), mean, std


def _random_sae(dtype: torch.dtype, standardised: bool, mean=None, std=None, seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(D_A, N_A, K_A, dtype=dtype)
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.b_enc.normal_(0, 0.3)
        sae.W_enc.normal_(0, D_A**-0.5)
    if standardised:
        sae.set_standardization(mean, std)
    return sae


def _reference(sae: TopKSAE, x: torch.Tensor, standardised: bool):
    """Independent float64 forward: standardise, ReLU, torch.topk, dense decode, destandardise."""
    W_enc, b_enc, W_dec, b_pre = (t.detach().double() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_pre))
    mean, std = sae.data_mean.double(), sae.data_std.double()
    x = x.double()
    z = (x - mean) / std if standardised else x
    pre = torch.relu((z - b_pre) @ W_enc.T + b_enc)
    top = torch.topk(pre, sae.k, dim=1)
    h = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    z_hat = h @ W_dec + b_pre
    x_hat = z_hat * std + mean if standardised else z_hat
    return z, z_hat, x_hat, h


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("standardised", [True, False], ids=["standardised", "raw"])
def test_decode_of_encode_is_in_the_input_space(dtype, standardised):
    x, mean, std = _anisotropic()
    sae = _random_sae(dtype, standardised, mean, std)
    z, z_hat, x_hat, h = _reference(sae, x, standardised)
    code = sae.encode(x.to(dtype))
    dense = torch.zeros(x.shape[0], N_A, dtype=torch.float64).scatter(1, code.indices, code.values.double())
    tol = dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(dense, h, **tol)
    torch.testing.assert_close(sae.decode(code).double(), x_hat, **tol)
    torch.testing.assert_close(sae.decode(code, standardized=True).double(), z_hat, **tol)
    if standardised:  # the two spaces really differ here: a test of the space, not a tautology
        assert (x_hat - z_hat).abs().max() > 10


def test_decode_of_encode_reproduces_inputs_exactly_for_an_identity_sae():
    """Latents +e_i and -e_i (k = d): z - b_pre is reconstructed exactly, so decode(encode(x))
    must return x itself, in the input space, for raw non-centred anisotropic x."""
    x, mean, std = _anisotropic(n_rows=6, seed=3)
    sae = TopKSAE(D_A, 2 * D_A, D_A, dtype=torch.float64)
    eye = torch.eye(D_A, dtype=torch.float64)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_pre.normal_()
    sae.set_standardization(mean, std)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x, atol=1e-10, rtol=1e-12)
    torch.testing.assert_close(sae(x).recon, x, atol=1e-10, rtol=1e-12)
    torch.testing.assert_close(sae.decode(sae.encode(x), standardized=True), (x - mean) / std, atol=1e-10, rtol=1e-12)


@pytest.mark.parametrize("standardised", [True, False], ids=["standardised", "raw"])
@torch.no_grad()
def test_sae_output_fields_against_float64(standardised):
    x, mean, std = _anisotropic(n_rows=11, seed=1)
    sae = _random_sae(torch.float64, standardised, mean, std, seed=1)
    z, z_hat, x_hat, h = _reference(sae, x, standardised)
    out = sae(x)
    tol = dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.recon, x_hat, **tol)
    torch.testing.assert_close(out.target, x, atol=0, rtol=0)
    torch.testing.assert_close(out.recon_standardized, z_hat, **tol)
    torch.testing.assert_close(out.target_standardized, z, **tol)
    dense = torch.zeros_like(h).scatter(1, out.code.indices, out.code.values)
    torch.testing.assert_close(dense, h, **tol)
    mse = sum(float(((z_hat[b] - z[b]) ** 2).sum()) for b in range(len(x))) / len(x)
    var = sum(float(((z[b] - z.mean(0)) ** 2).sum()) for b in range(len(x))) / len(x)
    assert float(out.mse) == pytest.approx(mse, rel=1e-12)
    assert float(out.nmse) == pytest.approx(mse / var, rel=1e-12)
    assert float(sae(x, mse_scale=2.5).nmse) == pytest.approx(mse / 2.5, rel=1e-12)
    assert float(sae(x, mse_scale=torch.tensor(2.5, dtype=torch.float64)).nmse) == pytest.approx(mse / 2.5, rel=1e-12)
    assert float(sae(x, mse_scale=np.float32(2.5)).nmse) == pytest.approx(mse / 2.5, rel=1e-12)
    # already standardised input: recon and target stay in that space, the metrics are the same
    out_z = sae(z, standardized=True)
    torch.testing.assert_close(out_z.recon, z_hat, **tol)
    torch.testing.assert_close(out_z.target, z, atol=0, rtol=0)
    torch.testing.assert_close(out_z.recon_standardized, z_hat, **tol)
    assert float(out_z.mse) == pytest.approx(mse, rel=1e-10) and float(out_z.nmse) == pytest.approx(mse / var, rel=1e-10)


def test_nmse_of_a_batch_without_variance_is_nan_with_finite_gradients():
    x, mean, std = _anisotropic(n_rows=4, seed=2)
    sae = _random_sae(torch.float64, True, mean, std)
    for batch in (x[:1], x[:1].repeat(3, 1)):  # B = 1, and identical rows
        out = sae(batch)
        assert math.isnan(out.nmse.item()) and math.isfinite(out.mse.item()) and out.mse.item() > 0
        out.nmse.backward()
        assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in sae.parameters())
        sae.zero_grad()
        assert sae(batch, mse_scale=3.0).nmse.item() == pytest.approx(out.mse.item() / 3.0, rel=1e-12)


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError),
                                      (math.inf, ValueError), ("2", TypeError), (True, TypeError)],
                         ids=["zero", "negative", "nan", "inf", "str", "bool"])
def test_bad_mse_scale(bad, exc):
    with pytest.raises(exc, match="mse_scale"):
        TopKSAE(6, 10, 2)(torch.randn(3, 6), mse_scale=bad)


@pytest.mark.parametrize("standardised", [True, False], ids=["standardised", "raw"])
def test_feature_directions_against_numpy(standardised):
    _, mean, std = _anisotropic()
    sae = _random_sae(torch.float32, standardised, mean, std)
    W = sae.W_dec.detach().double().numpy() * (std.numpy() if standardised else 1.0)
    ref = W / np.linalg.norm(W, axis=1, keepdims=True)
    fd = sae.feature_directions()
    assert fd.shape == (N_A, D_A) and fd.dtype == torch.float32 and not fd.requires_grad
    np.testing.assert_allclose(fd.double().numpy(), ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(fd.double().numpy(), axis=1), 1.0, atol=1e-6)
    # the definition: the input-space change of decode() when one latent's activation moves
    j = 7
    idx = torch.tensor([[j]])
    with torch.no_grad():
        step = sae.decode(SparseCode(idx, torch.tensor([[2.0]]))) - sae.decode(SparseCode(idx, torch.tensor([[0.0]])))
    np.testing.assert_allclose((step / step.norm()).double().numpy()[0], ref[j], atol=1e-5)
    if standardised:  # not just the normalised W_dec
        W0 = sae.W_dec.detach().double().numpy()
        assert np.abs(ref - W0 / np.linalg.norm(W0, axis=1, keepdims=True)).max() > 0.1


def test_evaluate_reports_the_standardised_nmse_as_before():
    """trainer._evaluate's nmse_eval: sum of squared errors in the standardised space / rows /
    mse_scale, against a float64 computation by hand (several batches and a partial one)."""
    from fastsae.data import ArraySource
    from fastsae.trainer import _evaluate

    x, mean, std = _anisotropic(n_rows=40, seed=4)
    sae = _random_sae(torch.float32, True, mean, std, seed=4)
    rows = np.array([3, 1, 4, 15, 9, 2, 6, 5, 35, 8, 27, 30, 11, 0, 39, 20, 21, 22, 7])
    X = x.numpy().astype(np.float32)
    got = _evaluate(sae, ArraySource(X), rows, 7.5, 5, "cpu")
    z, z_hat, _, h = _reference(sae, torch.from_numpy(X[rows]), True)
    se = float(((z_hat - z) ** 2).sum())
    assert got["nmse_eval"] == pytest.approx(se / rows.size / 7.5, rel=1e-5)
    assert got["mean_activation_eval"] == pytest.approx(float(h[h > 0].mean()), rel=1e-5)


def test_trained_sae_reconstructs_raw_anisotropic_inputs():
    """After fastsae.train on planted, non-centred, anisotropic data, decode(encode(x)) is
    close to x in the input space, as close as the trainer's held-out nMSE says (issue 13
    found 28.7 there vs 0.09 reported; this data set gave 151 vs 0.07 before the fix)."""
    rng = np.random.default_rng(0)
    d, n_true, n_rows = 16, 32, 5000
    F = rng.normal(size=(n_true, d))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    H = np.zeros((n_rows, n_true))
    H[np.repeat(np.arange(n_rows), 3), np.argsort(rng.random((n_rows, n_true)), axis=1)[:, :3].ravel()] = \
        rng.exponential(1.0, 3 * n_rows)
    std = np.logspace(-1, 1, d)[rng.permutation(d)]
    X = ((H @ F + 0.01 * rng.normal(size=(n_rows, d))) * std + 30.0 + 10 * rng.normal(size=d)).astype(np.float32)
    train_x, held_out = X[:4000], X[4000:]
    res = fastsae.train(train_x, fastsae.TrainConfig(n_latents=64, k=3, epochs=20, batch_size=200, lr=3e-3,
                                                     log_every=10_000, progress=False, median_sample=1000),
                        eval_data=held_out)
    sae = res.sae
    reported = res.history[-1]["nmse_eval"]
    x = torch.from_numpy(held_out).double()
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x.float())).double()
        out = sae(x.float())
    nmse_input = float(((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert reported < 0.15, reported
    assert nmse_input < 0.15 and nmse_input == pytest.approx(reported, rel=0.5), (nmse_input, reported)
    torch.testing.assert_close(out.recon.double(), x_hat, atol=1e-4, rtol=1e-5)
    # SAEOutput.nmse (standardised space, normalised by the batch's own variance) is the
    # trainer's kind of number, not a raw MSE
    assert float(out.nmse) == pytest.approx(reported, rel=0.2)


def test_steering_edit_is_applied_in_the_input_space():
    """feature_search: x' = x + decode(z') - decode(z) with x the raw query embedding; for a
    standardised model the added feature moves x' by w * typical * W_dec[f] * std (float64 by
    hand), and with no edit x' is x itself."""
    from types import SimpleNamespace

    from fastsae.feature_search import Searcher

    x, mean, std = _anisotropic(n_rows=1, seed=6)
    sae = _random_sae(torch.float64, True, mean, std, seed=6)
    docs = torch.randn(5, D_A, dtype=torch.float64).numpy()
    s = Searcher.__new__(Searcher)
    s.sae, s.labels, s.texts = sae, {}, [f"doc {i}" for i in range(5)]
    s.unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    s.embedder = SimpleNamespace(embed=lambda texts, progress=False: x.numpy())
    s._typical = np.linspace(0.5, 2.0, N_A)
    code = sae.encode(x)
    f = next(j for j in range(N_A) if j not in set(code.indices[0].tolist()))
    plain = s("q")
    np.testing.assert_allclose(plain.embedding, (x[0] / x[0].norm()).numpy(), rtol=1e-6)
    got = s("q", steer={f: 1.5})
    y = x[0].numpy() + 1.5 * s._typical[f] * sae.W_dec[f].detach().numpy() * std.numpy()
    np.testing.assert_allclose(got.embedding, y / np.linalg.norm(y), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got.ranking, np.argsort(-(s.unit @ (y / np.linalg.norm(y))), kind="stable"))
