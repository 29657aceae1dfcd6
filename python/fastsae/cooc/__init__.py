"""Co-occurrence of top-k SAE codes and what is built on it (paper section 4.2):

* :mod:`.result` -- the result :class:`Cooccurrence` (C, D, freq, n_rows) and its ``.npz`` file;
* :mod:`.accumulate` -- :class:`CooccurrenceAccumulator` and :func:`cooccurrence` (native core,
  streaming over chunks);
* :mod:`.normalize` -- the normalisations (``normalize``, ``npmi``, ...) and ``threshold``;
* :mod:`._check` -- the structure and content checks of results and their files;
* :mod:`.forest` -- the maximum spanning forest of a (normalised) co-occurrence graph;
* :mod:`.distributed` -- co-occurrence across ``torch.distributed`` ranks.

This package re-exports every name the single module ``fastsae.cooc`` had. Private helpers that
are looked up at call time (``_available_memory``) live in :mod:`.accumulate`: patch them there.
"""

from .result import Cooccurrence, Matrix, _csr_unchecked
from .accumulate import (
    DEFAULT_CHUNK_ENTRIES,
    CooccurrenceAccumulator,
    _available_memory,
    cooccurrence,
    default_chunk_size,
)
from .normalize import (
    NORMALIZATIONS,
    _check_result,
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
from ._check import check_contents, check_structure, read_npz

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
