// kmeans.cu: the two steps of Lloyd's k-means on n points of d features (x, row-major
// (n, d)) and k centres (row-major (k, d)), each for float (_f32) and double (_f64).
//
// Assignment: the squared distance ||x_i - c_j||^2 = ||x_i||^2 - 2 x_i . c_j + ||c_j||^2,
// so the launcher first computes dots = X C^T (n, k) with one cuBLAS GEMM; then
//   kmeans_assign_argmin_{thread,warp}  for each row i, the index j of the smallest
//            ||c_j||^2 - 2 dots[i, j] (the lowest j on ties, as NumPy's argmin) and that
//            squared distance plus ||x_i||^2, clamped at 0 (rounding can make it slightly
//            negative for a point on its centre). Distances are completed and reduced in
//            registers: the (n, k) distance matrix is never written.
//     _thread  a thread owns a row and walks its k dot products (k < 32);
//     _warp    a warp owns a row; its lanes stride over the k dot products (coalesced
//              reads of the row), keep their own best (value, index), and combine them
//              with xor-shuffles, the lower index winning ties so every lane agrees.
//
// Update: the new centres are the mean of their points. A deterministic segmented
// reduction instead of atomics, so the same input gives the same bits on every run:
// the launcher sorts the positions by (label, position) (order), so cluster j's points
// are order[seg_start[j] .. seg_start[j+1]); each cluster's run is cut into tiles of
// at most tile_points positions (tile_start[j] .. tile_start[j+1] are cluster j's tiles,
// tile_cluster[t] the cluster of tile t). Then
//   kmeans_update_tile_sums     a block per tile, a thread per feature (blockDim.x
//            threads stride over d): partial[t, f] = sum of x[order[p], f] over the tile's
//            positions in order, accumulated in double. Neighbouring threads read
//            neighbouring features of the same point (coalesced when d >= 32).
//   kmeans_update_cluster_sums  a block per cluster, a thread per feature:
//            sums[j, f] = sum of partial[t, f] over the cluster's tiles in order (0 for an
//            empty cluster), rounded once to T.
// Every sum has a fixed order that does not depend on scheduling. The launcher divides by
// the counts (seg_start differences). Point and element indices are 64-bit.
#include "common.cuh"

#define FULL_WARP_MASK 0xffffffffu
#define WARP_LANES 32
#define NO_CLUSTER (-1)

template <typename T>
struct Nearest {
    T value;  // ||c_j||^2 - 2 x_i . c_j of the best centre so far
    int j;    // its index, NO_CLUSTER before any
};

// Whether (value, j) beats `best`: smaller, or as small with a lower index.
template <typename T>
__device__ __forceinline__ bool closer(T value, int j, const Nearest<T>& best) {
    return j != NO_CLUSTER &&
           (best.j == NO_CLUSTER || value < best.value || (value == best.value && j < best.j));
}

template <typename T, int LANES>
__device__ void kmeans_assign_argmin(const T* __restrict__ dots, const T* __restrict__ c_sq_norms,
                                     const T* __restrict__ x_sq_norms, long long n, int k,
                                     long long* __restrict__ labels, T* __restrict__ sq_dist) {
    static_assert(LANES == 1 || LANES == WARP_LANES, "a row belongs to a thread or a warp");
    const int lane = threadIdx.x % LANES;
    const long long first = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / LANES;
    const long long step = ((long long)gridDim.x * blockDim.x) / LANES;
    // With LANES == 32 and blockDim.x a multiple of 32, a warp's lanes share every row, so
    // the shuffles below always see the whole warp.
    for (long long i = first; i < n; i += step) {
        const T* row = dots + i * k;
        Nearest<T> best = {T(0), NO_CLUSTER};
        for (int j = lane; j < k; j += LANES) {
            const T value = c_sq_norms[j] - T(2) * row[j];
            if (closer(value, j, best)) best = {value, j};
        }
        for (int offset = LANES / 2; offset > 0; offset >>= 1) {
            const T value = __shfl_xor_sync(FULL_WARP_MASK, best.value, offset);
            const int j = __shfl_xor_sync(FULL_WARP_MASK, best.j, offset);
            if (closer(value, j, best)) best = {value, j};
        }
        if (lane != 0) continue;
        const T distance = best.value + x_sq_norms[i];
        labels[i] = best.j;
        sq_dist[i] = distance > T(0) ? distance : T(0);
    }
}

template <typename T>
__device__ void kmeans_update_tile_sums(const T* __restrict__ x, const long long* __restrict__ order,
                                        const long long* __restrict__ seg_start,
                                        const long long* __restrict__ tile_start,
                                        const long long* __restrict__ tile_cluster,
                                        long long tiles, long long tile_points, int d,
                                        double* __restrict__ partial) {
    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
        const long long j = tile_cluster[t];
        const long long begin = seg_start[j] + (t - tile_start[j]) * tile_points;
        const long long end = min(begin + tile_points, seg_start[j + 1]);
        for (int f = threadIdx.x; f < d; f += blockDim.x) {
            double acc = 0.0;
            for (long long p = begin; p < end; ++p) acc += (double)x[order[p] * d + f];
            partial[t * d + f] = acc;
        }
    }
}

template <typename T>
__device__ void kmeans_update_cluster_sums(const double* __restrict__ partial,
                                           const long long* __restrict__ tile_start, int k,
                                           int d, T* __restrict__ sums) {
    for (long long j = blockIdx.x; j < k; j += gridDim.x) {
        for (int f = threadIdx.x; f < d; f += blockDim.x) {
            double acc = 0.0;
            for (long long t = tile_start[j]; t < tile_start[j + 1]; ++t) acc += partial[t * d + f];
            sums[j * d + f] = (T)acc;
        }
    }
}

#define KMEANS_ASSIGN_ENTRY_POINT(T, SUFFIX, VARIANT, LANES)                                  \
    extern "C" __global__ void kmeans_assign_argmin_##VARIANT##_##SUFFIX(                     \
        const T* dots, const T* c_sq_norms, const T* x_sq_norms, long long n, int k,          \
        long long* labels, T* sq_dist) {                                                      \
        kmeans_assign_argmin<T, LANES>(dots, c_sq_norms, x_sq_norms, n, k, labels, sq_dist);  \
    }

#define KMEANS_ENTRY_POINTS(T, SUFFIX)                                                        \
    KMEANS_ASSIGN_ENTRY_POINT(T, SUFFIX, thread, 1)                                           \
    KMEANS_ASSIGN_ENTRY_POINT(T, SUFFIX, warp, WARP_LANES)                                    \
    extern "C" __global__ void kmeans_update_tile_sums_##SUFFIX(                              \
        const T* x, const long long* order, const long long* seg_start,                       \
        const long long* tile_start, const long long* tile_cluster, long long tiles,          \
        long long tile_points, int d, double* partial) {                                      \
        kmeans_update_tile_sums<T>(x, order, seg_start, tile_start, tile_cluster, tiles,      \
                                   tile_points, d, partial);                                  \
    }                                                                                         \
    extern "C" __global__ void kmeans_update_cluster_sums_##SUFFIX(                           \
        const double* partial, const long long* tile_start, int k, int d, T* sums) {          \
        kmeans_update_cluster_sums<T>(partial, tile_start, k, d, sums);                       \
    }

KMEANS_ENTRY_POINTS(float, f32)
KMEANS_ENTRY_POINTS(double, f64)
