#include "cooc_check.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace fastsae {

namespace {

// Tiles of 64 x 64: a pair of tiles (I, J) and (J, I) of C and D is 128 KiB, so the transposed
// tile's cache lines (one per row, 8 elements each) stay in L2 while its columns are walked.
constexpr int64_t kTile = 64;
constexpr int kKinds = 16;  // > the largest kind: key = position * kKinds + kind

inline bool sim_asym(double x, double y, double rtol) {
    // Same expression as the numpy check: false when either side is NaN (reported as not finite).
    return std::fabs(x - y) > rtol * std::max(std::fabs(x), std::fabs(y));
}

// The smallest kind violated at one position (Ok if none); `other_c`/`other_d` are the mirror.
inline int classify(int64_t c, int64_t other_c, double d, double other_d, int64_t min_f, double rtol) {
    if (c < 0) return (int)DenseViolation::NegativeCount;
    if (c > min_f) return (int)DenseViolation::CountAboveMinFreq;
    if (c != other_c) return (int)DenseViolation::CountsAsymmetric;
    if (!std::isfinite(d)) return (int)DenseViolation::SimNotFinite;
    if (d < 0) return (int)DenseViolation::SimNegative;
    if (c == 0 && d != 0) return (int)DenseViolation::SimWithoutCount;
    if (sim_asym(d, other_d, rtol)) return (int)DenseViolation::SimAsymmetric;
    return (int)DenseViolation::Ok;
}

// Any violation at (i, j) or at its mirror: branch-free, so the valid case (every element) runs
// without mispredictions and the exact classification is paid only where something is wrong.
inline bool pair_bad(int64_t a, int64_t b, double x, double y, int64_t min_f, double rtol) {
    const bool counts_bad = (a < 0) | (b < 0) | (a > min_f) | (b > min_f) | (a != b);
    const bool sims_bad = !(std::fabs(x) <= std::numeric_limits<double>::max()) |
                          !(std::fabs(y) <= std::numeric_limits<double>::max()) | (x < 0) | (y < 0) |
                          ((a == 0) & (x != 0)) | ((b == 0) & (y != 0)) | sim_asym(x, y, rtol);
    return counts_bad | sims_bad;
}

}  // namespace

DenseCheckResult check_dense_result(const int64_t* C, const double* D, const int64_t* freq, int64_t n,
                                    double sym_rtol) {
    DenseCheckResult out;
    // (i * n + j) * kKinds must fit int64; an n^2 array past this bound cannot be allocated.
    if (n > (int64_t(1) << 29)) throw std::invalid_argument("dense co-occurrence check: n is too large");
    for (int64_t i = 0; i < n; ++i) {
        if (C[i * n + i] != freq[i]) {
            out.kind = DenseViolation::DiagonalNotFreq;
            out.i = out.j = i;
            return out;
        }
    }
    const int64_t nt = (n + kTile - 1) / kTile;
    int64_t best = std::numeric_limits<int64_t>::max();  // smallest (i * n + j) * kKinds + kind
    // Tile pairs (I, J) with I <= J: each element and its mirror are read together, once.
    // Dynamic scheduling over I balances the triangle (row tile I has nt - I pairs).
#pragma omp parallel
    {
        int64_t local = std::numeric_limits<int64_t>::max();
        auto note = [&](int64_t i, int64_t j, int kind) {
            if (kind != (int)DenseViolation::Ok) local = std::min(local, (i * n + j) * kKinds + kind);
        };
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t I = 0; I < nt; ++I) {
            const int64_t i0 = I * kTile, i1 = std::min(n, i0 + kTile);
            for (int64_t J = I; J < nt; ++J) {
                const int64_t j0 = J * kTile, j1 = std::min(n, j0 + kTile);
                for (int64_t i = i0; i < i1; ++i) {
                    const int64_t* Ci = C + i * n;
                    const double* Di = D + i * n;
                    const int64_t fi = freq[i];
                    const int64_t jstart = (I == J) ? i : j0;  // diagonal tile: pairs i <= j once
                    bool any = false;
                    for (int64_t j = jstart; j < j1; ++j) {
                        const int64_t min_f = std::min(fi, freq[j]);
                        any |= pair_bad(Ci[j], C[j * n + i], Di[j], D[j * n + i], min_f, sym_rtol);
                    }
                    if (!any) continue;
                    for (int64_t j = jstart; j < j1; ++j) {
                        const int64_t a = Ci[j], b = C[j * n + i];
                        const double x = Di[j], y = D[j * n + i];
                        const int64_t min_f = std::min(fi, freq[j]);
                        note(i, j, classify(a, b, x, y, min_f, sym_rtol));
                        if (j != i) note(j, i, classify(b, a, y, x, min_f, sym_rtol));
                    }
                }
            }
        }
#pragma omp critical(fastsae_dense_check)
        best = std::min(best, local);
    }
    if (best != std::numeric_limits<int64_t>::max()) {
        const int64_t pos = best / kKinds;
        out.kind = static_cast<DenseViolation>(best % kKinds);
        out.i = pos / n;
        out.j = pos % n;
    }
    return out;
}

}  // namespace fastsae
