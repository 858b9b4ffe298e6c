// linear.cu: embedding lookup and its gradient, for float (_f32) and double (_f64). (The
// linear layer itself is a cuBLAS GEMM through CuPy plus a broadcast bias add; it needs no
// kernel of its own.)
//
// A table weight of shape (num_embeddings, dim), P positions with int64 indices idx[p].
//   embedding_fwd  thread = one output element y[p, j] = weight[idx[p], j]; consecutive
//                  threads own consecutive j, so each row is read and written coalesced.
//   embedding_bwd  thread = one gradient element gw[r, j]: the sum of g[p, j] over the
//                  positions p with idx[p] == r, gathered in increasing p (no atomics, so
//                  the result is deterministic and equal to the CPU's in-order sum). The
//                  host sorts the positions by index: order[k] is the k-th position in
//                  (index, position) order and row r's positions are
//                  order[row_start[r] .. row_start[r + 1]). The row padding_idx gets 0
//                  (padding_idx < 0: none).
//
// All entry points take plain pointers to contiguous arrays; counts and offsets are 64-bit.
#include "common.cuh"

template <typename T>
__device__ void embedding_fwd(const long long* __restrict__ idx, const T* __restrict__ weight,
                              T* __restrict__ y, long long positions, long long dim) {
    GPUCONV_GRID_STRIDE_LOOP(i, positions * dim) {
        const long long p = i / dim;
        y[i] = weight[idx[p] * dim + (i - p * dim)];
    }
}

template <typename T>
__device__ void embedding_bwd(const T* __restrict__ g, const long long* __restrict__ order,
                              const long long* __restrict__ row_start, T* __restrict__ gw,
                              long long num_embeddings, long long dim, long long padding_idx) {
    GPUCONV_GRID_STRIDE_LOOP(i, num_embeddings * dim) {
        const long long r = i / dim;
        const long long j = i - r * dim;
        T acc = T(0);
        if (r != padding_idx) {
            for (long long k = row_start[r]; k < row_start[r + 1]; ++k)
                acc += g[order[k] * dim + j];
        }
        gw[i] = acc;
    }
}

#define LINEAR_ENTRY_POINTS(T, SUFFIX)                                                        \
    extern "C" __global__ void embedding_fwd_##SUFFIX(const long long* idx, const T* weight,  \
                                                      T* y, long long positions,              \
                                                      long long dim) {                        \
        embedding_fwd<T>(idx, weight, y, positions, dim);                                     \
    }                                                                                         \
    extern "C" __global__ void embedding_bwd_##SUFFIX(                                        \
        const T* g, const long long* order, const long long* row_start, T* gw,                \
        long long num_embeddings, long long dim, long long padding_idx) {                     \
        embedding_bwd<T>(g, order, row_start, gw, num_embeddings, dim, padding_idx);          \
    }

LINEAR_ENTRY_POINTS(float, f32)
LINEAR_ENTRY_POINTS(double, f64)
