"""The top-k sparse autoencoder (paper appendix A.1).

    z     = (x - mean) / std                           standardisation (the paper's default)
    h     = TopK(ReLU(W_enc (z - b_pre) + b_enc))      k active latents per example
    z_hat = W_dec^T h + b_pre                          b_dec is tied to b_pre
    x_hat = z_hat * std + mean                         back in the input space

``W_enc`` and ``W_dec`` are both ``[n, d]`` (one row per latent) and the decoder rows are kept
at unit norm by the trainer. The per-dimension statistics live in the model's buffers and
checkpoint so new data gets the same transform; without them (``set_standardization(None,
None)``, every converted foreign checkpoint) the transform is the identity.

Two spaces, one rule: the public methods speak the space of what they are given.

* the *input space* (raw embeddings, what the user holds): ``encode(x)``, ``decode(code)``
  and ``sae(x).recon`` take and return it by default, so ``sae.decode(sae.encode(x))``
  approximates ``x``; ``feature_directions()`` gives each latent's direction there;
* the *standardised space* (the SAE's own, where ``W_dec``, ``b_pre`` and the training loss
  live): ``encode(z, standardized=True)``, ``decode(code, standardized=True)``,
  ``sae(z, standardized=True)`` and the ``*_standardized`` fields of :class:`SAEOutput`.

``mse`` is always measured in the standardised space (it is what the trainer minimises) and
``nmse`` is always a normalised MSE, see :class:`SAEOutput`.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, NamedTuple

import torch
from torch import nn

from .. import ops
from .._checks import check_int, check_number
from ..io import atomic_write, atomic_write_text
from ..ops import SparseCode

FORMAT_VERSION = 1


class SAEOutput(NamedTuple):
    """What ``sae(x)`` returns.

    ``recon`` and ``target`` are in the space of the ``x`` passed: the input space by default,
    the standardised space when the caller passes ``standardized=True`` (the input is then
    already standardised and the two pairs of fields coincide). ``mse`` and ``nmse`` are
    measured in the standardised space in both cases, on ``recon_standardized`` against
    ``target_standardized``.
    """

    recon: torch.Tensor
    """``[B, d]`` reconstruction in the space of the input (``destandardize`` of ``recon_standardized``)."""
    code: SparseCode
    """The top-k code of each example."""
    target: torch.Tensor
    """``[B, d]`` the input as given (cast to the model's dtype)."""
    mse: torch.Tensor
    """Scalar ``mean_b ||target_standardized_b - recon_standardized_b||^2``: the squared error
    summed over dimensions and averaged over the batch, in the standardised space (the
    quantity the trainer minimises, before dividing by its ``mse_scale``)."""
    nmse: torch.Tensor
    """Scalar normalised MSE (paper appendix A: the MSE divided by the error of predicting the
    mean), in the standardised space: ``mse / mse_scale`` when ``mse_scale`` is given (the
    trainer passes the training set's total variance around its mean, a global factor), else
    ``mse / mean_b ||target_standardized_b - mean_b' target_standardized_b'||^2`` (the batch's
    own total variance around its mean). That variance is 0 for a batch of one example or of
    identical rows (taken as 0 when it is below the dtype's eps times the batch's mean squared
    norm, i.e. rounding): ``nmse`` is then NaN (not inf, and without a host sync); pass
    ``mse_scale`` to normalise such batches."""
    recon_standardized: torch.Tensor
    """``[B, d]`` reconstruction in the standardised space (``W_dec^T h + b_pre``)."""
    target_standardized: torch.Tensor
    """``[B, d]`` the standardised input the reconstruction is compared with."""
    aux_loss: torch.Tensor | None = None
    """Scalar AuxK loss (paper appendix A.2), unweighted: the top-``k_aux`` dead latents'
    reconstruction of the main residual ``target_standardized - recon_standardized``
    (detached), its squared error summed over dimensions and averaged over the batch, divided
    by the residual's total variance around its mean (batch statistics, summed over ranks by
    ``reduce``). Its gradient reaches the dead latents' encoder and decoder rows only (and
    ``b_pre`` through the encoder's input). ``None``
    without ``dead_mask``; a zero scalar when ``dead_mask`` marks no latent."""


class TopKSAE(nn.Module):
    def __init__(self, d_in: int, n_latents: int, k: int, *, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        d_in, n_latents, k = (check_int(v, name, min=1) for name, v in (("d_in", d_in), ("n_latents", n_latents), ("k", k)))
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
        """Input space -> the SAE's standardised space (the identity without statistics)."""
        return (x - self.data_mean) / self.data_std if self._standardized else x

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised space -> input space (for points, not directions: it adds the mean)."""
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

    def decode(self, code: SparseCode, *, standardized: bool = False) -> torch.Tensor:
        """``[B, d]`` reconstruction of a :class:`SparseCode`, in the input space (the space
        :meth:`encode` takes by default), so ``decode(encode(x))`` approximates ``x``.

        ``standardized=True`` returns it in the SAE's own standardised space instead
        (``W_dec^T h + b_pre``), mirroring ``encode(z, standardized=True)``. Both are the same
        for a model without standardisation (e.g. every converted foreign checkpoint)."""
        recon = ops.sparse_decode(code.indices, code.values, self.W_dec, self.b_pre)
        return recon if standardized else self.destandardize(recon)

    def forward(self, x: torch.Tensor, *, mse_scale: float | torch.Tensor | None = None,
                standardized: bool = False, dead_mask: torch.Tensor | None = None, k_aux: int | None = None,
                compute_dtype: torch.dtype | None = None, project_grad: bool = False,
                reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> SAEOutput:
        """Encode and decode ``x`` ``[B, d]``, with the losses; see :class:`SAEOutput` for the
        fields and their spaces. This is the one forward of the model: inference and the
        trainer's step both call it.

        ``standardized=True``: ``x`` is already standardised (``recon`` is then in that space
        too). ``mse_scale``: the normaliser of ``nmse`` (a positive number or a scalar tensor,
        in the standardised space); None normalises by the batch's variance.

        Training options (the trainer's step):

        * ``dead_mask`` (``[n]`` bool) and ``k_aux``: compute ``aux_loss``, the AuxK loss of the
          top-``min(k_aux, dead count)`` latents among the dead ones (one encoder pass selects
          both codes; ``k_aux`` defaults to ``2k``, at most n). Reading the dead count is a host
          synchronisation.
        * ``compute_dtype`` (e.g. ``torch.bfloat16``): mixed precision. The encode and decode
          see copies of ``W_enc``, ``b_enc``, ``W_dec`` in that dtype (made per call, so
          autograd hands gradients in the weights' dtype back to the parameters); ``b_pre``,
          the reconstruction, the losses stay in the weights' dtype (``b_pre`` is added in full
          precision). None: the weights' dtype.
        * ``project_grad``: the decode's backward removes each touched decoder row's gradient
          component along the row (``ops.sparse_decode(..., project_grad=True)``, fused on the
          Triton path), for the main and the AuxK decode. Not with a ``compute_dtype`` other
          than the weights' (projecting along bf16-rounded rows would leave a parallel
          component: project the full-precision gradient instead).
        * ``reduce``: a function summing a tensor over data-parallel ranks in place and
          returning it (the trainer passes a ``torch.distributed`` all-reduce), applied to the
          AuxK residual statistics so that the loss is that of the global batch. None: this
          process's batch is the whole batch.
        """
        self._check_input(x)
        if mse_scale is not None and not isinstance(mse_scale, torch.Tensor):
            check_number(mse_scale, "mse_scale", min=0, min_open=True)
        dtype = self.W_enc.dtype
        cdtype = dtype if compute_dtype is None else compute_dtype
        mixed = cdtype != dtype
        if project_grad and mixed:
            raise ValueError("project_grad needs the weights' dtype as compute_dtype "
                             f"(weights {dtype}, compute_dtype {cdtype})")
        x = x.to(dtype)
        target_z = x if standardized else self.standardize(x)
        z = (target_z - self.b_pre).to(cdtype)
        W_enc, b_enc, W_dec = (p.to(cdtype) for p in (self.W_enc, self.b_enc, self.W_dec))
        n_dead = 0 if dead_mask is None else int(dead_mask.sum())
        if n_dead:
            # one encoder pass gives the code and the top-k_aux among dead latents
            k_aux = min(self.n_latents, 2 * self.k) if k_aux is None else check_int(k_aux, "k_aux", min=1)
            code, aux_code = ops.topk_encode_aux(z, W_enc, b_enc, self.k, dead_mask, min(k_aux, n_dead))
        else:
            code = ops.topk_encode(z, W_enc, b_enc, self.k)
        if mixed:  # b_pre added in full precision
            recon_z = ops.sparse_decode(code.indices, code.values, W_dec).to(dtype) + self.b_pre
        elif project_grad:
            recon_z = ops.sparse_decode(code.indices, code.values, W_dec, self.b_pre, project_grad=True)
        else:
            recon_z = ops.sparse_decode(code.indices, code.values, W_dec, self.b_pre)
        mse = (recon_z - target_z).pow(2).sum(dim=1).mean()
        if mse_scale is None:
            var = (target_z - target_z.mean(dim=0)).pow(2).sum(dim=1).mean()
            # "no variance" up to rounding: identical rows leave ~eps^2 |z|^2 behind, not 0
            ok = var > torch.finfo(var.dtype).eps * target_z.pow(2).sum(dim=1).mean()
            # divide by 1 where var == 0 so the discarded branch has no inf/NaN gradient either
            nmse = torch.where(ok, mse / torch.where(ok, var, torch.ones_like(var)), torch.full_like(mse, math.nan))
        else:
            nmse = mse / mse_scale
        aux = None
        if dead_mask is not None:
            aux = torch.zeros((), dtype=nmse.dtype, device=nmse.device)
            if n_dead:
                aux = _aux_loss(aux_code, W_dec, (target_z - recon_z).detach(), project_grad, reduce)
        recon = recon_z if standardized else self.destandardize(recon_z)
        return SAEOutput(recon, code, x, mse, nmse, recon_z, target_z, aux)

    @torch.no_grad()
    def feature_directions(self) -> torch.Tensor:
        """``[n, d]`` each latent's decoder direction in the input space, as unit rows.

        Latent ``j`` adds ``h_j * W_dec[j]`` to the standardised reconstruction, which is
        ``h_j * W_dec[j] * std`` in the input space, so this is ``W_dec · diag(data_std)`` with
        rows normalised (an all-zero row stays zero). Without standardisation it is just the
        normalised ``W_dec``. Compare decoders of SAEs with different standardisations (other
        corpora), or a decoder with anything outside the SAE (planted features, embeddings),
        through this; ``W_dec`` itself is only comparable within one standardised space.
        Detached, in the weights' dtype (at least float32)."""
        dtype = torch.promote_types(self.W_dec.dtype, torch.float32)
        w = self.W_dec.detach().to(dtype)
        if self._standardized:
            w = w * self.data_std.to(dtype)
        return w / torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)

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
        atomic_write(os.path.join(path, "sae.safetensors"), lambda tmp: save_file(tensors, tmp))
        atomic_write_text(os.path.join(path, "config.json"), json.dumps(self.config(), indent=2) + "\n")

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


def _aux_loss(aux_code: SparseCode, W_dec: torch.Tensor, residual: torch.Tensor, project_grad: bool,
              reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """AuxK (:attr:`SAEOutput.aux_loss`): the top-k_aux dead latents reconstruct the main
    model's residual, normalised per batch by the residual's own variance around its
    (global-batch) mean."""
    aux = ops.sparse_decode(aux_code.indices, aux_code.values, W_dec, project_grad=project_grad).to(residual.dtype)
    # Batch statistics summed over all ranks so that data parallelism changes nothing.
    stats = torch.cat([residual.sum(0), residual.pow(2).sum().reshape(1),
                       torch.tensor([residual.shape[0]], dtype=residual.dtype, device=residual.device)])
    stats = stats.detach().clone()
    if reduce is not None:
        stats = reduce(stats)
    count = stats[-1]
    mean = stats[:-2] / count
    var = (stats[-2] / count - mean.pow(2).sum()).clamp_min(1e-12)
    return (aux - residual).pow(2).sum(dim=1).mean() / var


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
