// AArch64 NEON kernels with the dot-product extension (ARMv8.2 sdot): the BQ4 x q8 kernels only.
// Compiled with -march=armv8.2-a+dotprod; dispatch.cpp selects this table only when
// getauxval(AT_HWCAP) has HWCAP_ASIMDDP (a Cortex-A72 / Raspberry Pi 4 would raise SIGILL).
// Everything else is shared with the plain NEON table.
#include <arm_neon.h>

#include "kernels.h"
#include "neon_packed.h"


namespace bullet {

// from kernels_neon.cpp (baseline code: the packed layout is shared by both NEON tables)
float f16_scale_neon(uint16_t h);
int64_t packed_bq4_bytes_neon(int64_t rows, int64_t nb);
void pack_bq4_neon(const BlockBQ4* w, int64_t rows, int64_t nb, uint8_t* dst);
void quantize_q8_neon(const float* x, BlockQ8* y, int64_t n);
float dot_f32_neon(const float* a, const float* b, int64_t n);
float dot_f16_neon(const uint16_t* a, const float* b, int64_t n);
void axpy_neon(float a, const float* x, float* y, int64_t n);
void rmsnorm_neon(float* out, const float* x, const float* w, int64_t n, float eps);
void softmax_neon(float* x, int64_t n);
void swiglu_neon(float* g, const float* u, int64_t n);
void rope_neon(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);
void attention_neon(const float* q, const float* kt, int64_t ks, const float* v, int64_t n, int64_t hd, float* att,
                    float* out);
void attention_multi_neon(const float* q, int64_t qstride, int64_t nq, const float* kt, int64_t kstride, const float* v,
                          int64_t n0, int64_t hd, float* att, float* out, int64_t ostride);

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

// Exact int32 dot products of the 4 rows of a (group, block) with one q8 block.
inline int32x4_t group_block_dot(const GroupBlock& gb, const BlockQ8& x) {
    const int8x16_t y0 = vld1q_s8(x.qs), y1 = vld1q_s8(x.qs + 16);
    int32x4_t s = vdotq_laneq_s32(vdupq_n_s32(0), gb.w[0], y0, 0);
    s = vdotq_laneq_s32(s, gb.w[1], y0, 1);
    s = vdotq_laneq_s32(s, gb.w[2], y0, 2);
    s = vdotq_laneq_s32(s, gb.w[3], y0, 3);
    s = vdotq_laneq_s32(s, gb.w[4], y1, 0);
    s = vdotq_laneq_s32(s, gb.w[5], y1, 1);
    s = vdotq_laneq_s32(s, gb.w[6], y1, 2);
    s = vdotq_laneq_s32(s, gb.w[7], y1, 3);
    return s;
}

}  // namespace

const KernelTable& kernels_neon_dot() {
    static const KernelTable t = {
        "neon_dot",
        quantize_q8_neon,
        dot_bq4_q8_neon_dot,
        packed_bq4_bytes_neon,
        pack_bq4_neon,
        matvec_packed<group_block_dot>,
        matmul_packed<group_block_dot>,
        dot_f32_neon,
        dot_f16_neon,
        axpy_neon,
        rmsnorm_neon,
        softmax_neon,
        swiglu_neon,
        rope_neon,
        attention_neon,
        attention_multi_neon,
    };
    return t;
}

}  // namespace bullet
