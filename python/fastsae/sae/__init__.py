"""The SAE stage: the model, its training and what surrounds it.

* :mod:`.model` -- :class:`TopKSAE` and its one forward (:class:`SAEOutput`, the losses included);
* :mod:`.config` -- :class:`TrainConfig`, :class:`TrainResult`, :data:`RESUME_FREE_FIELDS`;
* :mod:`.trainer` -- :func:`train`, the loop (set-up/resume, batches, the step, metrics, checkpoints);
* :mod:`.batches` -- the batch source (resident on the device or prefetched; the epoch order);
* :mod:`.checkpoints` -- the checkpoint folders; :mod:`.data` -- :class:`ArraySource`;
* :mod:`.encode` -- :func:`encode_dataset`; :mod:`.sweeps` -- (k, n) sweeps and scaling laws;
* :mod:`.formats` -- other projects' checkpoints as a :class:`TopKSAE`.

The loop's module is ``trainer`` (not ``train``): a submodule named like the function this
package exports would be shadowed by it (``fastsae.sae.train`` is the function).
"""

from .config import RESUME_FREE_FIELDS, TrainConfig, TrainResult
from .data import ArraySource
from .encode import encode_dataset
from .formats import (
    FORMATS,
    load_openai_sae,
    load_paper_pth,
    load_sae,
    load_saelens,
    load_sparsify,
)
from .model import SAEOutput, TopKSAE
from .sweeps import (
    PowerLawFit,
    SweepResult,
    SweepRun,
    fit_power_law,
    load_sweep,
    plot_scaling,
    sweep,
)
from .trainer import (
    geometric_median,
    make_optimizer,
    optimizer_step,
    train,
    training_flops_per_example,
)

__all__ = [
    "FORMATS", "RESUME_FREE_FIELDS", "ArraySource", "PowerLawFit", "SAEOutput", "SweepResult", "SweepRun",
    "TopKSAE", "TrainConfig", "TrainResult", "encode_dataset", "fit_power_law", "geometric_median",
    "load_openai_sae", "load_paper_pth", "load_sae", "load_saelens", "load_sparsify", "load_sweep",
    "make_optimizer", "optimizer_step", "plot_scaling", "sweep", "train", "training_flops_per_example",
]
