// AArch64 NEON kernels (baseline ARMv8-A: every aarch64 CPU has them). The dot-product
// (sdot) variants of the BQ4 kernels live in kernels_neon_dot.cpp, compiled with +dotprod and
// called only when getauxval(AT_HWCAP) reports HWCAP_ASIMDDP.
//
// Nibbles sign-extend with two shifts (low nibble: shl 4 then arithmetic shr 4; high nibble:
// arithmetic shr 4). The single-row dot works on raw blocks in the reference's order; the model's
// matrix kernels use a 4-row packed layout (pack_bq4_neon, shared with neon_dot) built at load.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels.h"
#include "neon_packed.h"

namespace bullet {

float f16_scale_neon(uint16_t h) {
    __fp16 v;
    std::memcpy(&v, &h, 2);
    return (float)v;
}

// ============================================================================
// q8 activation quantisation (bit-identical to quantize_q8_ref for finite input)
// ============================================================================

void quantize_q8_neon(const float* x, BlockQ8* y, int64_t n) {
    const int64_t full = n / QK;
    const int32x4_t lo = vdupq_n_s32(-127), hi = vdupq_n_s32(127);
    for (int64_t b = 0; b < full; b++) {
        const float* xb = x + b * QK;
        float32x4_t v[8];
        for (int i = 0; i < 8; i++) v[i] = vld1q_f32(xb + 4 * i);
        float32x4_t m = vabsq_f32(v[0]);
        for (int i = 1; i < 8; i++) m = vmaxq_f32(m, vabsq_f32(v[i]));
        const float d = vmaxvq_f32(m) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int32x4_t s = vdupq_n_s32(0);
        int16x8_t h[4];
        for (int i = 0; i < 4; i++) {
            // fcvtns: round to nearest, ties to even, as nearbyint in the reference
            int32x4_t a = vminq_s32(hi, vmaxq_s32(lo, vcvtnq_s32_f32(vmulq_n_f32(v[2 * i], id))));
            int32x4_t c = vminq_s32(hi, vmaxq_s32(lo, vcvtnq_s32_f32(vmulq_n_f32(v[2 * i + 1], id))));
            s = vaddq_s32(s, vaddq_s32(a, c));
            h[i] = vcombine_s16(vmovn_s32(a), vmovn_s32(c));
        }
        y[b].d = d;
        y[b].sum = vaddvq_s32(s);
        vst1q_s8(y[b].qs, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
        vst1q_s8(y[b].qs + 16, vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])));
    }
    if (full * QK < n) quantize_q8_block_ref(x + full * QK, n - full * QK, y + full);  // scalar tail
}

// ============================================================================
// BQ4 x q8 (plain NEON: widening multiplies)
// ============================================================================

static inline int32_t block_dot_neon(const BlockBQ4& w, const BlockQ8& x) {
    const int8x16_t raw = vreinterpretq_s8_u8(vld1q_u8(w.qs));
    const int8x16_t lo = vshrq_n_s8(vshlq_n_s8(raw, 4), 4);  // q[0..15]
    const int8x16_t hi = vshrq_n_s8(raw, 4);                 // q[16..31]
    const int8x16_t y0 = vld1q_s8(x.qs), y1 = vld1q_s8(x.qs + 16);
    // |q * y| <= 8 * 127, two per int16 lane: no overflow
    int16x8_t p0 = vmull_s8(vget_low_s8(lo), vget_low_s8(y0));
    p0 = vmlal_s8(p0, vget_high_s8(lo), vget_high_s8(y0));
    int16x8_t p1 = vmull_s8(vget_low_s8(hi), vget_low_s8(y1));
    p1 = vmlal_s8(p1, vget_high_s8(hi), vget_high_s8(y1));
    return vaddvq_s32(vpadalq_s16(vpaddlq_s16(p0), p1));
}

float dot_bq4_q8_neon(const BlockBQ4* w, const BlockQ8* x, int64_t nb) {
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) sum += (f16_scale_neon(w[b].scale) * x[b].d) * (float)block_dot_neon(w[b], x[b]);
    return sum;
}

// ============================================================================
// Packed BQ4 (layout and drivers in neon_packed.h, shared with neon_dot)
// ============================================================================

int64_t packed_bq4_bytes_neon(int64_t rows, int64_t nb) { return (rows + PACK_ROWS - 1) / PACK_ROWS * nb * PACK_BLOCK; }

void pack_bq4_neon(const BlockBQ4* w, int64_t rows, int64_t nb, uint8_t* dst) {
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t* p = dst + (g * nb + b) * PACK_BLOCK;
            uint16_t* scales = (uint16_t*)(p + SCALES_AT);
            for (int64_t r = 0; r < PACK_ROWS; r++) {
                const int64_t row = g * PACK_ROWS + r;
                uint8_t q[QK];  // 4-bit two's complement nibbles
                if (row < rows) {
                    const BlockBQ4& blk = w[row * nb + b];
                    for (int j = 0; j < QK / 2; j++) {
                        q[j] = blk.qs[j] & 0x0f;
                        q[j + QK / 2] = blk.qs[j] >> 4;
                    }
                    scales[r] = blk.scale;
                } else {
                    for (int j = 0; j < QK; j++) q[j] = 0;
                    scales[r] = 0;
                }
                for (int c = 0; c < 4; c++)
                    for (int k = 0; k < 4; k++) p[sizeof(PackedBlockNeon::chunk[0]) * c + 4 * r + k] = (uint8_t)(q[8 * c + k] | (q[8 * c + 4 + k] << 4));
            }
        }
    }
}

namespace {

// 4 activation bytes 4j..4j+3 of y, copied to all four 32-bit lanes
#define BULLET_BCAST4(y, j) vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(y), j))

// Exact int32 dot products of the 4 rows of a (group, block) with one q8 block, by widening
// multiplies: int16 lanes hold row r's products for 4 positions; |8 * 127| * 8 = 8128 fits.
inline int32x4_t group_block_dot(const GroupBlock& gb, const BlockQ8& x) {
    const int8x16_t y0 = vld1q_s8(x.qs), y1 = vld1q_s8(x.qs + 16);
    int8x16_t yb[8] = {BULLET_BCAST4(y0, 0), BULLET_BCAST4(y0, 1), BULLET_BCAST4(y0, 2), BULLET_BCAST4(y0, 3),
                       BULLET_BCAST4(y1, 0), BULLET_BCAST4(y1, 1), BULLET_BCAST4(y1, 2), BULLET_BCAST4(y1, 3)};
    int16x8_t lo = vmull_s8(vget_low_s8(gb.w[0]), vget_low_s8(yb[0]));  // rows 0, 1
    int16x8_t hi = vmull_high_s8(gb.w[0], yb[0]);                       // rows 2, 3
    for (int j = 1; j < 8; j++) {
        lo = vmlal_s8(lo, vget_low_s8(gb.w[j]), vget_low_s8(yb[j]));
        hi = vmlal_high_s8(hi, gb.w[j], yb[j]);
    }
    // [r0 r0 r1 r1] and [r2 r2 r3 r3] pairs -> [r0 r1 r2 r3]
    return vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
}
#undef BULLET_BCAST4

}  // namespace

// ============================================================================
// Float vectors
// ============================================================================

float dot_f32_neon(const float* a, const float* b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];  // scalar tail, as dot_f32_ref
    return s;
}

float dot_f16_neon(const uint16_t* a, const float* b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(a + i));
        s0 = vfmaq_f32(s0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vcvt_f32_f16(vget_high_f16(h)), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += f16_to_f32(a[i]) * b[i];  // scalar tail, as dot_f16_ref
    return s;
}

void axpy_neon(float a, const float* x, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

void rmsnorm_neon(float* out, const float* x, const float* w, int64_t n, float eps) {
    float ss = dot_f32_neon(x, x, n);
    ss = 1.0f / std::sqrt(ss / (float)n + eps);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vld1q_f32(w + i), vmulq_n_f32(vld1q_f32(x + i), ss)));
    for (; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

// e^x for 4 floats, the same range reduction and Cephes polynomial as exp256 in kernels_avx2.cpp.
static inline float32x4_t exp4_neon(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3762626647949f));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    const float32x4_t y = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

void swiglu_neon(float* g, const float* u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(g + i);
        const float32x4_t den = vaddq_f32(vdupq_n_f32(1.0f), exp4_neon(vnegq_f32(v)));
        vst1q_f32(g + i, vmulq_f32(vdivq_f32(v, den), vld1q_f32(u + i)));
    }
    for (; i < n; i++) g[i] = silu_mul_ref(g[i], u[i]);  // scalar tail, as swiglu_ref
}

// Pairs (2i, 2i+1) de-interleaved by vld2: a' = a cos - b sin, b' = a sin + b cos.
void rope_neon(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float* p = v + h * head_dim;
        int64_t i = 0;
        for (; i + 4 <= half; i += 4) {
            float32x4x2_t ab = vld2q_f32(p + 2 * i);
            const float32x4_t c = vld1q_f32(cos + i), s = vld1q_f32(sin + i);
            float32x4x2_t out;
            out.val[0] = vfmsq_f32(vmulq_f32(ab.val[0], c), ab.val[1], s);
            out.val[1] = vfmaq_f32(vmulq_f32(ab.val[0], s), ab.val[1], c);
            vst2q_f32(p + 2 * i, out);
        }
        for (; i < half; i++) {  // scalar tail, as rope_ref
            const float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * cos[i] - b * sin[i];
            p[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

void softmax_neon(float* x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    int64_t i = 0;
    if (n >= 4) {
        float32x4_t m = vld1q_f32(x);
        for (i = 4; i + 4 <= n; i += 4) m = vmaxq_f32(m, vld1q_f32(x + i));
        mx = vmaxvq_f32(m);
    }
    for (; i < n; i++) mx = std::fmax(mx, x[i]);
    const float32x4_t vmx = vdupq_n_f32(mx);
    float32x4_t vsum = vdupq_n_f32(0.0f);
    for (i = 0; i + 4 <= n; i += 4) {
        const float32x4_t e = exp4_neon(vsubq_f32(vld1q_f32(x + i), vmx));
        vst1q_f32(x + i, e);
        vsum = vaddq_f32(vsum, e);
    }
    float sum = vaddvq_f32(vsum);
    for (; i < n; i++) {  // scalar tail, as softmax_ref
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float32x4_t vs = vdupq_n_f32(sum);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vdivq_f32(vld1q_f32(x + i), vs));
    for (; i < n; i++) x[i] /= sum;
}

// out[j] = scale * sum over i < m of c[i] * rows[i * stride + j], for j < w: the scores (c = q,
// rows = the transposed K) and the output (c = the weights, rows = V) of attention. 32 (then 16,
// then 4) columns per pass in registers: eight FMA chains cover the FMA latency of two pipes.
// One FMA chain per output in i order; the scalar tail is the reference's loop. scale 1 is exact.
static void weighted_rows_neon(const float* c, int64_t m, const float* rows, int64_t stride, int64_t w, float scale,
                               float* out) {
    int64_t j = 0;
    for (; j + 32 <= w; j += 32) {
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t i = 0; i < m; i++) {
            const float* row = rows + i * stride + j;
            a0 = vfmaq_n_f32(a0, vld1q_f32(row), c[i]);
            a1 = vfmaq_n_f32(a1, vld1q_f32(row + 4), c[i]);
            a2 = vfmaq_n_f32(a2, vld1q_f32(row + 8), c[i]);
            a3 = vfmaq_n_f32(a3, vld1q_f32(row + 12), c[i]);
            a4 = vfmaq_n_f32(a4, vld1q_f32(row + 16), c[i]);
            a5 = vfmaq_n_f32(a5, vld1q_f32(row + 20), c[i]);
            a6 = vfmaq_n_f32(a6, vld1q_f32(row + 24), c[i]);
            a7 = vfmaq_n_f32(a7, vld1q_f32(row + 28), c[i]);
        }
        vst1q_f32(out + j, vmulq_n_f32(a0, scale));
        vst1q_f32(out + j + 4, vmulq_n_f32(a1, scale));
        vst1q_f32(out + j + 8, vmulq_n_f32(a2, scale));
        vst1q_f32(out + j + 12, vmulq_n_f32(a3, scale));
        vst1q_f32(out + j + 16, vmulq_n_f32(a4, scale));
        vst1q_f32(out + j + 20, vmulq_n_f32(a5, scale));
        vst1q_f32(out + j + 24, vmulq_n_f32(a6, scale));
        vst1q_f32(out + j + 28, vmulq_n_f32(a7, scale));
    }
    for (; j + 16 <= w; j += 16) {
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < m; i++) {
            const float* row = rows + i * stride + j;
            a0 = vfmaq_n_f32(a0, vld1q_f32(row), c[i]);
            a1 = vfmaq_n_f32(a1, vld1q_f32(row + 4), c[i]);
            a2 = vfmaq_n_f32(a2, vld1q_f32(row + 8), c[i]);
            a3 = vfmaq_n_f32(a3, vld1q_f32(row + 12), c[i]);
        }
        vst1q_f32(out + j, vmulq_n_f32(a0, scale));
        vst1q_f32(out + j + 4, vmulq_n_f32(a1, scale));
        vst1q_f32(out + j + 8, vmulq_n_f32(a2, scale));
        vst1q_f32(out + j + 12, vmulq_n_f32(a3, scale));
    }
    for (; j + 4 <= w; j += 4) {
        float32x4_t a0 = vdupq_n_f32(0);
        for (int64_t i = 0; i < m; i++) a0 = vfmaq_n_f32(a0, vld1q_f32(rows + i * stride + j), c[i]);
        vst1q_f32(out + j, vmulq_n_f32(a0, scale));
    }
    for (; j < w; j++) {  // scalar tail, as attention_ref
        float acc = 0.0f;
        for (int64_t i = 0; i < m; i++) acc += c[i] * rows[i * stride + j];
        out[j] = acc * scale;
    }
}

void attention_neon(const float* q, const float* kt, int64_t ks, const float* v, int64_t n, int64_t hd, float* att,
                    float* out) {
    weighted_rows_neon(q, hd, kt, ks, n, 1.0f / std::sqrt((float)hd), att);  // att[t] = q . K[t] / sqrt(hd)
    softmax_neon(att, n);
    weighted_rows_neon(att, n, v, hd, hd, 1.0f, out);                          // out = sum_t att[t] V[t]
}

// Prefill attention: the single-query kernel per query (each head's K/V block fits in the L2 of
// the small cores this path targets).
void attention_multi_neon(const float* q, int64_t qstride, int64_t nq, const float* kt, int64_t kstride, const float* v,
                          int64_t n0, int64_t hd, float* att, float* out, int64_t ostride) {
    for (int64_t i = 0; i < nq; i++) attention_neon(q + i * qstride, kt, kstride, v, n0 + i + 1, hd, att, out + i * ostride);
}

const KernelTable& kernels_neon() noexcept {
    static const KernelTable t = [] {
        KernelTable k{};
        k.name = "neon";
        k.quantize_q8 = quantize_q8_neon;
        k.dot_bq4_q8 = dot_bq4_q8_neon;
        k.packed_bq4_bytes = packed_bq4_bytes_neon;
        k.pack_bq4 = pack_bq4_neon;
        k.matvec_bq4_q8 = matvec_packed<group_block_dot>;
        k.matmul_bq4_q8 = matmul_packed<group_block_dot>;
        k.dot_f32 = dot_f32_neon;
        k.dot_f16 = dot_f16_neon;
        k.axpy = axpy_neon;
        k.rmsnorm = rmsnorm_neon;
        k.softmax = softmax_neon;
        k.swiglu = swiglu_neon;
        k.rope = rope_neon;
        k.attention = attention_neon;
        k.attention_multi = attention_multi_neon;
        return k;
    }();
    return t;
}

}  // namespace bullet
