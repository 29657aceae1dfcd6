"""TopKSAE: the paper's architecture, initialisation, standardisation and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

import fastsae
from fastsae import TopKSAE


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
    torch.testing.assert_close(sae(x).target, z)
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
    [((8, 4, 5), "must not exceed"), ((8, 4, 0), "positive"), ((0, 4, 1), "positive"), ((8, 4.0, 1), "positive")],
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
