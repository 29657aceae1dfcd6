"""The top-k sparse autoencoder (paper appendix A.1).

    h     = TopK(ReLU(W_enc (x - b_pre) + b_enc))      k active latents per example
    x_hat = W_dec^T h + b_pre                          b_dec is tied to b_pre

``W_enc`` and ``W_dec`` are both ``[n, d]`` (one row per latent) and the decoder rows are kept
at unit norm by the trainer. Inputs may be standardised (zero mean, unit variance per
dimension, the paper's default); the statistics live in the model's buffers and checkpoint so
new data gets the same transform. ``encode``/``forward`` take raw inputs; reconstructions are
in the standardised space (``destandardize`` maps them back).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import torch
from torch import nn

from . import ops
from .ops import SparseCode
from .rundir import atomic_write as _atomic_write  # noqa: F401 (also used by trainer, sweeps)

FORMAT_VERSION = 1


class SAEOutput(NamedTuple):
    """What ``sae(x)`` returns."""

    recon: torch.Tensor
    """``[B, d]`` reconstruction, in the (standardised) space the SAE works in."""
    code: SparseCode
    """The top-k code of each example."""
    target: torch.Tensor
    """``[B, d]`` the (standardised) input the reconstruction is compared with."""
    mse: torch.Tensor
    """Mean squared error over the batch (scalar)."""
    nmse: torch.Tensor
    """``mse / mse_scale`` (the paper's normalised MSE) when a scale is given, else ``mse``."""


class TopKSAE(nn.Module):
    def __init__(self, d_in: int, n_latents: int, k: int, *, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        for name, v in (("d_in", d_in), ("n_latents", n_latents), ("k", k)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if k > n_latents:
            raise ValueError(f"k={k} must not exceed n_latents={n_latents}")
        self.d_in, self.n_latents, self.k = d_in, n_latents, k
        f = dict(dtype=dtype, device=device)
        self.b_pre = nn.Parameter(torch.zeros(d_in, **f))
        self.W_enc = nn.Parameter(torch.empty(n_latents, d_in, **f))
        self.b_enc = nn.Parameter(torch.zeros(n_latents, **f))
        self.W_dec = nn.Parameter(torch.empty(n_latents, d_in, **f))
        self.register_buffer("data_mean", torch.zeros(d_in, **f))
        self.register_buffer("data_std", torch.ones(d_in, **f))
        self.register_buffer("standardized", torch.zeros((), dtype=torch.bool, device=device))
        # Host-side copy of the flag, so that (de)standardising a batch never waits for the GPU
        # to read it; kept in step by set_standardization and after load_state_dict.
        self._standardized = False
        self.register_load_state_dict_post_hook(lambda m, _keys: setattr(m, "_standardized", bool(m.standardized)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random unit decoder rows; encoder rows parallel to them (A.1), scaled so that an
        input of norm sqrt(d) (standardised data) gives pre-activations of order 1."""
        w = torch.randn(self.n_latents, self.d_in, generator=generator, dtype=torch.float64)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w / self.d_in**0.5)
        self.b_enc.zero_()
        self.b_pre.zero_()

    @property
    def b_dec(self) -> torch.Tensor:
        return self.b_pre

    # -- data transform ------------------------------------------------------------------------
    @torch.no_grad()
    def set_standardization(self, mean: torch.Tensor | None, std: torch.Tensor | None) -> None:
        """Store per-dimension statistics (``None`` turns standardisation off)."""
        if mean is None:
            self.data_mean.zero_()
            self.data_std.fill_(1)
            self.standardized.fill_(False)
            self._standardized = False
            return
        if not torch.all(torch.as_tensor(std) > 0):
            raise ValueError("standard deviations must be > 0")
        self.data_mean.copy_(torch.as_tensor(mean))
        self.data_std.copy_(torch.as_tensor(std))
        self.standardized.fill_(True)
        self._standardized = True

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.data_mean) / self.data_std if self._standardized else x

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.data_std + self.data_mean if self._standardized else x

    # -- the model -----------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected inputs [B, {self.d_in}], got shape {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, *, standardized: bool = False) -> SparseCode:
        """Top-k code of raw inputs ``x`` ``[B, d]`` (pass ``standardized=True`` if already transformed)."""
        self._check_input(x)
        z = x.to(self.W_enc.dtype) if standardized else self.standardize(x.to(self.W_enc.dtype))
        return ops.topk_encode(z - self.b_pre, self.W_enc, self.b_enc, self.k)

    def decode(self, code: SparseCode) -> torch.Tensor:
        """``[B, d]`` reconstruction (standardised space) of a :class:`SparseCode`."""
        return ops.sparse_decode(code.indices, code.values, self.W_dec, self.b_pre)

    def forward(self, x: torch.Tensor, *, mse_scale: float | torch.Tensor | None = None,
                standardized: bool = False) -> SAEOutput:
        self._check_input(x)
        target = x.to(self.W_enc.dtype) if standardized else self.standardize(x.to(self.W_enc.dtype))
        code = ops.topk_encode(target - self.b_pre, self.W_enc, self.b_enc, self.k)
        recon = self.decode(code)
        mse = (recon - target).pow(2).sum(dim=1).mean()
        nmse = mse if mse_scale is None else mse / mse_scale
        return SAEOutput(recon, code, target, mse, nmse)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).tiny))

    # -- persistence ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {"format": "fastsae.TopKSAE", "version": FORMAT_VERSION, "d_in": self.d_in,
                "n_latents": self.n_latents, "k": self.k, "dtype": str(self.W_enc.dtype).removeprefix("torch.")}

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (a directory): ``sae.safetensors`` + ``config.json``, each atomically."""
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        _atomic_write(os.path.join(path, "sae.safetensors"), lambda tmp: save_file(tensors, tmp))
        text = json.dumps(self.config(), indent=2) + "\n"
        _atomic_write(os.path.join(path, "config.json"), lambda tmp: _write_text(tmp, text))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device=None) -> "TopKSAE":
        """Read a directory written by :meth:`save`. Never unpickles anything.

        Everything is checked before it is used, and anything damaged is a ``ValueError`` naming
        the file: ``config.json`` (the format, version :data:`FORMAT_VERSION`, integer
        ``d_in``/``n_latents``/``k`` with ``1 <= k <= n_latents``, a floating dtype by name);
        the ``sae.safetensors`` header (exactly the model's tensors, each of the config's shape
        and dtype), before any tensor is read; then the values (finite weights and statistics,
        ``data_std > 0``)."""
        from safetensors import SafetensorError, safe_open

        cfg_path = os.path.join(path, "config.json")
        st_path = os.path.join(path, "sae.safetensors")
        try:
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{cfg_path}: not a loadable fastsae checkpoint ({type(e).__name__}: {e})") from e
        d_in, n_latents, k, dtype = _parse_config(cfg, cfg_path)
        # The model defines which tensors a checkpoint holds: its (freshly initialised) state
        # dict is the template the header is checked against.
        sae = cls(d_in, n_latents, k, dtype=dtype, device=device)
        expected = {name: (tuple(t.shape), t.dtype) for name, t in sae.state_dict().items()}
        try:
            with safe_open(st_path, framework="pt", device="cpu") as f:
                _check_header(f, expected, st_path)
                state = {name: f.get_tensor(name) for name in expected}
        except (OSError, SafetensorError) as e:
            raise ValueError(f"{st_path}: not a loadable fastsae checkpoint ({type(e).__name__}: {e})") from e
        _check_values(state, st_path)
        sae.load_state_dict(state, strict=True)
        return sae

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, n_latents={self.n_latents}, k={self.k}"


# -- checkpoint validation (TopKSAE.load) ---------------------------------------------------------
# Names, not getattr(torch, ...): a config must not be able to pick an arbitrary torch attribute.
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
                       "BOOL": torch.bool}


def _bad(path: str, reason: str) -> ValueError:
    return ValueError(f"{path}: not a loadable fastsae checkpoint: {reason}")


def _parse_config(cfg, path: str) -> tuple[int, int, int, torch.dtype]:
    """``(d_in, n_latents, k, dtype)`` of a config.json, every value checked (no coercion:
    ``"k": 2.7`` is an error, not 2)."""
    if not isinstance(cfg, dict) or cfg.get("format") != "fastsae.TopKSAE":
        raise _bad(path, "not a fastsae.TopKSAE config")
    version = cfg.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise _bad(path, f"unknown format version {version!r} (this fastsae reads version {FORMAT_VERSION})")
    sizes = []
    for key in ("d_in", "n_latents", "k"):
        if key not in cfg:
            raise _bad(path, f"{key!r} is missing")
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(path, f"{key} must be an integer, got {v!r}")
        if v < 1:
            raise _bad(path, f"{key} must be >= 1, got {v}")
        sizes.append(v)
    d_in, n_latents, k = sizes
    if k > n_latents:
        raise _bad(path, f"k={k} exceeds n_latents={n_latents}")
    name = cfg.get("dtype", "float32")  # the first files were all float32
    if not isinstance(name, str) or name not in _DTYPES:
        raise _bad(path, f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return d_in, n_latents, k, _DTYPES[name]


def _check_header(f, expected: dict, path: str) -> None:
    """Exactly the expected tensors, each of the expected shape and dtype (from the header:
    nothing is read yet)."""
    names = set(f.keys())
    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
    if missing:
        raise _bad(path, f"missing tensor(s) {', '.join(missing)}")
    if extra:
        raise _bad(path, f"unexpected tensor(s) {', '.join(extra)}")
    for name, (shape, dtype) in expected.items():
        s = f.get_slice(name)
        got_shape, got_dtype = tuple(s.get_shape()), _SAFETENSORS_DTYPES.get(s.get_dtype(), s.get_dtype())
        if got_shape != shape:
            raise _bad(path, f"tensor {name} has shape {got_shape}, the config implies {shape}")
        if got_dtype != dtype:
            raise _bad(path, f"tensor {name} has dtype {got_dtype}, the config implies {dtype}")


def _check_values(state: dict, path: str) -> None:
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise _bad(path, f"tensor {name} has {bad} non-finite (NaN/inf) value(s)")
    std = state["data_std"]
    if not bool((std > 0).all()):
        raise _bad(path, f"data_std must be > 0, got {float(std.min())} at dimension {int(std.argmin())}")


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
