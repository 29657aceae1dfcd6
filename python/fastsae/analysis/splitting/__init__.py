"""Feature splitting across SAE sizes and features shared between domains (paper section 4.1,
appendices A.4, C and D.1; Figs. 6, 10, 11, 12, 13 and Table 4).

Every analysis is a function returning data plus a ``plot_*`` function writing a PNG:

* :func:`decoder_similarity`: for each decoder row of one SAE, its nearest rows (cosine) in
  another, computed block by block so that two 131,072-latent SAEs never need the full
  ``n_b x n_a`` matrix; :func:`nn_cosine_distribution` / :func:`plot_nn_cosines` (Fig. 6).
* :func:`activation_similarity`: cosine of two features' activation vectors over the same
  documents, from sparse top-k codes (:func:`plot_activation_similarity`).
* :func:`match_features`: each feature of a larger SAE matched to its nearest feature of a
  smaller one and labelled ``recurrent``, ``split`` or ``novel`` (:func:`plot_matches`).
* :func:`feature_triplets`: features present in three SAEs at a cosine threshold (Fig. 13a,
  :func:`plot_triplets`).
* :func:`self_consistency`: nearest-neighbour maps 16->64 found directly vs through 32
  (Fig. 13b, :func:`plot_self_consistency`).
* :func:`cross_domain_matches`: best match of each feature in an SAE trained on another
  corpus (Fig. 10, Table 4, :func:`plot_cross_domain`).
* :func:`split_heatmap` / :func:`plot_split_heatmap`: cosine (or activation similarity)
  between hand-picked features of several SAEs (Figs. 11, 12).

Weights may be given as torch tensors (any float dtype, any device), numpy arrays, or a
:class:`fastsae.TopKSAE`. Rows are normalised here, so the decoder need not be unit-norm; an
all-zero row has no direction and is rejected.

Which space the directions are compared in: the SAEs of one run (the sizes of a sweep) are
trained on the same data with one standardisation, so their ``W_dec`` rows live in one space
and the within-run analyses (:func:`decoder_similarity`, :func:`match_features`,
:func:`feature_triplets`, :func:`self_consistency`, :func:`split_heatmap`) use a TopKSAE's
``W_dec`` as it is. SAEs trained on different corpora (:func:`cross_domain_matches`) each have
their own standardisation, and cosines between two different standardised spaces mean
nothing: there a TopKSAE gives its input-space directions
(:meth:`fastsae.TopKSAE.feature_directions`), and raw matrices must be input-space directions
too (pass ``sae.feature_directions()``, or the SAE itself). For SAEs of one run whose
standardisation differs (different training subsets), pass ``feature_directions()`` explicitly. Cosines are computed
in float64 when an input is float64, in float32 otherwise, on the device of the first torch
input (CPU for numpy inputs) unless ``device=`` says otherwise.

Codes are a :class:`fastsae.SparseCode` or an ``(indices [N, k], values [N, k])`` pair (torch
or numpy); entries whose value is 0 are padding and ignored (their index may be anything).

The code lives in :mod:`.neighbours`, :mod:`.activation`, :mod:`.matching`, :mod:`.consistency`
and :mod:`.heatmap`; this package re-exports every name the single module had.
"""

from .activation import (
    ActivationSimilarity,
    activation_similarity,
    plot_activation_similarity,
)
from .consistency import (
    FeatureTriplets,
    SelfConsistency,
    feature_triplets,
    plot_self_consistency,
    plot_triplets,
    self_consistency,
)
from .heatmap import SplitHeatmap, plot_split_heatmap, split_heatmap
from .matching import (
    CATEGORIES,
    CrossDomainMatches,
    FeatureMatches,
    cross_domain_matches,
    match_features,
    plot_cross_domain,
    plot_matches,
)
from .neighbours import (
    CosineDistribution,
    NearestNeighbours,
    decoder_neighbours,
    decoder_similarity,
    nn_cosine_distribution,
    plot_nn_cosines,
)

__all__ = [
    "CATEGORIES",
    "ActivationSimilarity",
    "CosineDistribution",
    "CrossDomainMatches",
    "FeatureMatches",
    "FeatureTriplets",
    "NearestNeighbours",
    "SelfConsistency",
    "SplitHeatmap",
    "activation_similarity",
    "cross_domain_matches",
    "decoder_neighbours",
    "decoder_similarity",
    "feature_triplets",
    "match_features",
    "nn_cosine_distribution",
    "plot_activation_similarity",
    "plot_cross_domain",
    "plot_matches",
    "plot_nn_cosines",
    "plot_self_consistency",
    "plot_split_heatmap",
    "plot_triplets",
    "self_consistency",
    "split_heatmap",
]
