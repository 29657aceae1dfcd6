"""fastsae: fast top-k sparse autoencoders for dense embeddings, and the structure of their features.

The package is laid out as its pipeline; each stage is a subpackage that imports only earlier
stages and the plumbing (``io``, ``_checks``, ``_plot``, ``_arrays``, ``_endpoint``, ``errors``):

* :mod:`fastsae.embed` texts -> embeddings (OpenAI-compatible, local MiniLM, tfidf);
* :mod:`fastsae.ops` the two SAE operations (fused Triton kernels, torch path);
* :mod:`fastsae.sae` the top-k SAE, its training recipe, sweeps, other projects' checkpoints;
* :mod:`fastsae.cooc` co-occurrence C and activation similarity D, spanning forests (native);
* :mod:`fastsae.analysis` feature families, splitting, geometry;
* :mod:`fastsae.autointerp` labels and scores through any OpenAI-compatible endpoint;
* :mod:`fastsae.groundtruth` generated codes, planted embeddings, the demo corpus, recovery;
* :mod:`fastsae.report` the HTML explorer (reads a run directory);
* :mod:`fastsae.run` the run directory, its steps, search, the ``fastsae`` command line.

The names below are the public face; the compiled ``fastsae._native`` module is private.
Modules that moved keep their old import paths (``fastsae.model``, ``fastsae.trainer``,
``fastsae.datasets``, ...) as thin aliases, also reachable as attributes of this package.
"""

# embeddings -> SAE -> codes -> C, D -> forest -> families -> labels -> report -> run
from . import ops
from .embed import Embedder, EmbeddingError, embed_texts, get_embedder, load_embedder, read_texts
from .ops import SparseCode
from .sae.model import SAEOutput, TopKSAE
from .sae.trainer import TrainConfig, TrainResult, encode_dataset, geometric_median, train
from .sae.sweeps import PowerLawFit, SweepResult, fit_power_law, sweep
from .sae.formats import load_sae
from .cooc import (
    Cooccurrence,
    CooccurrenceAccumulator,
    act_sim_cosine,
    cooccurrence,
    jaccard,
    normalize,
    normalize_frequency,
    normalize_min,
    npmi,
    threshold,
)
from .cooc.distributed import distributed_cooccurrence
from .cooc.forest import SpanningForest, maximum_spanning_forest
from .analysis import feature_families
from .autointerp import FeatureResult, InterpretResults, interpret_families, interpret_features
from .groundtruth import DemoCorpus, demo_corpus, load_taxonomy, topic_feature_recovery
from .run.search import SearchResult, search
from ._version import __version__

# Old module paths (thin alias modules next to this file), importable and, as before, reachable
# as attributes of the package (``import fastsae; fastsae.datasets.planted_embeddings(...)``).
_OLD_MODULES = frozenset({
    "model", "trainer", "checkpoints", "data", "sweeps", "formats",    # -> fastsae.sae
    "graph", "distributed", "_cooc_check",                              # -> fastsae.cooc
    "corpus", "datasets", "synthetic",                                  # -> fastsae.groundtruth
    "rundir", "pipeline", "cli", "feature_search",                      # -> fastsae.run
})


def __getattr__(name: str):
    if name in _OLD_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FeatureResult",
    "InterpretResults",
    "interpret_families",
    "interpret_features",
    "SearchResult",
    "search",
    "DemoCorpus",
    "demo_corpus",
    "load_taxonomy",
    "topic_feature_recovery",
    "Embedder",
    "EmbeddingError",
    "embed_texts",
    "get_embedder",
    "load_embedder",
    "read_texts",
    "SAEOutput",
    "SparseCode",
    "TopKSAE",
    "PowerLawFit",
    "SweepResult",
    "TrainConfig",
    "TrainResult",
    "encode_dataset",
    "feature_families",
    "fit_power_law",
    "load_sae",
    "sweep",
    "geometric_median",
    "ops",
    "train",
    "Cooccurrence",
    "CooccurrenceAccumulator",
    "SpanningForest",
    "act_sim_cosine",
    "cooccurrence",
    "distributed_cooccurrence",
    "jaccard",
    "maximum_spanning_forest",
    "normalize",
    "normalize_frequency",
    "normalize_min",
    "npmi",
    "threshold",
]
