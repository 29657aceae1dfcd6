"""Ground truth: data with known structure, and how much of it an SAE recovers.

* :mod:`.codes` -- generated top-k codes (Zipf latents, planted parent/child families).
* :mod:`.planted` -- planted-feature embeddings with known feature families.
* :mod:`.taxonomy` -- the demo corpus's taxonomy (``taxonomy.json``, shipped in this folder).
* :mod:`.corpus` -- the built-in demo corpus of scientific-abstract-like documents.
* :mod:`.recovery` -- every recovery metric (features, families, taxonomy nodes).

The old modules ``fastsae.synthetic``, ``fastsae.datasets`` and ``fastsae.corpus`` are aliases:
``fastsae.synthetic`` is :mod:`.codes`; the other two are this package, which re-exports every
name they had.
"""

from .codes import PlantedCodes, planted_hierarchy_codes, zipf_codes, zipf_probabilities
from .corpus import DemoCorpus, demo_corpus
from .planted import PlantedCorpus, TrueCodes, planted_codes_from_corpus, planted_embeddings
from .recovery import (
    FamilyMatch,
    FamilyRecovery,
    FeatureRecovery,
    FoundFamilyMatch,
    NodeMatch,
    TopicRecovery,
    family_recovery,
    family_recovery_by_ids,
    features_recovered,
    firing_matrix,
    membership_f1,
    taxonomy_recovery,
    topic_feature_recovery,
)
from .taxonomy import LEVELS, Taxonomy, TaxonomyNode, load_taxonomy, path_membership

__all__ = [
    "PlantedCodes", "planted_hierarchy_codes", "zipf_codes", "zipf_probabilities",
    "PlantedCorpus", "TrueCodes", "planted_embeddings", "planted_codes_from_corpus",
    "LEVELS", "TaxonomyNode", "Taxonomy", "load_taxonomy", "path_membership",
    "DemoCorpus", "demo_corpus",
    "NodeMatch", "TopicRecovery", "topic_feature_recovery", "taxonomy_recovery", "firing_matrix", "membership_f1",
    "FeatureRecovery", "FamilyMatch", "FoundFamilyMatch", "FamilyRecovery", "features_recovered",
    "family_recovery", "family_recovery_by_ids",
]
