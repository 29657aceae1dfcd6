"""The Triton path checks itself: the first call of each kernel configuration on a device is
compared with the torch path on a slice of the same problem.

No CI machine has a GPU: the kernels are verified there under the interpreter and by
ahead-of-time compilation only, so the first real GPU is where a miscompilation or a launch
problem would show. :func:`guarded` wraps every kernel call of the autograd Functions in
:mod:`.encode_kernels` and :mod:`.decode_kernels`:

* a configuration is what selects one set of compiled kernels (op, forward or backward,
  device, dtype, the launcher's block sizes / plan; see the ``*_config`` functions of the
  kernel modules);
* on its first call the kernels run as usual, then a few rows of the same problem (spread over
  the batch: first, last and between) go through a float64 torch reference and are compared:
  forward outputs row by row (top-k selections tie-robustly: the reference value of the chosen
  set, never the ids), backward gradients by running the backward kernels on the slice's rows
  (latents renumbered to the ones the slice touches) against the slice's float64 gradients;
  tolerances follow the dtype (its rounding of the output, plus fp32 accumulation, or TF32's
  when torch allows it);
* an exception from the kernels (compile or launch error) or a mismatch warns once with
  :class:`KernelSelfCheckWarning`, naming the configuration and how to report it, and the call
  returns the torch path's result; that configuration takes the torch path from then on. A
  passing configuration is not checked again. Out-of-memory errors propagate (a resource, not
  a kernel, problem).

``FASTSAE_SELFCHECK``: unset, on for CUDA tensors and off under the CPU interpreter (the tests'
kernels are checked against float64 directly, and the check would slow them); ``1`` turns it
on everywhere, ``0`` off (kernels run unchecked, configurations that failed are tried again).
:func:`status` and :func:`reset` (``fastsae.ops.selfcheck_status``/``selfcheck_reset``) show
and clear the record.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Callable

import torch


class KernelSelfCheckWarning(RuntimeWarning):
    """A Triton kernel configuration failed its first-call check; the torch path replaces it."""


_STATE: dict[str, str] = {}
_LOCK = threading.Lock()
SLICE_ROWS = 6
"""Rows of a batch compared with the torch reference on a configuration's first call."""


def enabled(device: torch.device) -> bool:
    env = os.environ.get("FASTSAE_SELFCHECK", "").strip().lower()
    if env in ("", "auto"):
        return torch.device(device).type == "cuda"
    if env in ("1", "on", "true", "yes"):
        return True
    if env in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"FASTSAE_SELFCHECK must be 0 or 1, got {env!r}")


def status() -> dict[str, str]:
    """Configuration -> ``"passed"`` or ``"failed: <why>"``, for every configuration checked."""
    with _LOCK:
        return dict(_STATE)


def reset() -> None:
    """Forget every result: each configuration is checked again on its next call."""
    with _LOCK:
        _STATE.clear()


def guarded(config: str, device: torch.device, kernel: Callable, check: Callable, fallback: Callable):
    """``kernel()``, checked by ``check(result)`` (``None`` if it agrees with the torch path,
    else what differs) on the configuration's first call; ``fallback()`` (the torch path) where
    the configuration failed, now or before."""
    if not enabled(device):
        return kernel()
    state = _STATE.get(config)
    if state == "passed":
        return kernel()
    if state is not None:
        return fallback()
    try:
        out = kernel()
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any compile or launch error sends this configuration to torch
        _fail(config, device, f"the kernel raised {type(e).__name__}: {_short(e)}")
        return fallback()
    try:
        problem = check(out)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - output the check cannot even read (e.g. ids out of range)
        problem = f"checking the output raised {type(e).__name__}: {_short(e)}"
    if problem is None:
        with _LOCK:
            _STATE[config] = "passed"
        return out
    _fail(config, device, problem)
    return fallback()


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + " ..."


def _fail(config: str, device: torch.device, why: str) -> None:
    with _LOCK:
        first = config not in _STATE
        _STATE[config] = f"failed: {why}"
    if not first:
        return
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover - the kernels need triton
        triton_version = "?"
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "Triton interpreter"
    warnings.warn(
        f"fastsae: the Triton kernels failed their first-call self-check for [{config}] on {dev} ({gpu}): "
        f"{why}. This configuration uses the torch path from now on (correct, slower). Please report it: "
        f"open an issue on the fastsae repository with this message (torch {torch.__version__}, "
        f"triton {triton_version}). FASTSAE_SELFCHECK=0 skips the check.",
        KernelSelfCheckWarning, stacklevel=4)


# ------------------------------------------------------------------------------------------------
# Comparisons with float64 torch references. Tolerance of an entry: the output dtype's rounding
# relative to the value (eps_val) plus fp32 accumulation relative to the magnitude bound (the
# same sum over absolute values; eps_acc).

EPS_VAL = {torch.float32: 2.0**-22, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}
EPS_ACC = 2.0**-13
EPS_ACC_TF32 = 2.0**-9


def check_rows(B: int, device) -> torch.Tensor:
    """The rows compared: first, last and evenly between (different row blocks of a launch)."""
    r = min(B, SLICE_ROWS)
    return torch.linspace(0, B - 1, r, dtype=torch.float64).round().long().unique().to(device)


def _close(name: str, got: torch.Tensor, ref: torch.Tensor, tol: torch.Tensor) -> str | None:
    got = got.double()
    bad = ~((got - ref).abs() <= tol)  # NaN in got counts as bad
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0])
        return (f"{name} differs from the torch path at flat position {i}: {got.reshape(-1)[i].item():.6g} "
                f"vs {ref.reshape(-1)[i].item():.6g} (tolerance {tol.reshape(-1)[i].item():.3g})")
    return None


def _check_topk(name: str, ref: torch.Tensor, tol: torch.Tensor, idx: torch.Tensor, val: torch.Tensor) -> str | None:
    """``idx``/``val`` ([r, kk]) are a top-kk of ``ref`` ([r, n] float64 ReLU'd, -inf where a
    latent may not be chosen), up to ``tol`` ([r, n]): the reference value of the chosen set,
    not its ids, so ties at the dtype's resolution may go either way."""
    r, n = ref.shape
    val = val.double()
    if not bool(torch.isfinite(val).all()) or bool((val < 0).any()):
        return f"{name}: values not finite or negative"
    if bool((val[:, :-1] < val[:, 1:]).any()):
        return f"{name}: values not sorted largest first"
    if bool(((idx < 0) | (idx >= n)).any()):
        return f"{name}: ids outside [0, {n})"
    pos = val > 0
    ref_c = ref.gather(1, idx)
    tol_c = tol.gather(1, idx)
    if bool((pos & ~torch.isfinite(ref_c)).any()):
        return f"{name}: a chosen latent is not eligible (e.g. not dead)"
    bad = pos & ~((val - ref_c).abs() <= tol_c)
    if bool(bad.any()):
        b, j = (int(t) for t in bad.nonzero()[0])
        return f"{name}: value {val[b, j].item():.6g} of latent {int(idx[b, j])} vs {ref_c[b, j].item():.6g}"
    chosen = torch.zeros(r, n, dtype=torch.int32, device=ref.device).scatter_add_(1, idx, pos.int())
    if bool((chosen > 1).any()):
        return f"{name}: a latent chosen twice in one row"
    full = pos.sum(1) == idx.shape[1]
    floor = torch.where(pos, ref_c + tol_c, torch.inf).min(1).values
    threshold = torch.where(full, floor, torch.zeros_like(floor))
    left_out = torch.where(chosen.bool(), -torch.inf, ref - tol).max(1).values
    if bool((left_out > threshold).any()):
        b = int((left_out > threshold).nonzero()[0])
        return f"{name}: row {b} left out a latent of value {left_out[b].item():.6g} above the chosen {threshold[b].item():.6g}"
    return None


def check_encode_forward(x, W_enc, b_enc, k, dead, k_aux, out, *, tf32: bool) -> str | None:
    rows = check_rows(x.shape[0], x.device)
    xs, W, b = x[rows].double(), W_enc.double(), b_enc.double()
    ref = torch.relu(xs @ W.t() + b)
    eps_acc = EPS_ACC_TF32 if tf32 else EPS_ACC
    tol = EPS_VAL[x.dtype] * ref + eps_acc * (xs.abs() @ W.abs().t() + b.abs())
    main, aux = (out, None) if dead is None or k_aux == 0 else out
    problem = _check_topk("top-k code", ref, tol, main[0][rows], main[1][rows])
    if problem is None and aux is not None:
        masked = ref.masked_fill(~dead.to(device=ref.device, dtype=torch.bool)[None, :], -torch.inf)
        problem = _check_topk("AuxK code", masked, tol, aux[0][rows], aux[1][rows])
    return problem


def _slice(indices, rows):
    """The slice's entries with latents renumbered 0..m-1 (m = latents it touches)."""
    uniq, inv = torch.unique(indices[rows], return_inverse=True)
    return uniq, inv.to(indices.dtype).contiguous()


def check_encode_backward(backward, indices, g, x, W_enc, needs, out) -> str | None:
    """``backward(indices, g, x, W_enc, n, need_dx, need_dW)`` -> (dx, dW, db) on the slice."""
    rows = check_rows(x.shape[0], x.device)
    uniq, inv = _slice(indices, rows)
    m = uniq.numel()
    gs, xs, Ws = g[rows].contiguous(), x[rows].contiguous(), W_enc[uniq].contiguous()
    dx, dW, db = backward(inv, gs, xs, Ws, m, *needs)
    g64, x64, W64, flat = gs.double(), xs.double(), Ws.double(), inv.reshape(-1).long()
    ev = EPS_VAL[x.dtype]
    if needs[0]:
        ref = (g64[:, :, None] * W64[inv.long()]).sum(1)
        bound = (g64.abs()[:, :, None] * W64.abs()[inv.long()]).sum(1)
        problem = _close("encoder dx", dx, ref, ev * ref.abs() + EPS_ACC * bound)
        if problem:
            return problem
    if needs[1]:
        d = x.shape[1]
        ref = torch.zeros(m, d, dtype=torch.float64, device=x.device).index_add_(
            0, flat, (g64[:, :, None] * x64[:, None, :]).reshape(-1, d))
        bound = torch.zeros_like(ref).index_add_(0, flat, (g64.abs()[:, :, None] * x64.abs()[:, None, :]).reshape(-1, d))
        problem = _close("encoder dW_enc", dW, ref, ev * ref.abs() + EPS_ACC * bound)
        if problem:
            return problem
        ref_b = torch.zeros(m, dtype=torch.float64, device=x.device).index_add_(0, flat, g64.reshape(-1))
        bound_b = torch.zeros_like(ref_b).index_add_(0, flat, g64.abs().reshape(-1))
        return _close("encoder db_enc", db, ref_b, ev * ref_b.abs() + EPS_ACC * bound_b)
    return None


def check_decode_forward(indices, values, W_dec, b_dec, out) -> str | None:
    rows = check_rows(indices.shape[0], values.device)
    idx, v, W = indices[rows].long(), values[rows].double(), W_dec.double()
    ref = (v[:, :, None] * W[idx]).sum(1)
    bound = (v.abs()[:, :, None] * W.abs()[idx]).sum(1)
    if b_dec is not None:
        ref, bound = ref + b_dec.double(), bound + b_dec.double().abs()
    return _close("decode", out[rows], ref, EPS_VAL[values.dtype] * ref.abs() + EPS_ACC * bound)


def check_decode_backward(backward, indices, values, grad, W_dec, project, needs, out) -> str | None:
    """``backward(indices, values, grad, W_dec, n, project, need_dvalues, need_dW)`` ->
    (dvalues, dW) on the slice."""
    rows = check_rows(indices.shape[0], values.device)
    uniq, inv = _slice(indices, rows)
    m = uniq.numel()
    vs, gs, Ws = values[rows].contiguous(), grad[rows].contiguous(), W_dec[uniq].contiguous()
    dv, dW = backward(inv, vs, gs, Ws, m, project, *needs)
    v64, g64, W64, il = vs.double(), gs.double(), Ws.double(), inv.long()
    ev = EPS_VAL[values.dtype]
    if needs[0]:
        ref = (W64[il] * g64[:, None, :]).sum(2)
        bound = (W64.abs()[il] * g64.abs()[:, None, :]).sum(2)
        problem = _close("decode dvalues", dv, ref, ev * ref.abs() + EPS_ACC * bound)
        if problem:
            return problem
    if needs[1]:
        d = W_dec.shape[1]
        flat = il.reshape(-1)
        G = torch.zeros(m, d, dtype=torch.float64, device=W64.device).index_add_(
            0, flat, (v64[:, :, None] * g64[:, None, :]).reshape(-1, d))
        bound = torch.zeros_like(G).index_add_(0, flat, (v64.abs()[:, :, None] * g64.abs()[:, None, :]).reshape(-1, d))
        if not project:
            return _close("decode dW_dec", dW, G, ev * G.abs() + EPS_ACC * bound)
        from .reference import project_rows

        ref = project_rows(G, W64)
        # The kernel rounds the unprojected row to the dtype before removing its component
        # along W, and an error e in that row moves the result by at most |e_i| + |w_i| |e| / |w|.
        pn = W64.norm(dim=1, keepdim=True)
        spread = torch.where(pn > 0, W64.abs() / torch.where(pn > 0, pn, 1), 0)
        err = ev * G.abs() + EPS_ACC * bound
        tol = ev * ref.abs() + err + spread * err.norm(dim=1, keepdim=True)
        return _close("decode dW_dec (projected)", dW, ref, tol)
    return None
