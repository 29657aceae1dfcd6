"""The report in a real headless Chromium, driven over the DevTools protocol (tests/support/cdp.py):
it loads from file:// with no console error, the search box filters the index, a feature
page shows its top documents, a family page renders its tree, hostile text stays text.

Skipped only when no Chromium/Chrome binary is installed (`.ci/run` installs Debian's).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdp import Browser, find_chromium
from fastsae.report import build_report
from fastsae.report.data import tree_parents
from test_report import HOSTILE, HOSTILE_LABEL, MAIN, brute_top_docs, build_run, label_of

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium, chromium-browser or google-chrome binary on PATH")


def matching_ids(query: str, n: int) -> list[int]:
    """The index's search rule, independently: every term is in the label or is the id."""
    terms = query.lower().split()
    return [j for j in range(n) if all(t in (label_of(j) or "").lower() or t.lstrip("#") == str(j) for t in terms)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    facts = build_run(tmp_path_factory.mktemp("report-browser") / "run")
    facts["path"] = build_report(facts["run"], top_docs=5)
    facts["url"] = facts["path"].resolve().as_uri()
    return facts


@pytest.fixture(scope="module")
def browser():
    b = Browser.launch(CHROMIUM)
    try:
        for domain in ("Runtime", "Log", "Page"):
            b.call(f"{domain}.enable")
        yield b
    finally:
        b.close()


def visible_rows(b: Browser) -> int:
    return b.evaluate("document.querySelectorAll('#index-body tr').length")


def test_index_loads_and_search_filters(site, browser):
    b, n = browser, site["n"]
    b.navigate(site["url"])
    b.wait_for("document.querySelectorAll('#index-body tr').length > 0")
    assert visible_rows(b) == n
    assert b.evaluate("document.getElementById('index-count').textContent") == f"{n} features"
    assert b.evaluate("document.querySelectorAll('script').length") == 2

    for query, expect_min in (("galaxy", 2), ("NEURAL topic", 2), ("#7", 1), ("no-such-label", 0)):
        expect = matching_ids(query, n)
        assert len(expect) >= expect_min
        b.evaluate("(() => { const s = document.getElementById('search'); s.value = %s;"
                   " s.dispatchEvent(new Event('input', {bubbles: true})); })()" % json.dumps(query))
        assert visible_rows(b) == len(expect), query
        shown = b.evaluate("Array.from(document.querySelectorAll('#index-body tr')).map(r => +r.dataset.feature)")
        assert shown == expect  # sorted by id, the default

    # clear the search, sort by density (descending on first click)
    b.evaluate("(() => { const s = document.getElementById('search'); s.value = '';"
               " s.dispatchEvent(new Event('input', {bubbles: true})); })()")
    assert visible_rows(b) == n
    b.evaluate("document.querySelector('th[data-key=density]').click()")
    first = b.evaluate("+document.querySelector('#index-body tr').dataset.feature")
    freq = (site["A"] > 0).sum(axis=0)
    assert first == int(np.lexsort((np.arange(n), -freq))[0])
    # the hostile label is text, not an element
    assert b.evaluate("document.querySelectorAll('#view img').length") == 0
    assert b.evaluate("document.querySelector('tr[data-feature=\"5\"] .label').textContent") == HOSTILE_LABEL
    assert b.errors() == []


def test_feature_page_shows_top_documents(site, browser):
    b = browser
    j = site["hostile_feature"]
    b.navigate(site["url"] + f"#feature/{j}")
    b.wait_for("document.querySelectorAll('#top-docs-table tr.top-doc').length > 0")
    expect_rows = brute_top_docs(site["A"], j, 5)
    rows = b.evaluate("Array.from(document.querySelectorAll('#top-docs-table tr.top-doc')).map(r => +r.dataset.row)")
    assert rows == expect_rows
    text = b.evaluate("document.querySelector('#top-docs-table tr.top-doc .doc-text').textContent")
    assert text == f"Hostile {HOSTILE} body"  # the top document, shown verbatim as text
    assert b.evaluate("document.querySelector('#top-docs-table tr.top-doc .doc-title').textContent") == "<b>hostile title</b>"
    assert b.evaluate("document.querySelectorAll('script').length") == 2
    assert b.evaluate("document.querySelectorAll('#top-docs-table b, #view img').length") == 0
    # the other panels render
    assert b.evaluate("document.querySelectorAll('#histogram svg rect').length") == 20
    assert b.evaluate("document.querySelectorAll('#neighbours tbody tr').length") == 5
    assert b.evaluate("document.querySelectorAll('#cooccurring tbody tr').length") > 0
    assert b.evaluate("document.querySelectorAll('#splitting .split-row').length") == 1
    # hash routing inside the page: another feature
    b.evaluate("location.hash = '#feature/1'")
    b.wait_for("document.getElementById('feature-title') && document.getElementById('feature-title').textContent.indexOf('#1 ') >= 0")
    assert "neural topic 1" in b.evaluate("document.getElementById('feature-title').textContent")
    assert b.errors() == []


def test_family_tree_renders(site, browser):
    b = browser
    fams = site["fams"]
    k = max(range(len(fams)), key=lambda i: max(fams[i].depth))  # the deepest family
    f = fams[k]
    b.navigate(site["url"] + f"#family/{k}")
    b.wait_for("document.querySelector('#tree .tree-root') !== null")
    assert b.evaluate("+document.querySelector('#tree .tree-root').dataset.feature") == f.parent
    nodes = b.evaluate("Array.from(document.querySelectorAll('#tree li.tree-node')).map(li => +li.dataset.feature)")
    assert nodes == f.members  # DFS order
    # each node hangs under the right parent in the DOM
    dom_parent = b.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('#tree li.tree-node:not(.tree-root)'))"
                            ".map(li => [li.dataset.feature, +li.parentElement.closest('li.tree-node').dataset.feature]))")
    from fastsae.report import family_tree

    assert {int(c): p for c, p in dom_parent.items()} == tree_parents(family_tree(f.parent, f.children, f.depth))
    assert b.evaluate("document.getElementById('family-R').textContent") not in ("", "\u2013")
    m = len(f.members[:60])
    assert b.evaluate("document.querySelectorAll('#family-heat svg rect').length") == m * m
    assert b.evaluate("document.querySelector('#family-heat img').complete && "
                      "document.querySelector('#family-heat img').naturalWidth > 0")
    # the families list and the figures load too (images from disk, relative paths)
    b.evaluate("location.hash = '#families'")
    b.wait_for("document.querySelectorAll('#family-index tbody tr').length > 0")
    assert b.evaluate("document.querySelectorAll('#family-index tbody tr').length") == len(fams)
    b.evaluate("location.hash = '#figures'")
    b.wait_for("document.querySelectorAll('figure.run-figure img').length === 2 && "
               "Array.from(document.querySelectorAll('figure.run-figure img')).every(i => i.complete && i.naturalWidth > 0)")
    b.evaluate("location.hash = '#run'")
    b.wait_for("document.body.dataset.view === 'run'")
    assert "median_pearson" in b.evaluate("document.getElementById('labels-summary').textContent")
    assert b.errors() == []
