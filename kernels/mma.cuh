// mma.cuh: the warp-level and asynchronous-copy primitives of the tensor-core kernels, as
// device wrappers. Kernels use these and never write the PTX themselves, so that the CUDA
// emulator (tests/cuda_emu/mma_emu.h, included by emu.h) can give each one its exact
// meaning on the CPU: when GPUCONV_EMULATED_WARP_PRIMITIVES is defined the definitions
// below are skipped and the emulator's stand in. Needs sm_80 or newer (Ampere, Hopper).
//
// What each wrapper means (PTX ISA 8.x, "Warp-level matrix instructions" and "Data movement"):
//
//   Fragments. g = lane / 4 ("group"), t = lane % 4 ("thread in group").
//   mma_tf32_m16n8k8(d, a, b): d[16x8] += A[16x8] * B[8x8], A row-major, B column-major,
//     tf32 inputs (fp32 bit patterns whose low 13 mantissa bits the tensor core ignores),
//     fp32 accumulators. Per lane:
//       a[0] = A[g][t]   a[1] = A[g+8][t]   a[2] = A[g][t+4]   a[3] = A[g+8][t+4]
//       b[0] = B[t][g]   b[1] = B[t+4][g]
//       d[0] = D[g][2t]  d[1] = D[g][2t+1]  d[2] = D[g+8][2t]  d[3] = D[g+8][2t+1]
//   mma_bf16_m16n8k16 / mma_f16_m16n8k16(d, a, b): d[16x8] += A[16x16] * B[16x8], two 16-bit
//     values per 32-bit register, the lower k in the low half:
//       a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//       a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//       b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//       d as for tf32.
//   ldmatrix_x4(r, row) / ldmatrix_x4_trans(r, row): four 8x8 matrices of 16-bit values
//     from shared memory; lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i (16
//     contiguous, 16-byte aligned bytes each). Without .trans lane l receives in r[i] the
//     elements [g][2t], [g][2t+1] of matrix i; with .trans the elements [2t][g], [2t+1][g].
//   cp_async<BYTES>(dst, src, valid): an asynchronous copy of 4, 8 or 16 bytes from global to
//     shared memory (cp.async.ca, .cg for 16); when !valid nothing is read and dst is
//     zero-filled (src-size 0). The copy belongs to the thread's current group.
//   cp_async_commit(): closes the thread's current group of copies.
//   cp_async_wait<N>(): waits until at most N of the thread's committed groups are
//     pending. Other threads see the data only after a later __syncthreads().
//   tf32_round(x): x rounded to tf32 (10 mantissa bits), to nearest, ties away from zero
//     (cvt.rna.tf32.f32), as an fp32 bit pattern.
//   tf32_split(x, big, small): big = tf32_round(x), small = tf32_round(x - big): the 3xTF32
//     split, x = big + small to about 21 mantissa bits.
//   f32_to_bf16_bits / f32_to_f16_bits: cvt.rn (round to nearest even); f16_bits_to_f32
//     exact. to_float / from_float<T> convert the storage types below through them.
//   dynamic shared memory: GPUCONV_DYNAMIC_SMEM(name) declares the block's dynamic shared
//     memory as `unsigned char name[]`, 128-byte aligned; dynamic_smem_bytes() its size.
#pragma once

// 16-bit storage types: the bit patterns of bfloat16 and IEEE float16 values. Kernels take
// pointers to these and convert through the wrappers, so that no CUDA header is needed
// (NVRTC compiles the sources as they are).
struct gpuconv_bf16 {
    unsigned short bits;
};
struct gpuconv_f16 {
    unsigned short bits;
};

#ifndef GPUCONV_EMULATED_WARP_PRIMITIVES

#define GPUCONV_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]

__device__ __forceinline__ unsigned dynamic_smem_bytes() {
    unsigned bytes;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
    return bytes;
}

__device__ __forceinline__ unsigned smem_address(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// ----------------------------------------------------------------------------- conversions

__device__ __forceinline__ unsigned short f32_to_bf16_bits(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ unsigned short f32_to_f16_bits(float x) {
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ float f16_bits_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned tf32_round(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// ----------------------------------------------------------------------------- mma.sync

__device__ __forceinline__ void mma_tf32_m16n8k8(float d[4], const unsigned a[4],
                                                 const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_bf16_m16n8k16(float d[4], const unsigned a[4],
                                                  const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_f16_m16n8k16(float d[4], const unsigned a[4],
                                                 const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ----------------------------------------------------------------------------- ldmatrix

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(row)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(row)));
}

// ----------------------------------------------------------------------------- cp.async

template <int BYTES>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool valid) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    const int src_bytes = valid ? BYTES : 0;
    if (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                     :: "r"(smem_address(dst)), "l"(src), "r"(src_bytes) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;"
                     :: "r"(smem_address(dst)), "l"(src), "n"(BYTES), "r"(src_bytes)
                     : "memory");
    }
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}

#endif  // GPUCONV_EMULATED_WARP_PRIMITIVES

// ----------------------------------------------------------------------------- shared helpers
// Built from the primitives above, so the emulator runs them as they are.

__device__ __forceinline__ void tf32_split(float x, unsigned& big, unsigned& small) {
    big = tf32_round(x);
    small = tf32_round(x - __uint_as_float(big));
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(gpuconv_bf16 x) {
    return __uint_as_float((unsigned)x.bits << 16);
}
__device__ __forceinline__ float to_float(gpuconv_f16 x) { return f16_bits_to_f32(x.bits); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ gpuconv_bf16 from_float<gpuconv_bf16>(float x) {
    return gpuconv_bf16{f32_to_bf16_bits(x)};
}
template <>
__device__ __forceinline__ gpuconv_f16 from_float<gpuconv_f16>(float x) {
    return gpuconv_f16{f32_to_f16_bits(x)};
}
