#include "cooc.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>
#include <cstdlib>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastsae {

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

namespace {

struct Entry {
    int32_t idx;
    double val;
};

// Insertion sort: top-k rows are short (k <= a few hundred) and this beats std::sort there.
inline void sort_entries(Entry* e, int32_t c) {
    if (c > 96) {
        std::sort(e, e + c, [](const Entry& a, const Entry& b) { return a.idx < b.idx; });
        return;
    }
    for (int32_t a = 1; a < c; ++a) {
        Entry x = e[a];
        int32_t b = a - 1;
        while (b >= 0 && e[b].idx > x.idx) {
            e[b + 1] = e[b];
            --b;
        }
        e[b + 1] = x;
    }
}

struct RowError {
    int64_t row = std::numeric_limits<int64_t>::max();
    std::string message;
};

template <typename I, typename V>
void prepare_typed(const I* indices, const V* values, int64_t rows, int64_t k, int64_t n,
                   int64_t row_offset, bool validate_only, PreparedChunk& out, RowError& err) {
#pragma omp parallel
    {
        std::vector<Entry> tmp(static_cast<size_t>(k));
        RowError local;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            if (local.row != std::numeric_limits<int64_t>::max()) continue;
            const I* ir = indices + r * k;
            const V* vr = values + r * k;
            int32_t c = 0;
            char buf[256];
            bool bad = false;
            for (int64_t t = 0; t < k; ++t) {
                const int64_t i = static_cast<int64_t>(ir[t]);
                const double v = static_cast<double>(vr[t]);
                if (i < 0 || i >= n) {
                    std::snprintf(buf, sizeof buf,
                                  "index out of range in row %lld, column %lld: %lld (n_latents=%lld)",
                                  (long long)(r + row_offset), (long long)t, (long long)i, (long long)n);
                    bad = true;
                } else if (!std::isfinite(v)) {
                    std::snprintf(buf, sizeof buf, "non-finite value in row %lld, column %lld: %g",
                                  (long long)(r + row_offset), (long long)t, v);
                    bad = true;
                } else if (v < 0) {
                    std::snprintf(buf, sizeof buf,
                                  "negative value in row %lld, column %lld: %g (top-k codes are "
                                  ">= 0; use 0 for padding)",
                                  (long long)(r + row_offset), (long long)t, v);
                    bad = true;
                }
                if (bad) break;
                if (v > 0) tmp[c++] = Entry{static_cast<int32_t>(i), v};
            }
            if (!bad) {
                sort_entries(tmp.data(), c);
                for (int32_t a = 1; a < c; ++a) {
                    if (tmp[a].idx == tmp[a - 1].idx) {
                        std::snprintf(buf, sizeof buf,
                                      "duplicate active index %d in row %lld (each latent may "
                                      "appear once per row with a value > 0)",
                                      tmp[a].idx, (long long)(r + row_offset));
                        bad = true;
                        break;
                    }
                }
            }
            if (bad) {
                local.row = r;
                local.message = buf;
                continue;
            }
            if (validate_only) continue;
            int32_t* oi = out.idx.data() + r * k;
            V* ov = (std::is_same_v<V, float> ? (V*)out.val32.data() : (V*)out.val64.data()) + r * k;
            for (int32_t a = 0; a < c; ++a) {
                oi[a] = tmp[a].idx;
                ov[a] = static_cast<V>(tmp[a].val);  // exact: the value came from a V
            }
            out.cnt[r] = c;
        }
#pragma omp critical
        {
            if (local.row < err.row) err = local;
        }
    }
}

}  // namespace

// Counting-sort transpose of the sorted rows: per latent, its flat positions in row order.
// Two passes over each thread's contiguous row range; thread t's rows land after thread
// t-1's within every latent, so the order is by row whatever the thread count.
static void build_occurrences(PreparedChunk& ch, int64_t n) {
    const int64_t rows = ch.rows, k = ch.k;
    const int nt = max_threads();
    std::vector<int64_t> counts(static_cast<size_t>(nt) * n, 0);
    ch.occ_off.assign(static_cast<size_t>(n + 1), 0);
#pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        const int64_t r0 = rows * t / T, r1 = rows * (t + 1) / T;
        int64_t* mine = counts.data() + static_cast<size_t>(t) * n;
        for (int64_t r = r0; r < r1; ++r)
            for (int32_t a = 0; a < ch.cnt[r]; ++a) ++mine[ch.idx[r * k + a]];
#pragma omp barrier
#pragma omp single
        {
            int64_t total = 0;
            for (int64_t i = 0; i < n; ++i) {
                ch.occ_off[i] = total;
                for (int u = 0; u < T; ++u) {
                    const int64_t c = counts[static_cast<size_t>(u) * n + i];
                    counts[static_cast<size_t>(u) * n + i] = total;
                    total += c;
                }
            }
            ch.occ_off[n] = total;
            ch.occ.resize(static_cast<size_t>(total));
        }
        for (int64_t r = r0; r < r1; ++r)
            for (int32_t a = 0; a < ch.cnt[r]; ++a)
                ch.occ[mine[ch.idx[r * k + a]]++] =
                    Occurrence{static_cast<int32_t>(r * k + a), static_cast<int32_t>(r * k + ch.cnt[r])};
    }
}

void prepare_chunk(const CodesView& codes, int64_t n_latents, int64_t row_offset, bool validate_only,
                   PreparedChunk& out) {
    if (codes.rows < 0 || codes.k < 0) throw std::invalid_argument("negative shape");
    if (codes.rows > 0 && codes.k > 0 && (!codes.indices || !codes.values))
        throw std::invalid_argument("null data pointer");
    if (codes.rows * codes.k > kMaxChunkEntries) throw std::logic_error("prepare_chunk: chunk too large");
    out.rows = codes.rows;
    out.k = codes.k;
    const size_t entries = static_cast<size_t>(codes.rows * codes.k);
    if (!validate_only) {
        // resize() keeps capacity: after the first chunk no new pages are touched.
        out.f64 = codes.value_type == ValueType::F64;
        out.idx.resize(entries);
        if (out.f64) {
            out.val32 = std::vector<float>();
            out.val64.resize(entries);
        } else {
            out.val64 = std::vector<double>();
            out.val32.resize(entries);
        }
        out.cnt.resize(static_cast<size_t>(codes.rows));
    }
    RowError err;
    const bool i32 = codes.index_type == IndexType::I32;
    const bool f32 = codes.value_type == ValueType::F32;
    const int64_t rows = codes.rows, k = codes.k;
    if (i32 && f32)
        prepare_typed((const int32_t*)codes.indices, (const float*)codes.values, rows, k, n_latents, row_offset,
                      validate_only, out, err);
    else if (i32)
        prepare_typed((const int32_t*)codes.indices, (const double*)codes.values, rows, k, n_latents, row_offset,
                      validate_only, out, err);
    else if (f32)
        prepare_typed((const int64_t*)codes.indices, (const float*)codes.values, rows, k, n_latents, row_offset,
                      validate_only, out, err);
    else
        prepare_typed((const int64_t*)codes.indices, (const double*)codes.values, rows, k, n_latents, row_offset,
                      validate_only, out, err);
    if (err.row != std::numeric_limits<int64_t>::max()) throw std::invalid_argument(err.message);
    if (!validate_only) build_occurrences(out, n_latents);
}

// ---------------------------------------------------------------------------------------------

static void densify(SparseRow& row, int64_t i, int64_t n) {
    std::vector<int64_t> counts(static_cast<size_t>(n - i), 0);
    std::vector<double> sums(static_cast<size_t>(n - i), 0.0);
    for (size_t e = 0; e < row.cols.size(); ++e) {
        counts[row.cols[e] - i] = row.counts[e];
        sums[row.cols[e] - i] = row.sums[e];
    }
    row.dense = true;
    row.cols = std::vector<int32_t>();
    row.counts.swap(counts);
    row.sums.swap(sums);
}

// Calls fn(j, count, sum) for the row's stored entries in increasing j.
template <typename F>
static inline void for_each_entry(const SparseRow& row, int64_t i, F&& fn) {
    if (row.dense) {
        for (size_t e = 0; e < row.counts.size(); ++e)
            if (row.counts[e] != 0) fn(static_cast<int32_t>(i + static_cast<int64_t>(e)), row.counts[e], row.sums[e]);
    } else {
        for (size_t e = 0; e < row.cols.size(); ++e) fn(row.cols[e], row.counts[e], row.sums[e]);
    }
}

void merge_into(SparseRow& row, int64_t i, int64_t n, const RowItem* items, size_t m) {
    if (m == 0) return;
    if (row.dense) {
        for (size_t b = 0; b < m; ++b) {
            row.counts[items[b].col - i] += items[b].count;
            row.sums[items[b].col - i] += items[b].sum;
        }
        return;
    }
    const size_t r = row.cols.size();
    // Columns not yet in the row. Rows of frequent latents soon hold every column a chunk
    // can touch, so the common case is an in-place add with nothing moved.
    size_t fresh = 0;
    for (size_t a = 0, b = 0; b < m;) {
        if (a < r && row.cols[a] < items[b].col) {
            ++a;
        } else {
            fresh += (a == r || row.cols[a] != items[b].col);
            if (a < r && row.cols[a] == items[b].col) ++a;
            ++b;
        }
    }
    if (fresh == 0) {
        for (size_t a = 0, b = 0; b < m; ++a)
            if (row.cols[a] == items[b].col) {
                row.counts[a] += items[b].count;
                row.sums[a] += items[b].sum;
                ++b;
            }
        return;
    }
    // Merge from the back into the grown row: each element moves at most once.
    row.cols.resize(r + fresh);
    row.counts.resize(r + fresh);
    row.sums.resize(r + fresh);
    int64_t a = static_cast<int64_t>(r) - 1, b = static_cast<int64_t>(m) - 1, w = static_cast<int64_t>(r + fresh) - 1;
    while (b >= 0) {
        if (a >= 0 && row.cols[a] > items[b].col) {
            row.cols[w] = row.cols[a];
            row.counts[w] = row.counts[a];
            row.sums[w] = row.sums[a];
            --a;
        } else if (a >= 0 && row.cols[a] == items[b].col) {
            row.cols[w] = row.cols[a];
            row.counts[w] = row.counts[a] + items[b].count;
            row.sums[w] = row.sums[a] + items[b].sum;
            --a;
            --b;
        } else {
            row.cols[w] = items[b].col;
            row.counts[w] = items[b].count;
            row.sums[w] = items[b].sum;
            --b;
        }
        --w;
    }
    if (5 * row.cols.size() >= 4 * static_cast<size_t>(n - i)) densify(row, i, n);
}

// ---------------------------------------------------------------------------------------------

DenseBuffers::DenseBuffers(int64_t n_) : n(n_) {
    if (n_ < 0 || static_cast<uint64_t>(n_) > (uint64_t(1) << 28)) throw std::bad_alloc();  // 16 n^2 bytes
    const size_t nn = static_cast<size_t>(n) * static_cast<size_t>(n);
    counts.reset(static_cast<int64_t*>(std::malloc(nn * sizeof(int64_t))));
    sims.reset(static_cast<double*>(std::malloc(nn * sizeof(double))));
    if ((!counts || !sims) && nn > 0) throw std::bad_alloc();
    // Zero (first-touch) in parallel up front: leaving pages to fault in lazily inside the
    // accumulation loops measured 1.5x slower overall (page faults serialise on the mm lock).
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        std::memset(counts.get() + i * n, 0, sizeof(int64_t) * n);
        std::memset(sims.get() + i * n, 0, sizeof(double) * n);
    }
}

std::shared_ptr<DenseBuffers> DenseBuffers::clone() const {
    auto out = std::make_shared<DenseBuffers>(n);
    const size_t nn = static_cast<size_t>(n) * static_cast<size_t>(n);
    std::memcpy(out->counts.get(), counts.get(), nn * sizeof(int64_t));
    std::memcpy(out->sims.get(), sims.get(), nn * sizeof(double));
    return out;
}

CoocAccumulator::CoocAccumulator(int64_t n_latents, bool dense) : n_(n_latents), dense_(dense) {
    if (n_latents <= 0) throw std::invalid_argument("n_latents must be positive, got " + std::to_string(n_latents));
    if (n_latents > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("n_latents must be < 2^31");
    // The [n, n] buffers first: they refuse an impossible n at once, before the [n] vectors
    // below are allocated and zeroed (at n = 2^31 that alone would touch 16 GiB).
    if (dense_) {
        buf_ = std::make_shared<DenseBuffers>(n_);
        mirrored_ = true;  // all zeros is symmetric
    } else {
        rows_.resize(static_cast<size_t>(n_));
    }
    freq_.assign(static_cast<size_t>(n_), 0);
}

void CoocAccumulator::ensure_unique_dense() {
    if (buf_.use_count() > 1) buf_ = buf_->clone();
}

static CodesView sub_view(const CodesView& c, int64_t r0, int64_t r1) {
    CodesView v = c;
    const size_t isz = c.index_type == IndexType::I32 ? 4 : 8;
    const size_t vsz = c.value_type == ValueType::F32 ? 4 : 8;
    v.indices = static_cast<const char*>(c.indices) + static_cast<size_t>(r0 * c.k) * isz;
    v.values = static_cast<const char*>(c.values) + static_cast<size_t>(r0 * c.k) * vsz;
    v.rows = r1 - r0;
    return v;
}

void CoocAccumulator::update(const CodesView& codes) {
    if (codes.rows < 0 || codes.k < 0) throw std::invalid_argument("negative shape");
    if (codes.k > kMaxChunkEntries) throw std::invalid_argument("k is too large");
    const int64_t step = codes.k == 0 ? std::max<int64_t>(codes.rows, 1) : kMaxChunkEntries / codes.k;
    if (codes.rows > step)  // validate everything before accumulating anything
        for (int64_t r0 = 0; r0 < codes.rows; r0 += step)
            prepare_chunk(sub_view(codes, r0, std::min(codes.rows, r0 + step)), n_, r0, true, scratch_);
    for (int64_t r0 = 0; r0 < codes.rows || r0 == 0; r0 += step) {
        const int64_t r1 = std::min(codes.rows, r0 + step);
        prepare_chunk(sub_view(codes, r0, r1), n_, r0, false, scratch_);
        if (dense_)
            accumulate_dense(scratch_);
        else
            accumulate_sparse(scratch_);
        if (r1 >= codes.rows) break;
    }
    n_rows_ += codes.rows;
}

// Latent by latent (Gustavson's SpGEMM on A^T A): every pair (i, j), i < j, of a row is
// added while processing latent i, into a per-thread row accumulator that stays in L1/L2.
// Walking the data row by row instead scattered each pair over two 680 MB matrices: 5.4 ns
// per pair-update per core for the update phase, against 2.7 this way (2-core EPYC VM,
// k=64, n=9216, Zipf(1) frequencies, 32768-row chunks).
template <typename V, typename Sink>
static inline void walk_latent(const PreparedChunk& ch, const V* val, int64_t i, Sink&& sink) {
    const Occurrence* occ = ch.occ.data();
    const int32_t* idx = ch.idx.data();
    const int64_t o0 = ch.occ_off[i], o1 = ch.occ_off[i + 1];
    // Each occurrence reads the tail of a random row of the chunk: prefetch the tails a few
    // occurrences ahead so the loads overlap with the updates instead of stalling them.
    constexpr int64_t kAhead = 4;
    auto prefetch_tail = [&](int64_t o) {
        for (int32_t p = occ[o].begin; p < occ[o].end; p += 64 / sizeof(int32_t)) __builtin_prefetch(idx + p);
        for (int32_t p = occ[o].begin; p < occ[o].end; p += 64 / sizeof(V)) __builtin_prefetch(val + p);
    };
    for (int64_t o = o0; o < std::min(o1, o0 + kAhead); ++o) prefetch_tail(o);
    for (int64_t o = o0; o < o1; ++o) {
        if (o + kAhead < o1) prefetch_tail(o + kAhead);
        const int32_t b = occ[o].begin, e = occ[o].end;
        const double va = static_cast<double>(val[b]);
        sink(i, va * va);
        for (int32_t q = b + 1; q < e; ++q) sink(idx[q], va * static_cast<double>(val[q]));
    }
}

// Per-thread sparse accumulator ("SPA", as in Gustavson's SpGEMM) for one latent's row:
// the pair updates of latent i go to a thread-local row that stays in L1/L2, which is then
// added to the big C/D rows once per chunk.
//
// The inner loop only does slot[j] += (1, h). Tracking the touched columns there (append j
// when its count goes 0 -> 1) made each iteration wait for the previous slot load through
// the list's length: 2x slower. Instead the flush picks its strategy from the number of pair
// updates (an upper bound on touched columns): few -> walk the tails again and move the
// touched slots; many -> one sequential sweep over [i, n) that the hardware prefetcher
// streams.
struct RowSpa {
    struct Slot {
        double sum;
        int64_t count;
    };
    std::vector<Slot> slot;  // count and sum of a column share one cache line
    explicit RowSpa(int64_t n) : slot(n, Slot{0.0, 0}) {}
    inline void add(int64_t j, double h) {
        Slot& s = slot[j];
        s.count += 1;
        s.sum += h;
    }
};

template <typename V, typename Sink>
static inline void accumulate_latent(const PreparedChunk& ch, const V* val, int64_t i, RowSpa& spa,
                                     Sink&& take) {
    walk_latent(ch, val, i, [&spa](int64_t j, double h) { spa.add(j, h); });
    // Every column the walk touched is i or in some tail: visit them again, taking each
    // non-empty slot once (it is cleared when taken).
    const Occurrence* occ = ch.occ.data();
    const int32_t* idx = ch.idx.data();
    auto visit = [&](int64_t j) {
        RowSpa::Slot& s = spa.slot[j];
        if (s.count != 0) {
            take(j, s.count, s.sum);
            s = RowSpa::Slot{0.0, 0};
        }
    };
    visit(i);
    for (int64_t o = ch.occ_off[i]; o < ch.occ_off[i + 1]; ++o)
        for (int32_t q = occ[o].begin + 1; q < occ[o].end; ++q) visit(idx[q]);
}

static inline int64_t pair_updates(const PreparedChunk& ch, int64_t i) {
    int64_t u = 0;
    for (int64_t o = ch.occ_off[i]; o < ch.occ_off[i + 1]; ++o) u += ch.occ[o].end - ch.occ[o].begin;
    return u;
}

// Adds latent i's pairs of this chunk into a dense output row: crow[j - col0], drow[j - col0]
// for j >= i. Few updates: straight to the row; many: via the row accumulator and one
// sequential sweep.
template <typename V>
static inline void accumulate_into_row(const PreparedChunk& ch, const V* val, int64_t i, int64_t n, RowSpa& spa,
                                       int64_t* crow, double* drow, int64_t col0) {
    if (pair_updates(ch, i) * 16 < n - i) {
        accumulate_latent(ch, val, i, spa, [crow, drow, col0](int64_t j, int64_t c, double h) {
            crow[j - col0] += c;
            drow[j - col0] += h;
        });
        return;
    }
    walk_latent(ch, val, i, [&spa](int64_t j, double h) { spa.add(j, h); });
    RowSpa::Slot* sl = spa.slot.data();
    for (int64_t j = i; j < n; ++j) {
        crow[j - col0] += sl[j].count;
        drow[j - col0] += sl[j].sum;
        sl[j] = RowSpa::Slot{0.0, 0};
    }
}

template <typename V>
static void accumulate_dense_rows(const PreparedChunk& ch, const V* val, int64_t n, int64_t* C, double* D,
                                  int64_t* freq) {
#pragma omp parallel
    {
        RowSpa spa(n);
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < n; ++i) {
            if (ch.occ_off[i] == ch.occ_off[i + 1]) continue;
            freq[i] += ch.occ_off[i + 1] - ch.occ_off[i];
            accumulate_into_row(ch, val, i, n, spa, C + i * n, D + i * n, 0);
        }
    }
}

void CoocAccumulator::accumulate_dense(const PreparedChunk& ch) {
    ensure_unique_dense();
    mirrored_ = false;
    if (ch.f64)
        accumulate_dense_rows(ch, ch.val64.data(), n_, buf_->counts.get(), buf_->sims.get(), freq_.data());
    else
        accumulate_dense_rows(ch, ch.val32.data(), n_, buf_->counts.get(), buf_->sims.get(), freq_.data());
}

// Sparse mode: the same walk as dense mode; the chunk's entries of row i are then merged
// into its sorted row. Few updates: collect the touched slots and sort them; many: read the
// row accumulator in column order (already sorted).
template <typename V>
static void accumulate_sparse_rows(const PreparedChunk& ch, const V* val, int64_t n, std::vector<SparseRow>& rows,
                                   int64_t* freq) {
#pragma omp parallel
    {
        RowSpa spa(n);
        std::vector<RowItem> items;
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < n; ++i) {
            if (ch.occ_off[i] == ch.occ_off[i + 1]) continue;
            freq[i] += ch.occ_off[i + 1] - ch.occ_off[i];
            SparseRow& row = rows[i];
            if (row.dense) {  // exactly dense mode, into the row's own arrays (column j at j - i)
                accumulate_into_row(ch, val, i, n, spa, row.counts.data(), row.sums.data(), i);
                continue;
            }
            items.clear();
            if (pair_updates(ch, i) * 16 < n - i) {
                accumulate_latent(ch, val, i, spa, [&items](int64_t j, int64_t c, double h) {
                    items.push_back(RowItem{static_cast<int32_t>(j), c, h});
                });
                std::sort(items.begin(), items.end(), [](const RowItem& a, const RowItem& b) { return a.col < b.col; });
            } else {
                walk_latent(ch, val, i, [&spa](int64_t j, double h) { spa.add(j, h); });
                RowSpa::Slot* sl = spa.slot.data();
                for (int64_t j = i; j < n; ++j)
                    if (sl[j].count != 0) {
                        items.push_back(RowItem{static_cast<int32_t>(j), sl[j].count, sl[j].sum});
                        sl[j] = RowSpa::Slot{0.0, 0};
                    }
            }
            merge_into(row, i, n, items.data(), items.size());
        }
    }
}

void CoocAccumulator::accumulate_sparse(const PreparedChunk& ch) {
    if (ch.f64)
        accumulate_sparse_rows(ch, ch.val64.data(), n_, rows_, freq_.data());
    else
        accumulate_sparse_rows(ch, ch.val32.data(), n_, rows_, freq_.data());
}

// Merges one set of upper-triangle totals per row, rows in parallel. `row_items(i, out)`
// fills `out` with row i's items, ascending and unique.
template <typename F>
static void merge_rows(std::vector<SparseRow>& rows, F&& row_items) {
    const int64_t n = static_cast<int64_t>(rows.size());
#pragma omp parallel
    {
        std::vector<RowItem> items;
#pragma omp for schedule(dynamic, 64)
        for (int64_t i = 0; i < n; ++i) {
            items.clear();
            row_items(i, items);
            merge_into(rows[i], i, n, items.data(), items.size());
        }
    }
}

void CoocAccumulator::merge(const CoocAccumulator& other) {
    if (other.n_ != n_ || other.dense_ != dense_)
        throw std::invalid_argument("merge: accumulators differ (n_latents " + std::to_string(n_) + " vs " +
                                    std::to_string(other.n_) + ", dense " + std::to_string(dense_) +
                                    " vs " + std::to_string(other.dense_) + ")");
    if (&other == this) {
        CoocAccumulator copy(n_, dense_);
        copy.merge(other);
        merge(copy);
        return;
    }
    for (int64_t i = 0; i < n_; ++i) freq_[i] += other.freq_[i];
    n_rows_ += other.n_rows_;
    if (dense_) {
        ensure_unique_dense();
        mirrored_ = false;
        int64_t* C = buf_->counts.get();
        double* D = buf_->sims.get();
        const int64_t* oC = other.buf_->counts.get();
        const double* oD = other.buf_->sims.get();
        const int64_t n = n_;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i; j < n; ++j) {
                C[i * n + j] += oC[i * n + j];
                D[i * n + j] += oD[i * n + j];
            }
    } else {
        merge_rows(rows_, [&other](int64_t i, std::vector<RowItem>& out) {
            for_each_entry(other.rows_[i], i, [&out](int32_t j, int64_t c, double h) { out.push_back(RowItem{j, c, h}); });
        });
    }
}

static void check_totals(const int64_t* freq, int64_t n, int64_t n_rows) {
    if (n_rows < 0) throw std::invalid_argument("n_rows must be >= 0");
    for (int64_t i = 0; i < n; ++i)
        if (freq[i] < 0 || freq[i] > n_rows)
            throw std::invalid_argument("freq[" + std::to_string(i) + "] is outside [0, n_rows]");
}

void CoocAccumulator::add_dense_totals(const int64_t* counts, const double* sims, const int64_t* freq,
                                       int64_t n_rows) {
    check_totals(freq, n_, n_rows);
    const int64_t n = n_;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) {
            const int64_t c = counts[i * n + j];
            const double s = sims[i * n + j];
            if (c < 0 || !std::isfinite(s))
                throw std::invalid_argument("stored totals hold a negative count or non-finite value at (" +
                                            std::to_string(i) + ", " + std::to_string(j) + ")");
        }
    for (int64_t i = 0; i < n; ++i) freq_[i] += freq[i];
    n_rows_ += n_rows;
    if (dense_) {
        ensure_unique_dense();
        mirrored_ = false;
        int64_t* C = buf_->counts.get();
        double* D = buf_->sims.get();
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i; j < n; ++j) {
                C[i * n + j] += counts[i * n + j];
                D[i * n + j] += sims[i * n + j];
            }
    } else {
        merge_rows(rows_, [&](int64_t i, std::vector<RowItem>& out) {
            for (int64_t j = i; j < n; ++j)
                if (counts[i * n + j] != 0 || sims[i * n + j] != 0.0)
                    out.push_back(RowItem{static_cast<int32_t>(j), counts[i * n + j], sims[i * n + j]});
        });
    }
}

void CoocAccumulator::add_sparse_totals(const int64_t* rows, const int64_t* cols, const int64_t* counts,
                                        const double* sims, int64_t nnz, const int64_t* freq, int64_t n_rows) {
    check_totals(freq, n_, n_rows);
    for (int64_t e = 0; e < nnz; ++e) {
        if (rows[e] < 0 || rows[e] >= n_ || cols[e] < rows[e] || cols[e] >= n_)
            throw std::invalid_argument("stored entry " + std::to_string(e) +
                                        " is not an upper-triangle pair of [0, n_latents)");
        if (counts[e] < 0 || !std::isfinite(sims[e]))
            throw std::invalid_argument("stored entry " + std::to_string(e) +
                                        " has a negative count or non-finite value");
    }
    for (int64_t i = 0; i < n_; ++i) freq_[i] += freq[i];
    n_rows_ += n_rows;
    if (dense_) {
        ensure_unique_dense();
        mirrored_ = false;
        for (int64_t e = 0; e < nnz; ++e) {
            buf_->counts[rows[e] * n_ + cols[e]] += counts[e];
            buf_->sims[rows[e] * n_ + cols[e]] += sims[e];
        }
    } else {
        // Group the entries by row (counting sort), sort each row by column, sum repeats.
        std::vector<int64_t> start(static_cast<size_t>(n_ + 1), 0);
        for (int64_t e = 0; e < nnz; ++e) ++start[rows[e] + 1];
        for (int64_t i = 0; i < n_; ++i) start[i + 1] += start[i];
        std::vector<RowItem> byrow(static_cast<size_t>(nnz));
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        for (int64_t e = 0; e < nnz; ++e)
            byrow[fill[rows[e]]++] = RowItem{static_cast<int32_t>(cols[e]), counts[e], sims[e]};
        merge_rows(rows_, [&](int64_t i, std::vector<RowItem>& out) {
            out.assign(byrow.begin() + start[i], byrow.begin() + start[i + 1]);
            std::sort(out.begin(), out.end(), [](const RowItem& a, const RowItem& b) { return a.col < b.col; });
            size_t w = 0;
            for (size_t e = 0; e < out.size(); ++e) {
                if (w > 0 && out[w - 1].col == out[e].col) {
                    out[w - 1].count += out[e].count;
                    out[w - 1].sum += out[e].sum;
                } else {
                    out[w++] = out[e];
                }
            }
            out.resize(w);
        });
    }
}

std::shared_ptr<DenseBuffers> CoocAccumulator::dense_result() {
    if (!dense_) throw std::logic_error("dense_result() on a sparse accumulator");
    if (!mirrored_) {
        ensure_unique_dense();
        const int64_t n = n_;
        int64_t* C = buf_->counts.get();
        double* D = buf_->sims.get();
        // Blocked transpose-copy of the upper triangle into the lower one (64x64 tiles; 32x32
        // measured the same).
        constexpr int64_t T = 64;
        const int64_t nt = (n + T - 1) / T;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nt; ++bi)
            for (int64_t bj = bi; bj < nt; ++bj) {
                const int64_t i1 = std::min(n, (bi + 1) * T), j1 = std::min(n, (bj + 1) * T);
                for (int64_t i = bi * T; i < i1; ++i)
                    for (int64_t j = std::max(i + 1, bj * T); j < j1; ++j) {
                        C[j * n + i] = C[i * n + j];
                        D[j * n + i] = D[i * n + j];
                    }
            }
        mirrored_ = true;
    }
    return buf_;
}

SparseResult CoocAccumulator::sparse_result() const {
    if (dense_) throw std::logic_error("sparse_result() on a dense accumulator");
    const int64_t n = n_;
    SparseResult out;
    out.indptr.assign(static_cast<size_t>(n + 1), 0);
    for (int64_t i = 0; i < n; ++i)
        for_each_entry(rows_[i], i, [&](int32_t j, int64_t, double) {
            out.indptr[i + 1] += 1;
            if (j != i) out.indptr[j + 1] += 1;
        });
    for (int64_t i = 0; i < n; ++i) out.indptr[i + 1] += out.indptr[i];
    const size_t nnz = static_cast<size_t>(out.indptr[n]);
    out.indices.resize(nnz);
    out.counts.resize(nnz);
    out.sims.resize(nnz);
    // Row j = its lower part (columns i < j, arriving in increasing i), then its own sorted
    // upper part: sorted rows without any sorting.
    std::vector<int64_t> fill(out.indptr.begin(), out.indptr.end() - 1);
    for (int64_t i = 0; i < n; ++i)
        for_each_entry(rows_[i], i, [&](int32_t j, int64_t c, double h) {
            if (j == i) return;
            const int64_t p = fill[j]++;
            out.indices[p] = static_cast<int32_t>(i);
            out.counts[p] = c;
            out.sims[p] = h;
        });
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; ++i) {
        int64_t p = fill[i];
        for_each_entry(rows_[i], i, [&](int32_t j, int64_t c, double h) {
            out.indices[p] = j;
            out.counts[p] = c;
            out.sims[p] = h;
            ++p;
        });
    }
    return out;
}

}  // namespace fastsae
