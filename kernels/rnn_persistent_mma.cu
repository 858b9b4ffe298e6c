// rnn_persistent_mma.cu: the persistent LSTM and GRU recurrences of rnn_persistent.cu with the
// recurrent product of every step on tensor cores (mma.sync through mma.cuh; sm_80 or newer).
// Same arrays, layouts, step order, gate math and grid barrier as the FMA kernels there (the
// shared parts are in rnn_persistent.cuh); what differs is how a block computes its slice of
// the step's product and where it keeps its slice of W_hh.
//
//   <cell>_fwd_persistent_mma_<p>: per step, Z = h_prev (B x H) times the block's slice of
//     W_hh^T (H x N, N = G*U columns: gate q of unit u is column q*U + u), then the gate math
//     of the block's U units.
//   <cell>_bwd_persistent_mma_<p>: per step, Z = dg_next (B x G*H) times the block's columns
//     of W_hh (G*H x N, N = U: column u is hidden unit j0 + u), then the gate gradients.
//
// The product as a tensor-core GEMM: M = batch rows (A, read from global memory: other blocks
// wrote it in the previous step), N = the block's columns (B, W_hh, on chip for all steps),
// K = the reduction, in k-steps of RNN_MMA_KSTEP = 16 elements. Fragments are those of
// mma.sync m16n8k8 (tf32, two per k-step) and m16n8k16 (bf16, f16, one per k-step), with the
// reduction index permuted inside each k-step (a permutation applied to A and B alike leaves
// the sum unchanged): lane (g, t) = (lane / 4, lane % 4) holds elements 4t .. 4t+3 of the
// k-step, of rows g and g+8 of A and of column g of B, so that every operand read is one
// 16-byte (A, fp32 W) or 8-byte (16-bit W) access. In the m16n8k8 pair the first mma takes
// 4t, 4t+1 as its k = t, t+4 and the second 4t+2, 4t+3; in the m16n8k16 the pairs
// (4t, 4t+1), (4t+2, 4t+3) are its k = (2t, 2t+1), (2t+8, 2t+9).
//
// Precisions (entry point suffix; arrays are float32 in all of them, every sum, state and gate
// is fp32): f32 (fp32 accuracy): W_hh kept as fp32 and both operands split on the fly into
// tf32 big + small, three mma per product (small*big + big*small + big*big, as conv_igemm's
// 3xTF32); f32_tf32: W_hh rounded to tf32 once when it is loaded, A rounded per use, one mma;
// f32_bf16 / f32_f16: W_hh stored as 16-bit bit patterns (the launcher converts them), A
// rounded to the same type per use (cvt.rn), one m16n8k16.
//
// Block and warp mapping: block p of direction d owns units j0 = p*U .. (as rnn_persistent.cu).
// Its RNN_MMA_WARPS warps split a round of the batch and the reduction: WM warps along the
// batch (the largest power of two not above the round's 16*MT-row chunks, at most 8), KS = 8
// / WM along K (contiguous ranges of k-steps). Warp (wm, ks) = warp ks*WM + wm computes the
// MT x NT fragments (16 rows x 8 columns each) of rows wm*16*MT .. of the round, for all of
// the block's n-tiles, over its k-steps: MT x NT = 2 x 4 where the slice has at most 4
// n-tiles, else 1 x 8 (a slice of at most 8 n-tiles, checked by the launcher).
//
// Pipeline (per warp, no block barrier inside the reduction): each lane copies exactly the
// A elements its own fragments need (rows g and g+8, 16 bytes each, per m-tile and k-step)
// from global memory into a ring of RNN_MMA_SLOTS slots of shared memory with cp.async (.cg,
// 16 bytes: through L2, as data other blocks wrote this launch must be read), DEPTH k-steps
// ahead (4 slots / the warp's m-tiles: 2 or 4); then waits for its oldest group and
// multiplies. Rows past the batch, reduction elements past K and arrays whose rows are not
// 16-byte aligned (H not a multiple of 4) are filled by plain loads (ld.global.cg) and zeros.
//
// Reduction across warps and the gate math: each warp stores its fp32 partial sums in its
// own RNN_MMA_WARP_BYTES of shared memory (the same bytes as its ring: a lane overwrites only
// its own slots); a block barrier; then thread e handles (row, unit) pairs e, e + 256, ...:
// it sums the KS partials of each of its gates in a fixed order (deterministic) and runs the
// gate math of rnn_persistent.cuh; a block barrier before the ring is filled again. The grid
// barrier follows each step as in rnn_persistent.cu.
//
// Shared memory (bytes): W_hh's slice, ceil(K/16) * N * 16 values of the storage type (fp32:
// 4 bytes, 16-bit: 2), at offset 0, as [k-step][column][16 reduction elements] (zero past K):
// the 8 columns of an n-tile are 8 contiguous 16-value rows, so a warp's fragment read is one
// contiguous 512 (256) bytes, free of bank conflicts, and lanes of columns past N (the last
// n-tile of a slice whose N is not a multiple of 8) read nothing and use zeros. Then
// RNN_MMA_WARPS * RNN_MMA_WARP_BYTES for the rings and partial sums. The kernel traps when
// the launch gives it less (gpuconv/kernels/cuda_c/rnn_persistent.py computes the same size).
//
// Launch: cooperative, D * ceil(H / U) blocks of RNN_MMA_THREADS threads, one per SM.
// Element offsets are 64-bit.
#include "grid_sync.cuh"
#include "mma.cuh"
#include "rnn_persistent.cuh"

// Warps per block, and threads.
#define RNN_MMA_WARPS 8
#define RNN_MMA_THREADS (RNN_MMA_WARPS * 32)
// Reduction elements per k-step.
#define RNN_MMA_KSTEP 16
// Staging slots per warp, each one m-tile's k-step of A: 16 rows x 16 fp32 values.
#define RNN_MMA_SLOTS 4
#define RNN_MMA_SLOT_BYTES (16 * RNN_MMA_KSTEP * 4)
// Shared memory per warp: its ring, then its partial sums (8 fragments of 16 x 8 fp32).
#define RNN_MMA_WARP_BYTES (RNN_MMA_SLOTS * RNN_MMA_SLOT_BYTES)
// The most n-tiles (8 columns each) a block's slice may have.
#define RNN_MMA_MAX_NTILES 8

enum Precision { PREC_FP32 = 0, PREC_TF32 = 1, PREC_BF16 = 2, PREC_F16 = 3 };

// Four consecutive fp32 values (a 16-byte shared or global access) and two 32-bit words.
struct __align__(16) f32x4 {
    float v[4];
};
struct __align__(8) u32x2 {
    unsigned lo, hi;
};

// --------------------------------------------------------------------------- fragments

// The operands of one k-step of one lane: A from its two staged 16-byte rows (lo: row g,
// hi: row g+8, reduction elements 4t .. 4t+3), B from its four weights in shared memory
// (zeros where !valid: a column past the slice); mma(d, a, b) adds the k-step's products to
// the 16 x 8 accumulator fragment d; stored(w) is what the slice keeps of a weight.
template <int P>
struct Operands;

template <>
struct Operands<PREC_FP32> {  // 3xTF32
    typedef float W;
    struct A {
        unsigned big[2][4], small[2][4];
    };
    struct B {
        unsigned big[2][2], small[2][2];
    };
    __device__ __forceinline__ static A a(const f32x4& lo, const f32x4& hi) {
        A r;
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            tf32_split(lo.v[2 * h], r.big[h][0], r.small[h][0]);
            tf32_split(hi.v[2 * h], r.big[h][1], r.small[h][1]);
            tf32_split(lo.v[2 * h + 1], r.big[h][2], r.small[h][2]);
            tf32_split(hi.v[2 * h + 1], r.big[h][3], r.small[h][3]);
        }
        return r;
    }
    __device__ __forceinline__ static B b(const W* w, bool valid) {
        const f32x4 v = valid ? *reinterpret_cast<const f32x4*>(w) : f32x4{};
        B r;
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            tf32_split(v.v[2 * h], r.big[h][0], r.small[h][0]);
            tf32_split(v.v[2 * h + 1], r.big[h][1], r.small[h][1]);
        }
        return r;
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const A& a, const B& b) {
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            mma_tf32_m16n8k8(d, a.small[h], b.big[h]);
            mma_tf32_m16n8k8(d, a.big[h], b.small[h]);
            mma_tf32_m16n8k8(d, a.big[h], b.big[h]);
        }
    }
    __device__ __forceinline__ static W stored(W w) { return w; }
};

template <>
struct Operands<PREC_TF32> {
    typedef float W;
    struct A {
        unsigned v[2][4];
    };
    struct B {
        unsigned v[2][2];
    };
    __device__ __forceinline__ static A a(const f32x4& lo, const f32x4& hi) {
        A r;
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            r.v[h][0] = tf32_round(lo.v[2 * h]);
            r.v[h][1] = tf32_round(hi.v[2 * h]);
            r.v[h][2] = tf32_round(lo.v[2 * h + 1]);
            r.v[h][3] = tf32_round(hi.v[2 * h + 1]);
        }
        return r;
    }
    __device__ __forceinline__ static B b(const W* w, bool valid) {  // rounded by stored()
        const f32x4 v = valid ? *reinterpret_cast<const f32x4*>(w) : f32x4{};
        B r;
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            r.v[h][0] = __float_as_uint(v.v[2 * h]);
            r.v[h][1] = __float_as_uint(v.v[2 * h + 1]);
        }
        return r;
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const A& a, const B& b) {
        mma_tf32_m16n8k8(d, a.v[0], b.v[0]);
        mma_tf32_m16n8k8(d, a.v[1], b.v[1]);
    }
    __device__ __forceinline__ static W stored(W w) { return __uint_as_float(tf32_round(w)); }
};

// bf16 and f16: W_hh arrives as 16-bit bit patterns; A is rounded to nearest even per use.
template <typename Bits, bool BF16>
struct Operands16 {
    typedef Bits W;
    struct A {
        unsigned v[4];
    };
    struct B {
        unsigned v[2];
    };
    __device__ __forceinline__ static unsigned pair(float lower, float upper) {
        const unsigned lo = BF16 ? f32_to_bf16_bits(lower) : f32_to_f16_bits(lower);
        const unsigned hi = BF16 ? f32_to_bf16_bits(upper) : f32_to_f16_bits(upper);
        return lo | hi << 16;
    }
    __device__ __forceinline__ static A a(const f32x4& lo, const f32x4& hi) {
        return A{{pair(lo.v[0], lo.v[1]), pair(hi.v[0], hi.v[1]), pair(lo.v[2], lo.v[3]),
                  pair(hi.v[2], hi.v[3])}};
    }
    __device__ __forceinline__ static B b(const W* w, bool valid) {
        // No named local: NVRTC 12.0 warns (#177) that one is never referenced here.
        const u32x2* pair_of = reinterpret_cast<const u32x2*>(w);
        return valid ? B{{pair_of->lo, pair_of->hi}} : B{{0u, 0u}};
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const A& a, const B& b) {
        if (BF16) {
            mma_bf16_m16n8k16(d, a.v, b.v);
        } else {
            mma_f16_m16n8k16(d, a.v, b.v);
        }
    }
    __device__ __forceinline__ static W stored(W w) { return w; }
};

template <>
struct Operands<PREC_BF16> : Operands16<bf16w, true> {};
template <>
struct Operands<PREC_F16> : Operands16<f16w, false> {};

// --------------------------------------------------------------------------- the partition

// The block's share of the step (see the mapping in the header comment).
struct Part {
    int d;       // direction
    int j0;      // first unit
    int units;   // U
    int owned;   // units this block owns (the last block of a direction may own fewer)
    int columns; // N: G*U forward, U backward
    int ntiles;  // n-tiles of its slice: ceil(N / 8)
};

__device__ __forceinline__ Part make_part(int H, int units, int columns, int most_ntiles) {
    Part p;
    block_units(H, units, p.d, p.j0, p.owned);
    p.units = units;
    p.columns = columns;
    p.ntiles = (columns + 7) / 8;
    // the launcher gives every slice at most the n-tiles its kernel handles, and whole warps
    if (p.ntiles > most_ntiles || blockDim.x != RNN_MMA_THREADS) __trap();
    return p;
}

// This warp's place in a round of MT-m-tile chunks of the batch.
struct WarpGrid {
    int wm, ks;  // its chunk of the round and its range of k-steps
    int WM, KS;  // warps along the batch and along the reduction
    int rows;    // batch rows per round: WM * 16 * MT
};

template <int MT>
__device__ __forceinline__ WarpGrid make_warp_grid(int B) {
    const int chunks = (B + 16 * MT - 1) / (16 * MT);
    int WM = 1;
    while (WM * 2 <= chunks && WM * 2 <= RNN_MMA_WARPS) WM *= 2;
    const int warp = threadIdx.x / 32;
    return WarpGrid{warp % WM, warp / WM, WM, RNN_MMA_WARPS / WM, WM * 16 * MT};
}

// --------------------------------------------------------------------------- the slice

// Column n of the forward slice: gate q = n / U of unit u = n % U, row q*H + j0 + u of
// W_hh (G*H x H); element k of it.
struct GateRows {
    int G, H;
    __device__ __forceinline__ long long at(const Part& p, int n, int k, bool& valid) const {
        const int q = n / p.units, u = n % p.units;
        valid = q < G && u < p.owned && k < H;
        return ((long long)q * H + p.j0 + u) * H + k;
    }
};

// Column n of the backward slice: column j0 + n of W_hh; element k (a gate row) of it.
struct UnitColumns {
    int G, H;
    __device__ __forceinline__ long long at(const Part& p, int n, int k, bool& valid) const {
        valid = n < p.owned && k < G * H;
        return (long long)k * H + p.j0 + n;
    }
};

// The block's slice of w (one direction's W_hh) into shared memory as [k-step][column][16],
// zeros outside W_hh (units the block does not own, reduction elements past K). Once per
// launch.
template <int P, class Columns>
__device__ void load_slice(typename Operands<P>::W* wf, const typename Operands<P>::W* w,
                           int ksteps, const Part& p, const Columns& columns) {
    typedef typename Operands<P>::W W;
    const int total = ksteps * p.columns * RNN_MMA_KSTEP;
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
        const int n = (e / RNN_MMA_KSTEP) % p.columns;
        const int k = e / (RNN_MMA_KSTEP * p.columns) * RNN_MMA_KSTEP + e % RNN_MMA_KSTEP;
        bool valid;
        const long long at = columns.at(p, n, k, valid);
        wf[e] = valid ? Operands<P>::stored(w[at]) : W{};
    }
}

// --------------------------------------------------------------------------- products

// Lane's two 16-byte pieces of one m-tile's k-step of A (rows r0 + g and r0 + g + 8,
// elements k0 + 4t ..) into its slot: asynchronously when they lie inside A and rows are
// 16-byte aligned (vec), else by plain loads and zeros.
__device__ __forceinline__ void stage_a(unsigned char* slot, const float* A, long long ld,
                                        int nb, int K, int r0, int k0, bool vec) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int k = k0 + 4 * t;
    #pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = r0 + g + 8 * h;
        f32x4* dst = reinterpret_cast<f32x4*>(slot) + h * 32 + lane;
        const float* src = A + (long long)row * ld + k;
        if (vec && row < nb && k + 4 <= K) {
            cp_async<16>(dst, src, true);
        } else {
            f32x4 v{};
            #pragma unroll
            for (int i = 0; i < 4; ++i)
                if (row < nb && k + i < K) v.v[i] = gpuconv_load_cg(src + i);
            *dst = v;
        }
    }
}

// Waits until at most `pending` of this thread's copy groups are in flight (0 .. 3).
__device__ __forceinline__ void wait_for_copies(int pending) {
    switch (pending) {
        case 0: cp_async_wait<0>(); break;
        case 1: cp_async_wait<1>(); break;
        case 2: cp_async_wait<2>(); break;
        default: cp_async_wait<3>(); break;
    }
}

// This warp's partial sums for rows [row0, row0 + 16*MT) of A (rows 0 .. nb-1 valid; row
// stride ld; K elements each) times the slice wf (`columns` columns), over its range of
// k-steps, stored in its region (fragment (mt, n) at float4 (mt*NT + n)*32 + lane).
template <int P, int MT, int NT>
__device__ void warp_products(const float* A, long long ld, int nb, int K,
                              const typename Operands<P>::W* wf, int columns,
                              unsigned char* region, const WarpGrid& wg) {
    typedef Operands<P> Ops;
    const int lane = threadIdx.x % 32;
    const int ntiles = (columns + 7) / 8;
    const int row0 = wg.wm * 16 * MT;
    const int mtv = max(0, min(MT, (nb - row0 + 15) / 16));  // m-tiles with a batch row
    float acc[MT][NT][4];
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt)
        #pragma unroll
        for (int n = 0; n < NT; ++n)
            #pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][n][i] = 0.0f;
    const int ksteps = (K + RNN_MMA_KSTEP - 1) / RNN_MMA_KSTEP;
    const int per = (ksteps + wg.KS - 1) / wg.KS;
    const int s0 = wg.ks * per, s1 = min(ksteps, s0 + per);
    if (mtv > 0 && s0 < s1) {
        const bool vec = ld % 4 == 0 && (unsigned long long)A % 16 == 0;
        const int depth = RNN_MMA_SLOTS / mtv;  // k-steps in flight
        const auto slot = [&](int s, int mt) {
            return region + ((s % depth) * mtv + mt) * RNN_MMA_SLOT_BYTES;
        };
        const auto issue = [&](int s) {
            if (s < s1)
                for (int mt = 0; mt < mtv; ++mt)
                    stage_a(slot(s, mt), A, ld, nb, K, row0 + 16 * mt, s * RNN_MMA_KSTEP, vec);
            cp_async_commit();
        };
        for (int s = s0; s < s0 + depth - 1; ++s) issue(s);
        for (int s = s0; s < s1; ++s) {
            issue(s + depth - 1);
            wait_for_copies(depth - 1);  // k-step s has landed
            typename Ops::A a[MT] = {};
            #pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if (mt < mtv) {
                    const f32x4* piece = reinterpret_cast<const f32x4*>(slot(s, mt));
                    a[mt] = Ops::a(piece[lane], piece[32 + lane]);
                }
            }
            #pragma unroll
            for (int n = 0; n < NT; ++n) {
                if (n >= ntiles) continue;
                const int column = n * 8 + lane / 4;
                const typename Ops::B b = Ops::b(
                    wf + ((long long)s * columns + column) * RNN_MMA_KSTEP + 4 * (lane % 4),
                    column < columns);
                #pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    if (mt < mtv) Ops::mma(acc[mt][n], a[mt], b);
            }
        }
        cp_async_wait<0>();
    }
    // The partial sums overwrite only this lane's own slots (same offsets mod 512 bytes).
    f32x4* out = reinterpret_cast<f32x4*>(region);
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt)
        #pragma unroll
        for (int n = 0; n < NT; ++n)
            if (mt < mtv && n < ntiles)
                out[(mt * NT + n) * 32 + lane] =
                    f32x4{{acc[mt][n][0], acc[mt][n][1], acc[mt][n][2], acc[mt][n][3]}};
}

// Element (row, column) of the round's product: the KS warps' partial sums, in order.
template <int MT, int NT>
__device__ __forceinline__ float round_sum(const unsigned char* stage, const WarpGrid& wg,
                                           int row, int column) {
    const int wm = row / (16 * MT), r = row % (16 * MT);
    const int mt = r / 16, r16 = r % 16, n = column / 8, c = column % 8;
    const int lane = (r16 % 8) * 4 + c / 2, i = (r16 / 8) * 2 + c % 2;
    const int offset = ((mt * NT + n) * 32 + lane) * 4 + i;
    float sum = 0.0f;
    for (int ks = 0; ks < wg.KS; ++ks) {
        const float* region =
            reinterpret_cast<const float*>(stage + (ks * wg.WM + wm) * RNN_MMA_WARP_BYTES);
        sum += region[offset];
    }
    return sum;
}

// --------------------------------------------------------------------------- one step

template <class Cell, int P, int MT, int NT>
__device__ void forward_step(const ForwardStep<float, typename Operands<P>::W>& a,
                             const Part& p, int B, int H, const typename Operands<P>::W* wf,
                             unsigned char* stage) {
    constexpr int G = Cell::G;
    const WarpGrid wg = make_warp_grid<MT>(B);
    unsigned char* region = stage + (threadIdx.x / 32) * RNN_MMA_WARP_BYTES;
    for (int b0 = 0; b0 < B; b0 += wg.rows) {
        const int nb = min(wg.rows, B - b0);
        warp_products<P, MT, NT>(a.h_prev + (long long)b0 * H, H, nb, H, wf, p.columns,
                                 region, wg);
        __syncthreads();
        for (int e = threadIdx.x; e < nb * p.owned; e += blockDim.x) {
            const int r = e / p.owned, j = p.j0 + e % p.owned;
            const long long row = b0 + r;
            float hidden[G], input[G];
            #pragma unroll
            for (int q = 0; q < G; ++q) {
                hidden[q] = round_sum<MT, NT>(stage, wg, r, q * p.units + e % p.owned);
                input[q] = a.gi[row * a.ld_gi + q * (long long)H + j];
            }
            Cell::forward(hidden, input, a, row, j, H);
        }
        __syncthreads();
    }
}

template <class Cell, int P, int MT, int NT>
__device__ void backward_step(const BackwardStep<float, typename Operands<P>::W>& a,
                              const Part& p, int B, int H, const typename Operands<P>::W* wf,
                              unsigned char* stage) {
    const WarpGrid wg = make_warp_grid<MT>(B);
    unsigned char* region = stage + (threadIdx.x / 32) * RNN_MMA_WARP_BYTES;
    for (int b0 = 0; b0 < B; b0 += wg.rows) {
        const int nb = min(wg.rows, B - b0);
        if (a.dg_next != nullptr) {
            warp_products<P, MT, NT>(a.dg_next + (long long)b0 * a.ld_dg, a.ld_dg, nb,
                                     Cell::G * H, wf, p.columns, region, wg);
            __syncthreads();
        }
        for (int e = threadIdx.x; e < nb * p.owned; e += blockDim.x) {
            const int r = e / p.owned, j = p.j0 + e % p.owned;
            const long long row = b0 + r;
            const float through =
                a.dg_next != nullptr ? round_sum<MT, NT>(stage, wg, r, e % p.owned) : 0.0f;
            if (a.last)
                a.carry_h[row * H + j] += through;
            else
                Cell::backward(through, a, row, j, H);
        }
        __syncthreads();
    }
}

// --------------------------------------------------------------------------- sequences

// Where the slice's fragments end and the warps' regions begin; traps when the launch gave
// less dynamic shared memory than slice + regions.
template <typename W>
__device__ __forceinline__ unsigned char* warp_regions(unsigned char* smem, int ksteps,
                                                       int columns) {
    const long long slice =
        align16((long long)ksteps * columns * RNN_MMA_KSTEP * (long long)sizeof(W));
    if (slice + RNN_MMA_WARPS * RNN_MMA_WARP_BYTES > (long long)dynamic_smem_bytes()) __trap();
    return smem + slice;
}

template <class Cell, int P>
__device__ void forward_persistent(const float* gi, const typename Operands<P>::W* w_hh,
                                   const float* b_ih, const float* b_hh, float* hs, float* cs,
                                   float* gates, float* extra, float* out, unsigned* barrier,
                                   Sequence n) {
    typedef typename Operands<P>::W W;
    constexpr int G = Cell::G;
    GPUCONV_BLOCK_SMEM(smem);
    const Part p = make_part(n.H, n.units, G * n.units, RNN_MMA_MAX_NTILES);
    const int ksteps = (n.H + RNN_MMA_KSTEP - 1) / RNN_MMA_KSTEP;
    W* wf = reinterpret_cast<W*>(smem);
    unsigned char* stage = warp_regions<W>(smem, ksteps, p.columns);
    load_slice<P>(wf, w_hh + p.d * (long long)G * n.H * n.H, ksteps, p, GateRows{G, n.H});
    __syncthreads();
    for (int s = 0; s < n.steps; ++s) {
        const ForwardStep<float, W> a = sequence_forward_step<G>(n, p.d, s, gi, w_hh, b_ih,
                                                                 b_hh, hs, cs, gates, extra, out);
        if (p.ntiles <= 4) {
            forward_step<Cell, P, 2, 4>(a, p, n.B, n.H, wf, stage);
        } else {
            forward_step<Cell, P, 1, 8>(a, p, n.B, n.H, wf, stage);
        }
        if (s + 1 < n.steps) gpuconv_grid_sync(barrier, (unsigned)(s + 1));
    }
}

template <class Cell, int P>
__device__ void backward_persistent(const typename Operands<P>::W* w_hh, const float* grad_out,
                                    const float* hs, const float* cs, const float* gates,
                                    const float* extra, float* grad_gi, float* grad_gh,
                                    float* grad_h0, float* grad_c0, unsigned* barrier,
                                    Sequence n) {
    typedef typename Operands<P>::W W;
    constexpr int G = Cell::G;
    GPUCONV_BLOCK_SMEM(smem);
    const Part p = make_part(n.H, n.units, n.units, 4);
    const int ksteps = (G * n.H + RNN_MMA_KSTEP - 1) / RNN_MMA_KSTEP;
    W* wf = reinterpret_cast<W*>(smem);
    unsigned char* stage = warp_regions<W>(smem, ksteps, p.columns);
    load_slice<P>(wf, w_hh + p.d * (long long)G * n.H * n.H, ksteps, p, UnitColumns{G, n.H});
    __syncthreads();
    for (int s = 0; s <= n.steps; ++s) {
        const BackwardStep<float, W> a = sequence_backward_step<G>(
            n, p.d, s, w_hh, grad_out, hs, cs, gates, extra, grad_gi, grad_gh, grad_h0, grad_c0);
        // the slice has ceil(U / 8) <= 4 n-tiles whenever the forward's G*U columns fit 8
        backward_step<Cell, P, 2, 4>(a, p, n.B, n.H, wf, stage);
        if (s < n.steps) gpuconv_grid_sync(barrier, (unsigned)(s + 1));
    }
}

// --------------------------------------------------------------------------- entry points

#define RNN_MMA_ENTRY_POINTS(NAME, CELL, P, W, SUFFIX)                                          \
    extern "C" __global__ void __launch_bounds__(RNN_MMA_THREADS, 1)                           \
        NAME##_fwd_persistent_mma_##SUFFIX(const float* gi, const W* w_hh, const float* b_ih,  \
                                           const float* b_hh, float* hs, float* cs,           \
                                           float* gates, float* extra, float* out,            \
                                           unsigned* barrier, int steps, int B, int H, int D,  \
                                           int units) {                                        \
        forward_persistent<CELL, P>(gi, w_hh, b_ih, b_hh, hs, cs, gates, extra, out, barrier,  \
                                    Sequence{steps, B, H, D, units, 0});                       \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(RNN_MMA_THREADS, 1)                           \
        NAME##_bwd_persistent_mma_##SUFFIX(const W* w_hh, const float* grad_out,              \
                                           const float* hs, const float* cs,                  \
                                           const float* gates, const float* extra,            \
                                           float* grad_gi, float* grad_gh, float* grad_h0,    \
                                           float* grad_c0, unsigned* barrier, int steps,      \
                                           int B, int H, int D, int units) {                   \
        backward_persistent<CELL, P>(w_hh, grad_out, hs, cs, gates, extra, grad_gi, grad_gh,   \
                                     grad_h0, grad_c0, barrier,                                 \
                                     Sequence{steps, B, H, D, units, 0});                      \
    }

#define RNN_MMA_CELL_ENTRY_POINTS(NAME, CELL)                                                   \
    RNN_MMA_ENTRY_POINTS(NAME, CELL, PREC_FP32, float, f32)                                    \
    RNN_MMA_ENTRY_POINTS(NAME, CELL, PREC_TF32, float, f32_tf32)                               \
    RNN_MMA_ENTRY_POINTS(NAME, CELL, PREC_BF16, bf16w, f32_bf16)                               \
    RNN_MMA_ENTRY_POINTS(NAME, CELL, PREC_F16, f16w, f32_f16)

RNN_MMA_CELL_ENTRY_POINTS(lstm, LstmCell)
RNN_MMA_CELL_ENTRY_POINTS(gru, GruCell)
