// mma_emu.h: the CPU meaning of kernels/mma.cuh's wrappers, for the CUDA emulator (emu.h
// includes it last). Defining GPUCONV_EMULATED_WARP_PRIMITIVES makes mma.cuh skip its PTX.
//
// Warp-collective wrappers (mma, ldmatrix) rendezvous as emu.h's shuffles do: each lane
// publishes its operands, waits at the warp barrier until all 32 lanes of its warp have
// arrived (fewer is an error: the instructions are .aligned, the whole warp must execute
// them), reads what it needs from the others, and waits again before the buffers are reused.
//
// Arithmetic, as close to the tensor core as a CPU can say it:
//   - tf32 operands keep their top 19 bits (the hardware ignores the low 13 mantissa bits,
//     so a value not rounded by tf32_round is truncated, as on the GPU);
//   - products are exact (in double) and the k products and the accumulator are summed in
//     double, then rounded once to fp32. The hardware's own summation order and internal
//     rounding are not documented: results may differ from a GPU's in the last bit or two
//     of fp32, never by more than the tests' tolerances allow.
//
// cp.async is asynchronous here too: a copy is queued in the issuing thread's current group
// and its destination filled with 0xFF bytes (NaN to any float read) until the copy is
// performed, which happens when cp_async_wait<N> needs its group complete. A kernel that
// reads a stage before waiting for it, or without the __syncthreads() that makes another
// thread's copies visible, or that refills a stage other warps still read, reads NaN.
#pragma once

#include <cstdio>
#include <deque>

#define GPUCONV_EMULATED_WARP_PRIMITIVES 1

#ifndef __align__
#define __align__(n) alignas(n)
#endif
// Occupancy hints mean nothing to a CPU.
#define __launch_bounds__(...)

using std::erf;

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}

// 16-bit storage types with the dtype names the launcher's arrays have.
struct gpuconv_bf16;
struct gpuconv_f16;
template <>
inline std::string emu::type_name<gpuconv_bf16>() { return "bfloat16"; }
template <>
inline std::string emu::type_name<gpuconv_f16>() { return "float16"; }

namespace emu_mma {

// Per-thread state, indexed by the fiber (emu::current): the threads of every block that
// runs at once (a cooperative launch runs all of them) have their own slots.
struct Slot {
    unsigned operands[8];
    const void* address;
    unsigned long long arrivals;
};
inline std::vector<Slot> slots;

inline Slot& slot(unsigned fiber) {
    if (slots.size() < emu::fibers.size()) slots.resize(emu::fibers.size());
    return slots[fiber];
}
inline unsigned lane() { return threadIdx.x % emu::WARP; }
inline unsigned warp_base() { return emu::current - lane(); }

// Publishes this lane's arrival and waits for the rest of the warp; false (the launch
// failed) when the warp is not whole.
inline bool rendezvous(const char* what) {
    const unsigned long long stamp = ++slot(emu::current).arrivals;
    emu::suspend(emu::State::warp_barrier);
    if (blockDim.x % emu::WARP != 0) {
        emu::fail(std::string(what) + ": the block is not a whole number of warps");
        return false;
    }
    for (unsigned l = 0; l < emu::WARP; ++l) {
        if (slot(warp_base() + l).arrivals != stamp) {
            emu::fail(std::string(what) + ": not every lane of the warp executed it "
                      "(a .sync.aligned instruction in divergent code)");
            return false;
        }
    }
    return true;
}

inline void release() { emu::suspend(emu::State::warp_barrier); }

inline double tf32_value(unsigned bits) { return __uint_as_float(bits & 0xffffe000u); }

inline float bf16_to_float(unsigned short bits) { return __uint_as_float((unsigned)bits << 16); }

inline float f16_to_float(unsigned short h) {
    const unsigned sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float magnitude;
    if (exponent == 0) {
        magnitude = std::ldexp((float)mantissa, -24);
    } else if (exponent == 31) {
        magnitude = mantissa ? NAN : INFINITY;
    } else {
        magnitude = std::ldexp((float)(mantissa | 0x400), (int)exponent - 25);
    }
    return sign ? -magnitude : magnitude;
}

// Round to nearest even, as cvt.rn.bf16.f32 (NaN stays a quiet NaN).
inline unsigned short float_to_bf16(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
    const unsigned rounding = 0x7fffu + ((u >> 16) & 1);
    return (unsigned short)((u + rounding) >> 16);
}

// Round to nearest even, as cvt.rn.f16.f32: overflow to inf, subnormals kept.
inline unsigned short float_to_f16(float x) {
    const unsigned u = __float_as_uint(x);
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000);
    const float a = std::fabs(x);
    if (std::isnan(x)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00;  // rounds past the largest half (65504)
    int e;
    std::frexp(a, &e);                         // a = f * 2^e, f in [0.5, 1)
    const int quantum = std::max(e - 11, -24);  // 2^quantum: the spacing of halves near a
    const double q = std::nearbyint(std::ldexp((double)a, -quantum));  // ties to even
    const double v = std::ldexp(q, quantum);
    if (v == 0) return sign;
    int ve;
    const double vf = std::frexp(v, &ve);
    if (ve - 1 < -14) return sign | (unsigned short)std::ldexp(v, 24);  // subnormal
    const unsigned exponent = (unsigned)(ve - 1 + 15);
    const unsigned mantissa = (unsigned)std::ldexp(vf * 2 - 1, 10);
    return sign | (unsigned short)(exponent << 10 | mantissa);
}

enum class Kind { tf32, bf16, f16 };

inline double element16(unsigned word, int half, Kind kind) {
    const unsigned short bits = (unsigned short)(half ? word >> 16 : word & 0xffff);
    return kind == Kind::bf16 ? bf16_to_float(bits) : f16_to_float(bits);
}

// A[row][k] and B[k][col] of the warp's fragments, per the layouts in mma.cuh.
inline double a_elem(unsigned row, unsigned k, Kind kind) {
    const unsigned base = warp_base();
    if (kind == Kind::tf32) {
        const unsigned l = (row % 8) * 4 + k % 4;
        return tf32_value(slot(base + l).operands[(row / 8) + 2 * (k / 4)]);
    }
    const unsigned l = (row % 8) * 4 + (k % 8) / 2;
    return element16(slot(base + l).operands[(row / 8) + 2 * (k / 8)], k % 2, kind);
}

inline double b_elem(unsigned k, unsigned col, Kind kind) {
    const unsigned base = warp_base();
    if (kind == Kind::tf32) return tf32_value(slot(base + col * 4 + k % 4).operands[4 + k / 4]);
    const unsigned l = col * 4 + (k % 8) / 2;
    return element16(slot(base + l).operands[4 + k / 8], k % 2, kind);
}

inline void mma(float d[4], const unsigned a[4], const unsigned b[2], Kind kind,
                const char* what) {
    unsigned* mine = slot(emu::current).operands;
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    if (!rendezvous(what)) return;
    const unsigned g = lane() / 4, t = lane() % 4;
    const unsigned depth = kind == Kind::tf32 ? 8 : 16;
    float out[4];
    for (int i = 0; i < 4; ++i) {
        const unsigned row = g + 8 * (i / 2), col = 2 * t + i % 2;
        double sum = d[i];
        for (unsigned k = 0; k < depth; ++k) sum += a_elem(row, k, kind) * b_elem(k, col, kind);
        out[i] = (float)sum;
    }
    release();
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}

inline void ldmatrix(unsigned r[4], const void* row, bool trans) {
    slot(emu::current).address = row;
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
        emu::fail("ldmatrix: a row address is not 16-byte aligned");
        return;
    }
    if (!rendezvous(trans ? "ldmatrix.trans" : "ldmatrix")) return;
    const unsigned g = lane() / 4, t = lane() % 4, base = warp_base();
    unsigned out[4];
    for (unsigned i = 0; i < 4; ++i) {
        const auto rows = [&](unsigned j) {
            return static_cast<const unsigned short*>(slot(base + 8 * i + j).address);
        };
        unsigned short lo, hi;
        if (trans) {
            lo = rows(2 * t)[g];
            hi = rows(2 * t + 1)[g];
        } else {
            lo = rows(g)[2 * t];
            hi = rows(g)[2 * t + 1];
        }
        out[i] = (unsigned)lo | ((unsigned)hi << 16);
    }
    release();
    for (int i = 0; i < 4; ++i) r[i] = out[i];
}

struct Copy {
    void* dst;
    const void* src;
    int bytes;
    bool valid;
};

// Each thread's open group and its committed, not yet completed groups (by fiber).
struct Copies {
    std::vector<Copy> open;
    std::deque<std::vector<Copy>> committed;
};
inline std::vector<Copies> copies;

inline Copies& copies_of_this_thread() {
    if (copies.size() < emu::fibers.size()) copies.resize(emu::fibers.size());
    return copies[emu::current];
}

inline void perform(const std::vector<Copy>& group) {
    for (const Copy& c : group) {
        if (c.valid) {
            std::memcpy(c.dst, c.src, c.bytes);
        } else {
            std::memset(c.dst, 0, c.bytes);
        }
    }
}

}  // namespace emu_mma

// The block's dynamic shared memory: emu.h's per-block buffer of the launch's size (0xFF
// bytes, a guard zone after it), so that the kernel's own size check and overruns show.
#define GPUCONV_DYNAMIC_SMEM(name) unsigned char* name = emu::block_smem()

inline unsigned dynamic_smem_bytes() { return (unsigned)emu::dynamic_smem; }

inline unsigned short f32_to_bf16_bits(float x) { return emu_mma::float_to_bf16(x); }
inline unsigned short f32_to_f16_bits(float x) { return emu_mma::float_to_f16(x); }
inline float f16_bits_to_f32(unsigned short h) { return emu_mma::f16_to_float(h); }

// tf32 to nearest, ties away from zero (cvt.rna.tf32.f32); inf and NaN pass unchanged.
inline unsigned tf32_round(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;
    return (u + 0x1000u) & 0xffffe000u;
}

inline void mma_tf32_m16n8k8(float d[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma::mma(d, a, b, emu_mma::Kind::tf32, "mma.m16n8k8.tf32");
}
inline void mma_bf16_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma::mma(d, a, b, emu_mma::Kind::bf16, "mma.m16n8k16.bf16");
}
inline void mma_f16_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma::mma(d, a, b, emu_mma::Kind::f16, "mma.m16n8k16.f16");
}

inline void ldmatrix_x4(unsigned r[4], const void* row) { emu_mma::ldmatrix(r, row, false); }
inline void ldmatrix_x4_trans(unsigned r[4], const void* row) { emu_mma::ldmatrix(r, row, true); }

template <int BYTES>
inline void cp_async(void* dst, const void* src, bool valid) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    if (reinterpret_cast<uintptr_t>(dst) % BYTES || (valid && reinterpret_cast<uintptr_t>(src) % BYTES)) {
        emu::fail("cp.async: an address is not aligned to the copy's size");
        return;
    }
    std::memset(dst, 0xFF, BYTES);
    emu_mma::copies_of_this_thread().open.push_back({dst, src, BYTES, valid});
}

inline void cp_async_commit() {
    emu_mma::Copies& mine = emu_mma::copies_of_this_thread();
    mine.committed.push_back(std::move(mine.open));
    mine.open.clear();
}

template <int N>
inline void cp_async_wait() {
    auto& groups = emu_mma::copies_of_this_thread().committed;
    while (groups.size() > (size_t)N) {
        emu_mma::perform(groups.front());
        groups.pop_front();
    }
}
