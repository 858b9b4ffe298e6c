// philox.cuh: Philox4x64-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011), the counter-based generator behind dropout's mask. The same words as
// NumPy's numpy.random.Philox: counter (c0, c1, c2, c3), key (k0, k1), ten rounds, the key
// bumped by (W0, W1) before every round but the first.
//
// Host and device: on the device the 64-bit high product is __umul64hi; on the host (where
// tests/test_dropout_philox.py checks these words against NumPy's) it is a 128-bit product.
#pragma once

#define PHILOX_ROUNDS 10
#define PHILOX_WORDS 4
#define PHILOX_M0 0xD2E7470EE14C6C93ULL
#define PHILOX_M1 0xCA5A826395121157ULL
#define PHILOX_W0 0x9E3779B97F4A7C15ULL
#define PHILOX_W1 0xBB67AE8584CAA73BULL

__host__ __device__ __forceinline__ unsigned long long philox_mulhi(unsigned long long a,
                                                                    unsigned long long b) {
#ifdef __CUDA_ARCH__
    return __umul64hi(a, b);
#else
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
#endif
}

// Philox4x64-10 applied in place to the counter c with key (k0, k1).
__host__ __device__ __forceinline__ void philox4x64_10(unsigned long long c[PHILOX_WORDS],
                                                       unsigned long long k0,
                                                       unsigned long long k1) {
    for (int round = 0; round < PHILOX_ROUNDS; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const unsigned long long hi0 = philox_mulhi(PHILOX_M0, c[0]), lo0 = PHILOX_M0 * c[0];
        const unsigned long long hi1 = philox_mulhi(PHILOX_M1, c[2]), lo1 = PHILOX_M1 * c[2];
        c[0] = hi1 ^ c[1] ^ k0;
        c[1] = lo1;
        c[2] = hi0 ^ c[3] ^ k1;
        c[3] = lo0;
    }
}
