// conv_igemm.cu: 2D convolution as implicit GEMM on tensor cores, channels-last (NHWC),
// forward (fprop), grad-input (dgrad, also conv_transpose2d's forward) and grad-weight
// (wgrad). Conv1d runs through it with H = 1.
//
// Algorithm. Each pass is one GEMM D[M x N] = sum_k A[M x K] * B[K x N] whose operands are
// gathered from the tensors on the fly (never materialised), per group g:
//
//   pass   M           N          K (reduction)   A(m, k)              B(k, n)
//   fprop  N*P*Q       K/groups   R*S*C/groups    x[n, h, w, c]        w[k, r, s, c]
//   dgrad  N*H*W       C/groups   R*S*K/groups    dy[n, p, q, k]       w[k, r, s, c]
//   wgrad  K/groups    R*S*C/g    N*P*Q           dy[n, p, q, k]       x[n, h, w, c]
//
// with h = p*sh - ph + r*dh, w = q*sw - pw + s*dw (dgrad: p = (h + ph - r*dh) / sh where
// that divides evenly and lies in [0, P)), reduction indices ordered (r, s, c) or (r, s, k)
// with the channel fastest (the contiguous axis of NHWC and of the KRSC weight layout).
// Gathers out of range (padding, partial tiles, tails of the reduction) load zeros.
//
// Tiling. A block computes a BM x BN tile of D; its warps (BM/WM x BN/WN, 32 threads each)
// compute WM x WN tiles in registers as (WM/16) x (WN/8) mma.sync fragments of 16 x 8 fp32
// accumulators. The reduction advances BK at a time through a STAGES-deep ring of shared
// memory tiles filled by cp.async (copy of tile kt + STAGES - 1 issued while tile kt is
// multiplied; cp.async.wait_group + __syncthreads before a tile is read).
//
// Shared-memory layout. A tile is stored as global memory gives it: "K-major" (rows of the
// M or N axis, the reduction contiguous: fprop A and B, dgrad A) or "MN-major" (rows of the
// reduction: dgrad B, wgrad A and B). Each row is padded so that fragment reads are free of
// bank conflicts: K-major rows by 16 bytes (the 8 rows a fragment read touches start in 8
// different 16-byte bank groups), MN-major rows by 8 elements (for 32-bit elements the 4 k
// rows of a fragment read start 8 banks apart; for 16-bit ones the 8 rows an ldmatrix reads
// land in distinct 16-byte groups). Padding keeps every row 16-byte aligned for cp.async.
//
// Fragments. 32-bit elements (fp32 arrays) are read with 32-bit shared loads and rounded to
// tf32 (GPUCONV_IGEMM_PREC 1: one mma per fragment) or split big + small (PREC 0, 3xTF32:
// small*big + big*small + big*big, about fp32 accuracy). 16-bit elements (bf16, f16) are
// read with ldmatrix (.trans for MN-major tiles), one m16n8k16 mma per fragment pair.
//
// Copies. A thread copies VEC contiguous elements at a time (GPUCONV_IGEMM_VEC_C along
// channels of x and of the weight, GPUCONV_IGEMM_VEC_K along channels of dy): 16 bytes when
// the channel counts allow it, one element otherwise (C = 1, odd C). Copies of 4 bytes or
// more are cp.async (zero-filled where the gather is out of range); a single 16-bit element
// is loaded and stored synchronously (cp.async has no 2-byte form).
//
// Epilogue (fprop, dgrad): out = act(acc * scale[n] + bias[n] + residual[m, n]), each term
// optional (null pointer), act one of ACT_* below, stored in the arrays' dtype. wgrad writes
// fp32 partial sums of its split of the reduction to a workspace [splits][K][R][S][C/groups];
// conv2d_wgrad_reduce sums the splits in a fixed order (deterministic: no atomics) and
// converts to the weight's dtype.
//
// Compile-time parameters (-D, never generated source): GPUCONV_IGEMM_PREC (0 fp32 3xTF32,
// 1 tf32, 2 bf16, 3 f16; names the entry points' suffix), GPUCONV_IGEMM_BM, _BN, _BK, _WM,
// _WN, _STAGES, _MIN_BLOCKS (the occupancy the tile is designed for: __launch_bounds__),
// _VEC_C, _VEC_K. Launch: 1-D grid of tiles_m * tiles_n * groups * splits blocks of
// (BM/WM)*(BN/WN)*32 threads, dynamic shared memory igemm_smem_bytes (returned to the
// launcher by the launcher's own formula, checked here: a smaller allocation traps).
// Indices: element offsets are 64-bit; M, N and K of one GEMM must be below 2^31.
#include "mma.cuh"

#ifndef GPUCONV_IGEMM_PREC
#define GPUCONV_IGEMM_PREC 0
#endif
#ifndef GPUCONV_IGEMM_BM
#define GPUCONV_IGEMM_BM 128
#endif
#ifndef GPUCONV_IGEMM_BN
#define GPUCONV_IGEMM_BN 64
#endif
#ifndef GPUCONV_IGEMM_BK
#define GPUCONV_IGEMM_BK 32
#endif
#ifndef GPUCONV_IGEMM_WM
#define GPUCONV_IGEMM_WM 64
#endif
#ifndef GPUCONV_IGEMM_WN
#define GPUCONV_IGEMM_WN 32
#endif
#ifndef GPUCONV_IGEMM_STAGES
#define GPUCONV_IGEMM_STAGES 3
#endif
#ifndef GPUCONV_IGEMM_MIN_BLOCKS
#define GPUCONV_IGEMM_MIN_BLOCKS 1
#endif

#if GPUCONV_IGEMM_PREC == 0
typedef float elem_t;
#define GPUCONV_IGEMM_SUFFIX f32
#elif GPUCONV_IGEMM_PREC == 1
typedef float elem_t;
#define GPUCONV_IGEMM_SUFFIX tf32
#elif GPUCONV_IGEMM_PREC == 2
typedef gpuconv_bf16 elem_t;
#define GPUCONV_IGEMM_SUFFIX bf16
#elif GPUCONV_IGEMM_PREC == 3
typedef gpuconv_f16 elem_t;
#define GPUCONV_IGEMM_SUFFIX f16
#else
#error "GPUCONV_IGEMM_PREC must be 0 (fp32 3xTF32), 1 (tf32), 2 (bf16) or 3 (f16)"
#endif

// 16 bytes of elements: the widest copy.
#define GPUCONV_IGEMM_VEC_WIDE (16 / (int)sizeof(elem_t))
#ifndef GPUCONV_IGEMM_VEC_C
#define GPUCONV_IGEMM_VEC_C GPUCONV_IGEMM_VEC_WIDE
#endif
#ifndef GPUCONV_IGEMM_VEC_K
#define GPUCONV_IGEMM_VEC_K GPUCONV_IGEMM_VEC_WIDE
#endif

#define GPUCONV_IGEMM_PASTE2(a, b) a##_##b
#define GPUCONV_IGEMM_PASTE(a, b) GPUCONV_IGEMM_PASTE2(a, b)
#define GPUCONV_IGEMM_ENTRY(name) GPUCONV_IGEMM_PASTE(name, GPUCONV_IGEMM_SUFFIX)

namespace igemm {

typedef elem_t T;
constexpr int BM = GPUCONV_IGEMM_BM, BN = GPUCONV_IGEMM_BN, BK = GPUCONV_IGEMM_BK;
constexpr int WM = GPUCONV_IGEMM_WM, WN = GPUCONV_IGEMM_WN, STAGES = GPUCONV_IGEMM_STAGES;
constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
constexpr int THREADS = WARPS_M * WARPS_N * 32;
constexpr bool WIDE16 = sizeof(T) == 2;     // 16-bit elements: m16n8k16 and ldmatrix
constexpr int MMA_K = WIDE16 ? 16 : 8;
constexpr int FRAG_M = WM / 16, FRAG_N = WN / 8;
constexpr int VEC_C = GPUCONV_IGEMM_VEC_C, VEC_K = GPUCONV_IGEMM_VEC_K;
constexpr bool THREE_PASS = GPUCONV_IGEMM_PREC == 0;

static_assert(BM % WM == 0 && BN % WN == 0, "warp tiles must divide the block tile");
static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tiles are whole 16 x 16 fragment pairs");
static_assert(BK % MMA_K == 0, "BK must be a multiple of the mma's k");
static_assert(STAGES >= 2, "the pipeline needs at least two stages");
static_assert(THREADS <= 1024, "at most 1024 threads per block");

// Epilogue activations (the launcher's ACTIVATIONS list, same order).
enum Activation { ACT_IDENTITY = 0, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_SIGMOID, ACT_TANH,
                  ACT_GELU };

// One convolution's geometry (per-group channel counts included).
struct Conv {
    int N, H, W, C, K, R, S, P, Q, sh, sw, ph, pw, dh, dw, groups, Cg, Kg;
};

__device__ __forceinline__ Conv make_conv(int N, int H, int W, int C, int K, int R, int S,
                                          int P, int Q, int sh, int sw, int ph, int pw, int dh,
                                          int dw, int groups) {
    return Conv{N, H, W, C, K, R, S, P, Q, sh, sw, ph, pw, dh, dw, groups, C / groups,
                K / groups};
}

// A shared-memory operand tile: ROWS rows of COLS contiguous elements (COLS is the global
// contiguous axis), padded as the header explains.
template <bool K_MAJOR_, int MN>
struct Tile {
    static constexpr bool K_MAJOR = K_MAJOR_;
    static constexpr int ROWS = K_MAJOR ? MN : BK;
    static constexpr int COLS = K_MAJOR ? BK : MN;
    static constexpr int PAD = (K_MAJOR && !WIDE16) ? 4 : 8;
    static constexpr int LD = COLS + PAD;
    static constexpr int ELEMS = ROWS * LD;
    // Element (mn, k) of the operand.
    __device__ __forceinline__ static int at(int mn, int k) {
        return K_MAJOR ? mn * LD + k : k * LD + mn;
    }
};

// Which chunks of a tile this thread copies: VEC-element chunks numbered row-major, thread t
// takes t, t + THREADS, ...; every thread keeps one column (THREADS % chunks per row == 0).
template <int ROWS, int COLS, int VEC>
struct Chunks {
    static constexpr int PER_ROW = COLS / VEC;
    static constexpr int ITERS = ROWS * PER_ROW / THREADS;
    static constexpr int ROW_STEP = THREADS / PER_ROW;
    static_assert(COLS % VEC == 0, "copies must tile a row");
    static_assert(THREADS % PER_ROW == 0 && (ROWS * PER_ROW) % THREADS == 0,
                  "the threads must cover the tile in whole rows");
    __device__ __forceinline__ static int col() { return (threadIdx.x % PER_ROW) * VEC; }
    __device__ __forceinline__ static int row(int i) {
        return threadIdx.x / PER_ROW + i * ROW_STEP;
    }
};

// Copy VEC elements global -> shared, zeros where !valid.
template <int VEC>
__device__ __forceinline__ void copy_chunk(T* dst, const T* src, const T* base, bool valid) {
    constexpr int BYTES = VEC * (int)sizeof(T);
    if constexpr (BYTES >= 4) {
        cp_async<BYTES>(dst, valid ? src : base, valid);
    } else {
        *dst = valid ? *src : from_float<T>(0.0f);
    }
}

// ----------------------------------------------------------------------------- gathers
// Each loader copies its operand's k-tiles, one per load(stage) call, then next().

// Per-row gather state of fprop's and dgrad's A: the offset of the row's image (and group)
// and where its window starts. Kept in registers when a thread has few rows (the 16-byte
// copies); recomputed from m per k-tile when it has many (one-element copies), so that the
// register budget of the tile holds either way.
constexpr int MAX_CACHED_ROWS = 4;
// The copy loops unroll this far: fully where a thread copies at most MAX_CACHED_ROWS chunks
// (16-byte copies), partly for one-element copies (up to 32 per thread), whose full unroll
// would hold every address in registers at once and spill.
constexpr int LOAD_UNROLL = 4;

struct RowOrigin {
    long long base;
    int h, w;  // fprop: p*sh - ph, q*sw - pw; dgrad: h + ph, w + pw (out of range: -2^30)
};

template <int ITERS, class Origin>
struct Rows {
    static constexpr bool CACHED = ITERS <= MAX_CACHED_ROWS;
    RowOrigin cache[CACHED ? ITERS : 1];
    int m0;

    __device__ void init(const Conv& cv, int m_first, int g, int row_step) {
        m0 = m_first;
        if constexpr (CACHED) {
#pragma unroll
            for (int i = 0; i < ITERS; ++i) cache[i] = Origin::of(cv, m0 + i * row_step, g);
        }
    }
    __device__ RowOrigin get(const Conv& cv, int i, int g, int row_step) const {
        if constexpr (CACHED) {
            return cache[i];
        } else {
            return Origin::of(cv, m0 + i * row_step, g);
        }
    }
};

// An NHWC activation gathered along (r, s, channel) for one output pixel per row: fprop's A.
struct FpropA {
    typedef Tile<true, BM> Layout;
    typedef Chunks<BM, BK, VEC_C> Map;
    struct Origin {
        __device__ static RowOrigin of(const Conv& cv, int m, int g) {
            const int q = m % cv.Q, p = (m / cv.Q) % cv.P, n = m / (cv.P * cv.Q);
            const bool in = m < cv.N * cv.P * cv.Q;
            return RowOrigin{((long long)n * cv.H * cv.W) * cv.C + (long long)g * cv.Cg,
                             in ? p * cv.sh - cv.ph : -(1 << 30), q * cv.sw - cv.pw};
        }
    };
    Rows<Map::ITERS, Origin> rows;
    int r, s, c;

    __device__ void init(const Conv& cv, int m0, int g, int k0) {
        rows.init(cv, m0 + Map::row(0), g, Map::ROW_STEP);
        const int kk = k0 + Map::col();
        c = kk % cv.Cg;
        s = (kk / cv.Cg) % cv.S;
        r = kk / (cv.Cg * cv.S);
    }
    __device__ void load(T* tile, const T* x, const Conv& cv, int g) const {
#pragma unroll LOAD_UNROLL
        for (int i = 0; i < Map::ITERS; ++i) {
            const RowOrigin o = rows.get(cv, i, g, Map::ROW_STEP);
            const int h = o.h + r * cv.dh, w = o.w + s * cv.dw;
            const bool valid = r < cv.R && h >= 0 && h < cv.H && w >= 0 && w < cv.W;
            const T* src = x + o.base + ((long long)h * cv.W + w) * cv.C + c;
            copy_chunk<VEC_C>(tile + Layout::at(Map::row(i), Map::col()), src, x, valid);
        }
    }
    __device__ void next(const Conv& cv) {
        c += BK;
        while (c >= cv.Cg) {
            c -= cv.Cg;
            if (++s == cv.S) {
                s = 0;
                ++r;
            }
        }
    }
};

// The KRSC weight as fprop's B: row n (an output channel of the group), the reduction
// (r, s, c) contiguous.
struct FpropB {
    typedef Tile<true, BN> Layout;
    typedef Chunks<BN, BK, VEC_C> Map;
    int n0, kk;  // this thread's first row; its reduction index

    __device__ void init(const Conv& cv, int n_first, int g, int k0) {
        n0 = n_first + Map::row(0);
        kk = k0 + Map::col();
    }
    __device__ void load(T* tile, const T* wt, const Conv& cv, int g) const {
        const int rsc = cv.R * cv.S * cv.Cg;
#pragma unroll LOAD_UNROLL
        for (int i = 0; i < Map::ITERS; ++i) {
            const int n = n0 + i * Map::ROW_STEP;
            const T* src = wt + ((long long)g * cv.Kg + n) * rsc + kk;
            copy_chunk<VEC_C>(tile + Layout::at(Map::row(i), Map::col()), src, wt,
                              kk < rsc && n < cv.Kg);
        }
    }
    __device__ void next(const Conv&) { kk += BK; }
};

// dy gathered for dgrad's A: row m = an input pixel (n, h, w), reduction (r, s, k); the
// pixel takes dy[n, p, q, k] where h + ph - r*dh = p*sh (and likewise for w).
struct DgradA {
    typedef Tile<true, BM> Layout;
    typedef Chunks<BM, BK, VEC_K> Map;
    struct Origin {
        __device__ static RowOrigin of(const Conv& cv, int m, int g) {
            const int w = m % cv.W, h = (m / cv.W) % cv.H, n = m / (cv.H * cv.W);
            const bool in = m < cv.N * cv.H * cv.W;
            return RowOrigin{((long long)n * cv.P * cv.Q) * cv.K + (long long)g * cv.Kg,
                             in ? h + cv.ph : -(1 << 30), w + cv.pw};
        }
    };
    Rows<Map::ITERS, Origin> rows;
    int r, s, k;

    __device__ void init(const Conv& cv, int m0, int g, int k0) {
        rows.init(cv, m0 + Map::row(0), g, Map::ROW_STEP);
        const int kk = k0 + Map::col();
        k = kk % cv.Kg;
        s = (kk / cv.Kg) % cv.S;
        r = kk / (cv.Kg * cv.S);
    }
    __device__ void load(T* tile, const T* dy, const Conv& cv, int g) const {
#pragma unroll LOAD_UNROLL
        for (int i = 0; i < Map::ITERS; ++i) {
            const RowOrigin o = rows.get(cv, i, g, Map::ROW_STEP);
            const int ht = o.h - r * cv.dh, wt = o.w - s * cv.dw;
            const int p = ht / cv.sh, q = wt / cv.sw;
            const bool valid = r < cv.R && ht >= 0 && wt >= 0 && p * cv.sh == ht &&
                               q * cv.sw == wt && p < cv.P && q < cv.Q;
            const T* src = dy + o.base + ((long long)p * cv.Q + q) * cv.K + k;
            copy_chunk<VEC_K>(tile + Layout::at(Map::row(i), Map::col()), src, dy, valid);
        }
    }
    __device__ void next(const Conv& cv) {
        k += BK;
        while (k >= cv.Kg) {
            k -= cv.Kg;
            if (++s == cv.S) {
                s = 0;
                ++r;
            }
        }
    }
};

// The KRSC weight as dgrad's B: reduction row (r, s, k), the group's input channels c
// contiguous.
struct DgradB {
    typedef Tile<false, BN> Layout;
    typedef Chunks<BK, BN, VEC_C> Map;
    int c, kk;  // this thread's channel; the tile's first reduction row

    __device__ void init(const Conv& cv, int n0, int g, int k0) {
        c = n0 + Map::col();
        kk = k0;
    }
    __device__ void load(T* tile, const T* wt, const Conv& cv, int g) const {
        const int rows = cv.R * cv.S * cv.Kg;
#pragma unroll LOAD_UNROLL
        for (int i = 0; i < Map::ITERS; ++i) {
            const int row = kk + Map::row(i);
            const int k = row % cv.Kg, rs = row / cv.Kg;
            const T* src = wt + (((long long)g * cv.Kg + k) * cv.R * cv.S + rs) * cv.Cg + c;
            copy_chunk<VEC_C>(tile + Layout::at(Map::col(), Map::row(i)), src, wt,
                              row < rows && c < cv.Cg);
        }
    }
    __device__ void next(const Conv&) { kk += BK; }
};

// dy as wgrad's A: reduction row npq, the group's output channels k contiguous.
struct WgradA {
    typedef Tile<false, BM> Layout;
    typedef Chunks<BK, BM, VEC_K> Map;
    int k, npq;

    __device__ void init(const Conv& cv, int m0, int g, int k0) {
        k = m0 + Map::col();
        npq = k0;
    }
    __device__ void load(T* tile, const T* dy, const Conv& cv, int g) const {
        const int rows = cv.N * cv.P * cv.Q;
#pragma unroll LOAD_UNROLL
        for (int i = 0; i < Map::ITERS; ++i) {
            const int row = npq + Map::row(i);
            const T* src = dy + (long long)row * cv.K + (long long)g * cv.Kg + k;
            copy_chunk<VEC_K>(tile + Layout::at(Map::col(), Map::row(i)), src, dy,
                              row < rows && k < cv.Kg);
        }
    }
    __device__ void next(const Conv&) { npq += BK; }
};

// x gathered for wgrad's B: reduction row npq (an output pixel), column (r, s, c).
struct WgradB {
    typedef Tile<false, BN> Layout;
    typedef Chunks<BK, BN, VEC_C> Map;
    int r, s, c, npq;  // this thread's column; the tile's first reduction row

    __device__ void init(const Conv& cv, int n0, int g, int k0) {
        const int col = n0 + Map::col();
        c = col % cv.Cg;
        s = (col / cv.Cg) % cv.S;
        r = col / (cv.Cg * cv.S);  // >= R past the last column: never valid
        npq = k0;
    }
    __device__ void load(T* tile, const T* x, const Conv& cv, int g) const {
        const int rows = cv.N * cv.P * cv.Q;
#pragma unroll LOAD_UNROLL
        for (int i = 0; i < Map::ITERS; ++i) {
            const int row = npq + Map::row(i);
            const int q = row % cv.Q, p = (row / cv.Q) % cv.P, n = row / (cv.P * cv.Q);
            const int h = p * cv.sh - cv.ph + r * cv.dh, w = q * cv.sw - cv.pw + s * cv.dw;
            const bool valid = row < rows && r < cv.R && h >= 0 && h < cv.H && w >= 0 &&
                               w < cv.W;
            const T* src = x + (((long long)n * cv.H + h) * cv.W + w) * cv.C +
                           (long long)g * cv.Cg + c;
            copy_chunk<VEC_C>(tile + Layout::at(Map::col(), Map::row(i)), src, x, valid);
        }
    }
    __device__ void next(const Conv&) { npq += BK; }
};

// ----------------------------------------------------------------------------- fragments

struct Accumulators {
    float d[FRAG_M][FRAG_N][4];
};

// The warp's A fragments (FRAG_M of 16 rows) and B fragments (FRAG_N of 8 columns) for the
// k-step at kb of a stage, as tensor-core operands; `big`/`small` are the 3xTF32 halves
// (`small` unused in the other modes).
struct Fragments {
    unsigned a[FRAG_M][4], b[FRAG_N][2];
    unsigned a_small[THREE_PASS ? FRAG_M : 1][4], b_small[THREE_PASS ? FRAG_N : 1][2];
};

__device__ __forceinline__ void to_operand(float v, unsigned& big, unsigned& small) {
    if constexpr (THREE_PASS) {
        tf32_split(v, big, small);
    } else {
        big = tf32_round(v);
    }
}

template <class LA, class LB>
__device__ __forceinline__ void load_fragments(Fragments& f, const T* sa, const T* sb,
                                               int wm0, int wn0, int kb) {
    typedef typename LA::Layout TA;
    typedef typename LB::Layout TB;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    if constexpr (!WIDE16) {
        #pragma unroll
        for (int mi = 0; mi < FRAG_M; ++mi) {
            const int m = wm0 + mi * 16 + g;
            #pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float v = to_float(sa[TA::at(m + 8 * (j % 2), kb + t + 4 * (j / 2))]);
                to_operand(v, f.a[mi][j], f.a_small[THREE_PASS ? mi : 0][j]);
            }
        }
        #pragma unroll
        for (int ni = 0; ni < FRAG_N; ++ni) {
            const int n = wn0 + ni * 8 + g;
            #pragma unroll
            for (int j = 0; j < 2; ++j) {
                const float v = to_float(sb[TB::at(n, kb + t + 4 * j)]);
                to_operand(v, f.b[ni][j], f.b_small[THREE_PASS ? ni : 0][j]);
            }
        }
    } else {
        // A: one x4 per 16 x 16 fragment; matrices (rows +0/+8) x (k +0/+8) in fragment
        // register order. B: one x4 per pair of 8-column fragments: (n +0, k +0), (n +0,
        // k +8), (n +8, k +0), (n +8, k +8).
        const int j = lane / 8, r = lane % 8;
        #pragma unroll
        for (int mi = 0; mi < FRAG_M; ++mi) {
            const int m = wm0 + mi * 16;
            if constexpr (TA::K_MAJOR) {
                ldmatrix_x4(f.a[mi], sa + TA::at(m + r + 8 * (j % 2), kb + 8 * (j / 2)));
            } else {
                ldmatrix_x4_trans(f.a[mi], sa + TA::at(m + 8 * (j % 2), kb + r + 8 * (j / 2)));
            }
        }
        #pragma unroll
        for (int ni = 0; ni < FRAG_N; ni += 2) {
            const int n = wn0 + ni * 8;
            unsigned q[4];
            if constexpr (TB::K_MAJOR) {
                ldmatrix_x4(q, sb + TB::at(n + r + 8 * (j / 2), kb + 8 * (j % 2)));
            } else {
                ldmatrix_x4_trans(q, sb + TB::at(n + 8 * (j / 2), kb + r + 8 * (j % 2)));
            }
            f.b[ni][0] = q[0];
            f.b[ni][1] = q[1];
            f.b[ni + 1][0] = q[2];
            f.b[ni + 1][1] = q[3];
        }
    }
}

__device__ __forceinline__ void mma_all(Accumulators& acc, const Fragments& f) {
    #pragma unroll
    for (int mi = 0; mi < FRAG_M; ++mi) {
        #pragma unroll
        for (int ni = 0; ni < FRAG_N; ++ni) {
            float* d = acc.d[mi][ni];
            if constexpr (GPUCONV_IGEMM_PREC == 2) {
                mma_bf16_m16n8k16(d, f.a[mi], f.b[ni]);
            } else if constexpr (GPUCONV_IGEMM_PREC == 3) {
                mma_f16_m16n8k16(d, f.a[mi], f.b[ni]);
            } else if constexpr (THREE_PASS) {
                // The small cross terms first, so that the big product is added last.
                mma_tf32_m16n8k8(d, f.a_small[mi], f.b[ni]);
                mma_tf32_m16n8k8(d, f.a[mi], f.b_small[ni]);
                mma_tf32_m16n8k8(d, f.a[mi], f.b[ni]);
            } else {
                mma_tf32_m16n8k8(d, f.a[mi], f.b[ni]);
            }
        }
    }
}

// ----------------------------------------------------------------------------- mainloop

template <class LA, class LB>
struct Smem {
    static constexpr int A_ELEMS = LA::Layout::ELEMS, B_ELEMS = LB::Layout::ELEMS;
    static constexpr int STAGE_ELEMS = A_ELEMS + B_ELEMS;
    static constexpr int BYTES = STAGES * STAGE_ELEMS * (int)sizeof(T);
};

// Multiplies the operands' next k_tiles k-tiles into acc: la.load(stage, a, cv, g) issues one
// k-tile's copies of A (from tensor a) into a stage, la.next(cv) moves to the next k-tile;
// likewise lb for B.
template <class LA, class LB>
__device__ void mainloop(Accumulators& acc, T* smem, int k_tiles, LA& la, const T* a, LB& lb,
                         const T* b, const Conv& cv, int g) {
    typedef Smem<LA, LB> SM;
    const int warp = threadIdx.x / 32;
    const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
    #pragma unroll
    for (int mi = 0; mi < FRAG_M; ++mi)
        #pragma unroll
        for (int ni = 0; ni < FRAG_N; ++ni)
            #pragma unroll
            for (int j = 0; j < 4; ++j) acc.d[mi][ni][j] = 0.0f;

    // Prologue: tiles 0 .. STAGES-2 in flight, one commit group each (empty past the end).
    #pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < k_tiles) {
            la.load(smem + st * SM::STAGE_ELEMS, a, cv, g);
            lb.load(smem + st * SM::STAGE_ELEMS + SM::A_ELEMS, b, cv, g);
            la.next(cv);
            lb.next(cv);
        }
        cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's copies) ...
        __syncthreads();              // ... everyone's, and stage kt-1 is no longer read
        const int fill = kt + STAGES - 1;
        if (fill < k_tiles) {
            T* stage = smem + (fill % STAGES) * SM::STAGE_ELEMS;
            la.load(stage, a, cv, g);
            lb.load(stage + SM::A_ELEMS, b, cv, g);
            la.next(cv);
            lb.next(cv);
        }
        cp_async_commit();
        const T* sa = smem + (kt % STAGES) * SM::STAGE_ELEMS;
        const T* sb = sa + SM::A_ELEMS;
        #pragma unroll
        for (int kb = 0; kb < BK; kb += MMA_K) {
            Fragments f;
            load_fragments<LA, LB>(f, sa, sb, wm0, wn0, kb);
            mma_all(acc, f);
        }
    }
    cp_async_wait<0>();
}

// ----------------------------------------------------------------------------- epilogues

__device__ __forceinline__ float activate(float v, int act, float param) {
    switch (act) {
        case ACT_RELU: return v < 0.0f ? 0.0f : v;  // NaN passes, as torch.relu
        case ACT_LEAKY_RELU: return v < 0.0f ? v * param : v;
        case ACT_ELU: return v < 0.0f ? param * expm1f(v) : v;
        case ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
        case ACT_TANH: return tanhf(v);
        case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        default: return v;
    }
}

// The fused epilogue of fprop and dgrad: D[m][n] of group g to out[m, g*Ng + n] (row
// length ld), n < Ng, m < M.
struct Epilogue {
    T* out;
    const T* scale;
    const T* bias;
    const T* residual;
    int act;
    float param;

    __device__ void store(const Accumulators& acc, int m0, int n0, int M, int Ng, int ld,
                          int g) const {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        const int wm0 = m0 + (warp / WARPS_N) * WM + lane / 4;
        const int wn0 = n0 + (warp % WARPS_N) * WN + 2 * (lane % 4);
        #pragma unroll
        for (int mi = 0; mi < FRAG_M; ++mi) {
            #pragma unroll
            for (int ni = 0; ni < FRAG_N; ++ni) {
                #pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int m = wm0 + mi * 16 + 8 * (j / 2), n = wn0 + ni * 8 + j % 2;
                    if (m >= M || n >= Ng) continue;
                    const int channel = g * Ng + n;
                    const long long at = (long long)m * ld + channel;
                    float v = acc.d[mi][ni][j];
                    if (scale != nullptr) v *= to_float(scale[channel]);
                    if (bias != nullptr) v += to_float(bias[channel]);
                    if (residual != nullptr) v += to_float(residual[at]);
                    out[at] = from_float<T>(activate(v, act, param));
                }
            }
        }
    }
};

__device__ __forceinline__ void check_smem(int bytes) {
    if (dynamic_smem_bytes() < (unsigned)bytes) __trap();
}

// Block index -> (tile_m, tile_n, group, split); the N tiles of one M tile run side by side
// so that they share the gathered A rows in L2.
struct BlockCoords {
    int tm, tn, g, split;
    __device__ BlockCoords(int tiles_m, int tiles_n, int groups) {
        int b = blockIdx.x;
        tn = b % tiles_n;
        b /= tiles_n;
        tm = b % tiles_m;
        b /= tiles_m;
        g = b % groups;
        split = b / groups;
    }
};

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// One block's share of a pass: the k-tiles [k0/BK, k0/BK + k_tiles) of the GEMM that the
// loaders LA, LB gather from tensors a and b, multiplied into acc.
template <class LA, class LB>
__device__ void block_gemm(Accumulators& acc, const T* a, const T* b, const Conv& cv,
                           const BlockCoords& bc, int k0, int k_tiles) {
    GPUCONV_DYNAMIC_SMEM(smem_raw);
    check_smem(Smem<LA, LB>::BYTES);
    LA la;
    LB lb;
    la.init(cv, bc.tm * BM, bc.g, k0);
    lb.init(cv, bc.tn * BN, bc.g, k0);
    mainloop(acc, reinterpret_cast<T*>(smem_raw), k_tiles, la, a, lb, b, cv, bc.g);
}

}  // namespace igemm

#define GPUCONV_IGEMM_CONV_PARAMS                                                        \
    int N, int H, int W, int C, int K, int R, int S, int P, int Q, int sh, int sw, int ph, \
        int pw, int dh, int dw, int groups
#define GPUCONV_IGEMM_CONV_ARGS N, H, W, C, K, R, S, P, Q, sh, sw, ph, pw, dh, dw, groups

// y[n, p, q, k] (NHWC) = act(scale[k] * sum_{r,s,c} x[n, h, w, g*Cg + c] * w[k, r, s, c]
//                            + bias[k] + residual[n, p, q, k]).
extern "C" __global__ void __launch_bounds__(igemm::THREADS, GPUCONV_IGEMM_MIN_BLOCKS)
GPUCONV_IGEMM_ENTRY(conv2d_fwd_igemm)(const elem_t* __restrict__ x,
                                      const elem_t* __restrict__ w, elem_t* __restrict__ y,
                                      GPUCONV_IGEMM_CONV_PARAMS, const elem_t* scale,
                                      const elem_t* bias, const elem_t* residual, int act,
                                      float act_param) {
    using namespace igemm;
    const Conv cv = make_conv(GPUCONV_IGEMM_CONV_ARGS);
    const int M = N * P * Q;
    const BlockCoords bc(ceil_div(M, BM), ceil_div(cv.Kg, BN), groups);
    Accumulators acc;
    block_gemm<FpropA, FpropB>(acc, x, w, cv, bc, 0, ceil_div(R * S * cv.Cg, BK));
    const Epilogue ep{y, scale, bias, residual, act, act_param};
    ep.store(acc, bc.tm * BM, bc.tn * BN, M, cv.Kg, K, bc.g);
}

// dx[n, h, w, c] (NHWC) = act(scale[c] * sum_{r,s,k} dy[n, p, q, k] * w[k, r, s, c] + bias[c]
//                             + residual[n, h, w, c]) over the (p, q) that (h, w) feeds.
extern "C" __global__ void __launch_bounds__(igemm::THREADS, GPUCONV_IGEMM_MIN_BLOCKS)
GPUCONV_IGEMM_ENTRY(conv2d_dgrad_igemm)(const elem_t* __restrict__ dy,
                                        const elem_t* __restrict__ w, elem_t* __restrict__ dx,
                                        GPUCONV_IGEMM_CONV_PARAMS, const elem_t* scale,
                                        const elem_t* bias, const elem_t* residual, int act,
                                        float act_param) {
    using namespace igemm;
    const Conv cv = make_conv(GPUCONV_IGEMM_CONV_ARGS);
    const int M = N * H * W;
    const BlockCoords bc(ceil_div(M, BM), ceil_div(cv.Cg, BN), groups);
    Accumulators acc;
    block_gemm<DgradA, DgradB>(acc, dy, w, cv, bc, 0, ceil_div(R * S * cv.Kg, BK));
    const Epilogue ep{dx, scale, bias, residual, act, act_param};
    ep.store(acc, bc.tm * BM, bc.tn * BN, M, cv.Cg, C, bc.g);
}

// partial[split, k, r, s, c] = sum over this split's k-tiles of npq in [0, N*P*Q) of
// dy[npq, g*Kg + k] * x[n, h, w, g*Cg + c] (fp32). Split z owns k-tiles
// [z*tiles_per_split, (z+1)*tiles_per_split).
extern "C" __global__ void __launch_bounds__(igemm::THREADS, GPUCONV_IGEMM_MIN_BLOCKS)
GPUCONV_IGEMM_ENTRY(conv2d_wgrad_igemm)(const elem_t* __restrict__ dy,
                                        const elem_t* __restrict__ x,
                                        float* __restrict__ partial, GPUCONV_IGEMM_CONV_PARAMS,
                                        int tiles_per_split) {
    using namespace igemm;
    const Conv cv = make_conv(GPUCONV_IGEMM_CONV_ARGS);
    const int NPQ = N * P * Q, RSC = R * S * cv.Cg;
    const BlockCoords bc(ceil_div(cv.Kg, BM), ceil_div(RSC, BN), groups);
    const int kt0 = bc.split * tiles_per_split;
    const int k_tiles = min(tiles_per_split, ceil_div(NPQ, BK) - kt0);
    Accumulators acc;
    block_gemm<WgradA, WgradB>(acc, dy, x, cv, bc, kt0 * BK, max(k_tiles, 0));
    // The split's fp32 partial sums, in the weight's KRSC layout.
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int m0 = bc.tm * BM + (warp / WARPS_N) * WM + lane / 4;
    const int n0 = bc.tn * BN + (warp % WARPS_N) * WN + 2 * (lane % 4);
    float* out = partial + (long long)bc.split * K * RSC;
    #pragma unroll
    for (int mi = 0; mi < FRAG_M; ++mi) {
        #pragma unroll
        for (int ni = 0; ni < FRAG_N; ++ni) {
            #pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int m = m0 + mi * 16 + 8 * (j / 2), n = n0 + ni * 8 + j % 2;
                if (m < cv.Kg && n < RSC)
                    out[((long long)bc.g * cv.Kg + m) * RSC + n] = acc.d[mi][ni][j];
            }
        }
    }
}

// dw[i] = sum over splits z = 0, 1, ... (in that order) of partial[z, i], in the weight's
// dtype: the deterministic split-K reduction. Thread per element, grid-stride.
extern "C" __global__ void GPUCONV_IGEMM_ENTRY(conv2d_wgrad_reduce)(
    const float* __restrict__ partial, elem_t* __restrict__ dw, long long count, int splits) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int z = 0; z < splits; ++z) sum += partial[z * count + i];
        dw[i] = from_float<elem_t>(sum);
    }
}

// partial[z, k] = sum of dy[m, k] over rows m in [z*rows_per_chunk, (z+1)*rows_per_chunk)
// of the (M x K) NHWC gradient, in fp32: the bias gradient's first stage (thread per (z, k),
// consecutive threads on consecutive channels so that the reads are coalesced);
// conv2d_wgrad_reduce then sums the chunks in order.
extern "C" __global__ void GPUCONV_IGEMM_ENTRY(conv2d_bias_grad_partial)(
    const elem_t* __restrict__ dy, float* __restrict__ partial, long long M, int K,
    int rows_per_chunk, int chunks) {
    const long long total = (long long)chunks * K;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int k = (int)(i % K);
        const long long m0 = (i / K) * rows_per_chunk;
        const long long m1 = min(M, m0 + rows_per_chunk);
        float sum = 0.0f;
        for (long long m = m0; m < m1; ++m) sum += to_float(dy[m * K + k]);
        partial[i] = sum;
    }
}
