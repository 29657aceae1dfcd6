#include "msf.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastsae {

namespace {

struct Edge {
    double w;
    int32_t u, v;  // u < v
};

// The documented total order: heavier first, then (u, v) lexicographically.
inline bool before(const Edge& a, const Edge& b) {
    if (a.w != b.w) return a.w > b.w;
    if (a.u != b.u) return a.u < b.u;
    return a.v < b.v;
}

inline double combine(double a, double b, Symmetrize rule) {
    switch (rule) {
        case Symmetrize::Max: return std::max(a, b);
        case Symmetrize::Min: return std::min(a, b);
        default: return 0.5 * (a + b);
    }
}

struct Dsu {
    std::vector<int32_t> parent, size;
    explicit Dsu(int64_t n) : parent(n), size(n, 1) { std::iota(parent.begin(), parent.end(), 0); }
    int32_t find(int32_t x) {
        while (parent[x] != x) {
            parent[x] = parent[parent[x]];  // path halving
            x = parent[x];
        }
        return x;
    }
    bool unite(int32_t a, int32_t b) {
        a = find(a);
        b = find(b);
        if (a == b) return false;
        if (size[a] < size[b]) std::swap(a, b);
        parent[b] = a;
        size[a] += size[b];
        return true;
    }
};

Forest to_forest(const std::vector<Edge>& chosen) {
    Forest f;
    f.edges.reserve(chosen.size() * 2);
    f.weights.reserve(chosen.size());
    for (const Edge& e : chosen) {
        f.edges.push_back(e.u);
        f.edges.push_back(e.v);
        f.weights.push_back(e.w);
    }
    return f;
}

// Filter-Kruskal (Osipov, Sanders, Singler 2009): partition the edges around a pivot, solve
// the heavy side first, then drop light edges whose endpoints are already connected before
// recursing on them. Most light edges are filtered without ever being sorted. Edges are
// still accepted in the global total order, so the forest (unique under that order) and
// its edge order are exactly Kruskal's. Dense input at n = 12,288 (923k edges): 214 ms with
// std::sort of every edge, 160 ms this way, of which most is reading the 1.2 GB matrix
// (benchmarks/bench_spanning_forest.py, 2-core EPYC VM).
struct FilterKruskal {
    Dsu dsu;
    std::vector<Edge> chosen;
    int64_t need;
    explicit FilterKruskal(int64_t n) : dsu(n), need(std::max<int64_t>(0, n - 1)) {
        chosen.reserve(static_cast<size_t>(need));
    }
    void base(Edge* lo, Edge* hi) {
        std::sort(lo, hi, before);
        for (Edge* e = lo; e != hi && static_cast<int64_t>(chosen.size()) < need; ++e)
            if (dsu.unite(e->u, e->v)) chosen.push_back(*e);
    }
    void run(Edge* lo, Edge* hi, int depth) {
        const size_t m = static_cast<size_t>(hi - lo);
        if (static_cast<int64_t>(chosen.size()) >= need || m == 0) return;
        if (m <= 2048 || depth > 48) return base(lo, hi);
        // Median of three spread samples as pivot (any pivot is correct; this one is cheap).
        Edge a = lo[m / 4], b = lo[m / 2], c = lo[3 * m / 4];
        if (before(b, a)) std::swap(a, b);
        if (before(c, b)) std::swap(b, c);
        if (before(b, a)) std::swap(a, b);
        const Edge pivot = b;
        Edge* mid = std::partition(lo, hi, [&](const Edge& e) { return before(e, pivot); });
        if (mid == lo || mid == hi) return base(lo, hi);  // degenerate split
        run(lo, mid, depth + 1);
        if (static_cast<int64_t>(chosen.size()) >= need) return;
        Edge* keep = std::partition(mid, hi, [&](const Edge& e) { return dsu.find(e.u) != dsu.find(e.v); });
        run(mid, keep, depth + 1);
    }
};

Forest kruskal(int64_t n, std::vector<Edge>& edges) {
    FilterKruskal fk(n);
    fk.run(edges.data(), edges.data() + edges.size(), 0);
    return to_forest(fk.chosen);
}

void check_n(int64_t n) {
    if (n < 0) throw std::invalid_argument("negative number of nodes");
    if (n > std::numeric_limits<int32_t>::max()) throw std::invalid_argument("too many nodes (max 2^31 - 1)");
}

template <typename T>
void check_finite_dense(const T* w, int64_t n) {
    int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
            if (!std::isfinite(static_cast<double>(w[i * n + j]))) {
                bad = std::max(bad, i * n + j);
                break;
            }
    if (bad >= 0)
        throw std::invalid_argument("weights hold a NaN or infinite value at (" + std::to_string(bad / n) + ", " +
                                    std::to_string(bad % n) + ")");
}

// Edges of the symmetrised dense matrix, read in 64x64 tiles so that W[i][j] and W[j][i]
// both come from cache.
template <typename T>
std::vector<Edge> dense_edges(const T* w, int64_t n, Symmetrize rule) {
    constexpr int64_t B = 64;
    const int64_t nt = (n + B - 1) / B;
    std::vector<std::vector<Edge>> parts(static_cast<size_t>(nt));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t bi = 0; bi < nt; ++bi) {
        std::vector<Edge>& out = parts[bi];
        const int64_t i1 = std::min(n, (bi + 1) * B);
        for (int64_t bj = bi; bj < nt; ++bj) {
            const int64_t j1 = std::min(n, (bj + 1) * B);
            for (int64_t i = bi * B; i < i1; ++i)
                for (int64_t j = std::max(i + 1, bj * B); j < j1; ++j) {
                    const double a = static_cast<double>(w[i * n + j]);
                    const double b = static_cast<double>(w[j * n + i]);
                    if (a == 0.0 && b == 0.0) continue;
                    const double s = combine(a, b, rule);
                    if (s != 0.0) out.push_back(Edge{s, int32_t(i), int32_t(j)});
                }
        }
    }
    size_t total = 0;
    for (auto& p : parts) total += p.size();
    std::vector<Edge> edges;
    edges.reserve(total);
    for (auto& p : parts) edges.insert(edges.end(), p.begin(), p.end());
    return edges;
}

// Dense Prim, O(n^2), on a symmetrised copy (row access only). Kept as the measured
// alternative to Kruskal; see the choice in msf_dense.
template <typename T>
Forest prim_dense(const T* w, int64_t n, Symmetrize rule) {
    std::vector<double> s(static_cast<size_t>(n) * n);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
            s[i * n + j] = (i == j) ? 0.0 : combine(double(w[i * n + j]), double(w[j * n + i]), rule);
    std::vector<char> in_tree(n, 0);
    std::vector<double> best_w(n, 0.0);
    std::vector<int32_t> best_from(n, -1);
    std::vector<Edge> chosen;
    auto candidate = [&](int32_t v) {
        const int32_t f = best_from[v];
        return Edge{best_w[v], std::min(f, v), std::max(f, v)};
    };
    auto relax = [&](int32_t u) {
        const double* row = s.data() + int64_t(u) * n;
        for (int32_t v = 0; v < n; ++v) {
            if (in_tree[v] || row[v] == 0.0) continue;
            const Edge e{row[v], std::min(u, v), std::max(u, v)};
            if (best_from[v] < 0 || before(e, candidate(v))) {
                best_w[v] = row[v];
                best_from[v] = u;
            }
        }
    };
    for (int32_t start = 0; start < n; ++start) {
        if (in_tree[start]) continue;
        in_tree[start] = 1;
        relax(start);
        while (true) {
            int32_t pick = -1;
            Edge pe{};
            for (int32_t v = 0; v < n; ++v) {
                if (in_tree[v] || best_from[v] < 0) continue;
                const Edge e = candidate(v);
                if (pick < 0 || before(e, pe)) {
                    pick = v;
                    pe = e;
                }
            }
            if (pick < 0) break;
            in_tree[pick] = 1;
            chosen.push_back(pe);
            relax(pick);
        }
    }
    std::sort(chosen.begin(), chosen.end(), before);
    return to_forest(chosen);
}

template <typename T>
Forest msf_dense_impl(const T* w, int64_t n, Symmetrize rule, MsfAlgorithm algo) {
    check_n(n);
    check_finite_dense(w, n);
    if (n <= 1) return Forest{};
    // Kruskal by default. Measured on the 2-core benchmark machine (benchmarks/
    // bench_spanning_forest.py --compare-prim, tau-thresholded normalised co-occurrence, dense
    // input): n=3072: Kruskal 12 ms vs Prim 81 ms; n=12288: Kruskal 160 ms vs Prim 1366 ms.
    // Prim must build a symmetrised n*n copy (C_ij/(n_i+1) is asymmetric) and scan O(n^2)
    // per component whatever the sparsity, while Kruskal reads W once in cache tiles and
    // only handles the edges that survive the threshold.
    if (algo == MsfAlgorithm::Prim) return prim_dense(w, n, rule);
    std::vector<Edge> edges = dense_edges(w, n, rule);
    return kruskal(n, edges);
}

}  // namespace

Forest msf_dense(const double* w, int64_t n, Symmetrize rule, MsfAlgorithm algo) {
    return msf_dense_impl(w, n, rule, algo);
}
Forest msf_dense(const float* w, int64_t n, Symmetrize rule, MsfAlgorithm algo) {
    return msf_dense_impl(w, n, rule, algo);
}

Forest msf_coo(int64_t n, const int64_t* rows, const int64_t* cols, const double* w, int64_t nnz,
               Symmetrize rule) {
    check_n(n);
    if (nnz < 0) throw std::invalid_argument("negative number of entries");
    for (int64_t e = 0; e < nnz; ++e) {
        if (rows[e] < 0 || rows[e] >= n || cols[e] < 0 || cols[e] >= n)
            throw std::invalid_argument("entry " + std::to_string(e) + " has an index outside [0, " +
                                        std::to_string(n) + ")");
        if (!std::isfinite(w[e]))
            throw std::invalid_argument("entry " + std::to_string(e) + " (" + std::to_string(rows[e]) + ", " +
                                        std::to_string(cols[e]) + ") is NaN or infinite");
    }
    struct Dir {
        int32_t u, v;
        int8_t dir;  // 0: stored as (u, v); 1: stored as (v, u)
        double w;
    };
    std::vector<Dir> d;
    d.reserve(static_cast<size_t>(nnz));
    for (int64_t e = 0; e < nnz; ++e) {
        if (rows[e] == cols[e]) continue;  // self-loops never enter a forest
        const int32_t r = int32_t(rows[e]), c = int32_t(cols[e]);
        d.push_back(Dir{std::min(r, c), std::max(r, c), int8_t(r < c ? 0 : 1), w[e]});
    }
    std::sort(d.begin(), d.end(), [](const Dir& a, const Dir& b) {
        if (a.u != b.u) return a.u < b.u;
        if (a.v != b.v) return a.v < b.v;
        return a.dir < b.dir;
    });
    std::vector<Edge> edges;
    edges.reserve(d.size());
    for (size_t p = 0; p < d.size();) {
        double wd[2] = {0.0, 0.0};
        size_t q = p;
        while (q < d.size() && d[q].u == d[p].u && d[q].v == d[p].v) {
            if (q > p && d[q].dir == d[q - 1].dir)
                throw std::invalid_argument("duplicate entry (" + std::to_string(d[q].dir ? d[q].v : d[q].u) + ", " +
                                            std::to_string(d[q].dir ? d[q].u : d[q].v) + ")");
            wd[d[q].dir] = d[q].w;
            ++q;
        }
        const double s = combine(wd[0], wd[1], rule);
        if (s != 0.0) edges.push_back(Edge{s, d[p].u, d[p].v});
        p = q;
    }
    if (n <= 1) return Forest{};
    return kruskal(n, edges);
}

Forest msf_csr(int64_t n, const int64_t* indptr, const int32_t* indices, const double* w, int64_t nnz,
               Symmetrize rule) {
    check_n(n);
    if (indptr[0] != 0 || indptr[n] != nnz) throw std::invalid_argument("indptr must start at 0 and end at nnz");
    for (int64_t i = 0; i < n; ++i)  // the whole of indptr first: it bounds every read below
        if (indptr[i + 1] < indptr[i]) throw std::invalid_argument("indptr must be non-decreasing");
    bool all_positive = true;
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {
            if (indices[e] < 0 || indices[e] >= n)
                throw std::invalid_argument("column index " + std::to_string(indices[e]) + " in row " +
                                            std::to_string(i) + " is outside [0, " + std::to_string(n) + ")");
            if (e > indptr[i] && indices[e] <= indices[e - 1])
                throw std::invalid_argument("row " + std::to_string(i) + " has unsorted or duplicate columns");
            if (!std::isfinite(w[e]))
                throw std::invalid_argument("entry (" + std::to_string(i) + ", " + std::to_string(indices[e]) +
                                            ") is NaN or infinite");
            all_positive = all_positive && w[e] > 0;
        }
    }
    if (rule == Symmetrize::Max && all_positive) {
        // max(W_ij, W_ji) needs no pairing here: both entries enter as parallel edges, Kruskal
        // takes the heavier one first and the other then closes a cycle. (With a negative
        // entry, max(W_ij, 0) = 0 would mean "no edge" and the shortcut would be wrong.)
        std::vector<Edge> edges;
        edges.reserve(static_cast<size_t>(nnz));
        for (int64_t i = 0; i < n; ++i)
            for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {
                const int32_t j = indices[e];
                if (j != i) edges.push_back(Edge{w[e], std::min<int32_t>(int32_t(i), j), std::max<int32_t>(int32_t(i), j)});
            }
        if (n <= 1) return Forest{};
        return kruskal(n, edges);
    }
    std::vector<int64_t> rows(static_cast<size_t>(nnz)), cols(static_cast<size_t>(nnz));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {
            rows[e] = i;
            cols[e] = indices[e];
        }
    return msf_coo(n, rows.data(), cols.data(), w, nnz, rule);
}

}  // namespace fastsae
