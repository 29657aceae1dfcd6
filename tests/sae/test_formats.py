"""fastsae.formats: other projects' top-k SAE checkpoints converted to a TopKSAE.

Each source model is written exactly as its project writes it (torch.save of a state dict;
cfg.json + safetensors) and checked against an independent float64 reference of that project's
forward pass, written here in plain torch.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from fastsae import TopKSAE
from fastsae.formats import load_openai_sae, load_paper_pth, load_sae, load_saelens, load_sparsify

D, N, K = 12, 30, 4
ATOL = 1e-5


# -- random source weights and inputs ---------------------------------------------------------
def _weights(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """W_enc [n, d], b_enc [n], W_dec [n, d] (rows deliberately NOT unit norm), b_dec [d]."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    w = {
        "W_enc": r(N, D) / D**0.5,
        "b_enc": 0.1 * r(N),
        "W_dec": r(N, D) / D**0.5 * (0.5 + torch.rand(N, 1, generator=g, dtype=torch.float64)),
        "b_dec": 0.5 * r(D),
    }
    return {name: t.to(dtype) for name, t in w.items()}


def _inputs(seed: int = 1, batch: int = 64) -> torch.Tensor:
    return torch.randn(batch, D, generator=torch.Generator().manual_seed(seed))


def _dense_topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Dense [B, n] activations: the k largest pre-activations through ReLU, zeros elsewhere."""
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp_min(0))


def _active(acts: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row > 0).flatten().tolist()) for row in acts]


def _code_active(sae: TopKSAE, x: torch.Tensor) -> list[set[int]]:
    code = sae.encode(x)
    return [{int(i) for i, v in zip(ri, rv) if v > 0} for ri, rv in zip(code.indices, code.values)]


def _assert_matches(sae: TopKSAE, ref: Callable, x: torch.Tensor, *, values: bool = True) -> None:
    """sae(x).recon and the active latent sets (and, optionally, their values) equal the reference."""
    ref_recon, ref_acts = ref(x)
    assert not bool(sae.standardized)
    out = sae(x)
    torch.testing.assert_close(out.recon.double(), ref_recon, atol=ATOL, rtol=0)
    active = _code_active(sae, x)
    assert active == _active(ref_acts)
    assert sum(map(len, active)) > len(active) * (K - 1)  # the test really exercises k latents
    if values:
        dense = torch.zeros(x.shape[0], sae.n_latents, dtype=torch.float64)
        dense.scatter_(1, out.code.indices, out.code.values.double())
        torch.testing.assert_close(dense, ref_acts, atol=ATOL, rtol=0)


# -- the projects' layouts and independent references -----------------------------------------
def _linear_sd(w, *, extra=None):
    """paper / OpenAI: torch Linear layout (decoder maps n -> d, so its weight is [d, n])."""
    sd = {
        "pre_bias": w["b_dec"],
        "latent_bias": w["b_enc"],
        "encoder.weight": w["W_enc"],
        "decoder.weight": w["W_dec"].t().contiguous(),
        "stats_last_nonzero": torch.zeros(N, dtype=torch.long),
    }
    sd.update(extra or {})
    return sd


def _ref_linear(sd, k):
    """paper / OpenAI forward: latents = TopK(ReLU(encoder(x - pre_bias) + latent_bias));
    recon = decoder(latents) + pre_bias."""
    def ref(x):
        f = {key: sd[key].double() for key in ("pre_bias", "latent_bias", "encoder.weight", "decoder.weight")}
        latents = _dense_topk_relu(F.linear(x.double() - f["pre_bias"], f["encoder.weight"]) + f["latent_bias"], k)
        return F.linear(latents, f["decoder.weight"]) + f["pre_bias"], latents

    return ref


def _sparsify_files(w, k=K, **cfg_update):
    tensors = {"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": N, "k": k,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D}
    cfg.update(cfg_update)
    return tensors, {key: v for key, v in cfg.items() if v is not _DROP}


def _ref_sparsify(tensors, cfg):
    """sparsify: sae_in = x - b_dec (not for transcoders); pre = ReLU(encoder(sae_in));
    top-k of pre; out = sum_j acts_j W_dec[idx_j] + b_dec."""
    def ref(x):
        f = {key: t.double() for key, t in tensors.items()}
        sae_in = x.double() if cfg.get("transcode") else x.double() - f["b_dec"]
        pre = F.relu(F.linear(sae_in, f["encoder.weight"], f["encoder.bias"]))
        top_acts, top_idx = pre.topk(cfg["k"], sorted=False)
        recon = (top_acts[..., None] * f["W_dec"][top_idx]).sum(-2) + f["b_dec"]
        return recon, torch.zeros_like(pre).scatter(-1, top_idx, top_acts)

    return ref


def _saelens_files(w, k=K, *, old_kwargs=False, **cfg_update):
    tensors = {"W_enc": w["W_enc"].t().contiguous(), "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    cfg = {"architecture": "topk", "d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": "toy", "hook_name": "blocks.0.hook_resid_post"}}
    if old_kwargs:
        cfg["activation_fn_kwargs"] = {"k": k}
    else:
        cfg["k"] = k
    cfg.update(cfg_update)
    return tensors, {key: v for key, v in cfg.items() if v is not _DROP}


def _ref_saelens(tensors, cfg):
    """SAELens top-k: sae_in = x - b_dec if apply_b_dec_to_input else x;
    hidden_pre = sae_in @ W_enc + b_enc (times ||W_dec_j|| if rescale_acts_by_decoder_norm);
    acts = ReLU(TopK(hidden_pre)); out = (acts [/ ||W_dec_j||] [* scaling_factor]) @ W_dec + b_dec."""
    def ref(x):  # (built lazily: broken sources are written without ever being run)
        f = {key: t.double() for key, t in tensors.items()}
        k = cfg.get("k") or cfg["activation_fn_kwargs"]["k"]
        rescale = cfg.get("rescale_acts_by_decoder_norm", False)
        sae_in = x.double() - f["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x.double()
        hidden_pre = sae_in @ f["W_enc"] + f["b_enc"]
        if rescale:
            hidden_pre = hidden_pre * f["W_dec"].norm(dim=-1)
        acts = _dense_topk_relu(hidden_pre, k)
        dec_in = acts / f["W_dec"].norm(dim=-1) if rescale else acts
        if "scaling_factor" in f:
            dec_in = dec_in * f["scaling_factor"]
        return dec_in @ f["W_dec"] + f["b_dec"], acts

    return ref


_DROP = object()  # a cfg value that removes the key


def _write_dir(path, cfg, tensors, weights_name):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "cfg.json", "w") as fh:
        json.dump(cfg, fh)
    save_file({key: t.contiguous() for key, t in tensors.items()}, str(path / weights_name))
    return path


# -- one uniform description of each format, for the shared tests -----------------------------
@dataclass
class Fmt:
    name: str
    write: Callable  # (tmp_path, w, k, mutate) -> (path, reference)
    load: Callable  # path -> TopKSAE
    weights_file: Callable  # path -> the file holding the tensors
    required: str  # a tensor key whose absence must be reported
    second_dim_key: str  # a 2-D tensor whose shape can be broken


def _write_paper(tmp_path, w, k=K, mutate=None):
    sd = _linear_sd(w)
    if mutate:
        mutate(sd)
    path = tmp_path / f"{k}_{N}_8_auxk_epoch_50.pth"
    torch.save(sd, path)
    return path, _ref_linear(sd, k)


def _write_openai(tmp_path, w, k=K, mutate=None):
    sd = _linear_sd(w, extra={"activation": "TopK", "activation_state_dict": {"k": k, "postact_fn": "ReLU"}})
    if mutate:
        mutate(sd)
    path = tmp_path / "openai_sae.pt"
    torch.save(sd, path)
    return path, _ref_linear(sd, k)


def _write_sparsify(tmp_path, w, k=K, mutate=None, **cfg_update):
    tensors, cfg = _sparsify_files(w, k, **cfg_update)
    if mutate:
        mutate(tensors)
    return _write_dir(tmp_path / "layers.3", cfg, tensors, "sae.safetensors"), _ref_sparsify(tensors, cfg)


def _write_saelens(tmp_path, w, k=K, mutate=None, **cfg_update):
    tensors, cfg = _saelens_files(w, k, **cfg_update)
    if mutate:
        mutate(tensors)
    return _write_dir(tmp_path / "saelens_sae", cfg, tensors, "sae_weights.safetensors"), _ref_saelens(tensors, cfg)


FMTS = [
    Fmt("paper", _write_paper, load_paper_pth, lambda p: p, "latent_bias", "decoder.weight"),
    Fmt("openai", _write_openai, load_openai_sae, lambda p: p, "pre_bias", "decoder.weight"),
    Fmt("sparsify", _write_sparsify, load_sparsify, lambda p: p / "sae.safetensors", "encoder.bias", "W_dec"),
    Fmt("saelens", _write_saelens, load_saelens, lambda p: p / "sae_weights.safetensors", "b_dec", "W_enc"),
]
FMT_IDS = [f.name for f in FMTS]


# -- each format reproduces its reference -----------------------------------------------------
@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
def test_matches_reference(tmp_path, fmt):
    path, ref = fmt.write(tmp_path, _weights(3))
    sae = fmt.load(path)
    assert isinstance(sae, TopKSAE)
    assert (sae.d_in, sae.n_latents, sae.k) == (D, N, K)
    assert sae.W_enc.dtype == torch.float32
    _assert_matches(sae, ref, _inputs())


@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
def test_decode_of_encode_matches_reference_forward(tmp_path, fmt):
    """A converted model has no standardisation: decode(encode(x)) is the source's own
    reconstruction of raw, non-centred anisotropic x, and both decode spaces coincide."""
    path, ref = fmt.write(tmp_path, _weights(7))
    sae = load_sae(path)
    g = torch.Generator().manual_seed(8)
    x = 5.0 + torch.logspace(-1, 1, D)[torch.randperm(D, generator=g)] * torch.randn(40, D, generator=g)
    ref_recon, ref_acts = ref(x)
    code = sae.encode(x)
    torch.testing.assert_close(sae.decode(code).double(), ref_recon, atol=ATOL * 10, rtol=1e-6)
    assert torch.equal(sae.decode(code), sae.decode(code, standardized=True))
    out = sae(x)
    assert torch.equal(out.recon, out.recon_standardized) and torch.equal(out.target, x)
    torch.testing.assert_close(sae.feature_directions().double(),
                               torch.nn.functional.normalize(sae.W_dec.detach().double(), dim=1), atol=1e-6, rtol=0)
    assert _code_active(sae, x) == _active(ref_acts)


@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
def test_load_sae_detects_format(tmp_path, fmt):
    path, ref = fmt.write(tmp_path, _weights(4))
    sae = load_sae(path)
    _assert_matches(sae, ref, _inputs())
    torch.testing.assert_close(sae.W_dec, fmt.load(path).W_dec, atol=0, rtol=0)
    # the explicit format name works too, and k can be overridden
    sae2 = load_sae(path, format=fmt.name, k=K + 2)
    assert sae2.k == K + 2
    with pytest.raises(ValueError, match="k="):
        load_sae(path, format=fmt.name, k=N + 1)


@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
def test_decoder_rows_kept_exactly(tmp_path, fmt):
    """Non-unit decoder rows are not renormalised: the converted W_dec is the source's, bit for bit."""
    w = _weights(5)
    path, _ = fmt.write(tmp_path, w)
    sae = fmt.load(path)
    assert torch.equal(sae.W_dec.detach(), w["W_dec"])
    assert not torch.allclose(sae.W_dec.norm(dim=1), torch.ones(N, dtype=torch.float32))


@pytest.mark.parametrize("src_dtype, model_dtype", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                                    (torch.bfloat16, torch.float32)], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
def test_dtype(tmp_path, fmt, src_dtype, model_dtype):
    w = _weights(6, src_dtype)
    path, ref = fmt.write(tmp_path, w)
    sae = fmt.load(path)
    assert all(p.dtype == model_dtype for p in sae.parameters())
    _assert_matches(sae, ref, _inputs())


# -- paper: k (and n) from the file name ------------------------------------------------------
@pytest.mark.parametrize("name", [
    f"{K}_{N}_8_auxk_epoch_50.pth",
    f"{K}_{N}_8_auxk_epoch_astroPH_old_50.pth",
    f"csLG_{K}_{N}_8.pth",
    f"sae_k{K}_n{N}.pth",
    f"embeddings-k{K}-n{N}-epoch_3.pt",
    f"k{K}.pth",
], ids=["k_n_auxk_epoch", "k_n_then_text", "prefix_k_n", "k_n_tokens", "k_n_tokens_dashes", "k_token_only"])
def test_paper_k_from_file_name(tmp_path, name):
    sd = _linear_sd(_weights(7))
    torch.save(sd, tmp_path / name)
    sae = load_paper_pth(tmp_path / name)
    assert sae.k == K
    _assert_matches(sae, _ref_linear(sd, K), _inputs())
    assert load_sae(tmp_path / name).k == K


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 50},
    lambda sd: {"model": sd, "optimizer": {"lr": 1e-3}},
    lambda sd: {"module." + key: v for key, v in sd.items()},
], ids=["flat", "state_dict", "model", "ddp_prefix"])
def test_paper_nested_state_dicts(tmp_path, wrap):
    sd = _linear_sd(_weights(8))
    path = tmp_path / f"{K}_{N}_8_auxk_epoch_50.pth"
    torch.save(wrap(sd), path)
    _assert_matches(load_paper_pth(path), _ref_linear(sd, K), _inputs())


def test_paper_k_argument_and_name_errors(tmp_path):
    sd = _linear_sd(_weights(9))
    torch.save(sd, tmp_path / "checkpoint.pth")
    with pytest.raises(ValueError, match="cannot determine k"):
        load_paper_pth(tmp_path / "checkpoint.pth")
    assert load_paper_pth(tmp_path / "checkpoint.pth", k=K).k == K
    # the name's n must match the tensors ...
    torch.save(sd, tmp_path / f"{K}_{N + 5}_8_auxk_epoch_50.pth")
    with pytest.raises(ValueError, match=f"n={N + 5}"):
        load_paper_pth(tmp_path / f"{K}_{N + 5}_8_auxk_epoch_50.pth")
    # ... unless k is given explicitly, which wins over the name
    assert load_paper_pth(tmp_path / f"{K}_{N + 5}_8_auxk_epoch_50.pth", k=3).k == 3
    # load_sae on a bare .pth with neither k nor activation metadata
    with pytest.raises(ValueError, match="cannot determine k"):
        load_sae(tmp_path / "checkpoint.pth")


# -- OpenAI: k stored in the state dict -------------------------------------------------------
@pytest.mark.parametrize("extra, k_arg", [
    ({"activation": "TopK", "activation_state_dict": {"k": K, "postact_fn": "ReLU"}}, None),
    ({"activation.k": K}, None),
    ({"activation.k": torch.tensor(K)}, None),
    ({}, K),
    ({"activation": "TopK", "activation_state_dict": {"k": 9, "postact_fn": "ReLU"}}, K),
], ids=["activation_state_dict", "activation.k_int", "activation.k_tensor", "k_argument", "k_argument_overrides"])
@pytest.mark.parametrize("as_path", [False, True], ids=["dict", "path"])
def test_openai_k_sources(tmp_path, extra, k_arg, as_path):
    sd = _linear_sd(_weights(10), extra=extra)
    src = sd
    if as_path:
        src = tmp_path / "sae.pt"
        torch.save(sd, src)
    sae = load_openai_sae(src, k=k_arg)
    assert sae.k == K
    _assert_matches(sae, _ref_linear(sd, K), _inputs())
    _assert_matches(load_sae(src, k=k_arg), _ref_linear(sd, K), _inputs())


def test_openai_tied_decoder(tmp_path):
    """openai TiedTranspose: the decoder is the encoder weight, stored as decoder.linear.weight [n, d]."""
    sd = _linear_sd(_weights(11), extra={"activation.k": K})
    del sd["decoder.weight"]
    sd["decoder.linear.weight"] = sd["encoder.weight"]
    ref = _ref_linear({**sd, "decoder.weight": sd["encoder.weight"].t()}, K)
    _assert_matches(load_openai_sae(sd), ref, _inputs())


@pytest.mark.parametrize("extra, match", [
    ({"activation": "ReLU"}, "only top-k"),
    ({"activation": "TopK", "activation_state_dict": {"k": K, "postact_fn": "Identity"}}, "post-activation"),
    ({"activation_state_dict": {"k": K}, "activation.k": K + 1}, "inconsistent"),
    ({"activation.k": 2.5}, "integer"),
    ({}, "no k stored"),
    ({"activation.k": K, "decoder.bias": torch.zeros(D)}, "decoder.bias"),
], ids=["relu_activation", "identity_postact", "inconsistent_k", "fractional_k", "no_k", "decoder_bias"])
def test_openai_rejects(extra, match):
    with pytest.raises(ValueError, match=match):
        load_openai_sae(_linear_sd(_weights(12), extra=extra))


# -- sparsify configs -------------------------------------------------------------------------
@pytest.mark.parametrize("cfg_update", [
    {},
    {"d_in": _DROP},
    {"num_latents": 0, "expansion_factor": N / D},  # sparsify: num_latents = d_in * expansion_factor
    {"transcode": True},
    {"activation": _DROP, "skip_connection": _DROP, "transcode": _DROP},
], ids=["full_cfg", "no_d_in", "expansion_factor", "transcode_no_input_shift", "minimal_cfg"])
def test_sparsify_configs(tmp_path, cfg_update):
    path, ref = _write_sparsify(tmp_path, _weights(13), **cfg_update)
    _assert_matches(load_sparsify(path), ref, _inputs())
    _assert_matches(load_sae(path), ref, _inputs())


@pytest.mark.parametrize("cfg_update, mutate, match", [
    ({"activation": "groupmax"}, None, "only 'topk'"),
    ({"skip_connection": True}, lambda t: t.update(W_skip=torch.zeros(D, D)), "skip connection"),
    ({"num_latents": N + 2}, None, "num_latents"),
    ({"num_latents": 0, "expansion_factor": 4}, None, "expansion_factor"),
    ({"d_in": D + 1}, None, "d_in"),
    ({"k": _DROP}, None, "no 'k'"),
], ids=["groupmax", "skip_connection", "num_latents_mismatch", "expansion_mismatch", "d_in_mismatch", "k_missing"])
def test_sparsify_rejects(tmp_path, cfg_update, mutate, match):
    path, _ = _write_sparsify(tmp_path, _weights(14), mutate=mutate, **cfg_update)
    with pytest.raises(ValueError, match=match):
        load_sparsify(path)


# -- SAELens configs --------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [
    {},
    {"old_kwargs": True},
    {"old_kwargs": True, "architecture": "standard", "activation_fn_str": "topk"},
    {"apply_b_dec_to_input": False},
    {"rescale_acts_by_decoder_norm": True},
    {"rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": False},
    {"normalize_activations": _DROP, "apply_b_dec_to_input": _DROP, "d_sae": _DROP},
], ids=["topk_k", "topk_activation_fn_kwargs", "standard_with_topk_fn", "no_b_dec_on_input",
        "rescale_by_decoder_norm", "rescale_and_no_b_dec_on_input", "minimal_cfg"])
def test_saelens_configs(tmp_path, opts):
    path, ref = _write_saelens(tmp_path, _weights(15), **opts)
    _assert_matches(load_saelens(path), ref, _inputs())
    _assert_matches(load_sae(path), ref, _inputs())


def test_saelens_no_b_dec_on_input_is_exact(tmp_path):
    """apply_b_dec_to_input=False with a large b_dec: the fold into b_enc must reproduce the
    unshifted encoder (the shifted one would select other latents)."""
    w = _weights(16)
    w["b_dec"] = w["b_dec"] * 6
    path, ref = _write_saelens(tmp_path, w, apply_b_dec_to_input=False)
    sae = load_saelens(path)
    _assert_matches(sae, ref, _inputs())
    shifted, _ = _write_saelens(tmp_path / "shifted", w)
    assert _code_active(load_saelens(shifted), _inputs()) != _code_active(sae, _inputs())


def test_saelens_scaling_factor(tmp_path):
    """Older SAELens fine-tuning scale: recon = (acts * s) @ W_dec + b_dec, folded into W_dec."""
    s = torch.linspace(0.5, 2.0, N)
    path, ref = _write_saelens(tmp_path, _weights(17), mutate=lambda t: t.update(scaling_factor=s))
    _assert_matches(load_saelens(path), ref, _inputs(), values=False)


@pytest.mark.parametrize("cfg_update, match", [
    ({"architecture": "jumprelu"}, "not a top-k"),
    ({"architecture": "gated"}, "not a top-k"),
    ({"architecture": "batchtopk"}, "not a top-k"),
    ({"architecture": "standard", "activation_fn_str": "relu"}, "not a top-k"),
    ({"architecture": _DROP}, "not a top-k"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations"),
    ({"k": _DROP}, "no k"),
    ({"d_sae": N + 1}, "d_sae"),
    ({"d_in": D - 1}, "d_in"),
], ids=["jumprelu", "gated", "batchtopk", "standard_relu", "no_architecture", "input_layer_norm", "k_missing",
        "d_sae_mismatch", "d_in_mismatch"])
def test_saelens_rejects(tmp_path, cfg_update, match):
    path, _ = _write_saelens(tmp_path, _weights(18), **cfg_update)
    with pytest.raises(ValueError, match=match):
        load_saelens(path)
    with pytest.raises(ValueError, match=match):
        load_sae(path)


# -- shared error cases -----------------------------------------------------------------------
def _drop(key):
    return lambda t: t.pop(key)


def _break_shape(key):
    return lambda t: t.__setitem__(key, t[key][:, :-1].contiguous())


def _poison(value):
    def mutate(t):
        key = next(k for k, v in t.items() if isinstance(v, torch.Tensor) and v.dim() == 2)
        bad = t[key].clone()
        bad[1, 2] = value
        t[key] = bad
    return mutate


@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
@pytest.mark.parametrize("case", ["missing_tensor", "shape_mismatch", "k_exceeds_n", "nan_weight", "inf_weight",
                                  "truncated_file", "garbage_file"])
def test_errors(tmp_path, fmt, case):
    w = _weights(19)
    kwargs = {}
    match = {"missing_tensor": f"missing tensor '{fmt.required}'", "shape_mismatch": fmt.second_dim_key,
             "k_exceeds_n": f"k={N + 1}", "nan_weight": "non-finite", "inf_weight": "non-finite",
             "truncated_file": "cannot be read", "garbage_file": "cannot be read"}[case]
    if case == "missing_tensor":
        kwargs["mutate"] = _drop(fmt.required)
    elif case == "shape_mismatch":
        kwargs["mutate"] = _break_shape(fmt.second_dim_key)
    elif case == "k_exceeds_n":
        kwargs["k"] = N + 1
    elif case == "nan_weight":
        kwargs["mutate"] = _poison(float("nan"))
    elif case == "inf_weight":
        kwargs["mutate"] = _poison(float("inf"))
    path, _ = fmt.write(tmp_path, w, **kwargs)
    target = fmt.weights_file(path)
    if case == "truncated_file":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif case == "garbage_file":
        target.write_bytes(b"\x00\x01 not a checkpoint" * 50)
    with pytest.raises(ValueError, match=match):
        fmt.load(path)
    with pytest.raises(ValueError, match=match):
        load_sae(path, format=fmt.name)


def test_corrupt_cfg_json(tmp_path):
    path, _ = _write_sparsify(tmp_path, _weights(20))
    (path / "cfg.json").write_text('{"k": 4, ')
    with pytest.raises(ValueError, match="JSON"):
        load_sparsify(path)
    (path / "cfg.json").write_text("[4]")
    with pytest.raises(ValueError, match="JSON object"):
        load_sparsify(path)


# -- never unpickle arbitrary objects ---------------------------------------------------------
class _Payload:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("how", ["torch_save_value", "torch_save_top", "raw_pickle", "nested_state_dict"])
@pytest.mark.parametrize("loader", [load_paper_pth, load_openai_sae, load_sae], ids=["paper", "openai", "load_sae"])
def test_pickled_object_is_not_executed(tmp_path, how, loader):
    # the payload is live: plain pickle runs it
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.is_dir()

    marker = tmp_path / "pwned"
    path = tmp_path / f"{K}_{N}_8_auxk_epoch_50.pth"
    sd = _linear_sd(_weights(21))
    if how == "torch_save_value":
        torch.save({**sd, "pre_bias": _Payload(marker)}, path)
    elif how == "torch_save_top":
        torch.save(_Payload(marker), path)
    elif how == "raw_pickle":
        with open(path, "wb") as fh:
            pickle.dump({**sd, "stats_last_nonzero": _Payload(marker)}, fh, protocol=2)
    else:
        torch.save({"state_dict": {**sd, "latent_bias": _Payload(marker)}}, path)
    with pytest.raises(ValueError, match="weights-only"):
        loader(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [[1, 2, 3], torch.zeros(3), "text"], ids=["list", "tensor", "str"])
def test_pth_that_is_not_a_state_dict(tmp_path, obj):
    path = tmp_path / f"{K}_{N}_8.pth"
    torch.save(obj, path)
    for loader in (load_paper_pth, load_openai_sae, load_sae):
        with pytest.raises(ValueError, match="state dict"):
            loader(path)


# -- the dispatcher ---------------------------------------------------------------------------
def test_load_sae_fastsae_dir_and_inner_files(tmp_path):
    src = TopKSAE(D, N, K)
    with torch.no_grad():
        src.b_pre.normal_()
        src.b_enc.normal_()
    src.save(tmp_path / "mine")
    x = _inputs()
    sae = load_sae(tmp_path / "mine")
    torch.testing.assert_close(sae(x).recon, src(x).recon, atol=0, rtol=0)
    # a weights/config file inside a checkpoint directory stands for the directory
    path, ref = _write_saelens(tmp_path, _weights(22))
    _assert_matches(load_sae(path / "sae_weights.safetensors"), ref, x)
    path, ref = _write_sparsify(tmp_path, _weights(23))
    _assert_matches(load_sae(path / "cfg.json"), ref, x)


def test_load_sae_unrecognised(tmp_path):
    known = "sparsify.*saelens.*paper"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=known):
        load_sae(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=known):
        load_sae(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no such file"):
        load_sae(tmp_path / "missing.pth")
    # a multi-hookpoint sparsify directory: point at the hookpoints
    _write_sparsify(tmp_path / "multi", _weights(24))
    with pytest.raises(ValueError, match="layers.3"):
        load_sae(tmp_path / "multi")
    # a .pth of some other model
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=known):
        load_sae(tmp_path / "other.pth")
    with pytest.raises(ValueError, match="format must be"):
        load_sae(tmp_path / "other.pth", format="pickle")
    with pytest.raises(ValueError, match="needs a path"):
        load_sae({"a": torch.zeros(1)}, format="sparsify")
