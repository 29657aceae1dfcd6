"""The one plotting set-up every figure of fastsae uses.

Figures are drawn on matplotlib's Agg canvas through the object API (``Figure``), never through
pyplot or ``matplotlib.use``: no display is needed, no global backend is switched under a
user's notebook, and figures can be drawn from threads. :func:`save_figure` writes a PNG
atomically (readers never see a torn file), :func:`figure_png` returns its bytes.
"""

from __future__ import annotations

import io
import os
from typing import Any

from .io import atomic_write

DPI = 130
"""Default resolution of saved figures."""


def new_figure(width: float = 6.0, height: float = 4.0, *, nrows: int = 1, ncols: int = 1,
               layout: str | None = None, **subplot_kw: Any):
    """``(fig, axes)``: a ``width x height`` inch figure on an Agg canvas with an
    ``nrows x ncols`` grid of axes (``axes`` is one Axes for a 1 x 1 grid, else a flat list).
    ``layout="constrained"`` lays it out as drawn; otherwise :func:`save_figure` tightens it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1, **subplot_kw) for i in range(nrows * ncols)]
    return fig, (axes[0] if len(axes) == 1 else axes)


def _finish(fig) -> None:
    if fig.get_layout_engine() is None:
        fig.tight_layout()


def save_figure(fig, path: str | os.PathLike, *, dpi: int = DPI) -> str:
    """Write ``fig`` as a PNG to ``path`` atomically; returns the path as a string."""
    _finish(fig)
    p = os.fspath(path)
    atomic_write(p, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return p


def figure_png(fig, *, dpi: int = DPI) -> bytes:
    """The PNG bytes of ``fig`` (for reports that inline their figures)."""
    _finish(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
