"""Load other projects' top-k SAE checkpoints as a :class:`fastsae.TopKSAE`.

Every loader returns a :class:`~fastsae.TopKSAE` whose forward pass reproduces the source
model's math (``sae(x).recon`` and ``sae.decode(sae.encode(x))`` equal the source
reconstruction, ``sae.encode(x)`` selects the same latents), with standardisation off: these
projects have no standardisation of their own, so the input space and the SAE's space are one,
``decode(code)`` and ``decode(code, standardized=True)`` are identical and
``feature_directions()`` is the normalised ``W_dec``. (Their ``SAEOutput.nmse`` is still the
normalised MSE, not the raw MSE some of them report.)

* :func:`load_paper_pth` -- the paper authors' ``.pth`` state dicts (k and n in the file name);
* :func:`load_openai_sae` -- ``openai/sparse_autoencoder`` state dicts (k stored inside);
* :func:`load_sparsify` -- an EleutherAI ``sparsify`` directory (``cfg.json`` + ``sae.safetensors``);
* :func:`load_saelens` -- a SAELens top-k directory (``cfg.json`` + ``sae_weights.safetensors``);
* :func:`load_sae` -- detects which of these (or a directory written by :meth:`TopKSAE.save`) it is given.

Nothing is ever unpickled: ``.pth`` files are read with ``torch.load(..., weights_only=True)``
and everything else is JSON or safetensors. Anything inconsistent (a file that cannot be read,
a missing tensor, mismatched shapes, a missing k or ``k > n``, NaN/inf weights, a non-top-k
architecture) raises :class:`ValueError` naming the file and the problem.

Decoder norms. :class:`TopKSAE` normally keeps its decoder rows at unit norm, but the loaders
copy the source weights as they are: if a source decoder's rows are not unit norm they are
*not* renormalised (that would change the reconstructions). Call
:meth:`TopKSAE.normalize_decoder_` yourself only if you accept that change (e.g. before training
on). Where a source's math differs from TopKSAE's by a fixed transform (an input that is not
shifted by ``b_dec``, activations rescaled by decoder norms, a per-latent scaling factor), the
transform is folded exactly into the weights; this is documented on each loader.

Dtype: the model is float64 if the source weights are float64 and float32 otherwise
(bfloat16/float16 sources are widened losslessly).
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._checks import ArgumentTypeError, check_choice
from ._convert import (  # noqa: F401 (the loaders' shared readers and checks)
    _as_k,
    _assemble,
    _check_finite,
    _check_k,
    _expect_shape,
    _override_k,
    _read_json,
    _read_pth,
    _read_safetensors,
    _shaped,
    _short,
    _state_dict,
    _target_dtype,
    _tensor,
)
from .model import TopKSAE

FORMATS = ("fastsae", "paper", "openai", "sparsify", "saelens")
"""The ``format`` names :func:`load_sae` accepts (besides ``"auto"``)."""

_KNOWN = (
    "known formats: fastsae (directory with config.json + sae.safetensors), "
    "sparsify (directory with cfg.json + sae.safetensors), "
    "saelens (directory with cfg.json + sae_weights.safetensors), "
    "paper / openai (.pth or .pt state dict)"
)

__all__ = ["FORMATS", "load_openai_sae", "load_paper_pth", "load_sae", "load_saelens", "load_sparsify"]


# -- paper / OpenAI (torch Linear layout) -----------------------------------------------------
def _convert_linear_layout(sd: Mapping, k: Any, source: str) -> TopKSAE:
    """``pre_bias`` [d], ``latent_bias`` [n], ``encoder.weight`` [n, d], ``decoder.weight`` [d, n]:
    latents = TopK(ReLU(encoder(x - pre_bias) + latent_bias)), recon = decoder(latents) + pre_bias."""
    for extra in ("encoder.bias", "decoder.bias"):
        if extra in sd:
            raise ValueError(
                f"{source}: has {extra!r}; a top-k SAE of this layout has bias-free encoder/decoder "
                "Linear layers (its biases are pre_bias and latent_bias), so this model is not supported"
            )
    W_enc = _tensor(sd, "encoder.weight", source, 2)
    n, d = W_enc.shape
    b_pre = _shaped(sd, "pre_bias", (d,), "[d_in]", source)
    b_enc = _shaped(sd, "latent_bias", (n,), "[n_latents]", source)
    if "decoder.weight" not in sd and "decoder.linear.weight" in sd:  # OpenAI's tied decoder
        dec_key = "decoder.linear.weight"
        W_dec_src = _shaped(sd, dec_key, (n, d), "[n_latents, d_in] (tied transpose)", source)
        W_dec = W_dec_src
    else:
        dec_key = "decoder.weight"
        W_dec_src = _shaped(sd, dec_key, (d, n), "[d_in, n_latents] (torch Linear n -> d)", source)
        W_dec = W_dec_src.t()
    _check_finite(source, {"encoder.weight": W_enc, "pre_bias": b_pre, "latent_bias": b_enc, dec_key: W_dec_src})
    dtype = _target_dtype(W_enc, b_pre, b_enc, W_dec_src)
    return _assemble(source, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_pre=b_pre, k=k, dtype=dtype)


def _openai_stored_k(sd: Mapping, source: str) -> int | None:
    """k from OpenAI activation metadata (``activation_state_dict['k']`` or ``activation.k``);
    rejects non-TopK activations and post-activations other than ReLU."""
    act = sd.get("activation")
    if act is not None and act != "TopK":
        raise ValueError(f"{source}: activation is {act!r}; only top-k ('TopK') SAEs can be converted")
    found: dict[str, int] = {}
    asd = sd.get("activation_state_dict")
    if asd is not None:
        if not isinstance(asd, Mapping):
            raise ValueError(f"{source}: 'activation_state_dict' must be a mapping, got {type(asd).__name__}")
        post = asd.get("postact_fn")
        if post is not None and post != "ReLU":
            raise ValueError(f"{source}: TopK post-activation is {post!r}; only 'ReLU' is supported")
        if "k" in asd:
            found["activation_state_dict['k']"] = _as_k(asd["k"], source, "activation_state_dict['k']")
    if "activation.k" in sd:
        found["activation.k"] = _as_k(sd["activation.k"], source, "activation.k")
    if len(set(found.values())) > 1:
        raise ValueError(f"{source}: inconsistent stored k: {found}")
    return next(iter(found.values()), None)


def _require_openai_k(sd: Mapping, k: Any, source: str) -> Any:
    stored = _openai_stored_k(sd, source)
    k = stored if k is None else k
    if k is None:
        raise ValueError(f"{source}: no k stored ('activation_state_dict' or 'activation.k'); pass k=")
    return k


def _has_activation_metadata(sd: Mapping) -> bool:
    return any(key in sd for key in ("activation", "activation_state_dict", "activation.k"))


def _parse_paper_name(name: str) -> tuple[int | None, int | None]:
    """(k, n) from a checkpoint file name, each ``None`` where the name does not say.

    ``k{k}`` / ``n{n}`` tokens (e.g. ``sae_k64_n9216.pth``) win; otherwise the first two
    consecutive all-digit tokens are ``{k}_{n}`` (the released names: ``64_9216_128_auxk_epoch_50.pth``,
    ``astroPH_128_3072_256.pth``)."""
    stem = re.sub(r"\.(pth|pt)$", "", name, flags=re.IGNORECASE)
    tokens = [t for t in re.split(r"[_\-.\s]+", stem) if t]
    k = n = None
    for tok in tokens:
        m = re.fullmatch(r"([kKnN])=?([0-9]+)", tok)
        if m:
            if m.group(1).lower() == "k" and k is None:
                k = int(m.group(2))
            elif m.group(1).lower() == "n" and n is None:
                n = int(m.group(2))
    if k is None:
        digits = re.compile(r"[0-9]+")
        for a, b in zip(tokens, tokens[1:]):
            if digits.fullmatch(a) and digits.fullmatch(b):
                k = int(a)
                n = int(b) if n is None else n
                break
    return k, n


def _paper_from_state_dict(sd: Mapping, k: Any, source: str, file_name: str | None) -> TopKSAE:
    stored = _openai_stored_k(sd, source)  # also rejects a stored non-TopK activation
    if k is None and file_name is not None:
        name_k, name_n = _parse_paper_name(file_name)
        enc = sd.get("encoder.weight")
        if name_n is not None and isinstance(enc, torch.Tensor) and enc.dim() == 2 and enc.shape[0] != name_n:
            raise ValueError(
                f"{source}: the file name says n={name_n} but 'encoder.weight' has {enc.shape[0]} latents "
                f"(shape {tuple(enc.shape)}); pass k= explicitly if the name does not follow '{{k}}_{{n}}_...'"
            )
        k = name_k
    if k is None:
        k = stored
    if k is None:
        raise ValueError(
            f"{source}: cannot determine k: pass k=, or name the file like "
            "'{k}_{n}_..._epoch_50.pth' or '..._k{k}_n{n}.pth'"
        )
    return _convert_linear_layout(sd, k, source)


def load_paper_pth(path: str | os.PathLike, *, k: int | None = None) -> TopKSAE:
    """Load the paper authors' top-k SAE ``.pth`` state dict.

    Tensors: ``pre_bias`` [d], ``latent_bias`` [n], ``encoder.weight`` [n, d], ``decoder.weight``
    [d, n] (``W_dec = decoder.weight.T``); other entries (``stats_last_nonzero``) are ignored. The
    state dict may be nested under ``"state_dict"``/``"model"`` and carry a ``module.`` prefix.

    ``k``: if not given, parsed from the file name (``{k}_{n}_...`` e.g.
    ``64_9216_128_auxk_epoch_50.pth``, or ``k{k}``/``n{n}`` tokens e.g. ``sae_k64_n9216.pth``);
    an ``n`` in the name must match the tensors. The file is read with
    ``torch.load(weights_only=True)``; nothing else is unpickled. Decoder rows are kept as stored
    (not renormalised).
    """
    p = Path(path)
    source = str(p)
    sd = _state_dict(_read_pth(p), source)
    return _paper_from_state_dict(sd, k, source, p.name)


def load_openai_sae(state_dict_or_path: Mapping | str | os.PathLike, *, k: int | None = None) -> TopKSAE:
    """Load an ``openai/sparse_autoencoder`` ``Autoencoder`` state dict (a mapping or a ``.pt`` path).

    Tensors as in :func:`load_paper_pth` (a tied decoder stored as ``decoder.linear.weight`` [n, d] is
    also accepted); ``stats_last_nonzero`` is ignored. k is read from ``activation_state_dict['k']``
    or ``activation.k``; an explicit ``k`` overrides it (top-k SAEs can be run at another k). The
    activation must be ``TopK`` with a ReLU post-activation. The optional layer-norm input
    preprocessing of that project (``normalize=True``) is not part of the state dict and is not
    applied. Decoder rows are kept as stored (not renormalised).
    """
    if isinstance(state_dict_or_path, Mapping):
        source = "OpenAI state dict"
        obj: Any = state_dict_or_path
    else:
        source = str(state_dict_or_path)
        obj = _read_pth(Path(state_dict_or_path))
    sd = _state_dict(obj, source)
    return _convert_linear_layout(sd, _require_openai_k(sd, k, source), source)


# -- sparsify ---------------------------------------------------------------------------------
def load_sparsify(path: str | os.PathLike) -> TopKSAE:
    """Load an EleutherAI ``sparsify`` SAE directory (``cfg.json`` + ``sae.safetensors``).

    sparsify computes ``h = TopK(ReLU(encoder(x - b_dec)))``, ``x_hat = h @ W_dec + b_dec``, so
    ``b_pre = b_dec``, ``W_enc = encoder.weight``, ``b_enc = encoder.bias``, ``W_dec = W_dec``.
    ``d_in`` may be absent from ``cfg.json`` (taken from the weights); ``num_latents`` (or, when 0,
    ``d_in * expansion_factor``) must match the weights. A transcoder (``"transcode": true``) does
    not shift its input by ``b_dec``; that is folded exactly into ``b_enc`` (``b_enc + W_enc b_dec``)
    when its output width equals its input width. Skip connections and activations other than
    ``topk`` are rejected. Decoder rows are kept as stored (not renormalised).
    """
    p = Path(path)
    source = f"{p} (sparsify)"
    cfg = _read_json(p / "cfg.json")
    sd = _read_safetensors(p / "sae.safetensors")
    act = cfg.get("activation", "topk")
    if act != "topk":
        raise ValueError(f"{source}: activation is {act!r}; only 'topk' sparse coders can be converted")
    if cfg.get("skip_connection") or "W_skip" in sd:
        raise ValueError(f"{source}: has a skip connection (W_skip), which a TopKSAE cannot represent")
    W_enc = _tensor(sd, "encoder.weight", source, 2)
    n, d = W_enc.shape
    if cfg.get("d_in") is not None and _as_k(cfg["d_in"], source, "cfg d_in") != d:
        raise ValueError(
            f"{source}: cfg.json d_in={cfg['d_in']} but 'encoder.weight' has shape {tuple(W_enc.shape)} = [n, d]"
        )
    num_latents = cfg.get("num_latents") or 0
    if num_latents:
        if _as_k(num_latents, source, "cfg num_latents") != n:
            raise ValueError(f"{source}: cfg.json num_latents={num_latents} but 'encoder.weight' has {n} rows")
    elif cfg.get("expansion_factor") is not None:
        ef = cfg["expansion_factor"]
        if not isinstance(ef, numbers.Real) or isinstance(ef, bool) or d * ef != n:
            raise ValueError(
                f"{source}: cfg.json expansion_factor={ef!r} with d_in={d} does not give the {n} latents in the weights"
            )
    b_enc = _shaped(sd, "encoder.bias", (n,), "[num_latents]", source)
    W_dec = _shaped(sd, "W_dec", (n, d), "[num_latents, d_in]", source)
    b_dec = _shaped(sd, "b_dec", (d,), "[d_in]", source)
    if cfg.get("k") is None:
        raise ValueError(f"{source}: cfg.json has no 'k'")
    _check_finite(source, {"encoder.weight": W_enc, "encoder.bias": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    dtype = _target_dtype(W_enc, b_enc, W_dec, b_dec)
    if cfg.get("transcode"):
        b_enc = b_enc.double() + W_enc.double() @ b_dec.double()
    return _assemble(source, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_pre=b_dec, k=cfg["k"], dtype=dtype)


# -- SAELens ----------------------------------------------------------------------------------
def _saelens_k(cfg: dict, source: str) -> Any:
    arch = cfg.get("architecture", "standard")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{source}: cfg.json activation_fn_kwargs must be an object, got {kwargs!r}")
    if arch == "topk":
        pass
    elif arch == "standard" and cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk":
        pass  # older SAELens: a standard SAE with a TopK activation function
    else:
        act = cfg.get("activation_fn_str", cfg.get("activation_fn"))
        raise ValueError(
            f"{source}: architecture {arch!r}" + (f" with activation {act!r}" if act is not None else "")
            + " is not a top-k SAE; only 'topk' SAELens SAEs can be converted"
        )
    k = cfg.get("k")
    if k is None:
        k = kwargs.get("k")
    if k is None:
        raise ValueError(f"{source}: cfg.json has no k (neither 'k' nor 'activation_fn_kwargs': {{'k': ...}})")
    return k


def load_saelens(path: str | os.PathLike) -> TopKSAE:
    """Load a SAELens top-k SAE directory (``cfg.json`` + ``sae_weights.safetensors``).

    SAELens stores ``W_enc`` as [d, n] (transposed here), ``b_enc`` [n], ``W_dec`` [n, d],
    ``b_dec`` [d] and computes ``h = TopK(ReLU((x - b_dec) @ W_enc + b_enc))``,
    ``x_hat = h @ W_dec + b_dec``. Accepted configs: ``"architecture": "topk"`` (k top-level or in
    ``activation_fn_kwargs``) and the older ``"standard"`` architecture with
    ``"activation_fn_str": "topk"``; anything else is rejected, as is input normalisation
    (``normalize_activations`` other than ``"none"``). Folded exactly into the weights:

    * ``apply_b_dec_to_input: false`` (input not shifted): ``b_enc' = b_enc + b_dec @ W_enc``;
    * ``rescale_acts_by_decoder_norm: true`` (pre-activations times ``||W_dec[j]||``, decoded with
      ``h / ||W_dec[j]||``): encoder row j and ``b_enc[j]`` times the norm, decoder row j divided by it
      (the codes equal SAELens's activations);
    * a ``scaling_factor`` tensor (older fine-tuning scale, ``x_hat = (h * s) @ W_dec + b_dec``):
      decoder row j times ``s[j]`` (codes are then SAELens's activations before that scale).

    Otherwise decoder rows are kept as stored (not renormalised).
    """
    p = Path(path)
    source = f"{p} (saelens)"
    cfg = _read_json(p / "cfg.json")
    k = _saelens_k(cfg, source)
    norm = cfg.get("normalize_activations")
    if norm not in (None, "none"):
        raise ValueError(f"{source}: normalize_activations={norm!r} (input normalisation) is not supported")
    sd = _read_safetensors(p / "sae_weights.safetensors")
    W_enc_src = _tensor(sd, "W_enc", source, 2)
    d, n = W_enc_src.shape
    for key, want in (("d_in", d), ("d_sae", n)):
        if cfg.get(key) is not None and _as_k(cfg[key], source, f"cfg {key}") != want:
            raise ValueError(
                f"{source}: cfg.json {key}={cfg[key]} but 'W_enc' has shape {tuple(W_enc_src.shape)} = [d_in, d_sae]"
            )
    b_enc = _shaped(sd, "b_enc", (n,), "[d_sae]", source)
    W_dec = _shaped(sd, "W_dec", (n, d), "[d_sae, d_in]", source)
    b_dec = _shaped(sd, "b_dec", (d,), "[d_in]", source)
    tensors = {"W_enc": W_enc_src, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    scale = None
    if "scaling_factor" in sd:
        scale = _shaped(sd, "scaling_factor", (n,), "[d_sae]", source)
        tensors["scaling_factor"] = scale
    _check_finite(source, tensors)
    dtype = _target_dtype(*tensors.values())
    W_enc = W_enc_src.t()
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm", False))
    if scale is not None or rescale or not apply_b_dec:
        W_enc, b_enc, b_dec64 = W_enc.double(), b_enc.double(), b_dec.double()
        W_dec64 = W_dec.double()
        if rescale:
            norms = W_dec64.norm(dim=1)
            if not torch.all(norms > 0):
                zero = int((norms == 0).sum())
                raise ValueError(f"{source}: rescale_acts_by_decoder_norm with {zero} zero decoder row(s)")
            W_enc, b_enc = W_enc * norms[:, None], b_enc * norms
            W_dec64 = W_dec64 / norms[:, None]
        if scale is not None:
            W_dec64 = W_dec64 * scale.double()[:, None]
        if not apply_b_dec:  # TopKSAE subtracts b_pre = b_dec before encoding: add it back
            b_enc = b_enc + W_enc @ b_dec64
        W_dec = W_dec64
    return _assemble(source, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_pre=b_dec, k=k, dtype=dtype)


# -- dispatcher -------------------------------------------------------------------------------
def _is_fastsae_dir(p: Path) -> bool:
    try:
        with open(p / "config.json", encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == "fastsae.TopKSAE"


def _detect_dir(p: Path) -> str:
    has = lambda name: (p / name).is_file()  # noqa: E731
    if has("config.json") and _is_fastsae_dir(p):  # TopKSAE.load names a missing sae.safetensors
        return "fastsae"
    if has("sae.safetensors") and has("cfg.json"):
        return "sparsify"
    if has("sae_weights.safetensors"):
        return "saelens"
    hint = ""
    try:
        subs = sorted(c.name for c in p.iterdir() if c.is_dir() and (
            (c / "sae.safetensors").is_file() or (c / "sae_weights.safetensors").is_file()))
    except OSError:
        subs = []
    if subs:
        hint = f" (it holds SAE subdirectories, e.g. {', '.join(subs[:3])}: pass one of those)"
    raise ValueError(f"{p}: directory not recognised as an SAE checkpoint{hint}; {_KNOWN}")


def load_sae(path_or_dict: Mapping | str | os.PathLike, *, format: str = "auto", k: int | None = None) -> TopKSAE:
    """Load a top-k SAE checkpoint in any supported format as a :class:`TopKSAE`.

    ``format="auto"`` detects it: a directory with ``config.json`` (a fastsae config) +
    ``sae.safetensors`` -> :meth:`TopKSAE.load`; ``cfg.json`` + ``sae.safetensors`` -> sparsify;
    ``sae_weights.safetensors`` -> SAELens; a ``.pth``/``.pt`` file -> OpenAI when its state dict
    stores activation metadata (``activation``/``activation_state_dict``), else the paper format
    (k from ``k`` or the file name); a mapping -> OpenAI. A path to one of the weight/config files
    inside a directory stands for that directory. Otherwise pass ``format`` (one of
    :data:`FORMATS`). ``k``, if given, overrides the stored k (for every format). A fastsae
    directory keeps its standardisation (``decode`` then returns the input space, as for any
    :class:`TopKSAE`); every other format comes without one.
    """
    check_choice(format, "format", ("auto", *FORMATS))
    if isinstance(path_or_dict, Mapping):
        if format in ("auto", "openai"):
            return load_openai_sae(path_or_dict, k=k)
        if format == "paper":
            source = "paper state dict"
            return _paper_from_state_dict(_state_dict(path_or_dict, source), k, source, None)
        raise ValueError(f"format {format!r} needs a path, not a state dict")
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise ArgumentTypeError(f"expected a path or a state dict, got {type(path_or_dict).__name__}")
    p = Path(path_or_dict)
    if not p.exists():
        raise ValueError(f"{p}: no such file or directory")
    if p.is_file() and p.name in ("config.json", "cfg.json", "sae.safetensors", "sae_weights.safetensors"):
        p = p.parent
    if format == "auto":
        if p.is_dir():
            format = _detect_dir(p)
        elif p.suffix.lower() in (".pth", ".pt"):
            source = str(p)
            sd = _state_dict(_read_pth(p), source)
            if "encoder.weight" not in sd and "pre_bias" not in sd:
                raise ValueError(
                    f"{source}: not a paper/OpenAI top-k SAE state dict (no 'encoder.weight' or 'pre_bias'); {_KNOWN}"
                )
            if _has_activation_metadata(sd):
                return _convert_linear_layout(sd, _require_openai_k(sd, k, source), source)
            return _paper_from_state_dict(sd, k, source, p.name)
        else:
            raise ValueError(f"{p}: file not recognised as an SAE checkpoint; {_KNOWN}")
    if format == "paper":
        return load_paper_pth(p, k=k)
    if format == "openai":
        return load_openai_sae(p, k=k)
    if format == "sparsify":
        return _override_k(load_sparsify(p), k, str(p))
    if format == "saelens":
        return _override_k(load_saelens(p), k, str(p))
    return _override_k(TopKSAE.load(p), k, str(p))
