"""fastsae.ops (the torch/CPU path) against a dense float64 top-k SAE: outputs and every gradient."""

from __future__ import annotations

import pytest
import numpy as np
import torch

from fastsae import ops
from fastsae.ops.reference import dense_topk_sae_reference

SHAPES = {
    "B5_d48_n200_k7": (5, 48, 200, 7),
    "B3_d17_n33_k1": (3, 17, 33, 1),
    "B9_d31_n64_k64": (9, 31, 64, 64),
    "B1_d8_n10_k3": (1, 8, 10, 3),
    "B16_d40_n97_k13": (16, 40, 97, 13),
}
DTYPES = {"fp64": (torch.float64, 1e-10), "fp32": (torch.float32, 2e-4)}


def separated_inputs(B, d, n, k, seed):
    """Random weights whose k-th and (k+1)-th pre-activations are well apart (no near-ties)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(100):
        x = torch.randn(B, d, generator=g, dtype=torch.float64)
        We = torch.randn(n, d, generator=g, dtype=torch.float64) / d**0.5
        be = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
        pre = (x @ We.T + be).sort(dim=1, descending=True).values
        if k == n or (pre[:, k - 1] - pre[:, k]).min() > 1e-3:
            Wd = torch.randn(n, d, generator=g, dtype=torch.float64)
            bd = torch.randn(d, generator=g, dtype=torch.float64)
            return x, We, be, Wd, bd
    raise AssertionError("could not draw tie-free inputs")


def grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype, tol", DTYPES.values(), ids=DTYPES.keys())
def test_encode_decode_outputs_and_all_gradients(shape, dtype, tol):
    B, d, n, k = shape
    x, We, be, Wd, bd = separated_inputs(B, d, n, k, seed=B * 1000 + n)
    ours = [t.to(dtype).requires_grad_() for t in (x, We, be, Wd, bd)]
    ref = [t.to(dtype).to(torch.float64).requires_grad_() for t in (x, We, be, Wd, bd)]

    code = ops.topk_encode(ours[0], ours[1], ours[2], k)
    y = ops.sparse_decode(code.indices, code.values, ours[3], ours[4])
    y_ref, idx_ref, top_ref = dense_topk_sae_reference(*ref, k)

    assert code.indices.dtype == torch.int64 and code.indices.shape == (B, k)
    assert torch.equal(code.indices.sort(dim=1).values, idx_ref.sort(dim=1).values)
    torch.testing.assert_close(code.values.double(), top_ref.clamp_min(0), rtol=tol, atol=tol)
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol * 10)
    g = torch.randn(B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], grads(y, ours, g.to(dtype)), grads(y_ref, ref, g)):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * 10, msg=lambda m: f"grad {name}: {m}")


def test_gradient_of_values_directly():
    B, d, n, k = 4, 12, 30, 5
    x, We, be, Wd, bd = separated_inputs(B, d, n, k, seed=3)
    idx = torch.randint(0, n, (B, k))
    vals = torch.rand(B, k, dtype=torch.float64, requires_grad=True)
    Wd.requires_grad_()
    y = ops.sparse_decode(idx, vals, Wd, bd)
    dense = torch.zeros(B, n, dtype=torch.float64).index_put((torch.arange(B).repeat_interleave(k), idx.reshape(-1)),
                                                           vals.reshape(-1), accumulate=True)
    y_ref = dense @ Wd + bd
    torch.testing.assert_close(y, y_ref)
    g = torch.randn(B, d, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(y, (vals, Wd), g), torch.autograd.grad(y_ref, (vals, Wd), g)):
        torch.testing.assert_close(a, b)


def test_decode_gradient_projection_on_the_torch_path():
    """project_grad=True: each W_dec row's gradient minus its component along the row (numpy,
    row by row), the other gradients as without it."""
    B, d, n, k = 5, 9, 14, 3
    g0 = torch.Generator().manual_seed(4)
    idx = torch.randint(0, n, (B, k), generator=g0)
    vals = torch.rand(B, k, dtype=torch.float64, generator=g0, requires_grad=True)
    Wd = (torch.randn(n, d, dtype=torch.float64, generator=g0) * 2).requires_grad_()
    g = torch.randn(B, d, dtype=torch.float64, generator=g0)
    plain = torch.autograd.grad(ops.sparse_decode(idx, vals, Wd), (vals, Wd), g)
    proj = torch.autograd.grad(ops.sparse_decode(idx, vals, Wd, project_grad=True), (vals, Wd), g)
    torch.testing.assert_close(proj[0], plain[0])
    G, W = plain[1].numpy(), Wd.detach().numpy()
    expected = np.stack([G[l] - (G[l] @ W[l]) / (W[l] @ W[l]) * W[l] for l in range(n)])
    np.testing.assert_allclose(proj[1].numpy(), expected, rtol=1e-12, atol=1e-12)
    assert np.abs((proj[1].numpy() * W).sum(1)).max() < 1e-12
    assert not np.allclose(expected, G)  # the projection did something


def test_relu_zeroes_and_blocks_gradient_when_fewer_than_k_positive():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    We = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    be = torch.full((8,), -100.0, dtype=torch.float64, requires_grad=True)  # everything negative
    code = ops.topk_encode(x, We, be, 3)
    assert torch.all(code.values == 0)
    gx, gW, gb = torch.autograd.grad(code.values.sum(), (x, We, be))
    assert gx.abs().sum() == 0 and gW.abs().sum() == 0 and gb.abs().sum() == 0


def test_encoder_gradient_touches_only_active_rows():
    B, d, n, k = 6, 10, 50, 3
    x, We, be, Wd, bd = separated_inputs(B, d, n, k, seed=11)
    We.requires_grad_()
    code = ops.topk_encode(x, We, be, k)
    (gW,) = torch.autograd.grad(code.values.sum(), (We,))
    touched = torch.zeros(n, dtype=torch.bool)
    touched[code.indices[code.values > 0]] = True
    assert torch.all(gW[~touched] == 0)
    assert torch.all(gW[touched].abs().sum(dim=1) > 0)


def test_bf16_forward_matches_fp32_closely():
    B, d, n, k = 8, 32, 64, 4
    x, We, be, Wd, bd = separated_inputs(B, d, n, k, seed=5)
    c32 = ops.topk_encode(x.float(), We.float(), be.float(), k)
    y32 = ops.sparse_decode(c32.indices, c32.values, Wd.float(), bd.float())
    yb = ops.sparse_decode(c32.indices, c32.values.bfloat16(), Wd.bfloat16(), bd.bfloat16())
    torch.testing.assert_close(yb.float(), y32, rtol=3e-2, atol=5e-2)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ops.topk_encode(torch.randn(2, 4), torch.randn(5, 4), torch.randn(5), 6), ValueError, "k must be"),
        (lambda: ops.topk_encode(torch.randn(2, 4), torch.randn(5, 4), torch.randn(5), 0), ValueError, "k must be"),
        (lambda: ops.topk_encode(torch.randn(2, 3), torch.randn(5, 4), torch.randn(5), 2), ValueError, "W_enc must be"),
        (lambda: ops.topk_encode(torch.randn(4), torch.randn(5, 4), torch.randn(5), 2), ValueError, "x must be"),
        (lambda: ops.topk_encode(torch.randn(2, 4), torch.randn(5, 4), torch.randn(4), 2), ValueError, "b_enc must be"),
        (lambda: ops.topk_encode(torch.randn(2, 4).double(), torch.randn(5, 4), torch.randn(5), 2), TypeError, "dtype"),
        (lambda: ops.sparse_decode(torch.tensor([[0, 7]]), torch.ones(1, 2), torch.randn(5, 3)), IndexError, "indices"),
        (lambda: ops.sparse_decode(torch.tensor([[0, 1]]), torch.ones(1, 3), torch.randn(5, 3)), ValueError, "both be"),
        (lambda: ops.sparse_decode(torch.tensor([[0.0, 1.0]]), torch.ones(1, 2), torch.randn(5, 3)), TypeError, "int64"),
    ],
    ids=["k_gt_n", "k_zero", "d_mismatch", "x_1d", "b_enc_shape", "dtype_mix", "index_oob", "shape_mismatch", "float_idx"],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_backend_switch(monkeypatch):
    monkeypatch.delenv("FASTSAE_BACKEND", raising=False)
    assert ops.backend(torch.device("cpu"), torch.float32) == "reference"
    monkeypatch.setenv("FASTSAE_BACKEND", "reference")
    assert ops.backend(torch.device("cpu"), torch.float32) == "reference"
    monkeypatch.setenv("FASTSAE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="FASTSAE_BACKEND"):
        ops.topk_encode(torch.randn(2, 4), torch.randn(5, 4), torch.randn(5), 2)
    monkeypatch.setenv("FASTSAE_BACKEND", "triton")
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        ops.backend(torch.device("cpu"), torch.float64)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            ops.backend(torch.device("cpu"), torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops.backend(torch.device("cpu"), torch.float32) == "triton"


def strided_views(tensors, dtype, device="cpu"):
    """The five SAE tensors (x, W_enc, b_enc, W_dec, b_dec) as the views other projects pass:
    x and both weights as transposes of ``[d, B]``/``[d, n]`` leaves (SAELens holds W_enc as
    ``[d, n]`` and passes ``W_enc.T``), the biases as strided columns of ``[*, 2]`` leaves.
    Returns (leaves, views, back): ``back(leaf_grads)`` reads the gradients in the views' shapes
    and checks the leaves' other columns got exactly zero."""
    x, We, be, Wd, bd = tensors
    leaves = [x.t().contiguous(), We.t().contiguous(), torch.stack([torch.zeros_like(be), be], 1),
              Wd.t().contiguous(), torch.stack([bd, torch.zeros_like(bd)], 1)]
    leaves = [t.to(dtype).to(device).requires_grad_() for t in leaves]
    views = [leaves[0].T, leaves[1].T, leaves[2][:, 1], leaves[3].T, leaves[4][:, 0]]
    assert all(v.stride(-1) != 1 for v in views)

    def back(gs):
        assert gs[2][:, 0].abs().max() == 0 and gs[4][:, 1].abs().max() == 0
        return [gs[0].T, gs[1].T, gs[2][:, 1], gs[3].T, gs[4][:, 0]]

    return leaves, views, back


@pytest.mark.parametrize("shape", [SHAPES["B5_d48_n200_k7"], SHAPES["B16_d40_n97_k13"], SHAPES["B3_d17_n33_k1"]],
                         ids=["k7", "k13", "k1"])
@pytest.mark.parametrize("dtype, tol", DTYPES.values(), ids=DTYPES.keys())
def test_transposed_weights_and_strided_inputs(shape, dtype, tol):
    """W_enc and W_dec passed as .T of [d, n] parameters, x as .T of [d, B], biases as strided
    columns: outputs and every gradient against the float64 dense reference, and .backward()
    leaves each gradient in the caller's parameter, in its shape and layout."""
    B, d, n, k = shape
    tensors = separated_inputs(B, d, n, k, seed=B * 100 + n)
    leaves, views, back = strided_views(tensors, dtype)
    ref = [t.to(dtype).double().requires_grad_() for t in tensors]
    code = ops.topk_encode(views[0], views[1], views[2], k)
    y = ops.sparse_decode(code.indices, code.values, views[3], views[4])
    y_ref, idx_ref, top_ref = dense_topk_sae_reference(*ref, k)
    assert torch.equal(code.indices.sort(dim=1).values, idx_ref.sort(dim=1).values)
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol * 10)
    g = torch.randn(B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (y * g.to(dtype)).sum().backward()
    for name, p in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], leaves):
        assert p.grad is not None and p.grad.shape == p.shape, name
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], back([p.grad for p in leaves]),
                          torch.autograd.grad(y_ref, ref, g)):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * 10, msg=lambda m: f"grad {name}: {m}")
    assert leaves[1].grad.stride() == leaves[1].stride()  # W_enc's gradient in the parameter's own layout


def test_transposed_weights_with_auxk_and_projection():
    """topk_encode_aux and sparse_decode(project_grad=True) on transposed weights: the same
    codes and gradients as on contiguous copies of the same weights."""
    B, d, n, k, k_aux = 6, 20, 45, 4, 6
    tensors = separated_inputs(B, d, n, k, seed=9)
    dead = torch.zeros(n, dtype=torch.bool)
    dead[::2] = True
    results = []
    for transposed in (False, True):
        if transposed:
            leaves, views, back = strided_views(tensors, torch.float64)
        else:
            leaves = views = [t.clone().requires_grad_() for t in tensors]
            back = list
        code, aux = ops.topk_encode_aux(views[0], views[1], views[2], k, dead, k_aux)
        y = ops.sparse_decode(code.indices, code.values, views[3], views[4], project_grad=True)
        ya = ops.sparse_decode(aux.indices, aux.values, views[3])
        (y.pow(2).sum() + ya.pow(3).sum()).backward()
        results.append((code, aux, back([p.grad for p in leaves])))
    (c0, a0, g0), (c1, a1, g1) = results
    assert torch.equal(c0.indices, c1.indices) and torch.equal(a0.indices, a1.indices)
    assert a0.values.gt(0).any()  # the aux code is not empty: its gradient is exercised
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"grad {name}: {m}")
