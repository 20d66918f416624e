/* CPU emulation of the CUDA C that cgrad/backends/cuda_kernels.py's sources
 * use, so the RawKernels run (not only compile) on a machine without a GPU.
 * tests/python/cuda_emu.py includes this header ahead of a kernel's source,
 * compiles the pair with the host C++ compiler (-ffp-contract=off: no fused
 * multiply-adds, as nvcc --fmad=false) and launches the kernel over a grid.
 *
 * Execution model: the blocks of the grid, and the warps of a block, run one
 * after another; the 32 lanes of a warp are fibers (ucontext) on one thread,
 * switched at every warp shuffle so the lanes exchange values in lockstep,
 * as on the GPU. Atomics need no locking (one warp runs at a time). Only what
 * the sources use is here: threadIdx/blockIdx/blockDim/gridDim .x, the down
 * and the indexed shuffle, atomicAdd/atomicMax, __double_as_longlong,
 * __longlong_as_double and
 * cg_half (float16). A kernel whose lanes do not all reach the same
 * shuffles (divergence the real __shfl_down_sync with a full mask forbids)
 * makes the launch fail. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <cmath>

using std::exp;
using std::fabs;
using std::log;
using std::fmax;
using std::isfinite;
using std::sqrt;

#define __global__
#define __device__
#define __forceinline__ inline

struct cg_emu_dim3 {
    unsigned x, y, z;
};
static cg_emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

/* the float16 sources' storage type and conversions (their own
 * definitions are for the device only: inline PTX) */
typedef _Float16 cg_half;
static inline float cg_half2float(cg_half h) { return (float)h; }
static inline cg_half cg_float2half(float f) { return (cg_half)f; } /* round to nearest even */

static inline long long __double_as_longlong(double d) {
    long long r;
    memcpy(&r, &d, sizeof r);
    return r;
}
static inline double __longlong_as_double(long long l) {
    double r;
    memcpy(&r, &l, sizeof r);
    return r;
}
static inline double atomicAdd(double *p, double v) {
    double o = *p;
    *p = o + v;
    return o;
}
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    unsigned long long o = *p;
    *p = o + v;
    return o;
}
static inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v) {
    unsigned long long o = *p;
    if (v > o) *p = v;
    return o;
}

/* ------------------------------------------------------------ the warp */
enum { CG_EMU_LANES = 32, CG_EMU_STACK = 1 << 16 };

static ucontext_t cg_emu_main_ctx, cg_emu_ctx[CG_EMU_LANES];
static char *cg_emu_stacks;
static int cg_emu_lane;                    /* the running lane */
static int cg_emu_done[CG_EMU_LANES];      /* the lane's kernel returned */
static int cg_emu_waits[CG_EMU_LANES];     /* barriers the lane passed */
static uint64_t cg_emu_slot[CG_EMU_LANES]; /* values a shuffle exchanges */
static void **cg_emu_args;
static void cg_emu_invoke(void **args); /* calls the kernel: generated after its source */

/* The lane waits until every lane of the warp has reached this point. */
static void cg_emu_barrier(void) {
    cg_emu_waits[cg_emu_lane]++;
    swapcontext(&cg_emu_ctx[cg_emu_lane], &cg_emu_main_ctx);
}

template <class V> static V __shfl_down_sync(unsigned mask, V v, int delta) {
    static_assert(sizeof(V) <= sizeof(uint64_t), "shuffle of a value wider than 64 bits");
    (void)mask;
    const int lane = cg_emu_lane;
    memcpy(&cg_emu_slot[lane], &v, sizeof v);
    cg_emu_barrier(); /* every lane has written its value */
    V r = v;          /* a lane past the warp's end keeps its own, as on the GPU */
    if (lane + delta < CG_EMU_LANES) memcpy(&r, &cg_emu_slot[lane + delta], sizeof r);
    cg_emu_barrier(); /* every lane has read before any writes again */
    return r;
}

/* Every lane gets lane src's value (src in 0..31, as the sources use it). */
template <class V> static V __shfl_sync(unsigned mask, V v, int src) {
    static_assert(sizeof(V) <= sizeof(uint64_t), "shuffle of a value wider than 64 bits");
    (void)mask;
    const int lane = cg_emu_lane;
    memcpy(&cg_emu_slot[lane], &v, sizeof v);
    cg_emu_barrier();
    V r;
    memcpy(&r, &cg_emu_slot[src & (CG_EMU_LANES - 1)], sizeof r);
    cg_emu_barrier();
    return r;
}

static void cg_emu_lane_main(void) {
    cg_emu_invoke(cg_emu_args);
    cg_emu_done[cg_emu_lane] = 1;
    /* returning resumes uc_link: the scheduler */
}

/* Runs one warp (lanes base .. base+31 of the current block) to the end.
 * Returns 0, or 1 when its lanes diverged at a shuffle. */
static int cg_emu_run_warp(unsigned base) {
    for (int l = 0; l < CG_EMU_LANES; l++) {
        cg_emu_done[l] = 0;
        cg_emu_waits[l] = 0;
        getcontext(&cg_emu_ctx[l]);
        cg_emu_ctx[l].uc_stack.ss_sp = cg_emu_stacks + (size_t)l * CG_EMU_STACK;
        cg_emu_ctx[l].uc_stack.ss_size = CG_EMU_STACK;
        cg_emu_ctx[l].uc_link = &cg_emu_main_ctx;
        makecontext(&cg_emu_ctx[l], cg_emu_lane_main, 0);
    }
    for (;;) {
        int running = 0;
        for (int l = 0; l < CG_EMU_LANES; l++) {
            if (cg_emu_done[l]) continue;
            cg_emu_lane = l;
            threadIdx.x = base + (unsigned)l;
            swapcontext(&cg_emu_main_ctx, &cg_emu_ctx[l]);
            running += !cg_emu_done[l];
        }
        /* after a round every lane has passed as many barriers as lane 0 */
        for (int l = 1; l < CG_EMU_LANES; l++)
            if (cg_emu_waits[l] != cg_emu_waits[0] || cg_emu_done[l] != cg_emu_done[0]) return 1;
        if (running == 0) return 0;
    }
}

/* Launches the kernel over grid x block threads (block a multiple of 32).
 * Returns 0; 1: the lanes of a warp diverged; 2: a bad launch shape or no
 * memory for the lanes' stacks. */
extern "C" int cg_emu_launch(unsigned grid, unsigned block, void **args) {
    if (grid == 0 || block == 0 || block % CG_EMU_LANES) return 2;
    cg_emu_stacks = (char *)malloc((size_t)CG_EMU_LANES * CG_EMU_STACK);
    if (!cg_emu_stacks) return 2;
    cg_emu_args = args;
    gridDim.x = grid;
    blockDim.x = block;
    gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
    int rc = 0;
    for (unsigned b = 0; b < grid && rc == 0; b++) {
        blockIdx.x = b;
        for (unsigned w = 0; w < block && rc == 0; w += CG_EMU_LANES) rc = cg_emu_run_warp(w);
    }
    free(cg_emu_stacks);
    cg_emu_stacks = NULL;
    return rc;
}
