// pool.cu: max, average and adaptive average pooling in NCHW, forward and backward, each for
// float (_f32) and double (_f64). 1D pooling runs through the same kernels with H = 1.
//
// The input is seen as `planes` = N*C independent H x W planes and the output as planes of
// OH x OW. Along each axis window o has taps at o*s - p + t*d, t < k; taps outside [0, size)
// are padding and are never read. The caller passes windows that each hold at least one
// input element (gpuconv.functional.pool checks it).
//
// Forward, thread = one output element (plane, oh, ow):
//   max_pool2d_fwd           the window's maximum and its int64 flat position ih*W + iw in
//                            the plane. PyTorch's rule: scanning the taps inside the input in
//                            row-major order, the first one starts the maximum and a later one
//                            replaces it if greater or NaN, so ties keep the first maximum and
//                            a window with NaN gives its last NaN.
//   avg_pool2d_fwd           (sum of the taps inside the input) / divisor. Per axis a window
//                            spans [o*s - p, min(o*s - p + k, size + p)); the divisor is
//                            divisor_override when non-zero, else the product of those extents
//                            when count_include_pad, else the number of taps inside the input.
//   adaptive_avg_pool2d_fwd  mean over rows floor(oh*H/OH) .. ceil((oh+1)*H/OH) - 1 and the
//                            columns likewise (PyTorch's windows; they may overlap).
//
// Backward, thread = one input gradient element (plane, ih, iw), which gathers from every
// output window that can hold it (no atomics: each element is written once, its terms are
// added in a fixed order, so the result is the same bits on every run):
//   max_pool2d_bwd           windows o with o*s - p <= i <= o*s - p + (k-1)*d along each axis;
//                            a window adds its gradient when its saved index is this element.
//                            The same grid also checks every saved index on the device: one
//                            outside [0, H*W) would add nowhere, so it is reported in the
//                            `error` row (gpuconv/device_checks.py) for the host to raise.
//                            Any window arguments whose windows enclose the saved indices give
//                            the same result (padding may be negative here): the launcher can
//                            pass the forward's or ones derived from the indices.
//   avg_pool2d_bwd           windows o with o*s - p <= i < o*s - p + k each add g / divisor,
//                            the divisor as in the forward (ceil_mode windows that hang over
//                            the padded edge included).
//   adaptive_avg_pool2d_bwd  windows o in [floor(i*OH/H), ceil((i+1)*OH/H)) each add g / area.
//
// Why this mapping: pooling does a few compares or adds per element moved (arithmetic
// intensity well under one operation per byte, against about 20 FLOP/byte where an H100
// turns compute-bound), so every kernel is memory-bound and the aim is copy bandwidth: read
// each input element from DRAM once and write each result once. Consecutive threads own
// consecutive ow (forward) or iw (backward), so stores are coalesced along W and loads are
// coalesced, or strided by the pooling stride within the same cache lines; the taps that
// neighbouring windows share come from L1/L2, not DRAM. Nothing is staged in shared memory:
// for the usual 2x2 and 3x3 windows the caches already serve the overlap.
//
// All entry points take plain pointers to contiguous arrays. The grid-stride loops run over
// 64-bit element counts; a position inside one plane is an int (the launcher checks that a
// plane has fewer than 2^31 elements), so only the plane number needs 64-bit arithmetic.
#include "common.cuh"

// ---------------------------------------------------------------------------- window helpers

// A flat index inside the grid-stride loop split into (plane, row, column) of rows x cols
// planes: one 64-bit division per element, the rest in 32 bits.
struct PlanePosition {
    long long plane;
    int row, col;
};

__device__ __forceinline__ PlanePosition unravel(long long i, int rows, int cols) {
    const long long plane_size = (long long)rows * cols;
    const long long plane = i / plane_size;
    const int at = (int)(i - plane * plane_size);
    const int row = at / cols;
    return PlanePosition{plane, row, at - row * cols};
}

// First tap t of a window starting at `start` with t*d + start >= 0.
__device__ __forceinline__ int first_tap_inside(int start, int d) {
    return start >= 0 ? 0 : (d - 1 - start) / d;
}

// One past the last tap t < k of a window starting at `start` with start + t*d < size.
__device__ __forceinline__ int taps_end_inside(int start, int d, int k, int size) {
    return start >= size ? 0 : min(k, (size - 1 - start) / d + 1);
}

// Output positions [lo, hi) along one axis whose window (taps o*s - p + t*d, t < k) can
// hold input position `pos`: those with pos + p - (k-1)*d <= o*s <= pos + p.
struct OutRange {
    int lo, hi;
};

__device__ __forceinline__ OutRange windows_holding(int pos, int k, int s, int p, int d,
                                                    int out_len) {
    const int last = pos + p;
    const int first = last - (k - 1) * d;
    return OutRange{first <= 0 ? 0 : (first + s - 1) / s,
                    last < 0 ? 0 : min(out_len, last / s + 1)};
}

// The average-pooling divisor of the window starting at (h0, w0); divisor_override 0 means none.
__device__ __forceinline__ int avg_divisor(int h0, int w0, int kh, int kw, int ph, int pw,
                                           int H, int W, int count_include_pad,
                                           int divisor_override) {
    if (divisor_override != 0) return divisor_override;
    if (count_include_pad) return (min(h0 + kh, H + ph) - h0) * (min(w0 + kw, W + pw) - w0);
    return (min(h0 + kh, H) - max(h0, 0)) * (min(w0 + kw, W) - max(w0, 0));
}

// Adaptive windows along one axis: [floor(o*size/out_len), ceil((o+1)*size/out_len)).
__device__ __forceinline__ int adaptive_start(int o, int out_len, int size) {
    return (int)((long long)o * size / out_len);
}

__device__ __forceinline__ int adaptive_end(int o, int out_len, int size) {
    return (int)(((long long)(o + 1) * size + out_len - 1) / out_len);
}

// ---------------------------------------------------------------------------- max pooling

template <typename T>
__device__ void max_pool2d_fwd(const T* __restrict__ x, T* __restrict__ out,
                               long long* __restrict__ indices, long long planes, int H, int W,
                               int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw,
                               int dh, int dw) {
    GPUCONV_GRID_STRIDE_LOOP(i, planes * OH * OW) {
        const PlanePosition o = unravel(i, OH, OW);
        const T* xp = x + o.plane * H * W;
        const int h0 = o.row * sh - ph, w0 = o.col * sw - pw;
        const int j_lo = first_tap_inside(w0, dw), j_hi = taps_end_inside(w0, dw, kw, W);
        const int i_hi = taps_end_inside(h0, dh, kh, H);
        T best = T(0);
        int at = -1;
        for (int ti = first_tap_inside(h0, dh); ti < i_hi; ++ti) {
            const int row = (h0 + ti * dh) * W + w0;
            for (int tj = j_lo; tj < j_hi; ++tj) {
                const int pos = row + tj * dw;
                const T v = xp[pos];
                // v != v is the NaN test (NVRTC does not assume finite math).
                if (at < 0 || v > best || v != v) {
                    best = v;
                    at = pos;
                }
            }
        }
        out[i] = best;
        indices[i] = at;
    }
}

template <typename T>
__device__ void max_pool2d_bwd(const T* __restrict__ grad_out,
                               const long long* __restrict__ indices, T* __restrict__ grad_in,
                               long long* error, long long planes, int H, int W, int OH, int OW,
                               int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long plane_size = (long long)H * W;
    GPUCONV_GRID_STRIDE_LOOP(o, planes * OH * OW) {
        const long long at = indices[o];
        if (at < 0 || at >= plane_size) gpuconv_report_error(error, at, plane_size, 0);
    }
    GPUCONV_GRID_STRIDE_LOOP(i, planes * H * W) {
        const PlanePosition e = unravel(i, H, W);
        const long long first_window = e.plane * OH * OW;
        const T* gp = grad_out + first_window;
        const long long* ip = indices + first_window;
        const OutRange rows = windows_holding(e.row, kh, sh, ph, dh, OH);
        const OutRange cols = windows_holding(e.col, kw, sw, pw, dw, OW);
        const long long at = (long long)e.row * W + e.col;
        T acc = T(0);
        for (int oh = rows.lo; oh < rows.hi; ++oh) {
            for (int ow = cols.lo; ow < cols.hi; ++ow) {
                const int window = oh * OW + ow;
                if (ip[window] == at) acc += gp[window];
            }
        }
        grad_in[i] = acc;
    }
}

// ---------------------------------------------------------------------------- average pooling

template <typename T>
__device__ void avg_pool2d_fwd(const T* __restrict__ x, T* __restrict__ out, long long planes,
                               int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
                               int ph, int pw, int count_include_pad, int divisor_override) {
    GPUCONV_GRID_STRIDE_LOOP(i, planes * OH * OW) {
        const PlanePosition o = unravel(i, OH, OW);
        const T* xp = x + o.plane * H * W;
        const int h0 = o.row * sh - ph, w0 = o.col * sw - pw;
        const int h_end = min(h0 + kh, H), w_lo = max(w0, 0), w_end = min(w0 + kw, W);
        T acc = T(0);
        for (int ih = max(h0, 0); ih < h_end; ++ih) {
            for (int iw = w_lo; iw < w_end; ++iw) acc += xp[ih * W + iw];
        }
        out[i] = acc / T(avg_divisor(h0, w0, kh, kw, ph, pw, H, W, count_include_pad,
                                     divisor_override));
    }
}

template <typename T>
__device__ void avg_pool2d_bwd(const T* __restrict__ grad_out, T* __restrict__ grad_in,
                               long long planes, int H, int W, int OH, int OW, int kh, int kw,
                               int sh, int sw, int ph, int pw, int count_include_pad,
                               int divisor_override) {
    GPUCONV_GRID_STRIDE_LOOP(i, planes * H * W) {
        const PlanePosition e = unravel(i, H, W);
        const T* gp = grad_out + e.plane * OH * OW;
        const OutRange rows = windows_holding(e.row, kh, sh, ph, 1, OH);
        const OutRange cols = windows_holding(e.col, kw, sw, pw, 1, OW);
        T acc = T(0);
        for (int oh = rows.lo; oh < rows.hi; ++oh) {
            for (int ow = cols.lo; ow < cols.hi; ++ow) {
                acc += gp[oh * OW + ow] / T(avg_divisor(oh * sh - ph, ow * sw - pw, kh, kw, ph,
                                                        pw, H, W, count_include_pad,
                                                        divisor_override));
            }
        }
        grad_in[i] = acc;
    }
}

// ---------------------------------------------------------------------------- adaptive average

template <typename T>
__device__ void adaptive_avg_pool2d_fwd(const T* __restrict__ x, T* __restrict__ out,
                                        long long planes, int H, int W, int OH, int OW) {
    GPUCONV_GRID_STRIDE_LOOP(i, planes * OH * OW) {
        const PlanePosition o = unravel(i, OH, OW);
        const T* xp = x + o.plane * H * W;
        const int h0 = adaptive_start(o.row, OH, H), h1 = adaptive_end(o.row, OH, H);
        const int w0 = adaptive_start(o.col, OW, W), w1 = adaptive_end(o.col, OW, W);
        T acc = T(0);
        for (int ih = h0; ih < h1; ++ih) {
            for (int iw = w0; iw < w1; ++iw) acc += xp[ih * W + iw];
        }
        out[i] = acc / T((h1 - h0) * (w1 - w0));
    }
}

template <typename T>
__device__ void adaptive_avg_pool2d_bwd(const T* __restrict__ grad_out, T* __restrict__ grad_in,
                                        long long planes, int H, int W, int OH, int OW) {
    GPUCONV_GRID_STRIDE_LOOP(i, planes * H * W) {
        const PlanePosition e = unravel(i, H, W);
        const T* gp = grad_out + e.plane * OH * OW;
        // Window o holds i iff floor(o*H/OH) <= i < ceil((o+1)*H/OH), i.e. the o in
        // [floor(i*OH/H), ceil((i+1)*OH/H)): the same formulas with the roles swapped.
        const int oh_end = adaptive_end(e.row, H, OH), ow_end = adaptive_end(e.col, W, OW);
        const int ow_lo = adaptive_start(e.col, W, OW);
        T acc = T(0);
        for (int oh = adaptive_start(e.row, H, OH); oh < oh_end; ++oh) {
            const int rows = adaptive_end(oh, OH, H) - adaptive_start(oh, OH, H);
            for (int ow = ow_lo; ow < ow_end; ++ow) {
                const int cols = adaptive_end(ow, OW, W) - adaptive_start(ow, OW, W);
                acc += gp[oh * OW + ow] / T(rows * cols);
            }
        }
        grad_in[i] = acc;
    }
}

// ---------------------------------------------------------------------------- entry points

#define POOL_SHAPE_PARAMS long long planes, int H, int W, int OH, int OW
#define POOL_SHAPE_ARGS planes, H, W, OH, OW
#define WINDOW_PARAMS int kh, int kw, int sh, int sw, int ph, int pw
#define WINDOW_ARGS kh, kw, sh, sw, ph, pw

#define POOL_ENTRY_POINTS(T, SUFFIX)                                                           \
    extern "C" __global__ void max_pool2d_fwd_##SUFFIX(const T* x, T* out, long long* indices, \
                                                       POOL_SHAPE_PARAMS, WINDOW_PARAMS,       \
                                                       int dh, int dw) {                       \
        max_pool2d_fwd<T>(x, out, indices, POOL_SHAPE_ARGS, WINDOW_ARGS, dh, dw);              \
    }                                                                                          \
    extern "C" __global__ void max_pool2d_bwd_##SUFFIX(                                      \
        const T* grad_out, const long long* indices, T* grad_in, long long* error,             \
        POOL_SHAPE_PARAMS, WINDOW_PARAMS, int dh, int dw) {                                    \
        max_pool2d_bwd<T>(grad_out, indices, grad_in, error, POOL_SHAPE_ARGS, WINDOW_ARGS, dh, \
                          dw);                                                                 \
    }                                                                                          \
    extern "C" __global__ void avg_pool2d_fwd_##SUFFIX(const T* x, T* out, POOL_SHAPE_PARAMS,  \
                                                       WINDOW_PARAMS, int count_include_pad,   \
                                                       int divisor_override) {                 \
        avg_pool2d_fwd<T>(x, out, POOL_SHAPE_ARGS, WINDOW_ARGS, count_include_pad,             \
                          divisor_override);                                                   \
    }                                                                                          \
    extern "C" __global__ void avg_pool2d_bwd_##SUFFIX(const T* grad_out, T* grad_in,          \
                                                       POOL_SHAPE_PARAMS, WINDOW_PARAMS,       \
                                                       int count_include_pad,                  \
                                                       int divisor_override) {                 \
        avg_pool2d_bwd<T>(grad_out, grad_in, POOL_SHAPE_ARGS, WINDOW_ARGS, count_include_pad,  \
                          divisor_override);                                                   \
    }                                                                                          \
    extern "C" __global__ void adaptive_avg_pool2d_fwd_##SUFFIX(const T* x, T* out,            \
                                                                POOL_SHAPE_PARAMS) {           \
        adaptive_avg_pool2d_fwd<T>(x, out, POOL_SHAPE_ARGS);                                   \
    }                                                                                          \
    extern "C" __global__ void adaptive_avg_pool2d_bwd_##SUFFIX(const T* grad_out, T* grad_in, \
                                                                POOL_SHAPE_PARAMS) {           \
        adaptive_avg_pool2d_bwd<T>(grad_out, grad_in, POOL_SHAPE_ARGS);                        \
    }

POOL_ENTRY_POINTS(float, f32)
POOL_ENTRY_POINTS(double, f64)
