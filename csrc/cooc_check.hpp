// Content check of a dense co-occurrence result (C, D, freq), as read from a file or handed to
// a merge: one cache-friendly pass that finds the first violated invariant. Plain C++17; the
// Python side (python/fastsae/_cooc_check.py) turns the answer into its error message and keeps
// an equivalent numpy path for other dtypes and layouts.
#pragma once

#include <cstdint>

namespace fastsae {

// The invariants, in the order the Python check lists them: at one position, the smaller
// kind is reported.
enum class DenseViolation : int {
    Ok = 0,
    DiagonalNotFreq,     // C_ii != freq_i (checked over the whole diagonal first)
    NegativeCount,       // C_ij < 0
    CountAboveMinFreq,   // C_ij > min(freq_i, freq_j)
    CountsAsymmetric,    // C_ij != C_ji
    SimNotFinite,        // D_ij is NaN or +-inf
    SimNegative,         // D_ij < 0
    SimWithoutCount,     // D_ij != 0 where C_ij == 0
    SimAsymmetric,       // |D_ij - D_ji| > sym_rtol * max(|D_ij|, |D_ji|)
};

struct DenseCheckResult {
    DenseViolation kind = DenseViolation::Ok;
    int64_t i = -1, j = -1;
};

// C [n, n] int64 and D [n, n] float64 row-major, freq [n] int64. Returns the diagonal
// mismatch with the smallest i if there is one; otherwise the violation with the smallest
// (i, j) in row-major order (ties: smallest kind); otherwise Ok. Deterministic for any number
// of threads. Reads every element about once.
DenseCheckResult check_dense_result(const int64_t* C, const double* D, const int64_t* freq, int64_t n,
                                    double sym_rtol);

}  // namespace fastsae
