// AArch64 NEON kernels with the dot-product extension (ARMv8.2 sdot): the BQ4 x q8 kernels only.
// Compiled with -march=armv8.2-a+dotprod; dispatch.cpp selects this table only when
// getauxval(AT_HWCAP) has HWCAP_ASIMDDP (a Cortex-A72 / Raspberry Pi 4 would raise SIGILL).
// Everything else is shared with the plain NEON table.
#include <arm_neon.h>

#include "kernels.h"


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
// Packed BQ4 (layout in kernels_neon.cpp): one sdot-by-lane adds, for each of the 4 rows (the 4
// int32 lanes), 4 weights times the same 4 activation bytes, so the 4 rows' dot products build up
// in one register with no horizontal sums.
// ============================================================================

constexpr int64_t PACK_ROWS = 4;
constexpr int64_t PACK_BLOCK = 64 + 8;  // nibbles + 4 f16 scales: 18 bytes per row-block

namespace {

struct GroupBlock {
    int8x16_t w[8];  // w[j]: 4 rows x weights 4j..4j+3
};

inline void unpack_group_block(const uint8_t* p, GroupBlock& gb) {
    for (int c = 0; c < 4; c++) {
        const int8x16_t v = vreinterpretq_s8_u8(vld1q_u8(p + 16 * c));
        gb.w[2 * c] = vshrq_n_s8(vshlq_n_s8(v, 4), 4);
        gb.w[2 * c + 1] = vshrq_n_s8(v, 4);
    }
}

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

inline void store_group(float* out, int64_t valid, float32x4_t acc) {
    if (valid >= PACK_ROWS) {
        vst1q_f32(out, acc);
    } else {
        float tmp[4];
        vst1q_f32(tmp, acc);
        for (int64_t r = 0; r < valid; r++) out[r] = tmp[r];
    }
}

}  // namespace

static void matvec_bq4_q8_neon_dot(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, float* out) {
    const uint8_t* w = (const uint8_t*)wv;
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t* p = w + g * nb * PACK_BLOCK;
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int64_t b = 0; b < nb; b++, p += PACK_BLOCK) {
            GroupBlock gb;
            unpack_group_block(p, gb);
            const int32x4_t s = group_block_dot(gb, x[b]);
            acc = vfmaq_f32(acc, vcvtq_f32_s32(s), vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)(p + 64)))), x[b].d));
        }
        store_group(out + g * PACK_ROWS, rows - g * PACK_ROWS, acc);
    }
}

// Prefill: each (group, block) is unpacked once and applied to up to 64 tokens.
static void matmul_bq4_q8_neon_dot(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                                   int64_t ldo) {
    const uint8_t* w = (const uint8_t*)wv;
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    constexpr int64_t TT = 64;
    float acc[TT * PACK_ROWS];
    for (int64_t t0 = 0; t0 < T; t0 += TT) {
        const int64_t tn = T - t0 < TT ? T - t0 : TT;
        for (int64_t g = 0; g < groups; g++) {
            const uint8_t* p = w + g * nb * PACK_BLOCK;
            for (int64_t t = 0; t < tn; t++) vst1q_f32(acc + 4 * t, vdupq_n_f32(0.0f));
            for (int64_t b = 0; b < nb; b++, p += PACK_BLOCK) {
                GroupBlock gb;
                unpack_group_block(p, gb);
                const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)(p + 64))));
                const BlockQ8* xb = x + t0 * nb + b;
                for (int64_t t = 0; t < tn; t++, xb += nb) {
                    const int32x4_t s = group_block_dot(gb, *xb);
                    vst1q_f32(acc + 4 * t, vfmaq_f32(vld1q_f32(acc + 4 * t), vcvtq_f32_s32(s), vmulq_n_f32(dw, xb->d)));
                }
            }
            for (int64_t t = 0; t < tn; t++)
                store_group(out + (t0 + t) * ldo + g * PACK_ROWS, rows - g * PACK_ROWS, vld1q_f32(acc + 4 * t));
        }
    }
}

const KernelTable& kernels_neon_dot() {
    static const KernelTable t = {
        "neon_dot",
        quantize_q8_neon,
        dot_bq4_q8_neon_dot,
        packed_bq4_bytes_neon,
        pack_bq4_neon,
        matvec_bq4_q8_neon_dot,
        matmul_bq4_q8_neon_dot,
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
