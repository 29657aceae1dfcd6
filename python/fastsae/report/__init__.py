"""The static HTML explorer of a run directory: ``RUN/report/index.html``, opened from disk.

:func:`build_report` reads what the run computed (:mod:`fastsae.rundir`) and writes one page
plus a copy of the run's figures::

    RUN/report/index.html      the page: inline CSS and JS, the data as one JSON script tag
    RUN/report/figures/*.png   copies of RUN/figures/*.png (the folder can be moved or zipped)

The page holds no per-feature DOM: the feature data (labels, scores, top documents,
histograms, neighbours, co-occurring features, splitting, families) is one JSON blob, and the
script renders the view the URL hash asks for (``#feature/12``, ``#family/3``, ``#families``,
``#figures``, ``#run``; the feature index otherwise). A ``file://`` page cannot ``fetch()``
local files in Chromium, hence the script tag. Nothing is loaded from the network (a
Content-Security-Policy forbids it), and document text is user data: it only ever reaches the
page through ``textContent`` and JSON escaped for a script element.

The report reads only: optional inputs (labels, families, splitting, co-occurrence, corpus,
figures, other SAE sizes) may be missing, and the report is still built and lists what is
missing and the command that computes it; it never runs an analysis step itself.

* :mod:`.build` -- :func:`build_report`, :func:`collect_report_data` (reads the run directory).
* :mod:`.sections` -- the optional parts, each read from the file its step writes.
* :mod:`.data` -- per-feature tables from the codes and the co-occurrence (top documents, ...).
* :mod:`.render` -- the page: JSON-safe data and the Jinja2 template (``templates/``).
"""

from __future__ import annotations

# The constants and helpers that lived in this module before the split stay importable from it.
from .build import HIST_BINS, N_COOCCURRING, N_NEIGHBOURS, build_report, collect_report_data  # noqa: F401
from .data import (  # noqa: F401
    activation_histograms,
    decoder_neighbours,
    family_tree,
    member_matrix,
    submatrix,
    top_cooccurring,
    top_documents,
    tree_parents,
)
from .render import SNIPPET_CHARS, render_html  # noqa: F401
from .sections import FAMILY_HEATMAP_MAX, N_SPLIT, PERMUTED_FIGURE  # noqa: F401

__all__ = [
    "build_report",
    "collect_report_data",
    "render_html",
    "family_tree",
    "top_documents",
    "activation_histograms",
    "decoder_neighbours",
    "top_cooccurring",
]
