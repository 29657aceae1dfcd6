"""Co-occurrence of top-k SAE codes and what is built on it (paper section 4.2):

* :mod:`.result` -- the result :class:`Cooccurrence` (C, D, freq, n_rows), its ``.npz`` file, and
  the normalisations (``normalize``, ``npmi``, ...) and ``threshold``;
* :mod:`.accumulate` -- :class:`CooccurrenceAccumulator` and :func:`cooccurrence` (native core,
  streaming over chunks);
* :mod:`._check` -- the structure and content checks of results and their files;
* :mod:`.forest` -- the maximum spanning forest of a (normalised) co-occurrence graph;
* :mod:`.distributed` -- co-occurrence across ``torch.distributed`` ranks.

This package re-exports every name the single module ``fastsae.cooc`` had. Private helpers that
are looked up at call time (``_available_memory``) live in :mod:`.accumulate`: patch them there.
"""

# Private names the single module had and tests or callers reach (re-exported, not in __all__).
from ._check import check_contents, check_structure, read_npz  # noqa: F401
from .accumulate import (  # noqa: F401
    DEFAULT_CHUNK_ENTRIES,
    CooccurrenceAccumulator,
    _available_memory,
    cooccurrence,
    default_chunk_size,
)
from .result import (  # noqa: F401
    NORMALIZATIONS,
    Cooccurrence,
    Matrix,
    _check_result,
    _csr_unchecked,
    _entries,
    _like,
    _npmi,
    act_sim_cosine,
    jaccard,
    normalize,
    normalize_frequency,
    normalize_min,
    npmi,
    threshold,
)

__all__ = [
    "Cooccurrence",
    "CooccurrenceAccumulator",
    "DEFAULT_CHUNK_ENTRIES",
    "Matrix",
    "NORMALIZATIONS",
    "act_sim_cosine",
    "cooccurrence",
    "default_chunk_size",
    "jaccard",
    "normalize",
    "normalize_frequency",
    "normalize_min",
    "npmi",
    "threshold",
]
