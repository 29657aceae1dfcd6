"""fastsae: fast top-k sparse autoencoders for dense embeddings, and the structure of their features.

Public API (the compiled ``fastsae._native`` module is private):

* co-occurrence of top-k codes: :class:`CooccurrenceAccumulator`, :func:`cooccurrence`,
  :func:`distributed_cooccurrence`, the result :class:`Cooccurrence`, and normalisations in
  :mod:`fastsae.cooc` (``normalize``, ``threshold``, ...);
* graphs: :func:`maximum_spanning_forest`;
* the model: :class:`TopKSAE` and its operations in :mod:`fastsae.ops` (:class:`SparseCode`).
"""

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
from . import ops
from .analysis import feature_families
from .distributed import distributed_cooccurrence
from .graph import SpanningForest, maximum_spanning_forest
from .formats import load_sae
from .model import SAEOutput, TopKSAE
from .ops import SparseCode
from .sweeps import PowerLawFit, SweepResult, fit_power_law, sweep
from .trainer import TrainConfig, TrainResult, encode_dataset, geometric_median, train
from .autointerp import FeatureResult, InterpretResults, interpret_families, interpret_features
from .feature_search import SearchResult, search
from .corpus import DemoCorpus, demo_corpus, load_taxonomy, topic_feature_recovery
from .embed import Embedder, EmbeddingError, embed_texts, get_embedder, load_embedder, read_texts

from ._version import __version__  # noqa: E402

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
