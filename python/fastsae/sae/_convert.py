"""Reading and validating other projects' checkpoint files, for :mod:`fastsae.sae.formats`:
the file readers (nothing is ever unpickled) and the checks every loader shares, each raising a
``ValueError`` that names the source and the problem."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .model import TopKSAE


# -- reading files (never unpickling) ---------------------------------------------------------
def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return first if len(first) <= limit else first[:limit] + "..."


def _read_pth(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt/truncated archives, disallowed (non-tensor) pickled objects, ...
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: {_short(e)})"
        ) from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise ValueError(f"{path}: cannot be read as safetensors ({type(e).__name__}: {_short(e)})") from e


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot be read as JSON ({type(e).__name__}: {_short(e)})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


# -- validation helpers -----------------------------------------------------------------------
def _state_dict(obj: Any, source: str, anchor: str = "encoder.weight") -> Mapping:
    """The tensor mapping inside a loaded checkpoint: descends into ``state_dict``/``model``
    containers and strips a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefix."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    sd: Mapping = obj
    for _ in range(4):
        if anchor in sd:
            break
        prefix = next((p for p in ("module.", "_orig_mod.") if p + anchor in sd), None)
        if prefix is not None:
            sd = {key[len(prefix):] if isinstance(key, str) and key.startswith(prefix) else key: v
                  for key, v in sd.items()}
            continue
        containers = ("state_dict", "model", "model_state_dict")
        nested = next((sd[c] for c in containers if isinstance(sd.get(c), Mapping)), None)
        if nested is None:
            break
        sd = nested
    return sd


def _tensor(sd: Mapping, key: str, source: str, ndim: int) -> torch.Tensor:
    if key not in sd:
        have = sorted(str(k) for k, v in sd.items() if isinstance(v, torch.Tensor))
        listing = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
        raise ValueError(f"{source}: missing tensor {key!r} (tensors present: {listing or 'none'})")
    t = sd[key]
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        what = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{source}: {key!r} must be a floating-point tensor, got {what}")
    if t.dim() != ndim:
        raise ValueError(f"{source}: {key!r} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    return t.detach()


def _expect_shape(t: torch.Tensor, shape: tuple[int, ...], key: str, layout: str, source: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{source}: {key!r} has shape {tuple(t.shape)}, expected {shape} = {layout}")


def _shaped(sd: Mapping, key: str, shape: tuple[int, ...], layout: str, source: str) -> torch.Tensor:
    """The floating-point tensor ``key`` of ``sd``, of exactly ``shape`` (``layout`` names it in errors)."""
    t = _tensor(sd, key, source, len(shape))
    _expect_shape(t, shape, key, layout, source)
    return t


def _check_finite(source: str, tensors: Mapping[str, torch.Tensor]) -> None:
    for key, t in tensors.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"{source}: {key!r} has {bad} non-finite (NaN/inf) value(s)")


def _as_k(value: Any, source: str, origin: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{source}: {origin} must be a single integer, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{source}: {origin} must be an integer, got {value!r}")
    if not isinstance(value, numbers.Integral):
        if not float(value).is_integer():
            raise ValueError(f"{source}: {origin} must be an integer, got {value!r}")
    return int(value)


def _check_k(k: Any, n: int, source: str, origin: str = "k") -> int:
    k = _as_k(k, source, origin)
    if not 1 <= k <= n:
        raise ValueError(f"{source}: {origin}={k} must be in [1, n_latents={n}]")
    return k


def _target_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _assemble(source: str, *, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
              b_pre: torch.Tensor, k: Any, dtype: torch.dtype) -> TopKSAE:
    """A TopKSAE holding exactly these weights (fastsae orientation: W_enc/W_dec ``[n, d]``)."""
    n, d = W_enc.shape
    k = _check_k(k, n, source)
    sae = TopKSAE(d, n, k, dtype=dtype)
    with torch.no_grad():  # direct assignment: no renormalisation of the decoder rows
        sae.W_enc.copy_(W_enc.to(dtype))
        sae.b_enc.copy_(b_enc.to(dtype))
        sae.W_dec.copy_(W_dec.to(dtype))
        sae.b_pre.copy_(b_pre.to(dtype))
    for name, p in sae.named_parameters():
        if not torch.isfinite(p).all():  # a folded weight overflowed the target dtype
            raise ValueError(f"{source}: converted {name} is not finite in {dtype}")
    return sae


def _override_k(sae: TopKSAE, k: Any, source: str) -> TopKSAE:
    if k is not None:
        sae.k = _check_k(k, sae.n_latents, source)
    return sae
