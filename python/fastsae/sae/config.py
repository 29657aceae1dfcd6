"""What a training run is: :class:`TrainConfig` (every choice of the recipe, checked), what it
returns (:class:`TrainResult`), and which fields may change when a run is resumed
(:data:`RESUME_FREE_FIELDS`, :func:`_resume_differences`)."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from typing import NamedTuple

from .._checks import check_choice, check_int, check_number
from .model import TopKSAE


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
        # Checked, not converted: the fields stay as given (they are the run's recorded config).
        for name in ("n_latents", "k", "batch_size", "log_every", "checkpoint_every", "median_sample"):
            check_int(getattr(self, name), name, min=1)
        if self.k >= self.n_latents:
            raise ValueError(f"k={self.k} must be smaller than n_latents={self.n_latents}")
        check_number(self.epochs, "epochs", min=0, min_open=True)
        check_number(self.lr, "lr", min=0, min_open=True)
        check_number(self.grad_clip, "grad_clip", min=0)
        check_number(self.aux_alpha, "aux_alpha", min=0)
        check_int(self.k_aux, "k_aux", min=1, max=self.n_latents, none=True)
        check_int(self.dead_window, "dead_window", min=1, none=True)
        check_number(self.eval_fraction, "eval_fraction", min=0, max=1, max_open=True)
        check_choice(self.dtype, "dtype", ("float32", "float64"))
        check_choice(self.compute_dtype, "compute_dtype", (None, "bfloat16"))
        check_int(self.max_steps, "max_steps", min=1, none=True)
        check_choice(self.resume_mismatch, "resume_mismatch", ("error", "allow"))
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

