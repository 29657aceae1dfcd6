"""Analyses of learned features (paper sections 4.1, 4.2 and appendices): each a function
returning data plus a function drawing the paper's figure."""

from .families import (
    Family,
    FamilyStats,
    block_order,
    deduplicate,
    family_stats,
    feature_families,
    parent_child_ratio,
    plot_family_stats,
    plot_permuted_cooccurrence,
)

__all__ = [
    "Family",
    "FamilyStats",
    "block_order",
    "deduplicate",
    "family_stats",
    "feature_families",
    "parent_child_ratio",
    "plot_family_stats",
    "plot_permuted_cooccurrence",
]
