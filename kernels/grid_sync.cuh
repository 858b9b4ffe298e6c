// grid_sync.cuh: what a persistent kernel (one cooperative launch that loops over time steps)
// needs beyond a plain kernel, as device wrappers. Kernels use these and nothing else for
// cross-block synchronisation, so that the CUDA emulator can give each its exact meaning on
// the CPU: tests/cuda_emu/emu.h defines GPUCONV_EMULATED_GRID_SYNC and its own versions, and
// runs every block of a cooperative launch at once so that the barrier behaves as on a GPU.
//
//   gpuconv_grid_sync(arrived, round): a barrier over every thread of the grid, with memory
//     ordering: what any thread wrote before it is visible to every thread after it (through
//     L2: read such data with gpuconv_load_cg). A flag barrier in global memory, the scheme of
//     cooperative groups' grid.sync() without its header: each block's thread 0 fences its
//     block's writes, adds one to *arrived and spins until *arrived reaches round * gridDim.x,
//     then fences again. `arrived` must be zero when the kernel starts and `round` is 1 at the
//     first barrier, 2 at the second, ... (so round * gridDim.x must stay below 2^32). It is
//     only safe when every block of the grid is resident at once: launch it cooperatively
//     (cuLaunchCooperativeKernel checks that, and the launcher asks the occupancy API first),
//     and every block must reach every barrier.
//   gpuconv_load_cg(p): a load that skips L1 (ld.global.cg), for data that other blocks wrote
//     since the kernel started (L1 is not coherent between SMs).
//   GPUCONV_BLOCK_SMEM(name): the block's dynamic shared memory as `unsigned char name[]`,
//     16-byte aligned. Kernels that run cooperatively take all their shared memory from here,
//     never from static __shared__ variables (the emulator gives each block its own buffer).
#pragma once

#ifndef GPUCONV_EMULATED_GRID_SYNC

#define GPUCONV_BLOCK_SMEM(name) extern __shared__ __align__(16) unsigned char name[]

__device__ __forceinline__ void gpuconv_grid_sync(unsigned* arrived, unsigned round) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned target = round * gridDim.x;
        __threadfence();
        atomicAdd(arrived, 1u);
        while (*(volatile unsigned*)arrived < target) {
        }
        __threadfence();
    }
    __syncthreads();
}

template <typename T>
__device__ __forceinline__ T gpuconv_load_cg(const T* p) {
    return __ldcg(p);
}

#endif
