"""The page itself: JSON-safe numbers and text for the data blob, and the Jinja2 template
(``templates/``) with the CSS, the script and the data inlined, so the page opens from disk."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["render_html"]

SNIPPET_CHARS = 400
"""Characters of each top document's text kept in the page."""

_TEMPLATES = Path(__file__).parent / "templates"



def _num(x: Any, digits: int = 4) -> float | None:
    """A JSON-safe float rounded to ``digits`` significant digits (None for nan/inf/missing)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _ratio(x: Any) -> float | str | None:
    """R(p, C) for JSON: inf (children never co-occur with each other) is kept as "inf"."""
    if x is None:
        return None
    v = float(x)
    if math.isinf(v) and v > 0:
        return "inf"
    return _num(v)


def _snippet(text: Any, limit: int = SNIPPET_CHARS) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "\u2026"


def _script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&``
    only occur inside JSON strings, where their \\u escapes mean the same, so no ``</script>``
    or ``<!--`` in a document can end the element early."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s



def render_html(data: dict) -> str:
    """The page for :func:`collect_report_data`'s dict (Jinja2 template, inline CSS/JS/data)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    css = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
    js = (_TEMPLATES / "report.js").read_text(encoding="utf-8")
    for name, text in (("report.css", css), ("report.js", js)):
        if "</" in text.replace("<\\/", ""):  # would end the inline element early
            raise RuntimeError(f"templates/{name} must not contain '</'")
    return env.get_template("index.html.j2").render(
        meta=data["meta"], notes=data["notes"], css=_markup(css),
        js=_markup(js), data_json=_markup(_script_json(data)))


def _markup(s: str):
    from markupsafe import Markup

    return Markup(s)
