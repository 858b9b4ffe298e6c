// emu.h: the CUDA features gpuconv's kernels use, for g++ on a machine without a GPU.
//
// tests/cuda_emu/fake_cupy.py compiles a kernels/<family>.cu file with `g++ -include emu.h`
// and launches its entry points through emu_launch_<name>, which this header defines for
// every name listed with EMU_EXPORT.
//
// Execution model: the blocks of a grid run one after another; the threads of a block are
// fibers on one OS thread. Every other launch runs its blocks and threads in reverse order,
// so that a kernel whose result depends on the order of threads or blocks without a barrier
// between them (a race on a GPU) gives a different answer on one of the two and fails. A fiber runs until it
// returns or reaches a barrier:
//   __syncthreads()        waits until every thread of the block that has not returned is
//                          waiting there too;
//   __shfl_xor_sync(...)   publishes its value to the warp, waits for the warp's other live
//                          lanes, reads its partner's value, and waits again before the
//                          buffer can be reused.
// A round in which no fiber can run and no barrier can open is a deadlock (a barrier in
// divergent code): the launch fails with that message instead of hanging. __trap() fails the
// launch too. __shared__ variables become statics, which is right because blocks never
// overlap in time.
//
// What this cannot show: timing, memory coalescing, races that need true parallelism
// within a warp, or NVRTC's own diagnostics (tests/test_cuda_sources.py runs nvcc).
#pragma once

#include <setjmp.h>
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

enum class State { ready, block_barrier, warp_barrier, done };

// A fiber is entered once per launch through its ucontext and then switched with
// _setjmp/_longjmp, which unlike swapcontext make no system call. After the kernel body
// returns it parks as done and, resumed, runs the body again for the next block.
struct Fiber {
    ucontext_t entry;
    jmp_buf resume;
    bool started;
    State state;
};

inline jmp_buf scheduler;
inline ucontext_t scheduler_context;
inline std::vector<Fiber> fibers;
inline std::vector<char> stacks;
inline unsigned current = 0;
inline void (*body)(void*) = nullptr;
inline void* body_arg = nullptr;
inline std::string error;
inline unsigned long long shuffle_buffer[1024];
inline bool reversed = false;  // this launch's scheduling order
inline unsigned long long launches = 0;

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

inline void resume(unsigned t) {
    current = t;
    threadIdx.x = t;
    if (_setjmp(scheduler)) return;
    Fiber& f = fibers[t];
    if (f.started) _longjmp(f.resume, 1);
    f.started = true;
    swapcontext(&scheduler_context, &f.entry);
}

// Opens the barriers whose threads have all arrived; false when none could open.
inline bool open_barriers() {
    const unsigned n = (unsigned)fibers.size();
    bool opened = false;
    for (unsigned w = 0; w < n; w += WARP) {
        bool any = false, all = true;
        for (unsigned t = w; t < std::min(n, w + WARP); ++t) {
            if (fibers[t].state == State::done) continue;
            any = true;
            all = all && fibers[t].state == State::warp_barrier;
        }
        if (any && all) {
            for (unsigned t = w; t < std::min(n, w + WARP); ++t)
                if (fibers[t].state == State::warp_barrier) fibers[t].state = State::ready;
            opened = true;
        }
    }
    if (opened) return true;
    bool any = false, all = true;
    for (const Fiber& f : fibers) {
        if (f.state == State::done) continue;
        any = true;
        all = all && f.state == State::block_barrier;
    }
    if (!(any && all)) return false;
    for (Fiber& f : fibers) f.state = State::ready;
    return true;
}

inline void start_fibers(unsigned threads) {
    fibers.assign(threads, Fiber{});
    if (stacks.size() < threads * FIBER_STACK) stacks.resize(threads * FIBER_STACK);
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = fibers[t];
        getcontext(&f.entry);
        f.entry.uc_stack.ss_sp = stacks.data() + t * FIBER_STACK;
        f.entry.uc_stack.ss_size = FIBER_STACK;
        f.entry.uc_link = nullptr;  // fiber_main never returns
        makecontext(&f.entry, fiber_main, 0);
        f.started = false;
    }
}

// Runs one block to completion; false (with `error` set) on a deadlock or a trap.
inline bool run_block() {
    for (Fiber& f : fibers) f.state = State::ready;
    for (;;) {
        bool ran = false, live = false;
        const unsigned n = (unsigned)fibers.size();
        for (unsigned i = 0; i < n; ++i) {
            const unsigned t = reversed ? n - 1 - i : i;
            if (fibers[t].state != State::ready) continue;
            resume(t);
            ran = true;
            if (!error.empty()) return false;
        }
        for (const Fiber& f : fibers) live = live || f.state != State::done;
        if (!live) return true;
        if (!ran && !open_barriers()) {
            error = "deadlock: threads wait at barriers that the rest of the block never reaches";
            return false;
        }
    }
}

// Runs the grid; returns 0, or 1 with the reason in emu_last_error().
inline int run_grid(unsigned grid, unsigned block, void (*fn)(void*), void* arg) {
    error.clear();
    if (grid == 0 || block == 0 || block > 1024) {
        error = "launch with grid " + std::to_string(grid) + " and block " + std::to_string(block);
        return 1;
    }
    body = fn;
    body_arg = arg;
    gridDim.x = grid;
    blockDim.x = block;
    start_fibers(block);
    reversed = (launches++ % 2) == 1;
    for (unsigned i = 0; i < grid; ++i) {
        const unsigned b = reversed ? grid - 1 - i : i;
        blockIdx.x = b;
        if (!run_block()) return 1;
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
int launch(void (*kernel)(A...), void* const* argv, unsigned grid, unsigned block) {
    Launch<A...> l{kernel, argv};
    return run_grid(grid, block, &Launch<A...>::run, &l);
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

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "one word per lane");
    if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only the full-warp mask is emulated");
    const unsigned t = threadIdx.x;
    std::memcpy(&emu::shuffle_buffer[t], &value, sizeof(T));
    emu::suspend(emu::State::warp_barrier);
    const unsigned partner = (t & ~(emu::WARP - 1u)) | ((t % emu::WARP) ^ (unsigned)lane_mask);
    T out;
    std::memcpy(&out, &emu::shuffle_buffer[partner < blockDim.x ? partner : t], sizeof(T));
    emu::suspend(emu::State::warp_barrier);
    return out;
}

extern "C" const char* emu_last_error() { return emu::error.c_str(); }

#define EMU_EXPORT(kernel)                                                                   \
    extern "C" int emu_launch_##kernel(void* const* argv, unsigned grid, unsigned block) {   \
        return emu::launch(kernel, argv, grid, block);                                       \
    }                                                                                        \
    extern "C" const char* emu_signature_##kernel() { return emu::signature(kernel); }
