// AArch64 NEON kernels with the dot-product extension (ARMv8.2 sdot): the BQ4 x q8 kernels only.
// Compiled with -march=armv8.2-a+dotprod; dispatch.cpp selects this table only when
// getauxval(AT_HWCAP) has HWCAP_ASIMDDP (a Cortex-A72 / Raspberry Pi 4 would raise SIGILL).
// Everything else is shared with the plain NEON table.
#include <arm_neon.h>

#include "kernels.h"
#include "neon_packed.h"


namespace bullet {

// from kernels_neon.cpp (baseline code)
float f16_scale_neon(uint16_t h);

// ============================================================================
// Raw blocks, one row (the reference's order): used for dot_bq4_q8
// ============================================================================

static inline int32_t block_dot_neon_dot(const BlockBQ4& w, const BlockQ8& x) {
    const int8x16_t raw = vreinterpretq_s8_u8(vld1q_u8(w.qs));
    const int8x16_t lo = vshrq_n_s8(vshlq_n_s8(raw, 4), 4);  // q[0..15]
    const int8x16_t hi = vshrq_n_s8(raw, 4);                 // q[16..31]
    int32x4_t s = vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(x.qs));
    s = vdotq_s32(s, hi, vld1q_s8(x.qs + 16));
    return vaddvq_s32(s);
}

static float dot_bq4_q8_neon_dot(const BlockBQ4* w, const BlockQ8* x, int64_t nb) {
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++)
        sum += (f16_scale_neon(w[b].scale) * x[b].d) * (float)block_dot_neon_dot(w[b], x[b]);
    return sum;
}

// ============================================================================
// Packed BQ4 (layout and drivers in neon_packed.h): one sdot-by-lane adds, for each of the 4 rows (the 4
// int32 lanes), 4 weights times the same 4 activation bytes, so the 4 rows' dot products build up
// in one register with no horizontal sums.
// ============================================================================

namespace {

// Exact int32 dot products of the 4 rows of a (group, block) with one q8 block: two sdot chains
// of four (each sdot waits for the one before it in its chain), added at the end (exact).
inline int32x4_t group_block_dot(const GroupBlock& gb, const BlockQ8& x) {
    const int8x16_t y0 = vld1q_s8(x.qs), y1 = vld1q_s8(x.qs + 16);
    int32x4_t s0 = vdotq_laneq_s32(vdupq_n_s32(0), gb.w[0], y0, 0);
    int32x4_t s1 = vdotq_laneq_s32(vdupq_n_s32(0), gb.w[4], y1, 0);
    s0 = vdotq_laneq_s32(s0, gb.w[1], y0, 1);
    s1 = vdotq_laneq_s32(s1, gb.w[5], y1, 1);
    s0 = vdotq_laneq_s32(s0, gb.w[2], y0, 2);
    s1 = vdotq_laneq_s32(s1, gb.w[6], y1, 2);
    s0 = vdotq_laneq_s32(s0, gb.w[3], y0, 3);
    s1 = vdotq_laneq_s32(s1, gb.w[7], y1, 3);
    return vaddq_s32(s0, s1);
}

}  // namespace

// The plain NEON table with the three BQ4 x q8 entries replaced: the packed layout, the q8
// quantisation and every float kernel are the same on both paths.
const KernelTable& kernels_neon_dot() {
    static const KernelTable t = [] {
        KernelTable k = kernels_neon();
        k.name = "neon_dot";
        k.dot_bq4_q8 = dot_bq4_q8_neon_dot;
        k.matvec_bq4_q8 = matvec_packed<group_block_dot>;
        k.matmul_bq4_q8 = matmul_packed<group_block_dot>;
        return k;
    }();
    return t;
}

}  // namespace bullet
