/* fastsae report: renders the views of the data element on demand (hash routing).
 *
 * Views: #features (the index, default), #feature/<id>, #families, #family/<i>, #figures, #run.
 * Every piece of run data (labels, document text, titles) reaches the page through text nodes
 * (el() below never sets innerHTML), so a document cannot inject markup or script.
 *
 * Data layout (built by fastsae.report.collect_report_data):
 *   meta    run facts; notes: what is missing
 *   f       per feature, columnar: label, pearson, f1, freq, fam (family indices or null), reason, backend
 *   docs    [row, corpus id, title, text snippet, topic path] of every document shown
 *   top     per feature: [[doc ref, activation], ...] best first (null: details left out)
 *   hist    per feature: [max activation, [counts of HIST_BINS equal bins over [0, max]]]
 *   nn      per feature: [[feature, decoder cosine], ...]
 *   co      per feature: [[feature, documents where both fire], ...]
 *   split   {saes, sizes, nn: {sae: per feature [[feature, cosine], ...]}, source, summary} or null
 *   fams    [{parent, children, depth, iteration, R, tree, edges, heat, label, pearson, f1}]
 *   figs    [{name, src}]; heatmap: src of the permuted co-occurrence figure or null
 *   tables, metrics, config, labels_summary: shown on the Run view
 */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("fastsae-data").textContent);
  var F = D.f;
  var N = F.label.length;
  var NDOCS = Math.max(D.meta.n_docs, 1);
  var PAGE = 500; // index rows rendered at once: the DOM stays small at 100k+ features
  var view = document.getElementById("view");
  var SVGNS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------------------- helpers
  function el(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "class") e.setAttribute("class", v);
      else if (k === "text") e.textContent = String(v);
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    });
  }
  function add(e, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(e, x); }); return; }
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "\u2013";
    if (v === "inf") return "\u221e";
    return Number(v).toFixed(digits === undefined ? 3 : digits);
  }
  function pct(x) {
    if (x === 0) return "0";
    var p = 100 * x;
    return (p >= 1 ? p.toFixed(2) : p.toPrecision(2)) + "%";
  }
  function density(i) { return F.freq[i] / NDOCS; }
  function featLink(i) { return el("a", { href: "#feature/" + i, class: "feat-link" }, "#" + i); }
  function labelOf(i) {
    return F.label[i] ? el("span", { class: "label" }, F.label[i]) : el("span", { class: "unlabelled" }, "unlabelled");
  }
  function famLinks(i) {
    var fs = F.fam[i];
    if (!fs) return el("span", { class: "muted" }, "\u2013");
    return fs.map(function (k, n) {
      var role = D.fams[k].parent === i ? "parent" : "child";
      return [n ? ", " : "", el("a", { href: "#family/" + k, title: role + " in family " + k }, k + (role === "parent" ? " (parent)" : ""))];
    });
  }
  function section(title, id) {
    var s = el("section", { id: id });
    add(s, el("h3", null, title));
    return s;
  }
  function table(heads, rows, attrs) {
    var t = el("table", attrs);
    var tr = el("tr");
    heads.forEach(function (h) { add(tr, el("th", { class: h[1] || null }, h[0])); });
    add(t, el("thead", null, tr));
    var tb = el("tbody");
    rows.forEach(function (r) { add(tb, r); });
    add(t, tb);
    return t;
  }
  function setActiveNav(name) {
    ["features", "families", "figures", "run"].forEach(function (n) {
      var a = document.getElementById("nav-" + n);
      if (a) a.className = n === name ? "active" : "";
    });
  }
  function show(name, title) {
    setActiveNav(name);
    while (view.firstChild) view.removeChild(view.firstChild);
    document.title = title + " \u2013 fastsae report";
    window.scrollTo(0, 0);
  }

  // ---------------------------------------------------------------------------- index
  var idx = { q: "", key: "id", dir: 1, shown: PAGE };
  var COLS = [
    ["id", "ID", "num"], ["label", "Label", ""], ["pearson", "Pearson", "num"], ["f1", "F1", "num"],
    ["density", "Density", "num"], ["family", "Family", ""]
  ];
  function sortValue(key, i) {
    switch (key) {
      case "id": return i;
      case "label": return F.label[i] ? F.label[i].toLowerCase() : null;
      case "pearson": return F.pearson[i];
      case "f1": return F.f1[i];
      case "density": return F.freq[i];
      case "family": return F.fam[i] ? F.fam[i][0] : null;
    }
    return null;
  }
  // A row matches when every whitespace-separated term is in its label (case-insensitive)
  // or is its id (optionally written #id).
  function matches(i, terms) {
    var lab = F.label[i].toLowerCase();
    for (var t = 0; t < terms.length; t++) {
      var term = terms[t];
      if (lab.indexOf(term) < 0 && term.replace(/^#/, "") !== String(i)) return false;
    }
    return true;
  }
  function indexRows() {
    var terms = idx.q.toLowerCase().split(/\s+/).filter(Boolean);
    var ids = [];
    for (var i = 0; i < N; i++) if (!terms.length || matches(i, terms)) ids.push(i);
    var key = idx.key, dir = idx.dir;
    ids.sort(function (a, b) {
      var va = sortValue(key, a), vb = sortValue(key, b);
      if (va === null && vb === null) return a - b;
      if (va === null) return 1; // missing values last in both directions
      if (vb === null) return -1;
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return a - b;
    });
    return ids;
  }
  function renderIndex() {
    show("features", "Features");
    add(view, el("h2", null, "Features of " + D.meta.sae));
    var search = el("input", {
      type: "search", id: "search", placeholder: "Search labels or #id\u2026", autocomplete: "off",
      oninput: function (e) { idx.q = e.target.value; idx.shown = PAGE; fill(); }
    });
    search.value = idx.q;
    var count = el("span", { id: "index-count", class: "muted" });
    add(view, el("div", { class: "toolbar" }, search, count));
    var tr = el("tr");
    COLS.forEach(function (c) {
      var th = el("th", { class: "sortable " + c[2], "data-key": c[0], title: "sort by " + c[1] }, c[1]);
      th.addEventListener("click", function () {
        if (idx.key === c[0]) idx.dir = -idx.dir;
        else { idx.key = c[0]; idx.dir = c[0] === "id" || c[0] === "label" ? 1 : -1; }
        fill();
      });
      add(tr, th);
    });
    var body = el("tbody", { id: "index-body" });
    add(view, el("table", { id: "feature-index" }, el("thead", null, tr), body));
    var more = el("button", { id: "index-more", type: "button" }, "Show more");
    more.addEventListener("click", function () { idx.shown += PAGE; fill(); });
    add(view, el("div", { class: "pager" }, more));

    function fill() {
      var ids = indexRows();
      while (body.firstChild) body.removeChild(body.firstChild);
      var frag = document.createDocumentFragment();
      var shown = Math.min(ids.length, idx.shown);
      for (var r = 0; r < shown; r++) {
        var i = ids[r];
        frag.appendChild(el("tr", { "data-feature": i },
          el("td", { class: "num" }, featLink(i)),
          el("td", null, labelOf(i)),
          el("td", { class: "num" }, fmt(F.pearson[i], 2)),
          el("td", { class: "num" }, fmt(F.f1[i], 2)),
          el("td", { class: "num", title: F.freq[i] + " documents" }, pct(density(i))),
          el("td", null, famLinks(i))));
      }
      body.appendChild(frag);
      count.textContent = (ids.length === N ? N + " features" : ids.length + " of " + N + " features match") +
        (shown < ids.length ? " (showing " + shown + ")" : "");
      more.style.display = shown < ids.length ? "" : "none";
      Array.prototype.forEach.call(tr.children, function (th) {
        var k = th.getAttribute("data-key");
        th.classList.toggle("sorted-asc", k === idx.key && idx.dir === 1);
        th.classList.toggle("sorted-desc", k === idx.key && idx.dir === -1);
      });
    }
    fill();
  }

  // ---------------------------------------------------------------------------- feature
  function histogram(h) {
    var W = 320, H = 90, pad = 14, counts = h[1], max = h[0], nb = counts.length;
    var top = Math.max.apply(null, counts.concat([1]));
    var s = svg("svg", { width: W, height: H + pad, class: "hist", role: "img", "aria-label": "activation histogram" });
    var bw = W / nb;
    counts.forEach(function (c, b) {
      var bh = c ? Math.max(1, (H - 4) * c / top) : 0;
      var lo = (max * b / nb).toPrecision(3), hi = (max * (b + 1) / nb).toPrecision(3);
      add(s, svg("rect", { x: b * bw + 0.5, y: H - bh, width: Math.max(bw - 1, 1), height: bh, fill: "#3a4fb5" },
        svg("title", null, lo + "\u2013" + hi + ": " + c + " documents")));
    });
    add(s, svg("line", { x1: 0, y1: H, x2: W, y2: H, stroke: "#999" }));
    add(s, svg("text", { x: 0, y: H + 11 }, "0"));
    add(s, svg("text", { x: W, y: H + 11, "text-anchor": "end" }, fmt(max, 3)));
    return s;
  }
  function docCell(ref) {
    var d = D.docs[ref];
    return el("td", null,
      d[2] ? el("div", { class: "doc-title" }, d[2]) : null,
      d[4] ? el("div", { class: "doc-path" }, d[4]) : null,
      d[3] ? el("div", { class: "doc-text" }, d[3]) : el("div", { class: "muted" }, "document row " + d[0]));
  }
  function renderFeature(i) {
    show("features", "Feature " + i);
    if (!(i >= 0 && i < N)) { add(view, el("p", null, "No feature " + i + " (this SAE has " + N + ").")); return; }
    add(view, el("div", { class: "navrow" },
      el("a", { href: "#features" }, "\u2190 index"),
      i > 0 ? el("a", { href: "#feature/" + (i - 1) }, "\u2039 #" + (i - 1)) : null,
      i < N - 1 ? el("a", { href: "#feature/" + (i + 1) }, "#" + (i + 1) + " \u203a") : null));
    add(view, el("h2", { id: "feature-title" }, "Feature #" + i + " ", labelOf(i)));
    var dl = el("dl", { class: "stats" });
    function stat(k, v) { add(dl, el("dt", null, k)); add(dl, el("dd", null, v)); }
    stat("Pearson", fmt(F.pearson[i], 3));
    stat("F1", fmt(F.f1[i], 3));
    stat("Density", pct(density(i)) + " (" + F.freq[i] + " of " + D.meta.n_docs + " documents)");
    stat("Families", famLinks(i));
    if (F.backend[i]) stat("Labelled by", F.backend[i]);
    add(view, dl);
    if (F.reason[i]) add(view, el("p", { class: "reasoning" }, F.reason[i]));
    if (!D.top[i]) {
      add(view, el("p", { class: "muted" }, "Details of this feature are not in the report (it was built for the " +
        D.meta.n_detail + " most active features; rebuild with a larger --max-features)."));
      return;
    }
    var s = section("Top documents", "top-docs");
    if (!D.top[i].length) add(s, el("p", { class: "muted" }, "This feature never fires."));
    else add(s, table([["#", "num"], ["Activation", "num"], ["Document"], ["Id", "num"]],
      D.top[i].map(function (t, r) {
        return el("tr", { class: "top-doc", "data-row": D.docs[t[0]][0] },
          el("td", { class: "num" }, r + 1), el("td", { class: "num" }, fmt(t[1], 3)), docCell(t[0]),
          el("td", { class: "num muted" }, D.docs[t[0]][1]));
      }), { id: "top-docs-table" }));
    add(view, s);
    var g = el("div", { class: "grid2" });
    var h = section("Activation histogram", "histogram");
    add(h, D.hist[i] && D.hist[i][0] ? histogram(D.hist[i]) : el("p", { class: "muted" }, "no activations"));
    add(g, h);
    var nn = section("Decoder nearest neighbours", "neighbours");
    add(nn, table([["Feature"], ["Label"], ["Cosine", "num"]], (D.nn[i] || []).map(function (p) {
      return el("tr", null, el("td", null, featLink(p[0])), el("td", null, labelOf(p[0])), el("td", { class: "num" }, fmt(p[1], 3)));
    })));
    add(g, nn);
    var co = section("Top co-occurring features", "cooccurring");
    if (!D.co[i]) add(co, el("p", { class: "muted" }, "no co-occurrence computed (run `fastsae cooc`)"));
    else if (!D.co[i].length) add(co, el("p", { class: "muted" }, "fires with no other feature"));
    else add(co, table([["Feature"], ["Label"], ["Both", "num"], ["P(j | this)", "num"], ["P(this | j)", "num"]],
      D.co[i].map(function (p) {
        return el("tr", null, el("td", null, featLink(p[0])), el("td", null, labelOf(p[0])),
          el("td", { class: "num" }, p[1]), el("td", { class: "num" }, fmt(p[1] / Math.max(F.freq[i], 1), 3)),
          el("td", { class: "num" }, fmt(p[1] / Math.max(F.freq[p[0]], 1), 3)));
      })));
    add(g, co);
    var sp = section("Splitting across SAE sizes", "splitting");
    if (!D.split) add(sp, el("p", { class: "muted" }, "only one SAE size in this run"));
    else D.split.saes.forEach(function (name) {
      var per = D.split.nn[name][i] || [];
      add(sp, el("div", { class: "split-row", "data-sae": name },
        el("b", null, name + (D.split.sizes[name] ? " (" + D.split.sizes[name] + ")" : "") + ": "),
        per.map(function (p, r) { return [r ? ", " : "", "#" + p[0] + " ", el("span", { class: "muted" }, "cos " + fmt(p[1], 3))]; })));
    });
    add(g, sp);
    add(view, g);
  }

  // ---------------------------------------------------------------------------- families
  function famTitle(k) {
    var f = D.fams[k];
    return f.label || F.label[f.parent] || "";
  }
  function renderFamilies() {
    show("families", "Families");
    add(view, el("h2", null, "Feature families"));
    if (!D.fams.length) {
      add(view, el("p", { class: "muted" }, D.meta.families ? "No families were found." :
        "No families in this run (run `fastsae families`)."));
      return;
    }
    var m = D.meta.families;
    add(view, el("p", { class: "muted" }, D.fams.length + " families, method " + (m.method || "?") + ", \u03c4 = " + fmt(m.tau, 2) +
      ". R(p, C): mean child\u2013parent co-occurrence over mean child\u2013child co-occurrence."));
    if (D.heatmap) add(view, el("p", null, el("a", { href: "#figures" }, "Permuted co-occurrence figure")));
    add(view, table([["#", "num"], ["Parent"], ["Label"], ["Size", "num"], ["R(p, C)", "num"], ["Iteration", "num"]],
      D.fams.map(function (f, k) {
        return el("tr", { "data-family": k },
          el("td", { class: "num" }, el("a", { href: "#family/" + k }, k)),
          el("td", null, featLink(f.parent)),
          el("td", null, famTitle(k) ? famTitle(k) : el("span", { class: "unlabelled" }, "unlabelled")),
          el("td", { class: "num" }, f.children.length + 1),
          el("td", { class: "num" }, fmt(f.R, 2)),
          el("td", { class: "num" }, f.iteration === null || f.iteration === undefined ? "\u2013" : f.iteration));
      }), { id: "family-index" }));
  }
  function treeNode(node, f, root) {
    var edge = f.edges[String(node.id)];
    var li = el("li", { class: "tree-node" + (root ? " tree-root" : ""), "data-feature": node.id },
      el("span", { class: "node" }, featLink(node.id), " ", labelOf(node.id),
        el("span", { class: "edge", title: "density of this feature" }, pct(density(node.id))),
        edge !== undefined && edge !== null ? el("span", { class: "edge", title: "P(node above fires | this fires)" }, "P(up | this) " + fmt(edge, 2)) : null));
    if (node.children.length) {
      var ul = el("ul");
      node.children.forEach(function (c) { add(ul, treeNode(c, f, false)); });
      add(li, ul);
    }
    return li;
  }
  function heatmap(heat) {
    var n = heat.ids.length, cell = Math.max(6, Math.min(22, Math.floor(440 / n))), off = 0;
    var s = svg("svg", { width: n * cell + off + 2, height: n * cell + 2, class: "heat", role: "img",
      "aria-label": "co-occurrence of the family members" });
    for (var a = 0; a < n; a++) for (var b = 0; b < n; b++) {
      var v = heat.m[a][b] || 0;
      // log scale from 1e-3 to 1 -> white to dark purple
      var t = v > 0 ? Math.max(0, Math.min(1, (Math.log10(v) + 3) / 3)) : 0;
      var col = "hsl(255, 60%, " + (98 - 78 * t).toFixed(1) + "%)";
      add(s, svg("rect", { x: b * cell + 1, y: a * cell + 1, width: cell, height: cell, fill: col },
        svg("title", null, "#" + heat.ids[a] + " \u2192 #" + heat.ids[b] + ": C/(n+1) = " + fmt(v, 3))));
    }
    return s;
  }
  function renderFamily(k) {
    show("families", "Family " + k);
    var f = D.fams[k];
    if (!f) { add(view, el("p", null, "No family " + k + ".")); return; }
    add(view, el("div", { class: "navrow" }, el("a", { href: "#families" }, "\u2190 families"),
      k > 0 ? el("a", { href: "#family/" + (k - 1) }, "\u2039 " + (k - 1)) : null,
      k < D.fams.length - 1 ? el("a", { href: "#family/" + (k + 1) }, (k + 1) + " \u203a") : null));
    add(view, el("h2", { id: "family-title" }, "Family " + k + ": ", famTitle(k) || el("span", { class: "unlabelled" }, "unlabelled")));
    var dl = el("dl", { class: "stats" });
    function stat(a, b) { add(dl, el("dt", null, a)); add(dl, el("dd", null, b)); }
    stat("Parent", [featLink(f.parent), " ", labelOf(f.parent)]);
    stat("Members", f.children.length + 1);
    stat("R(p, C)", el("span", { id: "family-R" }, fmt(f.R, 3)));
    if (f.iteration !== null && f.iteration !== undefined) stat("Found in pass", f.iteration);
    if (f.label) stat("Family label Pearson / F1", fmt(f.pearson, 2) + " / " + fmt(f.f1, 2));
    add(view, dl);
    var t = section("Tree", "family-tree");
    add(t, el("ul", { class: "tree", id: "tree" }, treeNode(f.tree, f, true)));
    add(view, t);
    var h = section("Co-occurrence within the family (C normalised by the row's frequency)", "family-heat");
    if (f.heat) {
      add(h, el("p", { class: "muted" }, "Rows and columns: " + f.heat.ids.map(function (x) { return "#" + x; }).join(" ") +
        (f.heat.ids.length < f.children.length + 1 ? " (first " + f.heat.ids.length + " members)" : "") +
        ". Cell (i, j) = C_ij / (n_i + 1), log colour scale."));
      add(h, heatmap(f.heat));
    } else add(h, el("p", { class: "muted" }, "no co-occurrence in this run"));
    if (D.heatmap) add(h, el("figure", null, el("img", { src: D.heatmap, alt: "permuted co-occurrence" }),
      el("figcaption", { class: "muted" }, "All families: co-occurrence permuted into family blocks.")));
    add(view, h);
  }

  // ---------------------------------------------------------------------------- figures, run
  function renderFigures() {
    show("figures", "Figures");
    add(view, el("h2", null, "Figures"));
    if (!D.figs.length) { add(view, el("p", { class: "muted" }, "No figures in this run.")); return; }
    D.figs.forEach(function (g) {
      add(view, el("figure", { class: "run-figure" }, el("img", { src: g.src, alt: g.name, loading: "lazy" }),
        el("figcaption", null, g.name)));
    });
  }
  function renderRun() {
    show("run", "Run");
    var m = D.meta;
    add(view, el("h2", null, "Run " + m.run));
    var dl = el("dl", { class: "stats" });
    function stat(a, b) { add(dl, el("dt", null, a)); add(dl, el("dd", null, b)); }
    stat("Directory", m.root);
    stat("SAE shown", m.sae + " (" + m.n_latents + " latents, k = " + m.k + ", d = " + m.d + ")");
    stat("SAE sizes", m.saes.join(", "));
    stat("Documents", m.n_docs);
    stat("Report built", m.generated + " by fastsae " + m.version);
    add(view, dl);
    if (D.notes.length) {
      add(view, el("h3", null, "Missing or limited"));
      add(view, el("ul", null, D.notes.map(function (n) { return el("li", null, n); })));
    }
    if (D.labels_summary) {
      add(view, el("h3", null, "Labels summary"));
      add(view, el("pre", { id: "labels-summary" }, JSON.stringify(D.labels_summary, null, 2)));
    }
    if (D.split && D.split.summary) {
      add(view, el("h3", null, "Splitting summary"));
      add(view, el("pre", null, JSON.stringify(D.split.summary, null, 2)));
    }
    D.tables.forEach(function (t) { add(view, el("h3", null, t.name)); add(view, el("pre", null, t.text)); });
    if (D.metrics.length) {
      add(view, el("h3", null, "Steps"));
      add(view, table([["Step"], ["Seconds", "num"], ["Details"]], D.metrics.map(function (r) {
        return el("tr", null, el("td", null, r.step), el("td", { class: "num" }, fmt(r.seconds, 2)), el("td", { class: "muted" }, r.extra));
      })));
    }
    add(view, el("h3", null, "config.json"));
    add(view, el("pre", null, JSON.stringify(D.config, null, 2)));
  }

  // ---------------------------------------------------------------------------- routing
  function route() {
    var h = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    var m;
    if ((m = /^feature\/(\d+)$/.exec(h))) renderFeature(parseInt(m[1], 10));
    else if ((m = /^family\/(\d+)$/.exec(h))) renderFamily(parseInt(m[1], 10));
    else if (h === "families") renderFamilies();
    else if (h === "figures") renderFigures();
    else if (h === "run") renderRun();
    else renderIndex();
    document.body.setAttribute("data-view", h || "features");
  }
  window.addEventListener("hashchange", route);
  route();
})();
