"""TopKSAE.forward's training options (the one forward the trainer's step calls): the AuxK
loss, mixed precision and the fused projection, against dense float64 computations by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsae import TopKSAE


def _model(d=10, n=30, k=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    sae = TopKSAE(d, n, k, dtype=dtype)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(n, d, generator=g, dtype=torch.float64))
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1))
        sae.b_enc.copy_(0.1 * torch.randn(n, generator=g, dtype=torch.float64))
        sae.b_pre.copy_(0.3 * torch.randn(d, generator=g, dtype=torch.float64))
        sae.set_standardization(torch.randn(d, generator=g, dtype=torch.float64),
                                0.5 + torch.rand(d, generator=g, dtype=torch.float64))
    x = torch.randn(9, d, generator=g, dtype=torch.float64)
    return sae, x


def _dense_aux_reference(sae, x, dead, k_aux):
    """AuxK in numpy float64: top-k_aux of the dead latents' ReLU pre-activations reconstruct
    the main residual; squared error over the residual's variance around its batch mean."""
    z = ((x - sae.data_mean) / sae.data_std).detach().numpy()
    W_enc, b_enc, W_dec, b_pre = (t.detach().numpy() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_pre))
    pre = np.maximum((z - b_pre) @ W_enc.T + b_enc, 0)
    h = np.zeros_like(pre)
    for r in range(len(pre)):
        top = np.argsort(-pre[r], kind="stable")[: sae.k]
        h[r, top] = pre[r, top]
    resid = z - (h @ W_dec + b_pre)
    dead = dead.numpy()
    hd = np.zeros_like(pre)
    for r in range(len(pre)):
        ids = np.flatnonzero(dead)
        top = ids[np.argsort(-pre[r, ids], kind="stable")[:k_aux]]
        hd[r, top] = pre[r, top]
    var = ((resid - resid.mean(0)) ** 2).sum(1).mean()
    return ((hd @ W_dec - resid) ** 2).sum(1).mean() / var


def test_aux_loss_matches_a_dense_float64_reference_and_trains_only_dead_latents():
    sae, x = _model()
    dead = torch.zeros(30, dtype=torch.bool)
    dead[[1, 4, 7, 11, 12, 20, 29]] = True
    out = sae(x, dead_mask=dead, k_aux=4, mse_scale=2.0)
    assert out.aux_loss.item() == pytest.approx(_dense_aux_reference(sae, x, dead, 4), rel=1e-10)
    # the main losses are those of the plain forward
    plain = sae(x, mse_scale=2.0)
    assert torch.equal(out.mse, plain.mse) and torch.equal(out.nmse, plain.nmse)
    assert torch.equal(out.recon, plain.recon) and torch.equal(out.code.indices, plain.code.indices)
    # the residual is detached: AuxK's gradient reaches only the dead latents' rows (and b_pre,
    # through the encoder's input)
    out.aux_loss.backward()
    for g in (sae.W_enc.grad, sae.W_dec.grad, sae.b_enc.grad):
        assert not g[~dead].any() and g[dead].any()
    # k_aux defaults to 2k, and is capped by the number of dead latents
    assert sae(x, dead_mask=dead).aux_loss.item() == pytest.approx(_dense_aux_reference(sae, x, dead, 6), rel=1e-10)
    few = torch.zeros(30, dtype=torch.bool)
    few[[3, 8]] = True
    assert sae(x, dead_mask=few, k_aux=5).aux_loss.item() == pytest.approx(
        _dense_aux_reference(sae, x, few, 2), rel=1e-10)


def test_aux_loss_without_dead_mask_is_none_and_without_dead_latents_zero():
    sae, x = _model()
    assert sae(x).aux_loss is None
    zero = sae(x, dead_mask=torch.zeros(30, dtype=torch.bool)).aux_loss
    assert zero is not None and zero.shape == () and zero.item() == 0.0


def test_aux_loss_reduces_its_batch_statistics_through_reduce():
    """``reduce`` sums the residual statistics over ranks: two ranks holding the same batch
    (a reduce that doubles) give the same mean and variance, hence the same loss; a reduce
    that sums in a different batch gives the loss normalised by the combined batch."""
    sae, x = _model()
    dead = torch.zeros(30, dtype=torch.bool)
    dead[::3] = True
    calls = []

    def twice(t):
        calls.append(t.shape)
        return t.mul_(2)

    alone = sae(x, dead_mask=dead, k_aux=4)
    both = sae(x, dead_mask=dead, k_aux=4, reduce=twice)
    assert calls == [(10 + 2,)]
    assert both.aux_loss.item() == pytest.approx(alone.aux_loss.item(), rel=1e-12)
    # the other rank's statistics: a second batch's residual sums
    other = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    o = sae(other)
    r2 = (o.target_standardized - o.recon_standardized).detach()
    extra = torch.cat([r2.sum(0), r2.pow(2).sum().reshape(1), torch.tensor([5.0], dtype=torch.float64)])
    mine = sae(x, dead_mask=dead, k_aux=4, reduce=lambda t: t.add_(extra))
    r1 = (alone.target_standardized - alone.recon_standardized).detach()
    r = torch.cat([r1, r2])
    var = (r - r.mean(0)).pow(2).sum(1).mean()
    assert mine.aux_loss.item() == pytest.approx(alone.aux_loss.item() * float((r1 - r1.mean(0)).pow(2).sum(1).mean())
                                                 / float(var), rel=1e-10)


def test_compute_dtype_uses_bf16_weight_copies_and_adds_b_pre_in_full_precision():
    sae, x = _model(dtype=torch.float32)
    x = x.float()
    out = sae(x, compute_dtype=torch.bfloat16, mse_scale=1.5)
    z = sae.standardize(x)
    zc = (z - sae.b_pre).bfloat16().double()
    W_enc, b_enc, W_dec = (p.detach().bfloat16().double() for p in (sae.W_enc, sae.b_enc, sae.W_dec))
    pre = torch.relu(zc @ W_enc.T + b_enc)
    # the selection is the one of the bf16 encode (compare the decode on that selection)
    h = torch.zeros_like(pre).scatter(1, out.code.indices, out.code.values.double())
    expect = (h @ W_dec).float() + sae.b_pre.detach()
    assert out.recon_standardized.dtype == torch.float32 and out.mse.dtype == torch.float32
    torch.testing.assert_close(out.recon_standardized, expect, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out.code.values.double(), pre.gather(1, out.code.indices), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out.nmse, (out.recon_standardized - z).pow(2).sum(1).mean() / 1.5)
    out.nmse.backward()  # the gradients come back in the parameters' dtype
    assert sae.W_enc.grad.dtype == torch.float32 and sae.W_dec.grad.dtype == torch.float32


def test_project_grad_removes_the_decoder_gradient_along_each_row():
    sae, x = _model()
    dead = torch.zeros(30, dtype=torch.bool)
    dead[::2] = True
    out = sae(x, dead_mask=dead, k_aux=4, project_grad=True)
    (out.mse + out.aux_loss).backward()
    projected = sae.W_dec.grad.clone()
    sae.zero_grad()
    out = sae(x, dead_mask=dead, k_aux=4)
    (out.mse + out.aux_loss).backward()
    g, w = sae.W_dec.grad, sae.W_dec.detach()
    torch.testing.assert_close(projected, g - (g * w).sum(1, keepdim=True) * w)
    assert projected.abs().max() > 0
    with pytest.raises(ValueError, match="project_grad"):
        sae(x.float(), compute_dtype=torch.bfloat16, project_grad=True)
