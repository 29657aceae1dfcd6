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

This module is the loop: set-up or resume, the batches (:class:`~.batches.BatchSource`), the
step, metrics, checkpoints. The step's math (standardise, encode, decode, the losses with AuxK,
mixed precision and the fused projection) is :meth:`TopKSAE.forward`, written once in
:mod:`.model`; the configuration is :mod:`.config`. Every name the old ``fastsae.trainer``
had is importable from here (``fastsae.trainer`` is this module).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from .. import ops
from ..io import atomic_write_text
from ..ops import SparseCode  # noqa: F401 (re-exported, as the old trainer did)
from .batches import BatchSource, _resident_data  # noqa: F401 (_resident_data: the old trainer's name)
from .checkpoints import load_checkpoint, remove_stale_temporaries, save_checkpoint
from .config import RESUME_FREE_FIELDS, TrainConfig, TrainResult, _resume_differences  # noqa: F401 (re-exported)
from .data import ArraySource
from .encode import encode_dataset  # noqa: F401 (re-exported: fastsae.trainer had it)
from .model import TopKSAE, _aux_loss  # noqa: F401 (_aux_loss: the old trainer's name)


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
    code = sae.encode(sample, standardized=True)
    # without b_pre: the part of the reconstruction that scales with s
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



# ------------------------------------------------------------------------------------------------


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
    flops_per_example = training_flops_per_example(source.d, cfg.n_latents, cfg.k)
    metrics_path = os.path.join(ckpt_dir, "metrics.jsonl") if ckpt_dir and rank == 0 else None
    if metrics_path:
        # Start the file from what the checkpoint holds: records a killed run logged after its
        # last checkpoint are logged again by this run, not duplicated.
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    # Mixed precision: the model's forward encodes and decodes with bf16 copies of the weights
    # (see TopKSAE.forward's compute_dtype).
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

    batches = BatchSource(source, train_rows, cfg, dtype=dtype, device=device, rank=rank, world=world,
                          total_steps=total_steps)
    try:
        while step < total_steps:
            x = batches.batch(step)
            # AuxK's dead latents, from the steps before this one (reading their count in the
            # forward is a host synchronisation; the other is the decode's index check)
            dead = since_fired >= dead_window if cfg.aux_alpha > 0 else None
            out = sae(x, mse_scale=mse_scale, dead_mask=dead, k_aux=cfg.k_aux_effective, compute_dtype=cdtype,
                      project_grad=fused_projection, reduce=_all_reduce_)
            nmse, code = out.nmse, out.code
            loss = nmse / world  # gradients are summed over ranks: the mean of the global batch
            if out.aux_loss is None:  # AuxK off
                aux = torch.zeros((), dtype=nmse.dtype, device=device)
            else:  # a constant zero when no latent is dead: adding it changes neither loss nor gradients
                aux = out.aux_loss
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
        batches.close()
        if bar is not None:
            bar.close()
    return TrainResult(sae, history, cfg, step)
