// conv.cu: 2D convolution in NCHW (stride, symmetric padding, dilation, groups).
// Conv1d runs through the same kernels with H = 1.
//
// Two families of kernels, each for float (_f32) and double (_f64):
//
// Direct (no extra memory; fast for few channels and depthwise):
//   conv2d_fwd_direct        thread = one output y[n,k,oh,ow]; it sums over the group's
//                            C/groups input channels and the R x S window.
//   conv2d_bwd_input_direct  thread = one input gradient gx[n,c,ih,iw]; it gathers every
//                            (k, r, s) whose window covers (ih, iw), i.e. where
//                            ih + ph - r*dh is a multiple of sh inside [0, OH*sh).
//   conv2d_bwd_weight_direct block = one weight gradient gw[k,c,r,s]; its threads stride over
//                            the N*OH*OW products and reduce them with a fixed shared-memory
//                            tree (deterministic).
//   conv2d_bwd_bias          block = one bias gradient gb[k], reduced the same way.
//   Threads are mapped to the flattened output with a 64-bit grid-stride loop; consecutive
//   threads own consecutive ow, so loads of x and stores of y are coalesced along W. No
//   shared-memory tiling yet: neighbouring threads' windows overlap and are served by L1.
//
// im2col + GEMM (the GEMMs run in cuBLAS through CuPy):
//   im2col                   thread = one element of the column matrix of one group,
//                            col[(c*R + r)*S + s, n*OH*OW + oh*OW + ow] for images
//                            n0 .. n0+Nc (a chunk, so the buffer stays bounded); padding
//                            positions read as zero.
//   col2im                   thread = one input element gx[n,c,ih,iw] of the group; it
//                            gathers every column entry that element fed (no atomics).
//
// All entry points take plain pointers to contiguous arrays and int sizes; element
// counts and offsets are 64-bit.
#include "common.cuh"

template <typename T>
__device__ void conv2d_fwd_direct(const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ bias, T* __restrict__ y,
                                  int N, int C, int H, int W, int K, int R, int S, int OH, int OW,
                                  int sh, int sw, int ph, int pw, int dh, int dw, int groups) {
    const int cg = C / groups, kg = K / groups;
    const long long total = (long long)N * K * OH * OW;
    GPUCONV_GRID_STRIDE_LOOP(i, total) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const int k = (int)((i / ((long long)OW * OH)) % K);
        const long long n = i / ((long long)OW * OH * K);
        const int c0 = (k / kg) * cg;
        T acc = bias != nullptr ? bias[k] : T(0);
        for (int c = 0; c < cg; ++c) {
            const T* xc = x + ((n * C + c0 + c) * H) * (long long)W;
            const T* wc = w + (((long long)k * cg + c) * R) * S;
            for (int r = 0; r < R; ++r) {
                const int ih = oh * sh - ph + r * dh;
                if (ih < 0 || ih >= H) continue;
                for (int s = 0; s < S; ++s) {
                    const int iw = ow * sw - pw + s * dw;
                    if (iw >= 0 && iw < W) acc += xc[(long long)ih * W + iw] * wc[r * S + s];
                }
            }
        }
        y[i] = acc;
    }
}

template <typename T>
__device__ void conv2d_bwd_input_direct(const T* __restrict__ gy, const T* __restrict__ w,
                                        T* __restrict__ gx,
                                        int N, int C, int H, int W, int K, int R, int S, int OH,
                                        int OW, int sh, int sw, int ph, int pw, int dh, int dw,
                                        int groups) {
    const int cg = C / groups, kg = K / groups;
    const long long total = (long long)N * C * H * W;
    GPUCONV_GRID_STRIDE_LOOP(i, total) {
        const int iw = (int)(i % W);
        const int ih = (int)((i / W) % H);
        const int c = (int)((i / ((long long)W * H)) % C);
        const long long n = i / ((long long)W * H * C);
        const int g = c / cg;
        T acc = T(0);
        for (int kk = 0; kk < kg; ++kk) {
            const int k = g * kg + kk;
            const T* gyk = gy + ((n * K + k) * OH) * (long long)OW;
            const T* wk = w + (((long long)k * cg + (c - g * cg)) * R) * S;
            for (int r = 0; r < R; ++r) {
                const int th = ih + ph - r * dh;
                if (th < 0 || th % sh != 0 || th / sh >= OH) continue;
                for (int s = 0; s < S; ++s) {
                    const int tw = iw + pw - s * dw;
                    if (tw >= 0 && tw % sw == 0 && tw / sw < OW)
                        acc += gyk[(long long)(th / sh) * OW + tw / sw] * wk[r * S + s];
                }
            }
        }
        gx[i] = acc;
    }
}

template <typename T>
__device__ void conv2d_bwd_weight_direct(const T* __restrict__ gy, const T* __restrict__ x,
                                         T* __restrict__ gw,
                                         int N, int C, int H, int W, int K, int R, int S, int OH,
                                         int OW, int sh, int sw, int ph, int pw, int dh, int dw,
                                         int groups) {
    const int cg = C / groups, kg = K / groups;
    const long long weights = (long long)K * cg * R * S;
    const long long products = (long long)N * OH * OW;
    for (long long e = blockIdx.x; e < weights; e += gridDim.x) {
        const int s = (int)(e % S);
        const int r = (int)((e / S) % R);
        const int c = (int)((e / ((long long)S * R)) % cg);
        const int k = (int)(e / ((long long)S * R * cg));
        const int cx = (k / kg) * cg + c;
        T acc = T(0);
        for (long long j = threadIdx.x; j < products; j += blockDim.x) {
            const int ow = (int)(j % OW);
            const int oh = (int)((j / OW) % OH);
            const long long n = j / ((long long)OW * OH);
            const int ih = oh * sh - ph + r * dh;
            const int iw = ow * sw - pw + s * dw;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                acc += gy[((n * K + k) * OH + oh) * (long long)OW + ow] *
                       x[((n * C + cx) * H + ih) * (long long)W + iw];
        }
        acc = gpuconv_block_sum(acc);
        if (threadIdx.x == 0) gw[e] = acc;
    }
}

template <typename T>
__device__ void conv2d_bwd_bias(const T* __restrict__ gy, T* __restrict__ gb, int N, int K,
                                long long plane) {
    for (long long k = blockIdx.x; k < K; k += gridDim.x) {
        T acc = T(0);
        const long long products = (long long)N * plane;
        for (long long j = threadIdx.x; j < products; j += blockDim.x) {
            const long long n = j / plane;
            acc += gy[(n * K + k) * plane + j % plane];
        }
        acc = gpuconv_block_sum(acc);
        if (threadIdx.x == 0) gb[k] = acc;
    }
}

template <typename T>
__device__ void im2col(const T* __restrict__ x, T* __restrict__ col, int n0, int Nc, int C,
                       int H, int W, int c0, int cg, int R, int S, int OH, int OW,
                       int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long L = (long long)OH * OW;
    const long long cols = (long long)Nc * L;
    const long long total = (long long)cg * R * S * cols;
    GPUCONV_GRID_STRIDE_LOOP(i, total) {
        const long long j = i % cols;
        const long long row = i / cols;
        const long long n = n0 + j / L;
        const int l = (int)(j % L);
        const int s = (int)(row % S);
        const int r = (int)((row / S) % R);
        const int c = (int)(row / ((long long)S * R));
        const int ih = (l / OW) * sh - ph + r * dh;
        const int iw = (l % OW) * sw - pw + s * dw;
        col[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                     ? x[((n * C + c0 + c) * H + ih) * (long long)W + iw]
                     : T(0);
    }
}

template <typename T>
__device__ void col2im(const T* __restrict__ col, T* __restrict__ gx, int n0, int Nc, int C,
                       int H, int W, int c0, int cg, int R, int S, int OH, int OW,
                       int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long L = (long long)OH * OW;
    const long long cols = (long long)Nc * L;
    const long long total = (long long)Nc * cg * H * W;
    GPUCONV_GRID_STRIDE_LOOP(i, total) {
        const int iw = (int)(i % W);
        const int ih = (int)((i / W) % H);
        const int c = (int)((i / ((long long)W * H)) % cg);
        const long long nl = i / ((long long)W * H * cg);
        T acc = T(0);
        for (int r = 0; r < R; ++r) {
            const int th = ih + ph - r * dh;
            if (th < 0 || th % sh != 0 || th / sh >= OH) continue;
            for (int s = 0; s < S; ++s) {
                const int tw = iw + pw - s * dw;
                if (tw >= 0 && tw % sw == 0 && tw / sw < OW) {
                    const long long row = ((long long)c * R + r) * S + s;
                    acc += col[row * cols + nl * L + (long long)(th / sh) * OW + tw / sw];
                }
            }
        }
        gx[(((n0 + nl) * C + c0 + c) * H + ih) * (long long)W + iw] = acc;
    }
}

#define CONV_SHAPE_PARAMS                                                                     \
    int N, int C, int H, int W, int K, int R, int S, int OH, int OW, int sh, int sw, int ph, \
        int pw, int dh, int dw, int groups
#define CONV_SHAPE_ARGS N, C, H, W, K, R, S, OH, OW, sh, sw, ph, pw, dh, dw, groups
#define COL_PARAMS                                                                            \
    int n0, int Nc, int C, int H, int W, int c0, int cg, int R, int S, int OH, int OW, int sh, \
        int sw, int ph, int pw, int dh, int dw
#define COL_ARGS n0, Nc, C, H, W, c0, cg, R, S, OH, OW, sh, sw, ph, pw, dh, dw

#define CONV_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void conv2d_fwd_direct_##SUFFIX(                                  \
        const T* x, const T* w, const T* bias, T* y, CONV_SHAPE_PARAMS) {                   \
        conv2d_fwd_direct<T>(x, w, bias, y, CONV_SHAPE_ARGS);                               \
    }                                                                                       \
    extern "C" __global__ void conv2d_bwd_input_direct_##SUFFIX(                            \
        const T* gy, const T* w, T* gx, CONV_SHAPE_PARAMS) {                                \
        conv2d_bwd_input_direct<T>(gy, w, gx, CONV_SHAPE_ARGS);                             \
    }                                                                                       \
    extern "C" __global__ void conv2d_bwd_weight_direct_##SUFFIX(                           \
        const T* gy, const T* x, T* gw, CONV_SHAPE_PARAMS) {                                \
        conv2d_bwd_weight_direct<T>(gy, x, gw, CONV_SHAPE_ARGS);                            \
    }                                                                                       \
    extern "C" __global__ void conv2d_bwd_bias_##SUFFIX(const T* gy, T* gb, int N, int K,   \
                                                        long long plane) {                  \
        conv2d_bwd_bias<T>(gy, gb, N, K, plane);                                            \
    }                                                                                       \
    extern "C" __global__ void im2col_##SUFFIX(const T* x, T* col, COL_PARAMS) {            \
        im2col<T>(x, col, COL_ARGS);                                                        \
    }                                                                                       \
    extern "C" __global__ void col2im_##SUFFIX(const T* col, T* gx, COL_PARAMS) {           \
        col2im<T>(col, gx, COL_ARGS);                                                       \
    }

CONV_ENTRY_POINTS(float, f32)
CONV_ENTRY_POINTS(double, f64)
