"""Training a top-k SAE with the paper's recipe (appendix A.1/A.2).

* inputs optionally standardised (zero mean, unit variance; stored in the model);
* ``b_pre`` = geometric median of a data sample (Weiszfeld); unit decoder rows, encoder rows
  parallel to them, scaled so initial reconstructions match the inputs' magnitude;
* loss = nMSE (MSE over a global factor computed once: the error of predicting the data mean)
  + alpha * AuxK (top-k_aux of the dead latents reconstructing the residual, normalised per
  batch); Adam, constant lr, gradient clipping; the decoder-gradient component parallel to
  each decoder row is removed before the step and rows are renormalised after it;
* metrics as JSON lines, atomic checkpoints with optimiser and data position (``resume``),
  and data parallelism over ``torch.distributed`` ranks (gradients all-reduced).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch

from . import ops
from .checkpoints import load_checkpoint, remove_stale_temporaries, save_checkpoint
from .data import ArraySource
from .model import TopKSAE, _atomic_write, _write_text
from .ops import SparseCode


@dataclass
class TrainConfig:
    """Every choice of the training recipe. Defaults follow the paper (appendix A)."""

    n_latents: int
    """Number of latents n."""
    k: int
    """Active latents per example (1 <= k < n)."""
    epochs: float = 1.0
    """Passes over the data (fractions allowed); the last partial batch of an epoch is dropped."""
    batch_size: int = 1024
    """Examples per optimiser step (global, across all processes)."""
    lr: float = 1e-4
    """Adam learning rate (constant)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    grad_clip: float = 1.0
    """Maximum global gradient norm (clipping); 0 disables it."""
    aux_alpha: float = 1 / 32
    """Weight alpha of the AuxK loss; 0 disables it."""
    k_aux: int | None = None
    """Latents used by AuxK; default 2k (at most n)."""
    dead_window: int | None = None
    """A latent is dead after this many examples without firing; default one epoch (N)."""
    standardize: bool = True
    """Standardise inputs to zero mean, unit variance per dimension (paper default)."""
    median_sample: int = 8192
    """Rows sampled for the geometric-median initialisation of b_pre."""
    seed: int = 0
    """Seed for initialisation and data order."""
    eval_fraction: float = 0.05
    """Fraction of rows held out for evaluation metrics when no eval data is given."""
    log_every: int = 50
    """Steps between metric records."""
    checkpoint_dir: str | None = None
    """Directory for checkpoints and metrics.jsonl; None keeps everything in memory."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (one is always written at the end)."""
    resume: bool = False
    """Continue from the latest checkpoint in checkpoint_dir, if there is one: the one ``latest``
    names or, when ``latest`` is missing or names a missing, incomplete or damaged folder, the
    newest complete step folder (with a warning). A step folder is complete when its
    ``config.json``, ``sae.safetensors`` and ``trainer.pt`` are present and load (validated, see
    :meth:`TopKSAE.load`) and ``trainer.pt`` holds the state of the step in its name; step
    folders none of which is complete are an error, never silently replaced. The checkpoint must
    come from the same run: every field but those in :data:`RESUME_FREE_FIELDS` equal, and the
    same data (and eval data) by :meth:`ArraySource.fingerprint`; see ``resume_mismatch``."""
    resume_mismatch: str = "error"
    """What resume does when the checkpoint comes from another configuration or other data:
    "error" (default) raises a ValueError listing each differing field (checkpoint's value vs
    this run's); "allow" warns with the same list and continues (the continued run is then no
    longer the run either configuration describes). A checkpoint written before fastsae stored
    data fingerprints resumes with a warning that the data cannot be checked."""
    max_steps: int | None = None
    """Stop after this many steps in total (for tests and time budgets)."""
    dtype: str = "float32"
    """Parameter dtype: float32 or float64."""
    compute_dtype: str | None = None
    """Arithmetic of the encode and decode. None: the parameter dtype. "bfloat16": mixed
    precision, the fast path of the GPU kernels (fp32 Triton GEMMs run without tensor cores):
    each step encodes and decodes with bf16 copies of the weights, while the parameters, the
    Adam state, the loss, the decoder projection and the metrics stay in ``dtype``."""
    device: str | None = None
    """Device; default cuda when available (then the Triton kernels apply), else cpu."""
    progress: bool = True
    """Show a progress bar."""
    prefetch: bool | None = None
    """Load the next batch on a background thread while the current step runs (into pinned
    memory, copied asynchronously, on a GPU). None: on when training on a GPU, where the host's
    gather of a batch otherwise takes as long as the step itself."""
    data_on_device: bool | None = None
    """Copy the training data to the device once and gather each batch there: no host work per
    step. None: on a GPU when the data (in ``dtype``) takes at most a quarter of its free memory."""

    def __post_init__(self):
        for name in ("n_latents", "k", "batch_size", "log_every", "checkpoint_every", "median_sample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.k >= self.n_latents:
            raise ValueError(f"k={self.k} must be smaller than n_latents={self.n_latents}")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0 or self.aux_alpha < 0:
            raise ValueError("grad_clip and aux_alpha must be >= 0")
        if self.k_aux is not None and not 1 <= self.k_aux <= self.n_latents:
            raise ValueError(f"k_aux must be in [1, n_latents], got {self.k_aux}")
        if self.dead_window is not None and self.dead_window < 1:
            raise ValueError("dead_window must be >= 1")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.compute_dtype not in (None, "bfloat16"):
            raise ValueError(f"compute_dtype must be None or 'bfloat16', got {self.compute_dtype!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.resume_mismatch not in ("error", "allow"):
            raise ValueError(f"resume_mismatch must be 'error' or 'allow', got {self.resume_mismatch!r}")
        self.betas = tuple(self.betas)

    @property
    def k_aux_effective(self) -> int:
        return min(self.n_latents, self.k_aux if self.k_aux is not None else 2 * self.k)


RESUME_FREE_FIELDS = frozenset({
    "max_steps", "log_every", "checkpoint_dir", "checkpoint_every", "resume", "resume_mismatch", "device",
    "progress", "prefetch", "data_on_device"})
"""TrainConfig fields a resumed run may change. Every other field defines the run (a field added
later defines it too unless listed here). ``max_steps`` is where one invocation stops (a time
budget: resuming with a larger one continues the same run); ``log_every`` changes only how
often metrics are recorded from the resume on (the parameters do not depend on it); the
checkpoint location and interval, the device and the data-loading options change how the run
is executed, not what it computes (another device may differ in the last bits)."""


class TrainResult(NamedTuple):
    sae: TopKSAE
    """The trained model (weights, standardisation statistics)."""
    history: list[dict]
    """One record per log interval (see :func:`train`), also in checkpoint_dir/metrics.jsonl."""
    config: TrainConfig
    steps: int
    """Optimiser steps taken in total (including before a resume)."""


def make_optimizer(sae: TopKSAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the config's lr/betas/eps; the fused implementation when torch has it for the
    device (same update, one kernel per parameter instead of a dozen elementwise passes)."""
    kw = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    try:
        return torch.optim.Adam(sae.parameters(), fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(sae.parameters(), **kw)


@torch.no_grad()
def optimizer_step(sae: TopKSAE, opt: torch.optim.Optimizer, grad_clip: float, *,
                   project_decoder_grad: bool = True) -> None:
    """The recipe's update once gradients are in: remove each decoder row's gradient component
    along the row (rows are unit norm), so Adam cannot grow the norm the renormalisation would
    undo; clip; step; renormalise the decoder rows. ``project_decoder_grad=False`` when the
    gradient is already projected (``ops.sparse_decode(..., project_grad=True)``)."""
    w, g = sae.W_dec, sae.W_dec.grad
    if g is not None and project_decoder_grad:
        g.addcmul_(torch.linalg.vecdot(g, w).unsqueeze(1), w, value=-1)  # no [n, d] temporary
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
    opt.step()
    sae.normalize_decoder_()


def training_flops_per_example(d: int, n: int, k: int) -> float:
    """Training FLOPs per example: 6 d (n + k).

    Forward: the encoder matmul 2dn plus the sparse decoder 2kd; backward twice the forward
    (the usual 3x rule), counting the dense encoder as the paper's compute axis does.
    """
    return 6.0 * d * (n + k)


# ------------------------------------------------------------------------------------------------
# Initialisation


@torch.no_grad()
def geometric_median(points: torch.Tensor, *, iters: int = 200, tol: float = 1e-9) -> torch.Tensor:
    """Geometric median of ``[m, d]`` points (vectorised Weiszfeld, float64)."""
    x = points.to(torch.float64)
    y = x.mean(dim=0)
    for _ in range(iters):
        dist = (x - y).norm(dim=1)
        w = 1.0 / dist.clamp_min(1e-12)
        y_new = (w[:, None] * x).sum(dim=0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, y.norm().item()):
            y = y_new
            break
        y = y_new
    return y


@torch.no_grad()
def _initialise(sae: TopKSAE, sample: torch.Tensor, generator: torch.Generator) -> None:
    sae.reset_parameters(generator)
    sae.b_pre.copy_(geometric_median(sample))
    # Encoder rows = decoder rows, scaled so that initial reconstructions have the inputs'
    # magnitude. With b_enc = 0 the top-k selection does not depend on the scale s and the
    # reconstruction is linear in s, so one pass at s = 1 gives s.
    sae.W_enc.copy_(sae.W_dec)
    z = sample.to(sae.W_enc.dtype) - sae.b_pre
    code = ops.topk_encode(z, sae.W_enc, sae.b_enc, sae.k)
    recon = ops.sparse_decode(code.indices, code.values, sae.W_dec)
    scale = z.norm(dim=1).mean() / recon.norm(dim=1).mean().clamp_min(1e-12)
    sae.W_enc.mul_(scale)


# ------------------------------------------------------------------------------------------------
# Distributed helpers (no-ops in one process)


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    d = _dist()
    if d is not None:
        d.all_reduce(t, op=d.ReduceOp.SUM)
    return t


def _resume_differences(state: dict, cfg: TrainConfig, data: dict) -> tuple[list[str], list[str]]:
    """``(differences, unchecked)`` between the run that wrote ``state`` and this one: every
    field outside :data:`RESUME_FREE_FIELDS` (``k_aux`` and ``dead_window`` by their effective
    values) and the data fingerprints. ``unchecked`` says what an older checkpoint did not store."""
    diffs, unchecked = [], []
    try:
        old = json.loads(state["config"]) if "config" in state else None
    except (TypeError, json.JSONDecodeError):
        old = None
    if not isinstance(old, dict):
        unchecked.append("the configuration")
    else:
        new = json.loads(json.dumps(asdict(cfg)))
        defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
        defaults = json.loads(json.dumps(defaults))
        n_train = data["n_train"]

        def effective(c: dict, name: str):
            v = c.get(name, defaults.get(name))
            if name == "k_aux" and isinstance(c.get("n_latents"), int) and isinstance(c.get("k"), int):
                return min(c["n_latents"], v if v is not None else 2 * c["k"])
            if name == "dead_window":
                return v or n_train
            return v

        for f in fields(TrainConfig):
            if f.name in RESUME_FREE_FIELDS:
                continue
            a, b = effective(old, f.name), effective(new, f.name)
            if a != b:
                diffs.append(f"{f.name}: {a!r} (checkpoint) vs {b!r} (this run)")
    old_data = state.get("data")
    if not isinstance(old_data, dict):
        unchecked.append("the data")
    else:
        for role in ("train", "eval"):
            a, b = old_data.get(role), data[role]
            what = "data" if role == "train" else "eval_data"
            if a is None or b is None:
                if a != b:
                    diffs.append(f"{what}: {'given' if a else 'none'} (checkpoint) vs {'given' if b else 'none'} (this run)")
                continue
            for key in b:
                if a.get(key) != b[key]:
                    diffs.append(f"{what} {key}: {a.get(key)!r} (checkpoint) vs {b[key]!r} (this run)")
    return diffs, unchecked


# ------------------------------------------------------------------------------------------------


def _resident_data(source: ArraySource, cfg: TrainConfig, dtype: torch.dtype, device: torch.device):
    """The whole data array on ``device`` (in ``dtype``) when ``cfg.data_on_device`` asks for it
    or, left at None, when it fits a quarter of the GPU's free memory; else None."""
    nbytes = source.n_rows * source.d * torch.empty((), dtype=dtype).element_size()
    want = cfg.data_on_device
    if want is None:
        want = device.type == "cuda" and nbytes <= torch.cuda.mem_get_info(device)[0] // 4
    if not want:
        return None
    out = torch.empty(source.n_rows, source.d, dtype=dtype, device=device)
    for a, block in source.chunks():  # bounded host memory, whatever N
        out[a : a + block.shape[0]].copy_(torch.from_numpy(block).to(dtype))
    return out


def _aux_loss(aux_code, W_dec: torch.Tensor, residual: torch.Tensor, project_grad: bool = False):
    """AuxK: the top-k_aux dead latents reconstruct the main model's residual.

    Normalised per batch by the residual's own variance around its (global-batch) mean."""
    aux = ops.sparse_decode(aux_code.indices, aux_code.values, W_dec, project_grad=project_grad).to(residual.dtype)
    # Batch statistics summed over all ranks so that data parallelism changes nothing.
    stats = torch.cat([residual.sum(0), residual.pow(2).sum().reshape(1),
                       torch.tensor([residual.shape[0]], dtype=residual.dtype, device=residual.device)])
    stats = _all_reduce_(stats.detach().clone())
    count = stats[-1]
    mean = stats[:-2] / count
    var = (stats[-2] / count - mean.pow(2).sum()).clamp_min(1e-12)
    return (aux - residual).pow(2).sum(dim=1).mean() / var


@torch.no_grad()
def _evaluate(sae: TopKSAE, source: ArraySource, rows: np.ndarray, mse_scale: float, batch: int, device) -> dict:
    if rows.size == 0:
        return {}
    n = sae.n_latents
    fired = torch.zeros(n, dtype=torch.float64)
    se = act_sum = act_cnt = 0.0
    for a in range(0, rows.size, batch):
        x = source.rows(rows[a : a + batch], dtype=sae.W_enc.dtype).to(device)
        out = sae(x)
        # in the standardised space, where mse_scale (the training data's variance) lives
        se += float((out.recon_standardized - out.target_standardized).pow(2).sum())
        v = out.code.values
        active = v > 0
        act_sum += float(v[active].sum())
        act_cnt += float(active.sum())
        fired += torch.zeros(n, dtype=torch.float64).index_add_(
            0, out.code.indices[active].cpu(), torch.ones(int(active.sum()), dtype=torch.float64))
    density = fired / rows.size
    alive = density > 0
    return {
        "nmse_eval": se / rows.size / mse_scale,
        "log10_density_eval": float(torch.log10(density[alive]).mean()) if alive.any() else float("nan"),
        "never_fired_eval": float((~alive).double().mean()),
        "mean_activation_eval": act_sum / max(act_cnt, 1.0),
    }


def train(data: Any, config: TrainConfig, *, eval_data: Any = None, init: TopKSAE | None = None) -> TrainResult:
    """Train a :class:`TopKSAE` on ``data`` (``[N, d]`` numpy array, ``.npy`` path or tensor).

    Metric records (every ``log_every`` steps and at the end): ``step``, ``epoch``,
    ``examples``, ``nmse`` (training batches since the last record), ``aux_loss``, ``l0``,
    ``dead_fraction`` (no firing within ``dead_window`` examples), ``nmse_eval``,
    ``log10_density_eval`` (mean over latents that fired on the eval rows),
    ``never_fired_eval``, ``mean_activation_eval`` (mean non-zero activation), ``flops``
    (training FLOPs so far, :func:`training_flops_per_example`), ``examples_per_s``.
    Under ``torchrun`` every rank passes the same data; each takes its share of every global
    batch and gradients are summed across ranks, so the result equals one process.
    ``init``: start from a copy of this model (weights and standardisation) instead of the
    paper's initialisation (warm starts, fine-tuning).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError("config must be a fastsae.TrainConfig")
    cfg = config
    source = ArraySource(data)
    source.check_finite()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, cfg.dtype)
    dist = _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")

    # Held-out rows (fixed by the seed) and training rows.
    rng = np.random.default_rng(cfg.seed)
    if eval_data is not None:
        eval_source = ArraySource(eval_data)
        eval_source.check_finite()
        if eval_source.d != source.d:
            raise ValueError(f"eval_data has d={eval_source.d}, data has d={source.d}")
        eval_rows, train_rows = np.arange(eval_source.n_rows), np.arange(source.n_rows)
    else:
        eval_source = source
        perm = rng.permutation(source.n_rows)
        n_eval = int(round(cfg.eval_fraction * source.n_rows))
        eval_rows, train_rows = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    n_train = train_rows.size
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{n_train} training rows are fewer than one batch of {cfg.batch_size}")
    schedule_steps = max(1, int(cfg.epochs * steps_per_epoch))
    total_steps = schedule_steps if cfg.max_steps is None else min(schedule_steps, cfg.max_steps)
    dead_window = cfg.dead_window or n_train

    ckpt_dir = cfg.checkpoint_dir
    loaded = None
    # What the checkpoints record of the data, for a resume to recognise them.
    data_fp = {"train": source.fingerprint(), "eval": eval_source.fingerprint() if eval_data is not None else None}
    if ckpt_dir:
        os.makedirs(ckpt_dir, exist_ok=True)
        if rank == 0:
            remove_stale_temporaries(ckpt_dir)
        if cfg.resume:
            loaded = load_checkpoint(ckpt_dir)
    acc, acc_steps = torch.zeros(3, dtype=torch.float64, device=device), 0
    if loaded is not None:
        sae, state, ckpt_path = loaded
        if (sae.d_in, sae.n_latents, sae.k) != (source.d, cfg.n_latents, cfg.k):
            raise ValueError(f"checkpoint is d={sae.d_in}, n={sae.n_latents}, k={sae.k}; "
                             f"this run is d={source.d}, n={cfg.n_latents}, k={cfg.k}")
        diffs, unchecked = _resume_differences(state, cfg, {**data_fp, "n_train": n_train})
        if diffs and cfg.resume_mismatch == "error":
            raise ValueError(f"{ckpt_path}: cannot resume, the checkpoint is from another run: {'; '.join(diffs)}. "
                             "Set resume_mismatch='allow' (fastsae train --allow-resume-mismatch) to continue it "
                             "anyway, or resume=False (--restart) to start over")
        if diffs:
            warnings.warn(f"{ckpt_path}: resuming a checkpoint of another run (resume_mismatch='allow'): "
                          f"{'; '.join(diffs)}", stacklevel=2)
        if unchecked:
            warnings.warn(f"{ckpt_path}: written before fastsae recorded {' and '.join(unchecked)} in checkpoints; "
                          "resuming without checking them", stacklevel=2)
        sae = sae.to(device=device, dtype=dtype)
        step, mse_scale = int(state["step"]), float(state["mse_scale"])
        since_fired = state["since_fired"].to(device)
        history = list(state.get("history", []))
        torch.set_rng_state(state["torch_rng"])
        # The log interval the checkpoint was in the middle of (absent in older checkpoints:
        # their first record after a resume averages only the steps since the resume). Its sums
        # live on rank 0, the other ranks continue from zero: the record sums over ranks.
        interval = state.get("interval")
        if interval is not None:
            acc_steps = int(interval["steps"])
            if rank == 0:
                acc = interval["sums"].to(device=device, dtype=torch.float64)
    elif init is not None:
        if (init.d_in, init.n_latents, init.k) != (source.d, cfg.n_latents, cfg.k):
            raise ValueError(f"init is d={init.d_in}, n={init.n_latents}, k={init.k}; "
                             f"this run is d={source.d}, n={cfg.n_latents}, k={cfg.k}")
        sae = TopKSAE(source.d, cfg.n_latents, cfg.k, dtype=dtype, device=device)
        sae.load_state_dict(init.state_dict())
    else:
        sae = TopKSAE(source.d, cfg.n_latents, cfg.k, dtype=dtype, device=device)
    if loaded is None:
        if cfg.standardize and init is None:
            mean, std = source.mean_std()
            std = np.where(std > 0, std, 1.0)  # constant dimensions stay as they are
            sae.set_standardization(torch.from_numpy(mean), torch.from_numpy(std))
        gen = torch.Generator().manual_seed(cfg.seed)
        sample_rows = np.sort(rng.choice(train_rows, size=min(cfg.median_sample, n_train), replace=False))
        if init is None:
            sample = sae.standardize(source.rows(sample_rows, dtype=dtype)).to(device)
            _initialise(sae, sample, gen)
        # Global normalisation of the MSE: the error of predicting the (standardised) mean.
        mean_z = torch.zeros(source.d, dtype=torch.float64)
        sq = 0.0
        for a in range(0, n_train, 65536):
            z = sae.standardize(source.rows(train_rows[a : a + 65536], dtype=torch.float64)
                                .to(sae.data_mean.dtype)).double()
            mean_z += z.sum(0)
            sq += float(z.pow(2).sum())
        mean_z /= n_train
        mse_scale = max(sq / n_train - float(mean_z.pow(2).sum()), 1e-12)
        step, history = 0, []
        since_fired = torch.zeros(cfg.n_latents, dtype=torch.int64, device=device)
        state = None

    opt = make_optimizer(sae, cfg)
    if state is not None:
        # The moments come from the checkpoint, the hyperparameters and the implementation
        # (fused or not, for this device) from this run's config: equal unless resume_mismatch
        # allowed a change, which then takes effect.
        settings = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(state["optimizer"])
        for g, s in zip(opt.param_groups, settings):
            g.update(s)
    local = cfg.batch_size // world
    flops_per_example = training_flops_per_example(source.d, cfg.n_latents, cfg.k)
    metrics_path = os.path.join(ckpt_dir, "metrics.jsonl") if ckpt_dir and rank == 0 else None
    if metrics_path:
        # Start the file from what the checkpoint holds: records a killed run logged after its
        # last checkpoint are logged again by this run, not duplicated.
        text = "".join(json.dumps(r) + "\n" for r in history)
        _atomic_write(metrics_path, lambda p: _write_text(p, text))
    # Mixed precision: the encode and decode see bf16 copies of the weights (made each step, so
    # autograd hands fp32 gradients back to the fp32 parameters).
    cdtype = getattr(torch, cfg.compute_dtype) if cfg.compute_dtype else dtype
    mixed = cdtype != dtype
    # The decoder-gradient projection is fused into the sparse decode's backward on the Triton
    # path (touched rows only, in the kernel that writes them); on the torch path the decode's
    # gradient is dense anyway and optimizer_step projects it in one pass, as it does in mixed
    # precision (projecting along the bf16-rounded rows would leave a parallel component).
    fused_projection = ops.backend(device, cdtype) == "triton" and not mixed
    # Per-step statistics (nmse, aux loss, l0) are summed on the device (acc, acc_steps, set
    # above) and read at log steps: a .item() per step would make the host wait for each step to
    # finish before it loads the next batch, instead of loading it while the GPU runs the
    # backward pass.
    t_last, ex_last = time.perf_counter(), step * cfg.batch_size

    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", desc=f"train k={cfg.k} n={cfg.n_latents}", leave=False)

    def record() -> dict:
        nonlocal t_last, ex_last, acc, acc_steps
        now, ex = time.perf_counter(), step * cfg.batch_size
        nmse, aux, l0 = (_all_reduce_(acc.clone()) / (world * max(acc_steps, 1))).tolist()
        rec = {
            "step": step, "epoch": step / steps_per_epoch, "examples": ex,
            "nmse": nmse, "aux_loss": aux, "l0": l0,
            "dead_fraction": float((since_fired >= dead_window).double().mean()),
            "flops": flops_per_example * ex, "examples_per_s": (ex - ex_last) / max(now - t_last, 1e-9),
        }
        rec.update(_evaluate(sae, eval_source, eval_rows, mse_scale, 4096, device))
        t_last, ex_last = time.perf_counter(), ex
        acc, acc_steps = torch.zeros_like(acc), 0
        history.append(rec)
        if metrics_path:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if bar is not None:
            bar.set_postfix(nmse=f"{nmse:.4f}")
        return rec

    def checkpoint(records: list[dict], sums: torch.Tensor, n_steps: int) -> None:
        """``records``, ``sums`` and ``n_steps``: the log as of this step and the open log
        interval's statistics, what a resumed run continues from."""
        if ckpt_dir:
            sums = _all_reduce_(sums.clone())  # every rank's share, collected on rank 0
        if ckpt_dir and rank == 0:
            save_checkpoint(ckpt_dir, sae, opt, {
                "step": step, "mse_scale": mse_scale, "since_fired": since_fired.cpu(),
                "torch_rng": torch.get_rng_state(), "history": list(records), "config": json.dumps(asdict(cfg)),
                "data": data_fp, "interval": {"sums": sums.cpu(), "steps": n_steps},
            }, drop_later=loaded is None)
        if dist:
            dist.barrier()

    # Batches: the data order is a function of (seed, epoch), its permutation drawn once per
    # epoch (not per step: at N = 1M a permutation costs about as much as a GPU step).
    epoch_order: dict[int, np.ndarray] = {}
    pin = device.type == "cuda"
    resident = _resident_data(source, cfg, dtype, device)

    def load(s: int) -> torch.Tensor:
        epoch, pos = divmod(s, steps_per_epoch)
        if epoch not in epoch_order:
            epoch_order.clear()
            epoch_order[epoch] = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
        batch_rows = train_rows[epoch_order[epoch][pos * cfg.batch_size : (pos + 1) * cfg.batch_size]]
        mine = batch_rows[rank * local : (rank + 1) * local]
        if resident is not None:
            return resident.index_select(0, torch.from_numpy(mine).to(device, non_blocking=True))
        x = source.rows(mine, dtype=dtype)
        return x.pin_memory() if pin else x

    prefetch = resident is None and (cfg.prefetch if cfg.prefetch is not None else device.type == "cuda")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsae-batches") if prefetch else None
    pending = None
    try:
        while step < total_steps:
            x = (pending.result() if pending is not None else load(step)).to(device, non_blocking=True)
            # numpy's gather and the pinned copy release the GIL: the next batch loads meanwhile
            pending = pool.submit(load, step + 1) if pool is not None and step + 1 < total_steps else None

            dead = since_fired >= dead_window  # from the steps before this one
            # A host synchronisation (the other is the decode's index check): k_aux and whether
            # AuxK runs depend on the dead count.
            n_dead = int(dead.sum()) if cfg.aux_alpha > 0 else 0
            target = sae.standardize(x)
            z = (target - sae.b_pre).to(cdtype)
            W_enc, b_enc, W_dec = (p.to(cdtype) for p in (sae.W_enc, sae.b_enc, sae.W_dec))
            if n_dead:
                # One encoder pass gives the code and the top-k_aux among dead latents.
                code, aux_code = ops.topk_encode_aux(z, W_enc, b_enc, cfg.k, dead, min(cfg.k_aux_effective, n_dead))
            else:
                code = ops.topk_encode(z, W_enc, b_enc, cfg.k)
            if mixed:  # b_pre added in full precision
                recon = ops.sparse_decode(code.indices, code.values, W_dec).to(dtype) + sae.b_pre
            else:
                recon = ops.sparse_decode(code.indices, code.values, W_dec, sae.b_pre, project_grad=fused_projection)
            nmse = (recon - target).pow(2).sum(dim=1).mean() / mse_scale
            loss = nmse / world  # gradients are summed over ranks: the mean of the global batch
            aux = torch.zeros((), dtype=nmse.dtype, device=device)
            if n_dead:
                aux = _aux_loss(aux_code, W_dec, (target - recon).detach(), fused_projection)
                loss = loss + cfg.aux_alpha * aux / world
            # scatter, not mask indexing: no host synchronisation
            fired = torch.zeros(cfg.n_latents, dtype=torch.int64, device=device).scatter_reduce_(
                0, code.indices.reshape(-1), (code.values > 0).reshape(-1).long(), reduce="amax")
            fired = _all_reduce_(fired) > 0
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + cfg.batch_size)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if dist:
                for p in sae.parameters():
                    if p.grad is not None:
                        _all_reduce_(p.grad)
            optimizer_step(sae, opt, cfg.grad_clip, project_decoder_grad=not fused_projection)
            step += 1
            with torch.no_grad():
                acc += torch.stack([nmse.double(), aux.double(), (code.values > 0).sum(1).double().mean()])
            acc_steps += 1
            if bar is not None:
                bar.update(1)
            # Where max_steps cuts the schedule short off a log step, the last record is an
            # interim one: returned and logged, but the checkpoint holds the open interval
            # instead, so that a resumed run logs exactly what the uninterrupted run logs.
            interim = step == total_steps and step < schedule_steps and step % cfg.log_every != 0
            before = (list(history), acc.clone(), acc_steps) if interim else None
            if step % cfg.log_every == 0 or step == total_steps:
                record()
            if step % cfg.checkpoint_every == 0 or step == total_steps:
                checkpoint(*(before or (history, acc, acc_steps)))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return TrainResult(sae, history, cfg, step)


@torch.no_grad()
def encode_dataset(sae: TopKSAE, data: Any, *, batch_size: int = 4096, out_dir: str | None = None,
                   progress: bool = False) -> SparseCode:
    """Top-k codes of every row of ``data`` (raw inputs; the model's standardisation applies).

    With ``out_dir`` the codes go to ``out_dir/indices.npy`` (int64) and ``values.npy``
    (float32) as memmaps, written to temporary names and renamed when complete; the returned
    tensors share that memory.
    """
    source = ArraySource(data)
    if source.d != sae.d_in:
        raise ValueError(f"data has d={source.d}, the SAE expects d={sae.d_in}")
    n, k = source.n_rows, sae.k
    device = sae.W_enc.device
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        ti, tv = os.path.join(out_dir, ".indices.npy.tmp"), os.path.join(out_dir, ".values.npy.tmp")
        idx = np.lib.format.open_memmap(ti, mode="w+", dtype=np.int64, shape=(n, k))
        val = np.lib.format.open_memmap(tv, mode="w+", dtype=np.float32, shape=(n, k))
    else:
        idx, val = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    rows = np.arange(n)
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="encode", unit="batch")
    for a in it:
        x = source.rows(rows[a : a + batch_size], dtype=sae.W_enc.dtype).to(device)
        code = sae.encode(x)
        idx[a : a + batch_size] = code.indices.cpu().numpy()
        val[a : a + batch_size] = code.values.float().cpu().numpy()
    if out_dir:
        idx.flush(), val.flush()
        del idx, val
        os.replace(ti, os.path.join(out_dir, "indices.npy"))
        os.replace(tv, os.path.join(out_dir, "values.npy"))
        idx = np.load(os.path.join(out_dir, "indices.npy"), mmap_mode="r+")
        val = np.load(os.path.join(out_dir, "values.npy"), mmap_mode="r+")
    return SparseCode(torch.from_numpy(idx), torch.from_numpy(val))
