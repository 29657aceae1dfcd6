// Co-occurrence C and activation similarity D of top-k SAE codes (paper section 4.2).
//
//   C_ij = #rows where latents i and j are both active          (C_ii = activation count)
//   D_ij = sum over those rows of h_i * h_j                       (D_ii = sum of h_i^2)
//
// A latent is active in a row when it appears in the row's indices with value > 0; a value of
// exactly 0 is padding. Plain C++17: no Python here (csrc/bindings.cpp is the only binding).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastsae {

enum class IndexType { I32, I64 };
enum class ValueType { F32, F64 };

// A borrowed, C-contiguous [rows, k] chunk of top-k codes.
struct CodesView {
    const void* indices = nullptr;
    IndexType index_type = IndexType::I64;
    const void* values = nullptr;
    ValueType value_type = ValueType::F32;
    int64_t rows = 0;
    int64_t k = 0;
};

// One chunk after validation: per row, the active entries sorted by latent id, plus the
// transpose (for each latent, where it is active), so that accumulation can walk latent by
// latent and keep the two output rows it writes (C[i, :], D[i, :]) in cache.
struct Occurrence {
    int32_t begin;  // flat position r * k + a of the entry itself
    int32_t end;    // r * k + cnt[r]: the row's tail (begin, end) holds the larger ids
};
struct PreparedChunk {
    int64_t rows = 0, k = 0;
    bool f64 = false;              // values kept in their input precision (float32 products are
    std::vector<int32_t> idx;      // exact in double, so nothing is lost by not widening)
    std::vector<float> val32;      // [rows, k] when the input values are float32
    std::vector<double> val64;     // [rows, k] when they are float64
    std::vector<int32_t> cnt;      // [rows]: active entries of the row, ascending idx
    std::vector<int64_t> occ_off;  // [n + 1]: latent i's occurrences are occ[occ_off[i]..]
    std::vector<Occurrence> occ;   // in increasing row order within a latent
};

// Largest chunk prepared at once (entries = rows * k). Larger inputs are validated whole
// first, then accumulated in sub-chunks of this size, so working memory stays bounded
// (16 bytes per entry) and flat positions fit in int32.
constexpr int64_t kMaxChunkEntries = int64_t(1) << 24;

// Validates a chunk (rows * k <= kMaxChunkEntries) and prepares it into `out` (buffers are
// reused across calls). Throws std::invalid_argument naming the first offending row, numbered
// from `row_offset`. With `validate_only`, stops after the checks.
void prepare_chunk(const CodesView& codes, int64_t n_latents, int64_t row_offset, bool validate_only,
                   PreparedChunk& out);

// Sparse mode keeps, for each latent i, its upper-triangle entries (columns j >= i) as one
// row sorted by column; each chunk's entries for row i arrive sorted and are merged in. A
// row that fills up (>= 80% of its n - i columns, where a dense row takes less memory than
// the sorted one) turns dense: counts/sums indexed by j - i, no column list, and updates
// become plain adds. Frequent latents' rows do this after a few chunks.
struct SparseRow {
    bool dense = false;
    std::vector<int32_t> cols;  // sparse rows only
    std::vector<int64_t> counts;
    std::vector<double> sums;
};
struct RowItem {
    int32_t col;
    int64_t count;
    double sum;
};
// Adds `m` items (ascending, unique columns) into row `i` of an n-latent accumulator.
void merge_into(SparseRow& row, int64_t i, int64_t n, const RowItem* items, size_t m);

// Dense storage shared with the arrays handed to Python; copied on write after result().
struct FreeDeleter {
    void operator()(void* p) const noexcept { std::free(p); }
};
struct DenseBuffers {
    int64_t n = 0;
    std::unique_ptr<int64_t[], FreeDeleter> counts;  // [n, n]
    std::unique_ptr<double[], FreeDeleter> sims;     // [n, n]
    explicit DenseBuffers(int64_t n);
    std::shared_ptr<DenseBuffers> clone() const;
};

// Sparse result in CSR form (both triangles and the diagonal), rows sorted.
struct SparseResult {
    std::vector<int64_t> indptr;   // [n + 1]
    std::vector<int32_t> indices;  // [nnz]
    std::vector<int64_t> counts;   // [nnz]
    std::vector<double> sims;      // [nnz]
};

class CoocAccumulator {
public:
    CoocAccumulator(int64_t n_latents, bool dense);

    int64_t n_latents() const { return n_; }
    bool dense() const { return dense_; }
    int64_t n_rows() const { return n_rows_; }
    const std::vector<int64_t>& freq() const { return freq_; }

    // Adds one chunk of codes. Validates first; on error nothing changes.
    void update(const CodesView& codes);
    // Adds another accumulator's totals (same n and mode).
    void merge(const CoocAccumulator& other);
    // Adds stored totals: dense [n, n] arrays (only the upper triangle and diagonal are read).
    void add_dense_totals(const int64_t* counts, const double* sims, const int64_t* freq,
                          int64_t n_rows);
    // Adds stored totals given as upper-triangle COO (i <= j).
    void add_sparse_totals(const int64_t* rows, const int64_t* cols, const int64_t* counts,
                           const double* sims, int64_t nnz, const int64_t* freq, int64_t n_rows);

    // Dense result: the symmetric buffers (mirrored in place). The caller may keep the returned
    // pointer alive; later updates copy first, so a returned result never changes.
    std::shared_ptr<DenseBuffers> dense_result();
    SparseResult sparse_result() const;

private:
    void accumulate_dense(const PreparedChunk& chunk);
    void accumulate_sparse(const PreparedChunk& chunk);
    void ensure_unique_dense();

    int64_t n_;
    bool dense_;
    int64_t n_rows_ = 0;
    std::vector<int64_t> freq_;
    std::shared_ptr<DenseBuffers> buf_;
    bool mirrored_ = false;
    std::vector<SparseRow> rows_;        // sparse mode: one per latent
    PreparedChunk scratch_;              // reused between updates (no page faults per chunk)
};

int max_threads();

}  // namespace fastsae
