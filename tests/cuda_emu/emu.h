// emu.h: the CUDA features gpuconv's kernels use, for g++ on a machine without a GPU.
//
// tests/cuda_emu/fake_cupy.py compiles a kernels/<family>.cu file with `g++ -include emu.h`
// and launches its entry points through emu_launch_<name>, which this header defines for
// every name listed with EMU_EXPORT.
//
// Execution model: the blocks of a grid run one after another; the threads of a block are
// fibers on one OS thread. A cooperative launch (the launcher's RawModule was made with
// enable_cooperative_groups) keeps every block alive at once instead: all the grid's threads
// are fibers, so that a grid barrier (gpuconv_grid_sync, kernels/grid_sync.cuh) behaves as on
// a GPU. Each block runs alone until all its threads have returned or wait at the grid barrier,
// then the next; when every block waits there, the barrier opens. So no block ever sees another
// block's writes except across a grid barrier, and a kernel that needs one it lacks reads
// stale (in tests: NaN-poisoned) data. fake_cupy refuses a cooperative launch whose grid could
// not be resident on the emulated GPU. Every other launch runs its blocks and threads in reverse order,
// so that a kernel whose result depends on the order of threads or blocks without a barrier
// between them (a race on a GPU) gives a different answer on one of the two and fails. A fiber runs until it
// returns or reaches a barrier:
//   __syncthreads()        waits until every thread of the block that has not returned is
//                          waiting there too;
//   __shfl_xor_sync(...)   publishes its value to the warp, waits for the warp's other live
//                          lanes, reads its partner's value, and waits again before the
//                          buffer can be reused;
//   gpuconv_grid_sync(arrived, round)   (cooperative launches only) waits until every thread
//                          of the grid that has not returned is waiting there too, a block with
//                          no live thread being a deadlock; thread 0 of each block adds one to
//                          *arrived as the device version does, and the barrier opens only if
//                          then *arrived == round * gridDim.x (a counter not zeroed before the
//                          launch, or rounds miscounted, would let a GPU pass the barrier early).
// A round in which no fiber can run and no barrier can open is a deadlock (a barrier in
// divergent code): the launch fails with that message instead of hanging. __trap() fails the
// launch too. __shared__ variables become statics, which is right because blocks never
// overlap in time outside cooperative launches; a block's dynamic shared memory
// (GPUCONV_BLOCK_SMEM) is its own buffer in every launch, filled with 0xFF bytes (NaN to a
// float read) when the block starts and followed by a guard zone checked when it ends.
//
// Memory faults: fake_cupy.py puts every array argument between pages that may not be
// touched (tests/cuda_emu/README.md). A kernel that reads or writes one raises SIGSEGV, which
// the handler below turns into a failed launch (emu_fault_address() says where; the kind,
// read or write, comes from the x86-64 page-fault error code) instead of a crash. It handles
// only faults of a running kernel fiber and leaves every other to the handler it replaced.
//
// What this cannot show: timing, memory coalescing, races that need true parallelism
// within a warp, or NVRTC's own diagnostics (tests/test_cuda_sources.py runs NVRTC).
#pragma once

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using std::ceil;
using std::exp;
using std::expm1;
using std::fabs;
using std::floor;
using std::log;
using std::log1p;
using std::pow;
using std::sqrt;
using std::tanh;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct emu_dim3 {
    unsigned x = 0, y = 1, z = 1;
};
inline emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

// CUDA's integer min/max accept mixed operand types.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? b : a;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? b : a;
}

inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

namespace emu {

constexpr int WARP = 32;
// Bytes of stack per fiber; the kernels keep small frames (no recursion, no large locals).
constexpr size_t FIBER_STACK = 128 * 1024;
// The most threads a cooperative launch may run at once here (their stacks are mapped lazily).
constexpr unsigned MAX_COOPERATIVE_THREADS = 16384;
// Bytes of guard zone after each block's dynamic shared memory.
constexpr size_t SMEM_GUARD = 16 * 1024;

enum class State { ready, block_barrier, warp_barrier, grid_barrier, done };

// A fiber is entered once per launch through its ucontext and then switched with
// _setjmp/_longjmp, which unlike swapcontext make no system call. After the kernel body
// returns it parks as done and, resumed, runs the body again for the next block.
struct Fiber {
    ucontext_t entry;
    jmp_buf resume;
    bool started;
    State state;
    unsigned block;     // blockIdx.x of the block it runs
    unsigned thread;    // threadIdx.x
    unsigned* arrived;  // at a grid barrier: its counter and round
    unsigned round;
};

inline jmp_buf scheduler;
inline ucontext_t scheduler_context;
inline std::vector<Fiber> fibers;
inline char* stacks = nullptr;
inline size_t stacks_size = 0;
inline unsigned current = 0;
inline void (*body)(void*) = nullptr;
inline void* body_arg = nullptr;
inline std::string error;
inline std::vector<unsigned long long> shuffle_buffer;
inline bool reversed = false;  // this launch's scheduling order
inline bool cooperative = false;
inline unsigned long long launches = 0;
inline size_t dynamic_smem = 0;
inline std::vector<std::vector<unsigned char>> block_smems;  // one per block running at once
inline unsigned first_block = 0;                             // blockIdx.x of block_smems[0]
// Set while a kernel fiber runs: only then is a SIGSEGV the kernel's.
inline volatile sig_atomic_t in_kernel = 0;
inline void* fault_address = nullptr;
inline int fault_kind = 0;  // 1 read, 2 write, 0 unknown

inline void suspend(State state) {
    fibers[current].state = state;
    if (!_setjmp(fibers[current].resume)) _longjmp(scheduler, 1);
}

inline void fail(const std::string& message) {
    if (error.empty()) error = message;
    suspend(State::done);
}

inline void fiber_main() {
    for (;;) {
        body(body_arg);
        suspend(State::done);
    }
}

inline void resume(unsigned f) {
    current = f;
    threadIdx.x = fibers[f].thread;
    blockIdx.x = fibers[f].block;
    if (_setjmp(scheduler)) {
        in_kernel = 0;
        return;
    }
    in_kernel = 1;
    Fiber& fiber = fibers[f];
    if (fiber.started) _longjmp(fiber.resume, 1);
    fiber.started = true;
    swapcontext(&scheduler_context, &fiber.entry);
}

// Whether every live fiber of [first, first + count) waits in `state` (and one is live).
inline bool all_live_wait(unsigned first, unsigned count, State state) {
    bool any = false, all = true;
    for (unsigned f = first; f < first + count; ++f) {
        if (fibers[f].state == State::done) continue;
        any = true;
        all = all && fibers[f].state == state;
    }
    return any && all;
}

inline void release(unsigned first, unsigned count, State state) {
    for (unsigned f = first; f < first + count; ++f)
        if (fibers[f].state == state) fibers[f].state = State::ready;
}

// Opens the warp or block barriers of the block of fibers [first, first + blockDim.x) whose
// threads have all arrived; false when none could open.
inline bool open_block_barriers(unsigned first) {
    const unsigned block = blockDim.x;
    bool opened = false;
    for (unsigned w = first; w < first + block; w += WARP) {
        const unsigned lanes = std::min(first + block - w, (unsigned)WARP);
        if (all_live_wait(w, lanes, State::warp_barrier)) {
            release(w, lanes, State::warp_barrier);
            opened = true;
        }
    }
    if (opened) return true;
    if (!all_live_wait(first, block, State::block_barrier)) return false;
    release(first, block, State::block_barrier);
    return true;
}

// Runs the block of fibers [first, first + blockDim.x) until every thread has returned or
// waits at the grid barrier; false (with `error` set) on a deadlock or a trap.
inline bool run_block(unsigned first) {
    const unsigned block = blockDim.x;
    for (;;) {
        bool ran = false;
        for (unsigned i = 0; i < block; ++i) {
            const unsigned f = first + (reversed ? block - 1 - i : i);
            if (fibers[f].state != State::ready) continue;
            resume(f);
            ran = true;
            if (!error.empty()) return false;
        }
        if (ran || open_block_barriers(first)) continue;
        bool parked = true;
        for (unsigned f = first; f < first + block; ++f)
            parked = parked && (fibers[f].state == State::done ||
                                fibers[f].state == State::grid_barrier);
        if (parked) return true;
        error = "deadlock: threads wait at barriers that the rest of the block never reaches";
        return false;
    }
}

inline void map_stacks(size_t bytes) {
    if (bytes <= stacks_size) return;
    if (stacks != nullptr) munmap(stacks, stacks_size);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        stacks = nullptr;
        stacks_size = 0;
        return;
    }
    stacks = static_cast<char*>(p);
    stacks_size = bytes;
}

// Fibers for `blocks` blocks of `block` threads, starting at blockIdx.x == first.
inline bool start_fibers(unsigned blocks, unsigned block, unsigned first) {
    const unsigned threads = blocks * block;
    map_stacks(threads * FIBER_STACK);
    if (stacks == nullptr) {
        error = "could not map " + std::to_string(threads) + " fiber stacks";
        return false;
    }
    fibers.assign(threads, Fiber{});
    shuffle_buffer.assign(threads, 0);
    for (unsigned f = 0; f < threads; ++f) {
        Fiber& fiber = fibers[f];
        getcontext(&fiber.entry);
        fiber.entry.uc_stack.ss_sp = stacks + f * FIBER_STACK;
        fiber.entry.uc_stack.ss_size = FIBER_STACK;
        fiber.entry.uc_link = nullptr;  // fiber_main never returns
        makecontext(&fiber.entry, fiber_main, 0);
        fiber.started = false;
        fiber.block = first + f / block;
        fiber.thread = f % block;
    }
    return true;
}

// Gives each running block a fresh dynamic shared memory buffer (0xFF, then the guard zone).
inline void fill_block_smems(unsigned blocks, unsigned first) {
    first_block = first;
    block_smems.resize(dynamic_smem > 0 ? blocks : 0);
    for (auto& smem : block_smems) smem.assign(dynamic_smem + SMEM_GUARD + 16, 0xFF);
}

// The 16-byte aligned start of a block's buffer; its guard zone follows dynamic_smem bytes on.
inline unsigned char* aligned_start(std::vector<unsigned char>& smem) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(smem.data());
    return smem.data() + (16 - base % 16) % 16;
}

inline bool block_smems_intact() {
    for (unsigned b = 0; b < block_smems.size(); ++b) {
        const unsigned char* guard = aligned_start(block_smems[b]) + dynamic_smem;
        for (size_t i = 0; i < SMEM_GUARD; ++i)
            if (guard[i] != 0xFF) {
                error = "block " + std::to_string(first_block + b) + " wrote past its " +
                        std::to_string(dynamic_smem) + " bytes of dynamic shared memory";
                return false;
            }
    }
    return true;
}

inline unsigned char* block_smem() {
    if (block_smems.empty()) fail("GPUCONV_BLOCK_SMEM in a launch without dynamic shared memory");
    return aligned_start(block_smems[fibers[current].block - first_block]);
}

// Every thread at the grid barrier names the same counter and round, and the counter shows
// every block's arrival for that round (as the device version's spin would require).
inline bool grid_barrier_consistent() {
    const Fiber* first = nullptr;
    for (const Fiber& f : fibers) {
        if (f.state != State::grid_barrier) continue;
        if (first == nullptr) first = &f;
        if (f.arrived != first->arrived || f.round != first->round) {
            error = "gpuconv_grid_sync: threads wait at barriers of different counters or rounds";
            return false;
        }
    }
    if (*first->arrived != first->round * gridDim.x) {
        error = "gpuconv_grid_sync: the arrival counter reads " +
                std::to_string(*first->arrived) + " at round " + std::to_string(first->round) +
                " of " + std::to_string(gridDim.x) + " blocks (not zero at launch, or rounds "
                "not counted from 1)";
        return false;
    }
    return true;
}

// Runs every block of the fibers, each alone until it returns or parks at the grid barrier
// (so that a block never waits for another except at a grid barrier: one that reads what
// another block writes without a grid barrier between reads stale data here), then opens the
// grid barrier, until every thread has returned. False (with `error` set) on a deadlock.
inline bool run_fibers() {
    const unsigned n = (unsigned)fibers.size(), block = blockDim.x, blocks = n / block;
    for (Fiber& f : fibers) f.state = State::ready;
    for (;;) {
        for (unsigned i = 0; i < blocks; ++i)
            if (!run_block((reversed ? blocks - 1 - i : i) * block)) return false;
        bool live = false;
        for (const Fiber& f : fibers) live = live || f.state != State::done;
        if (!live) return block_smems_intact();
        for (unsigned b = 0; b < n; b += block)
            if (!all_live_wait(b, block, State::grid_barrier)) {
                error = "deadlock: block " + std::to_string(fibers[b].block) + " has returned "
                        "while the others wait at the grid barrier";
                return false;
            }
        if (!grid_barrier_consistent()) return false;
        release(0, n, State::grid_barrier);
    }
}

inline struct sigaction previous_segv;

// A fault in a kernel fiber ends the launch: back to the scheduler with the address. Any
// other fault is not ours: the previous handler is restored and the instruction runs again.
inline void on_fault(int, siginfo_t* info, void* context) {
    if (!in_kernel) {
        sigaction(SIGSEGV, &previous_segv, nullptr);
        return;
    }
    in_kernel = 0;
    fault_address = info->si_addr;
#if defined(__x86_64__)
    fault_kind = (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) ? 2 : 1;
#else
    (void)context;
    fault_kind = 0;
#endif
    error = "memory fault";
    _longjmp(scheduler, 1);
}

// The fault handler, installed for one launch (SA_NODEFER: the _longjmp out of it leaves
// SIGSEGV unblocked for the next fault).
struct FaultHandler {
    FaultHandler() {
        struct sigaction action = {};
        action.sa_sigaction = on_fault;
        action.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        sigaction(SIGSEGV, &action, &previous_segv);
        fault_address = nullptr;
        fault_kind = 0;
    }
    ~FaultHandler() { sigaction(SIGSEGV, &previous_segv, nullptr); }
};

// Runs the grid; returns 0, or 1 with the reason in emu_last_error().
inline int run_grid(unsigned grid, unsigned block, size_t shared_mem, bool is_cooperative,
                    void (*fn)(void*), void* arg) {
    error.clear();
    FaultHandler handler;
    if (grid == 0 || block == 0 || block > 1024) {
        error = "launch with grid " + std::to_string(grid) + " and block " + std::to_string(block);
        return 1;
    }
    if (is_cooperative && (unsigned long long)grid * block > MAX_COOPERATIVE_THREADS) {
        error = "a cooperative launch of " + std::to_string(grid) + " x " +
                std::to_string(block) + " threads is more than the emulator runs at once (" +
                std::to_string(MAX_COOPERATIVE_THREADS) + ")";
        return 1;
    }
    body = fn;
    body_arg = arg;
    gridDim.x = grid;
    blockDim.x = block;
    cooperative = is_cooperative;
    dynamic_smem = shared_mem;
    reversed = (launches++ % 2) == 1;
    if (cooperative) {
        if (!start_fibers(grid, block, 0)) return 1;
        fill_block_smems(grid, 0);
        return run_fibers() ? 0 : 1;
    }
    if (!start_fibers(1, block, 0)) return 1;
    for (unsigned i = 0; i < grid; ++i) {
        const unsigned b = reversed ? grid - 1 - i : i;
        for (Fiber& f : fibers) f.block = b;
        fill_block_smems(1, b);
        if (!run_fibers()) return 1;
    }
    return 0;
}

template <typename T>
std::string type_name() {
    if constexpr (std::is_pointer_v<T>) {
        return type_name<std::remove_cv_t<std::remove_pointer_t<T>>>() + "*";
    } else if constexpr (std::is_floating_point_v<T>) {
        return "float" + std::to_string(8 * sizeof(T));
    } else if constexpr (std::is_same_v<T, bool>) {
        return "bool";
    } else if constexpr (std::is_class_v<T> && sizeof(T) == 2) {
        return "uint16";  // a 16-bit storage type (bfloat16 / float16 bits), passed as uint16
    } else {
        static_assert(std::is_integral_v<T>, "kernel parameters are pointers or scalars");
        return std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T));
    }
}

template <typename... A>
struct Launch {
    void (*kernel)(A...);
    void* const* argv;

    template <size_t... I>
    void call(std::index_sequence<I...>) const {
        kernel(*static_cast<std::remove_cv_t<A>*>(argv[I])...);
    }
    static void run(void* self) {
        static_cast<Launch*>(self)->call(std::index_sequence_for<A...>{});
    }
};

template <typename... A>
int launch(void (*kernel)(A...), void* const* argv, unsigned grid, unsigned block,
           size_t shared_mem, bool is_cooperative) {
    Launch<A...> l{kernel, argv};
    return run_grid(grid, block, shared_mem, is_cooperative, &Launch<A...>::run, &l);
}

// The parameter types, comma-separated ("float32*,int32,float64").
template <typename... A>
const char* signature(void (*)(A...)) {
    static const std::string s = [] {
        std::string out;
        ((out += (out.empty() ? "" : ",") + type_name<A>()), ...);
        return out;
    }();
    return s.c_str();
}

}  // namespace emu

inline void __syncthreads() { emu::suspend(emu::State::block_barrier); }

[[noreturn]] inline void __trap() {
    emu::fail("__trap() called");
    __builtin_unreachable();
}

// Atomics and fences: fibers never preempt one another, so a read-modify-write is atomic
// and memory is always coherent.
template <typename T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}

inline void __threadfence() {}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "one word per lane");
    if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only the full-warp mask is emulated");
    const unsigned t = threadIdx.x, self = emu::current, first = self - t;
    std::memcpy(&emu::shuffle_buffer[self], &value, sizeof(T));
    emu::suspend(emu::State::warp_barrier);
    const unsigned partner = (t & ~(emu::WARP - 1u)) | ((t % emu::WARP) ^ (unsigned)lane_mask);
    T out;
    std::memcpy(&out, &emu::shuffle_buffer[partner < blockDim.x ? first + partner : self],
                sizeof(T));
    emu::suspend(emu::State::warp_barrier);
    return out;
}

// kernels/grid_sync.cuh, emulated (see the execution model above).
#define GPUCONV_EMULATED_GRID_SYNC 1
#define GPUCONV_BLOCK_SMEM(name) unsigned char* name = emu::block_smem()

inline void gpuconv_grid_sync(unsigned* arrived, unsigned round) {
    if (!emu::cooperative)
        emu::fail("gpuconv_grid_sync in a launch that is not cooperative: on a GPU the blocks "
                  "need not be resident together and the barrier can hang");
    if (threadIdx.x == 0) *arrived += 1;
    emu::fibers[emu::current].arrived = arrived;
    emu::fibers[emu::current].round = round;
    emu::suspend(emu::State::grid_barrier);
}

template <typename T>
inline T gpuconv_load_cg(const T* p) {
    return *p;
}

extern "C" const char* emu_last_error() { return emu::error.c_str(); }
// After a launch that failed with "memory fault": the address, and 1 read, 2 write, 0 unknown.
extern "C" void* emu_fault_address() { return emu::fault_address; }
extern "C" int emu_fault_kind() { return emu::fault_kind; }

#define EMU_EXPORT(kernel)                                                                   \
    extern "C" int emu_launch_##kernel(void* const* argv, unsigned grid, unsigned block,     \
                                       size_t shared_mem, int cooperative) {                 \
        return emu::launch(kernel, argv, grid, block, shared_mem, cooperative != 0);         \
    }                                                                                        \
    extern "C" const char* emu_signature_##kernel() { return emu::signature(kernel); }

// The tensor-core kernels' wrappers (kernels/mma.cuh): mma, ldmatrix, cp.async, conversions.
#include "mma_emu.h"
