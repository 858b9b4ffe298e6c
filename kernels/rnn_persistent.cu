// rnn_persistent.cu: LSTM and GRU recurrences fused into few launches. Three kinds of kernel,
// all built from the same two device functions (forward_step, backward_step):
//
//   <cell>_fwd_persistent / <cell>_bwd_persistent: one cooperative launch runs all T steps of
//     one layer, both directions at once. Each block owns U consecutive hidden units of one
//     direction and keeps their slice of W_hh in shared memory for the whole sequence; a grid
//     barrier (grid_sync.cuh) separates the steps. This is the partition of Baidu's persistent
//     RNN (Diamos et al. 2016), cuDNN's CUDNN_RNN_ALGO_PERSIST_STATIC and FlashRNN's fused
//     kernel: split the recurrent matrix across the SMs by output unit, keep it on chip, meet at
//     a barrier once per step. (Those keep part of it in registers and, in FlashRNN, multiply
//     on tensor cores; here the products are FMAs from shared memory.)
//   <cell>_fwd_step / <cell>_bwd_step: one step of the same computation, W_hh streamed from
//     global memory (L2) in chunks: the fallback where the slices do not fit on chip or the grid
//     cannot be resident. One launch per step (and one more at the end of backward).
//   <cell>_cell_fwd: lstm_cell / gru_cell in one launch: both gate products (x W_ih^T and
//     h W_hh^T, weights streamed), the biases and the gate math.
//
// Layouts (time-major; D = 1 or 2 directions; G = 4 gates for the LSTM, 3 for the GRU; gate
// blocks stacked in PyTorch's order i, f, g, o and r, z, n):
//   gi      (T, B, D*G*H)  the input projection x W_ih^T of every step and both directions (one
//                          GEMM before the launch); biases are added here, not there
//   w_hh    (D, G*H, H)    recurrent weights, in the storage type W (below)
//   b_ih, b_hh (D, G*H)    or null (no bias)
//   hs, cs  (D, T+1, B, H) the states around every step: going forward, slot 0 holds h0 (set by
//                          the launcher) and slot t+1 the state after step t; in reverse, slot T
//                          holds h0 and slot t the state after step t. cs is null for the GRU.
//   gates   (D, T, B, G*H) activated gates (LSTM i, f, g, o; GRU r, z, n) } the reserve for
//   extra   (D, T, B, H)   LSTM tanh(c), GRU the hidden part of n, hid_n  } backward; null when
//                                                                          no backward follows
//   out     (T, B, D*H)    the layer's output, direction d in columns d*H .. d*H+H
// Backward writes grad_gi (T, B, D*G*H), the gradients of x W_ih^T + b_ih, and for the GRU
// grad_gh (same shape), those of h W_hh^T + b_hh (the LSTM's are the same array); the weight
// and input gradients are GEMMs over all steps after the launch. grad_h0 and grad_c0 (D, B, H)
// come in holding the final states' gradients and leave holding the initial states'.
//
// Block and thread mapping: block p of direction d = blockIdx.x / P (P = ceil(H / U) blocks per
// direction) owns hidden units j0 = p*U .. min(j0+U, H) - 1; the last block of a direction may
// own fewer (H need not divide by U). Thread tid works on unit u = tid % U for the batch rows
// group + i*groups (group = tid / U, groups = blockDim.x / U, i < RNN_ROWS_PER_THREAD) of a
// tile of at most RNN_BATCH_TILE rows; tiles cover the batch in turn. A thread keeps the G
// gate accumulators of each of its (row, unit) pairs in registers, so the gate math needs no
// exchange between threads. Lanes of a warp hold consecutive units of the same row: their
// weight reads are consecutive words of shared memory and their input read is one broadcast.
//
// Per step (forward), for each batch tile: the reduction over H runs in chunks (RNN_K_CHUNK
// elements in the step and cell kernels; in the persistent kernels as many as the shared memory
// left beside the weights holds, up to all of them, so that a step waits for L2 once or a few
// times instead of H/32 times): the block stages the chunk of h_prev (rows of the tile) transposed into shared memory
// (row stride RNN_TILE_STRIDE, odd, so the transposing stores do not conflict), reading it
// through L2 (gpuconv_load_cg: other blocks wrote it this launch); every thread then adds its
// G x rows products. The gate math follows in registers and writes h, c, the output and the
// reserve. Backward mirrors it: dh_prev = dgates W_hh is a reduction over the G*H gate columns
// (each block needs the columns j0 .. j0+U of W_hh, G*H*U values: the same count), then the
// gate gradients of the block's units; the part of a gradient that stays inside the block's
// units (the LSTM's dc, the GRU's dh*z, the final states' gradients) is carried in grad_h0 and
// grad_c0, read and written only by the thread that owns the element.
//
// Shared memory (bytes): persistent kernels hold the whole slice, G*U*H*sizeof(W) rounded up
// to 16, plus the staged input chunk, chunk * RNN_TILE_STRIDE * sizeof(T); step and cell
// kernels hold one chunk of weights instead (RNN_K_CHUNK*G*U, or RNN_K_CHUNK*U in backward) and
// stage RNN_K_CHUNK inputs.
// gpuconv/kernels/cuda_c/rnn_persistent.py computes the same sizes and chooses U, the block
// size (a multiple of 32, at least U) and whether the persistent grid fits.
//
// Types: T is the type of the arrays and the arithmetic (float or double); W is the type the
// recurrent weights are stored in: T, or bfloat16 / float16 bit patterns next to float arrays
// (the bf16 and fp16 precisions: half the bytes on chip, products and sums in float).
// Entry point suffixes: _f32, _f64, _f32_bf16w, _f32_f16w (cells: _f32, _f64).
// Element offsets are 64-bit.
#include "common.cuh"
#include "grid_sync.cuh"
#include "rnn_persistent.cuh"

// Reduction elements staged per chunk in the step and cell kernels (the persistent kernels
// take theirs as an argument).
#define RNN_K_CHUNK 32
// Batch rows per tile.
#define RNN_BATCH_TILE 64
// Row stride of a staged chunk: odd, so that 32 consecutive rows fall in 32 different banks.
#define RNN_TILE_STRIDE (RNN_BATCH_TILE + 1)
// Batch rows one thread accumulates for its unit.
#define RNN_ROWS_PER_THREAD 8
// The largest block the launcher uses.
#define RNN_MAX_THREADS 256

__device__ __forceinline__ float float_from_bits(unsigned bits) {
    union {
        unsigned u;
        float f;
    } v;
    v.u = bits;
    return v.f;
}

template <typename T>
__device__ __forceinline__ T weight_value(T w) {
    return w;
}

__device__ __forceinline__ float weight_value(bf16w w) {
    return float_from_bits((unsigned)w.bits << 16);
}

// Exact for every float16 value, without a denormal float (CuPy compiles with -ftz=true).
__device__ __forceinline__ float weight_value(f16w w) {
    const unsigned exponent = (w.bits >> 10) & 31u, mantissa = w.bits & 1023u;
    float magnitude;
    if (exponent == 0) {
        magnitude = (float)mantissa * 0x1p-24f;  // zero and subnormals: mantissa * 2^-24
    } else if (exponent == 31) {
        magnitude = float_from_bits(0x7f800000u | (mantissa << 13));  // inf, NaN
    } else {
        magnitude = float_from_bits(((exponent + 112u) << 23) | (mantissa << 13));
    }
    return (w.bits & 0x8000u) ? -magnitude : magnitude;
}

// --------------------------------------------------------------------------- the partition

// What this thread works on (see the mapping in the header comment).
struct Tile {
    int d;          // direction of the block
    int j0;         // its first hidden unit
    int units;      // U: units per block
    int owned;      // units this block owns: U, or fewer in the last block of a direction
    int u;          // this thread's unit, counted from j0
    int group;      // this thread's row group
    int groups;     // row groups in the block
    int rows;       // batch rows per tile
    int chunk;      // reduction elements per staged chunk
    bool computes;  // whether the thread's group exists (the others only stage data)
};

// The batch row (within the tile of nb rows) of this thread's i-th accumulator, or -1.
__device__ __forceinline__ int row_in_tile(const Tile& t, int i, int nb) {
    const int b = t.group + i * t.groups;
    return b < nb ? b : -1;
}

__device__ __forceinline__ Tile make_tile(int B, int H, int units, int chunk) {
    Tile t;
    block_units(H, units, t.d, t.j0, t.owned);
    t.units = units;
    t.u = threadIdx.x % units;
    t.group = threadIdx.x / units;
    t.groups = blockDim.x / units;
    t.rows = min(min(B, RNN_BATCH_TILE), t.groups * RNN_ROWS_PER_THREAD);
    t.chunk = chunk;
    t.computes = t.group < t.groups;
    // the launcher gives every block at least U threads and chunks of at least one element
    if (t.groups == 0 || chunk <= 0) __trap();
    return t;
}

// --------------------------------------------------------------------------- staging

// Rows b0 .. b0+nb-1, columns k0 .. k0+kc-1 of the row-major matrix src (row stride ld) into
// xs[k * RNN_TILE_STRIDE + b]. Consecutive threads read consecutive columns (coalesced).
template <typename T>
__device__ __forceinline__ void stage_input(T* xs, const T* src, long long ld, int b0, int nb,
                                            int k0, int kc) {
    for (int e = threadIdx.x; e < nb * kc; e += blockDim.x) {
        const int b = e / kc, k = e % kc;
        xs[k * RNN_TILE_STRIDE + b] = gpuconv_load_cg(src + (long long)(b0 + b) * ld + k0 + k);
    }
}

// The block's gate rows of w (G*H rows of K columns), columns k0 .. k0+kc-1, k-major:
// ws[k * G*U + q*U + u] = w[(q*H + j0 + u) * K + k0 + k], zero for units the block does not own.
template <int G, typename W>
__device__ __forceinline__ void stage_gate_rows(W* ws, const W* w, long long K, const Tile& t,
                                                int H, int k0, int kc) {
    const int R = G * t.units;
    for (long long e = threadIdx.x; e < (long long)R * kc; e += blockDim.x) {
        const int r = (int)(e / kc), k = (int)(e % kc);
        const int q = r / t.units, u = r % t.units;
        W value{};
        if (u < t.owned) value = w[((long long)q * H + t.j0 + u) * K + k0 + k];
        ws[(long long)k * R + r] = value;
    }
}

// The block's columns of w (G*H rows of H columns), rows r0 .. r0+kc-1:
// ws[r * U + u] = w[(r0 + r) * H + j0 + u], zero for units the block does not own.
template <typename W>
__device__ __forceinline__ void stage_unit_columns(W* ws, const W* w, const Tile& t, int H,
                                                   int r0, int kc) {
    for (long long e = threadIdx.x; e < (long long)kc * t.units; e += blockDim.x) {
        const int r = (int)(e / t.units), u = (int)(e % t.units);
        W value{};
        if (u < t.owned) value = w[(long long)(r0 + r) * H + t.j0 + u];
        ws[e] = value;
    }
}

// --------------------------------------------------------------------------- products

template <int G, typename T>
__device__ __forceinline__ void zero(T (&acc)[RNN_ROWS_PER_THREAD][G]) {
    #pragma unroll
    for (int i = 0; i < RNN_ROWS_PER_THREAD; ++i)
        #pragma unroll
        for (int q = 0; q < G; ++q) acc[i][q] = T(0);
}

// acc[i][q] += sum over the staged chunk of in[row i][k] * w[gate q of unit u][k].
// ws points at the chunk's first k (k-major, G*U values per k).
template <int G, typename T, typename W>
__device__ __forceinline__ void add_gate_chunk(T (&acc)[RNN_ROWS_PER_THREAD][G], const T* xs,
                                               const W* ws, int kc, int nb, const Tile& t) {
    const int R = G * t.units;
    for (int k = 0; k < kc; ++k) {
        T w[G];
        #pragma unroll
        for (int q = 0; q < G; ++q) w[q] = weight_value(ws[k * R + q * t.units + t.u]);
        #pragma unroll
        for (int i = 0; i < RNN_ROWS_PER_THREAD; ++i) {
            const int b = row_in_tile(t, i, nb);
            if (b >= 0) {
                const T x = xs[k * RNN_TILE_STRIDE + b];
                #pragma unroll
                for (int q = 0; q < G; ++q) acc[i][q] += w[q] * x;
            }
        }
    }
}

// acc += rows b0 .. b0+nb-1 of in (row stride ld, K columns) times the block's gate rows of w
// (transposed). RESIDENT: ws already holds the whole slice (k-major); otherwise each chunk of
// w is staged next to the chunk of in. Every thread of the block must call it.
template <int G, typename T, typename W, bool RESIDENT>
__device__ void add_gate_products(T (&acc)[RNN_ROWS_PER_THREAD][G], const T* in, long long ld,
                                  const W* w, int K, int b0, int nb, const Tile& t, int H,
                                  W* ws, T* xs) {
    for (int k0 = 0; k0 < K; k0 += t.chunk) {
        const int kc = min(t.chunk, K - k0);
        __syncthreads();  // every thread is done with the previous chunk
        stage_input(xs, in, ld, b0, nb, k0, kc);
        if constexpr (!RESIDENT) stage_gate_rows<G>(ws, w, K, t, H, k0, kc);
        __syncthreads();
        if (t.computes) {
            const W* chunk = RESIDENT ? ws + (long long)k0 * G * t.units : ws;
            add_gate_chunk(acc, xs, chunk, kc, nb, t);
        }
    }
}

// acc[i] += sum over r < G*H of dg[row i][r] * w[r][j0 + u]: the gradient of h_prev through
// W_hh. RESIDENT: ws holds the block's columns for every r (ws[r*U + u]).
template <int G, typename T, typename W, bool RESIDENT>
__device__ void add_hidden_grad_products(T (&acc)[RNN_ROWS_PER_THREAD], const T* dg,
                                         long long ld, const W* w, int b0, int nb,
                                         const Tile& t, int H, W* ws, T* xs) {
    const int K = G * H;
    for (int r0 = 0; r0 < K; r0 += t.chunk) {
        const int kc = min(t.chunk, K - r0);
        __syncthreads();
        stage_input(xs, dg, ld, b0, nb, r0, kc);
        if constexpr (!RESIDENT) stage_unit_columns(ws, w, t, H, r0, kc);
        __syncthreads();
        if (t.computes) {
            const W* chunk = RESIDENT ? ws + (long long)r0 * t.units : ws;
            for (int r = 0; r < kc; ++r) {
                const T wv = weight_value(chunk[r * t.units + t.u]);
                #pragma unroll
                for (int i = 0; i < RNN_ROWS_PER_THREAD; ++i) {
                    const int b = row_in_tile(t, i, nb);
                    if (b >= 0) acc[i] += wv * xs[r * RNN_TILE_STRIDE + b];
                }
            }
        }
    }
}

// --------------------------------------------------------------------------- one step

// One forward step of the block's units. WITH_X: the input projection is computed here from
// a.x and a.w_ih (a cell); otherwise it is read from a.gi.
template <class Cell, typename T, typename W, bool RESIDENT, bool WITH_X>
__device__ void forward_step(const ForwardStep<T, W>& a, const Tile& t, int B, int H, W* ws,
                             T* xs) {
    constexpr int G = Cell::G;
    for (int b0 = 0; b0 < B; b0 += t.rows) {
        const int nb = min(t.rows, B - b0);
        T hidden[RNN_ROWS_PER_THREAD][G], input[RNN_ROWS_PER_THREAD][G];
        zero(hidden);
        zero(input);
        add_gate_products<G, T, W, RESIDENT>(hidden, a.h_prev, H, a.w_hh, H, b0, nb, t, H, ws,
                                             xs);
        if constexpr (WITH_X)
            add_gate_products<G, T, W, false>(input, a.x, a.I, a.w_ih, a.I, b0, nb, t, H, ws,
                                              xs);
        if (!t.computes || t.u >= t.owned) continue;
        const int j = t.j0 + t.u;
        #pragma unroll
        for (int i = 0; i < RNN_ROWS_PER_THREAD; ++i) {
            const int b = row_in_tile(t, i, nb);
            if (b < 0) continue;
            const long long row = b0 + b;
            if constexpr (!WITH_X)
                #pragma unroll
                for (int q = 0; q < G; ++q) input[i][q] = a.gi[row * a.ld_gi + q * (long long)H + j];
            Cell::forward(hidden[i], input[i], a, row, j, H);
        }
    }
}

// One backward step of the block's units (or, with a.last, the final product into grad_h0).
template <class Cell, typename T, typename W, bool RESIDENT>
__device__ void backward_step(const BackwardStep<T, W>& a, const Tile& t, int B, int H, W* ws,
                              T* xs) {
    for (int b0 = 0; b0 < B; b0 += t.rows) {
        const int nb = min(t.rows, B - b0);
        T through_w_hh[RNN_ROWS_PER_THREAD];
        #pragma unroll
        for (int i = 0; i < RNN_ROWS_PER_THREAD; ++i) through_w_hh[i] = T(0);
        if (a.dg_next != nullptr)
            add_hidden_grad_products<Cell::G, T, W, RESIDENT>(through_w_hh, a.dg_next, a.ld_dg,
                                                              a.w_hh, b0, nb, t, H, ws, xs);
        if (!t.computes || t.u >= t.owned) continue;
        const int j = t.j0 + t.u;
        #pragma unroll
        for (int i = 0; i < RNN_ROWS_PER_THREAD; ++i) {
            const int b = row_in_tile(t, i, nb);
            if (b < 0) continue;
            const long long row = b0 + b;
            if (a.last)
                a.carry_h[row * H + j] += through_w_hh[i];
            else
                Cell::backward(through_w_hh[i], a, row, j, H);
        }
    }
}

// --------------------------------------------------------------------------- sequences

// Bytes of shared memory before the staged input chunk.
__device__ __forceinline__ long long weight_bytes(long long weights, int size) {
    return align16(weights * size);
}

template <class Cell, typename T, typename W>
__device__ void forward_persistent(const T* gi, const W* w_hh, const T* b_ih, const T* b_hh,
                                   T* hs, T* cs, T* gates, T* extra, T* out, unsigned* barrier,
                                   Sequence n) {
    constexpr int G = Cell::G;
    GPUCONV_BLOCK_SMEM(smem);
    const Tile t = make_tile(n.B, n.H, n.units, n.chunk);
    W* ws = reinterpret_cast<W*>(smem);
    T* xs = reinterpret_cast<T*>(
        smem + weight_bytes((long long)G * n.units * n.H, (int)sizeof(W)));
    stage_gate_rows<G>(ws, w_hh + t.d * (long long)G * n.H * n.H, n.H, t, n.H, 0, n.H);
    for (int s = 0; s < n.steps; ++s) {
        const ForwardStep<T, W> a = sequence_forward_step<G>(n, t.d, s, gi, w_hh, b_ih, b_hh,
                                                             hs, cs, gates, extra, out);
        forward_step<Cell, T, W, true, false>(a, t, n.B, n.H, ws, xs);
        if (s + 1 < n.steps) gpuconv_grid_sync(barrier, (unsigned)(s + 1));
    }
}

template <class Cell, typename T, typename W>
__device__ void forward_one_step(const T* gi, const W* w_hh, const T* b_ih, const T* b_hh,
                                 T* hs, T* cs, T* gates, T* extra, T* out, Sequence n, int s) {
    constexpr int G = Cell::G;
    GPUCONV_BLOCK_SMEM(smem);
    const Tile t = make_tile(n.B, n.H, n.units, n.chunk);
    W* ws = reinterpret_cast<W*>(smem);
    T* xs = reinterpret_cast<T*>(
        smem + weight_bytes((long long)RNN_K_CHUNK * G * n.units, (int)sizeof(W)));
    const ForwardStep<T, W> a = sequence_forward_step<G>(n, t.d, s, gi, w_hh, b_ih, b_hh, hs,
                                                         cs, gates, extra, out);
    forward_step<Cell, T, W, false, false>(a, t, n.B, n.H, ws, xs);
}

template <class Cell, typename T, typename W>
__device__ void backward_persistent(const W* w_hh, const T* grad_out, const T* hs, const T* cs,
                                    const T* gates, const T* extra, T* grad_gi, T* grad_gh,
                                    T* grad_h0, T* grad_c0, unsigned* barrier, Sequence n) {
    constexpr int G = Cell::G;
    GPUCONV_BLOCK_SMEM(smem);
    const Tile t = make_tile(n.B, n.H, n.units, n.chunk);
    W* ws = reinterpret_cast<W*>(smem);
    T* xs = reinterpret_cast<T*>(
        smem + weight_bytes((long long)G * n.H * n.units, (int)sizeof(W)));
    stage_unit_columns(ws, w_hh + t.d * (long long)G * n.H * n.H, t, n.H, 0, G * n.H);
    for (int s = 0; s <= n.steps; ++s) {
        const BackwardStep<T, W> a = sequence_backward_step<G>(
            n, t.d, s, w_hh, grad_out, hs, cs, gates, extra, grad_gi, grad_gh, grad_h0, grad_c0);
        backward_step<Cell, T, W, true>(a, t, n.B, n.H, ws, xs);
        if (s < n.steps) gpuconv_grid_sync(barrier, (unsigned)(s + 1));
    }
}

template <class Cell, typename T, typename W>
__device__ void backward_one_step(const W* w_hh, const T* grad_out, const T* hs, const T* cs,
                                  const T* gates, const T* extra, T* grad_gi, T* grad_gh,
                                  T* grad_h0, T* grad_c0, Sequence n, int s) {
    constexpr int G = Cell::G;
    GPUCONV_BLOCK_SMEM(smem);
    const Tile t = make_tile(n.B, n.H, n.units, n.chunk);
    W* ws = reinterpret_cast<W*>(smem);
    T* xs = reinterpret_cast<T*>(
        smem + weight_bytes((long long)RNN_K_CHUNK * n.units, (int)sizeof(W)));
    const BackwardStep<T, W> a = sequence_backward_step<G>(
        n, t.d, s, w_hh, grad_out, hs, cs, gates, extra, grad_gi, grad_gh, grad_h0, grad_c0);
    backward_step<Cell, T, W, false>(a, t, n.B, n.H, ws, xs);
}

template <class Cell, typename T>
__device__ void cell_forward(const T* x, const T* w_ih, const T* w_hh, const T* b_ih,
                             const T* b_hh, const T* hx, const T* cx, T* h, T* c, int B, int I,
                             int H, int units) {
    GPUCONV_BLOCK_SMEM(smem);
    const Tile t = make_tile(B, H, units, RNN_K_CHUNK);
    T* ws = reinterpret_cast<T*>(smem);
    T* xs = reinterpret_cast<T*>(
        smem + weight_bytes((long long)RNN_K_CHUNK * Cell::G * units, (int)sizeof(T)));
    ForwardStep<T, T> a{};
    a.x = x;
    a.w_ih = w_ih;
    a.I = I;
    a.w_hh = w_hh;
    a.b_ih = b_ih;
    a.b_hh = b_hh;
    a.h_prev = hx;
    a.c_prev = cx;
    a.h_next = h;
    a.c_next = c;
    forward_step<Cell, T, T, false, true>(a, t, B, H, ws, xs);
}

// --------------------------------------------------------------------------- entry points

#define RNN_SEQUENCE_ENTRY_POINTS(NAME, CELL, T, W, SUFFIX)                                     \
    extern "C" __global__ void NAME##_fwd_persistent_##SUFFIX(                                  \
        const T* gi, const W* w_hh, const T* b_ih, const T* b_hh, T* hs, T* cs, T* gates,      \
        T* extra, T* out, unsigned* barrier, int steps, int B, int H, int D, int units,       \
        int chunk) {                                                                            \
        forward_persistent<CELL, T, W>(gi, w_hh, b_ih, b_hh, hs, cs, gates, extra, out,        \
                                       barrier, Sequence{steps, B, H, D, units, chunk});       \
    }                                                                                           \
    extern "C" __global__ void NAME##_fwd_step_##SUFFIX(                                        \
        const T* gi, const W* w_hh, const T* b_ih, const T* b_hh, T* hs, T* cs, T* gates,      \
        T* extra, T* out, int steps, int B, int H, int D, int units, int step) {              \
        forward_one_step<CELL, T, W>(gi, w_hh, b_ih, b_hh, hs, cs, gates, extra, out,          \
                                     Sequence{steps, B, H, D, units, RNN_K_CHUNK}, step);      \
    }                                                                                           \
    extern "C" __global__ void NAME##_bwd_persistent_##SUFFIX(                                  \
        const W* w_hh, const T* grad_out, const T* hs, const T* cs, const T* gates,            \
        const T* extra, T* grad_gi, T* grad_gh, T* grad_h0, T* grad_c0, unsigned* barrier,     \
        int steps, int B, int H, int D, int units, int chunk) {                                \
        backward_persistent<CELL, T, W>(w_hh, grad_out, hs, cs, gates, extra, grad_gi,          \
                                        grad_gh, grad_h0, grad_c0, barrier,                     \
                                        Sequence{steps, B, H, D, units, chunk});                \
    }                                                                                           \
    extern "C" __global__ void NAME##_bwd_step_##SUFFIX(                                        \
        const W* w_hh, const T* grad_out, const T* hs, const T* cs, const T* gates,            \
        const T* extra, T* grad_gi, T* grad_gh, T* grad_h0, T* grad_c0, int steps, int B,      \
        int H, int D, int units, int step) {                                                    \
        backward_one_step<CELL, T, W>(w_hh, grad_out, hs, cs, gates, extra, grad_gi, grad_gh,  \
                                      grad_h0, grad_c0,                                         \
                                      Sequence{steps, B, H, D, units, RNN_K_CHUNK}, step);      \
    }

#define RNN_CELL_ENTRY_POINT(NAME, CELL, T, SUFFIX)                                             \
    extern "C" __global__ void NAME##_cell_fwd_##SUFFIX(                                        \
        const T* x, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* hx,   \
        const T* cx, T* h, T* c, int B, int I, int H, int units) {                             \
        cell_forward<CELL, T>(x, w_ih, w_hh, b_ih, b_hh, hx, cx, h, c, B, I, H, units);        \
    }

#define RNN_ENTRY_POINTS(NAME, CELL)                                                            \
    RNN_SEQUENCE_ENTRY_POINTS(NAME, CELL, float, float, f32)                                   \
    RNN_SEQUENCE_ENTRY_POINTS(NAME, CELL, double, double, f64)                                 \
    RNN_SEQUENCE_ENTRY_POINTS(NAME, CELL, float, bf16w, f32_bf16w)                             \
    RNN_SEQUENCE_ENTRY_POINTS(NAME, CELL, float, f16w, f32_f16w)                               \
    RNN_CELL_ENTRY_POINT(NAME, CELL, float, f32)                                               \
    RNN_CELL_ENTRY_POINT(NAME, CELL, double, f64)

RNN_ENTRY_POINTS(lstm, LstmCell)
RNN_ENTRY_POINTS(gru, GruCell)
