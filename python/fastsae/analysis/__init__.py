"""Analyses of learned features (paper sections 4.1, 4.2 and appendices): each a function
returning data plus a function drawing the paper's figure.

* :mod:`.families` -- feature families (paper and precise methods), their metrics and figures;
* :mod:`.splitting` -- decoder nearest neighbours across SAEs, recurrent/split/novel features,
  triplets, self-consistency, activation similarity, cross-domain matching;
* :mod:`.geometry` -- encoder/decoder alignment, decoder orderings (RCM, spectral), log
  feature density.
"""

from . import geometry, splitting
from .families import (
    Family,
    FamilyStats,
    block_order,
    deduplicate,
    family_stats,
    family_table,
    feature_families,
    parent_child_ratio,
    plot_family_stats,
    plot_permuted_cooccurrence,
)

__all__ = [
    "geometry",
    "splitting",
    "Family",
    "FamilyStats",
    "block_order",
    "deduplicate",
    "family_stats",
    "family_table",
    "feature_families",
    "parent_child_ratio",
    "plot_family_stats",
    "plot_permuted_cooccurrence",
]
