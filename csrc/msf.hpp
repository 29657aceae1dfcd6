// Maximum spanning forest of an undirected weighted graph. Plain C++17.
//
// Determinism: edges are totally ordered by (weight descending, then smaller endpoint
// ascending, then larger endpoint ascending). Under a strict total order the maximum spanning
// forest is unique, so Kruskal and Prim return the same edge set, and the same graph always
// gives the same forest whatever order its entries arrive in.
//
// Asymmetric input is made symmetric before anything else by an order-independent rule applied
// to the pair (W_ij, W_ji), an absent entry counting as 0: max (default), min or mean. A weight
// of exactly 0 after symmetrisation means "no edge".
#pragma once

#include <cstdint>
#include <vector>

namespace fastsae {

enum class Symmetrize { Max, Min, Mean };
enum class MsfAlgorithm { Auto, Kruskal, Prim };

struct Forest {
    std::vector<int64_t> edges;   // [m, 2], each row (u, v) with u < v, in the total edge order
    std::vector<double> weights;  // [m]
};

// Dense [n, n] row-major weights (float or double). Throws std::invalid_argument on NaN/inf.
Forest msf_dense(const double* w, int64_t n, Symmetrize rule, MsfAlgorithm algo);
Forest msf_dense(const float* w, int64_t n, Symmetrize rule, MsfAlgorithm algo);

// Sparse weights as COO entries (duplicates of the same (row, col) are an error). Kruskal.
Forest msf_coo(int64_t n, const int64_t* rows, const int64_t* cols, const double* w, int64_t nnz,
               Symmetrize rule);

// Sparse weights in canonical CSR form (rows' column indices strictly increasing).
Forest msf_csr(int64_t n, const int64_t* indptr, const int32_t* indices, const double* w, int64_t nnz,
               Symmetrize rule);

}  // namespace fastsae
