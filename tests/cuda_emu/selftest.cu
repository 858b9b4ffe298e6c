// selftest.cu: kernels that the emulator must run, and faults it must catch, for
// tests/cuda_emu/test_emulator.py. Not part of gpuconv.
#define LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void copy_f32(const float* x, float* y, long long n) {
    LOOP(i, n) y[i] = x[i];
}

// y[i] = x[i + shift]: reads outside x for shift != 0.
extern "C" __global__ void shifted_read_f32(const float* x, float* y, long long n, long long shift) {
    LOOP(i, n) y[i] = x[i + shift];
}

// y[i + shift] = x[i]: writes outside y for shift != 0.
extern "C" __global__ void shifted_write_f32(const float* x, float* y, long long n, long long shift) {
    LOOP(i, n) y[i + shift] = x[i];
}

// Each scalar parameter type, read back as a double.
extern "C" __global__ void scalars(bool b, int i32, long long i64, unsigned long long u64,
                                   float f32, double f64, double* out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    out[0] = b ? 1.0 : 0.0;
    out[1] = i32;
    out[2] = (double)i64;
    out[3] = (double)u64;
    out[4] = f32;
    out[5] = f64;
}
