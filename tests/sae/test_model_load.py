"""TopKSAE.load and formats.load_sae on fastsae's own folder refuse anything damaged: the config
(format, version, sizes, dtype), the safetensors header (tensor names, shapes, dtypes) and the
values (finite weights, positive standard deviations), each a ValueError naming the file."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastsae import TopKSAE
from fastsae.formats import load_sae

D, N, K = 6, 20, 3


def saved(tmp_path, dtype=torch.float32):
    """A valid checkpoint with every tensor non-trivial (standardised, biases set)."""
    torch.manual_seed(0)
    sae = TopKSAE(D, N, K, dtype=dtype)
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.b_enc.normal_()
    sae.set_standardization(torch.randn(D), torch.rand(D) + 0.5)
    path = tmp_path / "sae"
    sae.save(path)
    return sae, path


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is DELETE:
            del cfg[key]
        else:
            cfg[key] = value
    (path / "config.json").write_text(json.dumps(cfg))


def edit_tensors(path, edit):
    state = load_file(path / "sae.safetensors")
    edit(state)
    save_file(state, path / "sae.safetensors")


DELETE = object()


def assert_refused(path, file_name, match):
    """Both readers refuse, with a ValueError that names the file and the problem."""
    for reader in (TopKSAE.load, load_sae):
        with pytest.raises(ValueError) as err:
            reader(path)
        msg = str(err.value)
        assert str(path / file_name) in msg, (reader.__name__, msg)
        assert match in msg, (reader.__name__, msg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=["fp32", "fp64", "bf16", "fp16"])
def test_valid_checkpoints_of_every_dtype_load_exactly(tmp_path, dtype):
    sae, path = saved(tmp_path, dtype)
    for loaded in (TopKSAE.load(path), load_sae(path), TopKSAE.load(path, device="cpu")):
        assert (loaded.d_in, loaded.n_latents, loaded.k, loaded.W_enc.dtype) == (D, N, K, dtype)
        for name, t in sae.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], t), name
        assert loaded._standardized


TENSORS = ["b_pre", "W_enc", "b_enc", "W_dec", "data_mean", "data_std"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "neg_inf"])
@pytest.mark.parametrize("name", TENSORS)
def test_non_finite_tensor_is_refused_naming_it(tmp_path, name, value):
    _, path = saved(tmp_path)

    def poison(state):
        state[name].view(-1)[-1] = value

    edit_tensors(path, poison)
    assert_refused(path, "sae.safetensors", f"tensor {name} has 1 non-finite")


@pytest.mark.parametrize("std, where", [(0.0, "0.0 at dimension 2"), (-1.5, "-1.5 at dimension 2")],
                         ids=["zero", "negative"])
def test_non_positive_data_std_is_refused(tmp_path, std, where):
    _, path = saved(tmp_path)
    edit_tensors(path, lambda s: s["data_std"].__setitem__(2, std))
    assert_refused(path, "sae.safetensors", f"data_std must be > 0, got {where}")


def _drop(name):
    return lambda s: s.pop(name)


def _add_extra(s):
    s["W_extra"] = torch.zeros(3)


def _reshape_w_enc(s):
    s["W_enc"] = s["W_enc"][:, :-1].contiguous()


def _w_dec_fp64(s):
    s["W_dec"] = s["W_dec"].double()


def _flag_as_float(s):
    s["standardized"] = torch.ones((), dtype=torch.float32)


def _flag_as_vector(s):
    s["standardized"] = torch.ones(2, dtype=torch.bool)


@pytest.mark.parametrize(
    "edit, match",
    [
        (_drop("W_dec"), "missing tensor(s) W_dec"),
        (_drop("standardized"), "missing tensor(s) standardized"),
        (_add_extra, "unexpected tensor(s) W_extra"),
        (_reshape_w_enc, f"tensor W_enc has shape ({N}, {D - 1}), the config implies ({N}, {D})"),
        (_w_dec_fp64, "tensor W_dec has dtype torch.float64, the config implies torch.float32"),
        (_flag_as_float, "tensor standardized has dtype torch.float32, the config implies torch.bool"),
        (_flag_as_vector, "tensor standardized has shape (2,), the config implies ()"),
    ],
    ids=["missing_W_dec", "missing_flag", "extra_tensor", "W_enc_shape", "W_dec_dtype", "flag_dtype", "flag_shape"],
)
def test_wrong_tensor_set_shape_or_dtype_is_refused(tmp_path, edit, match):
    _, path = saved(tmp_path)
    edit_tensors(path, edit)
    assert_refused(path, "sae.safetensors", match)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"k": 2.7}, "k must be an integer, got 2.7"),
        ({"k": 3.0}, "k must be an integer, got 3.0"),
        ({"k": "3"}, "k must be an integer, got '3'"),
        ({"k": True}, "k must be an integer, got True"),
        ({"k": None}, "k must be an integer, got None"),
        ({"k": -1}, "k must be >= 1, got -1"),
        ({"k": 0}, "k must be >= 1, got 0"),
        ({"k": N + 1}, f"k={N + 1} exceeds n_latents={N}"),
        ({"n_latents": 20.5}, "n_latents must be an integer, got 20.5"),
        ({"d_in": -6}, "d_in must be >= 1, got -6"),
        ({"d_in": [6]}, "d_in must be an integer, got [6]"),
        ({"k": DELETE}, "'k' is missing"),
        ({"n_latents": 31}, f"tensor W_enc has shape ({N}, {D}), the config implies (31, {D})"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"dtype": "__class__"}, "got '__class__'"),
        ({"dtype": "nn"}, "got 'nn'"),
        ({"dtype": "bool"}, "got 'bool'"),
        ({"dtype": 32}, "got 32"),
        ({"dtype": "float64"}, "tensor b_pre has dtype torch.float32, the config implies torch.float64"),
        ({"version": 2}, "unknown format version 2 (this fastsae reads version 1)"),
        ({"version": "1"}, "unknown format version '1'"),
        ({"version": True}, "unknown format version True"),
        ({"version": DELETE}, "unknown format version None"),
    ],
    ids=["k_fraction", "k_float", "k_string", "k_bool", "k_null", "k_negative", "k_zero", "k_gt_n", "n_fraction",
         "d_negative", "d_list", "k_missing", "n_other_shape", "dtype_int8", "dtype_dunder", "dtype_module",
         "dtype_bool", "dtype_number", "dtype_other", "version_2", "version_string", "version_bool", "version_missing"],
)
def test_bad_config_values_are_refused(tmp_path, changes, match):
    _, path = saved(tmp_path)
    edit_config(path, **changes)
    file_name = "sae.safetensors" if match.startswith("tensor ") else "config.json"
    assert_refused(path, file_name, match)


def test_config_that_is_not_a_fastsae_config_is_refused(tmp_path):
    _, path = saved(tmp_path)
    (path / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="config.json: not a loadable fastsae checkpoint: not a fastsae.TopKSAE"):
        TopKSAE.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a loadable fastsae checkpoint .JSONDecodeError"):
        TopKSAE.load(path)
    (path / "config.json").write_bytes(b'{"format": "fastsae.TopKSAE", "k": "\xff"}')
    with pytest.raises(ValueError, match="config.json: not a loadable fastsae checkpoint .UnicodeDecodeError"):
        TopKSAE.load(path)


def test_truncated_or_missing_weights_are_refused(tmp_path):
    _, path = saved(tmp_path)
    data = (path / "sae.safetensors").read_bytes()
    (path / "sae.safetensors").write_bytes(data[: len(data) - 7])
    with pytest.raises(ValueError, match="sae.safetensors: not a loadable fastsae checkpoint"):
        TopKSAE.load(path)
    (path / "sae.safetensors").unlink()
    for reader in (TopKSAE.load, load_sae):
        with pytest.raises(ValueError, match="sae.safetensors: not a loadable fastsae checkpoint .FileNotFoundError"):
            reader(path)
