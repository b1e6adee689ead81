// Scalar reference kernels: the definition every SIMD variant is checked against.
// They fix rounding (q8: round half to even), nibble order (bq4.h) and summation order.
#include <cmath>
#include <cstring>

#include "kernels.h"

namespace bullet {

// ============================================================================
// Activation quantisation (q8, per 32-element block)
// ============================================================================

void quantize_q8_block_ref(const float* x, int64_t n, BlockQ8* y) {
    float amax = 0.0f;
    for (int64_t j = 0; j < n; j++) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = d;
    int32_t sum = 0;
    for (int64_t j = 0; j < QK; j++) {
        // nearbyintf rounds half to even in the default rounding mode, like cvtps2dq and fcvtns
        // |x * id| <= 127 already; the clamp only keeps a NaN or inf from overflowing the int8
        const int32_t q = j < n ? (int32_t)std::fmin(std::fmax(std::nearbyint(x[j] * id), -127.0f), 127.0f) : 0;
        y->qs[j] = (int8_t)q;
        sum += q;
    }
    y->sum = sum;
}

void quantize_q8_ref(const float* x, BlockQ8* y, int64_t n) {
    const int64_t nb = n_blocks(n);
    for (int64_t b = 0; b < nb; b++) {
        const int64_t len = (b + 1) * QK <= n ? QK : n - b * QK;
        quantize_q8_block_ref(x + b * QK, len, y + b);
    }
}

// ============================================================================
// BQ4 x Q8 integer dot products
// ============================================================================

static int64_t packed_bq4_bytes_ref(int64_t, int64_t) { return 0; }  // works on raw blocks
static void pack_bq4_ref(const BlockBQ4*, int64_t, int64_t, uint8_t*) {}


int32_t dot_bq4_q8_block_ref(const BlockBQ4& w, const BlockQ8& x) {
    int32_t s = 0;
    for (int j = 0; j < QK / 2; j++) {
        s += nib_lo(w.qs[j]) * (int32_t)x.qs[j];
        s += nib_hi(w.qs[j]) * (int32_t)x.qs[j + QK / 2];
    }
    return s;
}

float dot_bq4_q8_ref(const BlockBQ4* w, const BlockQ8* x, int64_t nb) {
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) sum += (f16_to_f32(w[b].scale) * x[b].d) * (float)dot_bq4_q8_block_ref(w[b], x[b]);
    return sum;
}

void matvec_bq4_q8_ref(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, float* out) {
    const BlockBQ4* w = (const BlockBQ4*)wv;
    for (int64_t r = 0; r < rows; r++) out[r] = dot_bq4_q8_ref(w + r * nb, x, nb);
}

void matmul_bq4_q8_ref(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                       int64_t ldo) {
    const BlockBQ4* w = (const BlockBQ4*)wv;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t t = 0; t < T; t++) out[t * ldo + r] = dot_bq4_q8_ref(w + r * nb, x + t * nb, nb);
}

// ============================================================================
// Float vectors
// ============================================================================

float dot_f32_ref(const float* a, const float* b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

float dot_f16_ref(const uint16_t* a, const float* b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += f16_to_f32(a[i]) * b[i];
    return s;
}

void axpy_ref(float a, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void rmsnorm_ref(float* out, const float* x, const float* w, int64_t n, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / std::sqrt(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

void softmax_ref(float* x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = std::fmax(mx, x[i]);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

float silu_mul_ref(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

void swiglu_ref(float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = silu_mul_ref(g[i], u[i]);
}

void rope_ref(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
    for (int64_t h = 0; h < n_heads; h++) {
        float* p = v + h * head_dim;
        for (int64_t i = 0; i < head_dim / 2; i++) {
            const float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * cos[i] - b * sin[i];
            p[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

void attention_ref(const float* q, const float* kt, int64_t kstride, const float* v, int64_t n, int64_t hd, float* att,
                   float* out) {
    const float scale = 1.0f / std::sqrt((float)hd);
    for (int64_t t = 0; t < n; t++) {
        float s = 0.0f;
        for (int64_t d = 0; d < hd; d++) s += q[d] * kt[d * kstride + t];
        att[t] = s * scale;
    }
    softmax_ref(att, n);
    for (int64_t i = 0; i < hd; i++) out[i] = 0.0f;
    for (int64_t t = 0; t < n; t++) axpy_ref(att[t], v + t * hd, out, hd);
}

void attention_multi_ref(const float* q, int64_t qstride, int64_t nq, const float* kt, int64_t kstride, const float* v,
                         int64_t n0, int64_t hd, float* att, float* out, int64_t ostride) {
    for (int64_t i = 0; i < nq; i++) attention_ref(q + i * qstride, kt, kstride, v, n0 + i + 1, hd, att, out + i * ostride);
}

const KernelTable& kernels_ref() {
    static const KernelTable t = [] {
        KernelTable k{};
        k.name = "scalar";
        k.quantize_q8 = quantize_q8_ref;
        k.dot_bq4_q8 = dot_bq4_q8_ref;
        k.packed_bq4_bytes = packed_bq4_bytes_ref;
        k.pack_bq4 = pack_bq4_ref;
        k.matvec_bq4_q8 = matvec_bq4_q8_ref;
        k.matmul_bq4_q8 = matmul_bq4_q8_ref;
        k.dot_f32 = dot_f32_ref;
        k.dot_f16 = dot_f16_ref;
        k.axpy = axpy_ref;
        k.rmsnorm = rmsnorm_ref;
        k.softmax = softmax_ref;
        k.swiglu = swiglu_ref;
        k.rope = rope_ref;
        k.attention = attention_ref;
        k.attention_multi = attention_multi_ref;
        return k;
    }();
    return t;
}

}  // namespace bullet
