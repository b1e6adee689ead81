// AArch64 NEON kernels with the dot-product extension (ARMv8.2 sdot): the BQ4 x q8 kernels only.
// Compiled with -march=armv8.2-a+dotprod; dispatch.cpp selects this table only when
// getauxval(AT_HWCAP) has HWCAP_ASIMDDP (a Cortex-A72 / Raspberry Pi 4 would raise SIGILL).
// Everything else is shared with the plain NEON table.
#include <arm_neon.h>

#include "kernels.h"

namespace bullet {

// from kernels_neon.cpp
float f16_scale_neon(uint16_t h);
void quantize_q8_neon(const float* x, BlockQ8* y, int64_t n);
float dot_f32_neon(const float* a, const float* b, int64_t n);
float dot_f16_neon(const uint16_t* a, const float* b, int64_t n);
void axpy_neon(float a, const float* x, float* y, int64_t n);
void rmsnorm_neon(float* out, const float* x, const float* w, int64_t n, float eps);
void softmax_neon(float* x, int64_t n);
void attention_neon(const float* q, const float* kt, int64_t ks, const float* v, int64_t n, int64_t hd, float* att,
                    float* out);

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

static int64_t packed_bq4_bytes_neon_dot(int64_t, int64_t) { return 0; }  // raw blocks
static void pack_bq4_neon_dot(const BlockBQ4*, int64_t, int64_t, uint8_t*) {}

static void matvec_bq4_q8_neon_dot(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, float* out) {
    const BlockBQ4* w = (const BlockBQ4*)wv;
    for (int64_t r = 0; r < rows; r++) out[r] = dot_bq4_q8_neon_dot(w + r * nb, x, nb);
}

static void matmul_bq4_q8_neon_dot(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                                   int64_t ldo) {
    const BlockBQ4* w = (const BlockBQ4*)wv;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t t = 0; t < T; t++) out[t * ldo + r] = dot_bq4_q8_neon_dot(w + r * nb, x + t * nb, nb);
}

const KernelTable& kernels_neon_dot() {
    static const KernelTable t = {
        "neon_dot",
        quantize_q8_neon,
        dot_bq4_q8_neon_dot,
        packed_bq4_bytes_neon_dot,
        pack_bq4_neon_dot,
        matvec_bq4_q8_neon_dot,
        matmul_bq4_q8_neon_dot,
        dot_f32_neon,
        dot_f16_neon,
        axpy_neon,
        rmsnorm_neon,
        softmax_neon,
        swiglu_ref,
        rope_ref,
        attention_neon,
    };
    return t;
}

}  // namespace bullet
