// The only file that knows Python: nanobind bindings for the plain C++ core.
// Every entry point checks dtype, shape, contiguity and device here, raising ValueError/TypeError
// with the argument's name; value checks (ranges, NaN, duplicates) happen in the core before any
// total is touched. The GIL is released around every loop over the data.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <memory>
#include <new>
#include <stdexcept>
#include <mutex>
#include <string>

#include "cooc.hpp"
#include "cooc_check.hpp"
#include "msf.hpp"

namespace nb = nanobind;
using namespace nb::literals;
using fastsae::CoocAccumulator;

namespace {

using AnyArray = nb::ndarray<nb::ro>;

[[noreturn]] void fail(const std::string& msg) { throw nb::value_error(msg.c_str()); }

// Raised as MemoryError (translator registered in the module init).
struct NativeMemoryError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Raised as RuntimeError, naming the entry point: never a bare C++ message.
struct NativeInternalError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Runs one entry point's body, turning allocation failures and unexpected C++ exceptions into
// Python errors that say what was being done. Our own checks throw std::invalid_argument with
// a full message (ValueError, passed through); nanobind's exceptions pass through unchanged.
template <typename F>
auto guarded(const std::string& what, F&& body) -> decltype(body()) {
    try {
        return body();
    } catch (const nb::python_error&) {
        throw;
    } catch (const nb::builtin_exception&) {
        throw;
    } catch (const std::invalid_argument&) {
        throw;
    } catch (const std::bad_alloc&) {
        throw NativeMemoryError("fastsae: out of memory allocating " + what);
    } catch (const std::length_error& e) {
        throw NativeMemoryError("fastsae: " + what + " is larger than a buffer can hold (" + e.what() + ")");
    } catch (const std::exception& e) {
        throw NativeInternalError("fastsae: internal error in " + what + " (" + e.what() + "); please report it");
    }
}

std::string dtype_name(const AnyArray& a) {
    const nb::dlpack::dtype d = a.dtype();
    const char* kind = d.code == (uint8_t)nb::dlpack::dtype_code::Int      ? "int"
                       : d.code == (uint8_t)nb::dlpack::dtype_code::UInt   ? "uint"
                       : d.code == (uint8_t)nb::dlpack::dtype_code::Float  ? "float"
                       : d.code == (uint8_t)nb::dlpack::dtype_code::Bool   ? "bool"
                                                                            : "other";
    return std::string(kind) + std::to_string(d.bits);
}

// Checks ndim, CPU and C-contiguity. Returns the shape.
void check_array(const AnyArray& a, const char* name, size_t ndim) {
    if (a.device_type() != nb::device::cpu::value) fail(std::string(name) + " must be a CPU array");
    if (a.ndim() != ndim)
        fail(std::string(name) + " must be " + std::to_string(ndim) + "-dimensional, got " +
             std::to_string(a.ndim()) + " dimensions");
    if (a.size() == 0) return;  // no memory is read; strides of empty arrays are arbitrary
    int64_t expect = 1;
    for (size_t d = ndim; d-- > 0;) {
        if (a.shape(d) > 1 && a.stride(d) != expect)
            fail(std::string(name) + " must be C-contiguous (use np.ascontiguousarray)");
        expect *= static_cast<int64_t>(a.shape(d));
    }
}

template <typename T>
bool is(const AnyArray& a) {
    return a.dtype() == nb::dtype<T>();
}

template <typename T>
void require(const AnyArray& a, const char* name) {
    if (!is<T>(a)) fail(std::string(name) + " has dtype " + dtype_name(a) + ", expected " +
                        (std::is_same_v<T, int64_t> ? "int64" : std::is_same_v<T, double> ? "float64" : "?"));
}

fastsae::CodesView codes_view(const AnyArray& indices, const AnyArray& values) {
    check_array(indices, "indices", 2);
    check_array(values, "values", 2);
    if (indices.shape(0) != values.shape(0) || indices.shape(1) != values.shape(1))
        fail("indices and values must have the same [B, k] shape, got [" + std::to_string(indices.shape(0)) +
             ", " + std::to_string(indices.shape(1)) + "] and [" + std::to_string(values.shape(0)) + ", " +
             std::to_string(values.shape(1)) + "]");
    fastsae::CodesView v;
    if (is<int32_t>(indices)) v.index_type = fastsae::IndexType::I32;
    else if (is<int64_t>(indices)) v.index_type = fastsae::IndexType::I64;
    else fail("indices has dtype " + dtype_name(indices) + ", expected int32 or int64");
    if (is<float>(values)) v.value_type = fastsae::ValueType::F32;
    else if (is<double>(values)) v.value_type = fastsae::ValueType::F64;
    else fail("values has dtype " + dtype_name(values) + ", expected float32 or float64");
    v.indices = indices.data();
    v.values = values.data();
    v.rows = static_cast<int64_t>(indices.shape(0));
    v.k = static_cast<int64_t>(indices.shape(1));
    return v;
}

fastsae::Symmetrize parse_rule(const std::string& s) {
    if (s == "max") return fastsae::Symmetrize::Max;
    if (s == "min") return fastsae::Symmetrize::Min;
    if (s == "mean") return fastsae::Symmetrize::Mean;
    fail("symmetrize must be 'max', 'min' or 'mean', got '" + s + "'");
}

fastsae::MsfAlgorithm parse_algo(const std::string& s) {
    if (s == "auto") return fastsae::MsfAlgorithm::Auto;
    if (s == "kruskal") return fastsae::MsfAlgorithm::Kruskal;
    if (s == "prim") return fastsae::MsfAlgorithm::Prim;
    fail("algorithm must be 'auto', 'kruskal' or 'prim', got '" + s + "'");
}

// Hands a std::vector to numpy without copying: the capsule owns the vector.
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T>&& v, std::initializer_list<size_t> shape) {
    auto* heap = new std::vector<T>(std::move(v));
    nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
    return nb::ndarray<nb::numpy, T>(heap->data(), shape, owner);
}

// The accumulator plus a mutex: the GIL is released during updates, so two Python threads
// calling into the same accumulator must not interleave.
struct PyAccumulator {
    CoocAccumulator acc;
    std::mutex mu;
    PyAccumulator(int64_t n, bool dense) try : acc(n, dense) {
    } catch (const std::bad_alloc&) {
        throw NativeMemoryError("fastsae: out of memory allocating the " + std::string(dense ? "dense" : "sparse") +
                                " co-occurrence buffers for n_latents=" + std::to_string(n) +
                                (dense ? " (16 * n^2 bytes; dense=False stores observed pairs only)" : ""));
    }
};

nb::tuple forest_tuple(fastsae::Forest&& f) {
    const size_t m = f.weights.size();
    return nb::make_tuple(to_numpy(std::move(f.edges), {m, 2}), to_numpy(std::move(f.weights), {m}));
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "fastsae native core (private: import fastsae instead)";
    nb::register_exception_translator([](const std::exception_ptr& p, void*) {
        try {
            std::rethrow_exception(p);
        } catch (const NativeMemoryError& e) {
            PyErr_SetString(PyExc_MemoryError, e.what());
        } catch (const NativeInternalError& e) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
        } catch (const std::bad_alloc&) {  // outside any guarded body (e.g. a result's array)
            PyErr_SetString(PyExc_MemoryError, "fastsae: out of memory in the native core");
        }
    });

    m.def("max_threads", &fastsae::max_threads, "Threads an OpenMP parallel region would use (1 without OpenMP).");

    nb::class_<PyAccumulator>(m, "CoocAccumulator")
        .def(nb::init<int64_t, bool>(), "n_latents"_a, "dense"_a,
             "Streaming accumulator of the co-occurrence C and activation-similarity D of top-k codes.")
        .def_prop_ro("n_latents", [](PyAccumulator& s) { return s.acc.n_latents(); })
        .def_prop_ro("dense", [](PyAccumulator& s) { return s.acc.dense(); })
        .def_prop_ro("n_rows", [](PyAccumulator& s) { return s.acc.n_rows(); })
        .def(
            "update",
            [](PyAccumulator& s, AnyArray indices, AnyArray values) {
                const fastsae::CodesView v = codes_view(indices, values);
                nb::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(s.mu);
                guarded("the co-occurrence update of " + std::to_string(v.rows) + " rows x k=" + std::to_string(v.k) +
                            " (n_latents=" + std::to_string(s.acc.n_latents()) + ")",
                        [&] { s.acc.update(v); });
            },
            "indices"_a, "values"_a, "Add one [B, k] chunk of codes (validated first; on error nothing changes).")
        .def(
            "merge",
            [](PyAccumulator& s, PyAccumulator& other) {
                nb::gil_scoped_release release;
                const std::string what = "the merged co-occurrence totals (n_latents=" + std::to_string(s.acc.n_latents()) + ")";
                if (&s == &other) {
                    std::lock_guard<std::mutex> lock(s.mu);
                    guarded(what, [&] { s.acc.merge(other.acc); });
                    return;
                }
                std::scoped_lock lock(s.mu, other.mu);
                guarded(what, [&] { s.acc.merge(other.acc); });
            },
            "other"_a, "Add another accumulator's totals.")
        .def(
            "add_dense_totals",
            [](PyAccumulator& s, AnyArray counts, AnyArray sims, AnyArray freq, int64_t n_rows) {
                const int64_t n = s.acc.n_latents();
                check_array(counts, "counts", 2);
                check_array(sims, "act_sim", 2);
                check_array(freq, "freq", 1);
                require<int64_t>(counts, "counts");
                require<double>(sims, "act_sim");
                require<int64_t>(freq, "freq");
                if ((int64_t)counts.shape(0) != n || (int64_t)counts.shape(1) != n || (int64_t)sims.shape(0) != n ||
                    (int64_t)sims.shape(1) != n || (int64_t)freq.shape(0) != n)
                    fail("stored totals must be [n_latents, n_latents] and [n_latents] with n_latents=" +
                         std::to_string(n));
                nb::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(s.mu);
                guarded("the co-occurrence totals (n_latents=" + std::to_string(n) + ")", [&] {
                    s.acc.add_dense_totals((const int64_t*)counts.data(), (const double*)sims.data(),
                                           (const int64_t*)freq.data(), n_rows);
                });
            },
            "counts"_a, "act_sim"_a, "freq"_a, "n_rows"_a)
        .def(
            "add_sparse_totals",
            [](PyAccumulator& s, AnyArray rows, AnyArray cols, AnyArray counts, AnyArray sims, AnyArray freq,
               int64_t n_rows) {
                const int64_t n = s.acc.n_latents();
                const char* names[] = {"rows", "cols", "counts", "act_sim"};
                AnyArray* arrs[] = {&rows, &cols, &counts, &sims};
                for (int t = 0; t < 4; ++t) {
                    check_array(*arrs[t], names[t], 1);
                    if (arrs[t]->shape(0) != rows.shape(0)) fail("rows, cols, counts and act_sim must have one length");
                }
                check_array(freq, "freq", 1);
                require<int64_t>(rows, "rows");
                require<int64_t>(cols, "cols");
                require<int64_t>(counts, "counts");
                require<double>(sims, "act_sim");
                require<int64_t>(freq, "freq");
                if ((int64_t)freq.shape(0) != n) fail("freq must have n_latents=" + std::to_string(n) + " entries");
                nb::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(s.mu);
                guarded("the co-occurrence totals of " + std::to_string(rows.shape(0)) + " stored pairs", [&] {
                    s.acc.add_sparse_totals((const int64_t*)rows.data(), (const int64_t*)cols.data(),
                                            (const int64_t*)counts.data(), (const double*)sims.data(),
                                            (int64_t)rows.shape(0), (const int64_t*)freq.data(), n_rows);
                });
            },
            "rows"_a, "cols"_a, "counts"_a, "act_sim"_a, "freq"_a, "n_rows"_a)
        .def("freq",
             [](PyAccumulator& s) {
                 std::lock_guard<std::mutex> lock(s.mu);
                 std::vector<int64_t> f = s.acc.freq();
                 const size_t n = f.size();
                 return to_numpy(std::move(f), {n});
             })
        .def("dense_result",
             [](PyAccumulator& s) {
                 if (!s.acc.dense()) fail("dense_result() on a sparse accumulator");
                 std::shared_ptr<fastsae::DenseBuffers> buf;
                 {
                     nb::gil_scoped_release release;
                     std::lock_guard<std::mutex> lock(s.mu);
                     buf = guarded("the dense co-occurrence result", [&] { return s.acc.dense_result(); });
                 }
                 const size_t n = static_cast<size_t>(buf->n);
                 auto* keep = new std::shared_ptr<fastsae::DenseBuffers>(buf);
                 nb::capsule owner(keep, [](void* p) noexcept {
                     delete static_cast<std::shared_ptr<fastsae::DenseBuffers>*>(p);
                 });
                 return nb::make_tuple(nb::ndarray<nb::numpy, int64_t>(buf->counts.get(), {n, n}, owner),
                                       nb::ndarray<nb::numpy, double>(buf->sims.get(), {n, n}, owner));
             },
             "Symmetric (C, D) as numpy arrays sharing the accumulator's memory; later updates copy first.")
        .def("sparse_result", [](PyAccumulator& s) {
            if (s.acc.dense()) fail("sparse_result() on a dense accumulator");
            fastsae::SparseResult r;
            {
                nb::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(s.mu);
                r = guarded("the sparse co-occurrence result", [&] { return s.acc.sparse_result(); });
            }
            const size_t np1 = r.indptr.size(), nnz = r.indices.size();
            return nb::make_tuple(to_numpy(std::move(r.indptr), {np1}), to_numpy(std::move(r.indices), {nnz}),
                                  to_numpy(std::move(r.counts), {nnz}), to_numpy(std::move(r.sims), {nnz}));
        });

    m.def(
        "check_dense_cooc",
        [](AnyArray counts, AnyArray sims, AnyArray freq, double sym_rtol) {
            check_array(counts, "counts", 2);
            check_array(sims, "act_sim", 2);
            check_array(freq, "freq", 1);
            require<int64_t>(counts, "counts");
            require<double>(sims, "act_sim");
            require<int64_t>(freq, "freq");
            const int64_t n = static_cast<int64_t>(freq.shape(0));
            if ((int64_t)counts.shape(0) != n || (int64_t)counts.shape(1) != n || (int64_t)sims.shape(0) != n ||
                (int64_t)sims.shape(1) != n)
                fail("counts and act_sim must be [n, n] with n=" + std::to_string(n) + " (the length of freq)");
            if (!(sym_rtol >= 0)) fail("sym_rtol must be >= 0");
            fastsae::DenseCheckResult r;
            {
                nb::gil_scoped_release release;
                r = guarded("the content check of a dense " + std::to_string(n) + " x " + std::to_string(n) +
                                " co-occurrence result",
                            [&] {
                                return fastsae::check_dense_result((const int64_t*)counts.data(),
                                                                   (const double*)sims.data(),
                                                                   (const int64_t*)freq.data(), n, sym_rtol);
                            });
            }
            static const char* names[] = {"ok",           "diagonal_not_freq", "negative_count",
                                          "count_above_min_freq", "counts_asymmetric", "act_sim_not_finite",
                                          "act_sim_negative", "act_sim_without_count", "act_sim_asymmetric"};
            return nb::make_tuple(std::string(names[(int)r.kind]), r.i, r.j);
        },
        "counts"_a.noconvert(), "act_sim"_a.noconvert(), "freq"_a.noconvert(), "sym_rtol"_a,
        "First violated invariant of a dense result (C int64, D float64 [n, n], freq int64 [n], all "
        "C-contiguous) -> (kind, i, j); ('ok', -1, -1) when every invariant holds.");

    m.def(
        "msf_dense",
        [](AnyArray w, const std::string& symmetrize, const std::string& algorithm) {
            check_array(w, "weights", 2);
            if (w.shape(0) != w.shape(1))
                fail("weights must be square, got [" + std::to_string(w.shape(0)) + ", " + std::to_string(w.shape(1)) + "]");
            const auto rule = parse_rule(symmetrize);
            const auto algo = parse_algo(algorithm);
            const int64_t n = static_cast<int64_t>(w.shape(0));
            fastsae::Forest f;
            const std::string what = "the spanning forest of a dense " + std::to_string(n) + " x " + std::to_string(n) + " matrix";
            if (is<double>(w)) {
                nb::gil_scoped_release release;
                f = guarded(what, [&] { return fastsae::msf_dense((const double*)w.data(), n, rule, algo); });
            } else if (is<float>(w)) {
                nb::gil_scoped_release release;
                f = guarded(what, [&] { return fastsae::msf_dense((const float*)w.data(), n, rule, algo); });
            } else {
                fail("weights has dtype " + dtype_name(w) + ", expected float32 or float64");
            }
            return forest_tuple(std::move(f));
        },
        "weights"_a, "symmetrize"_a = "max", "algorithm"_a = "auto",
        "Maximum spanning forest of a dense [n, n] weight matrix -> (edges [m, 2] int64, weights [m] float64).");

    m.def(
        "msf_csr",
        [](int64_t n, AnyArray indptr, AnyArray indices, AnyArray w, const std::string& symmetrize) {
            check_array(indptr, "indptr", 1);
            check_array(indices, "indices", 1);
            check_array(w, "weights", 1);
            require<int64_t>(indptr, "indptr");
            if (!is<int32_t>(indices)) fail("indices has dtype " + dtype_name(indices) + ", expected int32");
            require<double>(w, "weights");
            if (n < 0 || n > 2147483647) fail("n must be in [0, 2**31 - 1], got " + std::to_string(n));
            if ((int64_t)indptr.shape(0) != n + 1) fail("indptr must have n + 1 entries");
            if (indices.shape(0) != w.shape(0)) fail("indices and weights must have one length");
            const auto rule = parse_rule(symmetrize);
            fastsae::Forest f;
            {
                nb::gil_scoped_release release;
                f = guarded("the spanning forest of " + std::to_string(n) + " nodes and " + std::to_string(w.shape(0)) +
                                " entries",
                            [&] {
                                return fastsae::msf_csr(n, (const int64_t*)indptr.data(), (const int32_t*)indices.data(),
                                                        (const double*)w.data(), (int64_t)w.shape(0), rule);
                            });
            }
            return forest_tuple(std::move(f));
        },
        "n"_a, "indptr"_a, "indices"_a, "weights"_a, "symmetrize"_a = "max",
        "Maximum spanning forest of a graph given in canonical CSR form (filter-Kruskal).");
}
