// common.cuh: small device helpers shared by the kernel families.
//
// Kept header-only and free of the C++ standard library so that NVRTC (CuPy RawModule)
// and nvcc compile every .cu file as it is.
#pragma once

// Threads per block of the block-wide reductions below; a power of two, at most 1024.
#define GPUCONV_REDUCE_THREADS 256

// A grid-stride loop over [0, total) with 64-bit indices, so that tensors of more than
// 2^31 elements are covered by any grid size.
#define GPUCONV_GRID_STRIDE_LOOP(i, total)                                        \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)gridDim.x * blockDim.x)

// Sum of `value` over the block (blockDim.x == GPUCONV_REDUCE_THREADS), returned to every
// thread. A fixed tree in shared memory: the result does not depend on scheduling
// (deterministic). Safe to call repeatedly: it synchronises before the buffer is reused.
template <typename T>
__device__ __forceinline__ T gpuconv_block_sum(T value) {
    __shared__ T partial[GPUCONV_REDUCE_THREADS];
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int half = GPUCONV_REDUCE_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    const T total = partial[0];
    __syncthreads();
    return total;
}

// Records a failed value check in the four-word row `error` = [seen, value, bound, extra]
// (the layout gpuconv/device_checks.py reads); a null row records nothing. Threads that fail
// together race benignly: each word ends up as one of theirs.
__device__ __forceinline__ void gpuconv_report_error(long long* error, long long value,
                                                     long long bound, long long extra) {
    if (error == nullptr) return;
    error[1] = value;
    error[2] = bound;
    error[3] = extra;
    error[0] = 1;
}

// exp(v - m) for an online log-sum-exp whose running maximum m >= v, except that v == m <= 0
// gives 1: a -inf met while the maximum is still -inf then adds 1 (rescaled to 0 once a
// finite maximum comes) instead of exp(-inf - -inf) = NaN. A +inf maximum still gives
// exp(inf - inf) = NaN, as the reference's x - max does.
template <typename T>
__device__ __forceinline__ T gpuconv_exp_below(T v, T m) {
    return (v == m && m <= T(0)) ? T(1) : exp(v - m);
}
