// AVX2 + FMA + F16C kernels. Only this file is compiled with -mavx2 -mfma -mf16c; dispatch.cpp
// calls into it only after cpuid says the CPU has those features.
//
// BQ4 matrices are repacked once at load (pack_bq4_avx2) into groups of 8 rows so that one
// 32-byte vector holds 4 consecutive weights of each of the 8 rows: with the activation's 4 bytes
// broadcast to every lane, maddubs + madd leave each row's partial dot product in its own lane, so
// the matrix-vector product needs no horizontal sums. Nibbles are stored as u = q + 8 (unsigned,
// as maddubs requires); dot(u, y) - 8 * sum(y) == dot(q, y) is exact in int32.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstring>

#include "kernels.h"

namespace bullet {

namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

}  // namespace

// ============================================================================
// q8 activation quantisation (bit-identical to quantize_q8_ref for finite inputs; with a NaN in a
// block the vector max may keep or drop it by lane, where the reference's fmax drops it)
// ============================================================================

void quantize_q8_avx2(const float* x, BlockQ8* y, int64_t n) {
    const int64_t full = n / QK;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    for (int64_t b = 0; b < full; b++) {
        const float* xb = x + b * QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8), v2 = _mm256_loadu_ps(xb + 16),
               v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        const float d = hmax(m) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        // cvtps2dq rounds half to even (default MXCSR), as nearbyint in the reference
        __m256i i0 = _mm256_min_epi32(hi, _mm256_max_epi32(lo, _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid))));
        __m256i i1 = _mm256_min_epi32(hi, _mm256_max_epi32(lo, _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid))));
        __m256i i2 = _mm256_min_epi32(hi, _mm256_max_epi32(lo, _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid))));
        __m256i i3 = _mm256_min_epi32(hi, _mm256_max_epi32(lo, _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid))));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        // pack 32-bit -> 16-bit -> 8-bit; the packs interleave 128-bit lanes, permute restores order
        __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        y[b].d = d;
        y[b].sum = _mm_cvtsi128_si32(s4);
        _mm256_storeu_si256((__m256i*)y[b].qs, p);
    }
    if (full * QK < n) quantize_q8_block_ref(x + full * QK, n - full * QK, y + full);  // scalar tail
}

// ============================================================================
// BQ4 x q8 on raw blocks (one row; the model uses the packed kernels below)
// ============================================================================

float dot_bq4_q8_avx2(const BlockBQ4* w, const BlockQ8* x, int64_t nb) {
    const __m256i m0f = _mm256_set1_epi8(0x0f), m08 = _mm256_set1_epi8(0x08), ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m128i raw = _mm_loadu_si128((const __m128i*)w[b].qs);
        // low nibbles are q[0..15], high nibbles q[16..31]; xor 8 turns q into u = q + 8 in [0, 15]
        __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m0f);
        u = _mm256_xor_si256(u, m08);
        const __m256i y = _mm256_loadu_si256((const __m256i*)x[b].qs);
        __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), ones);
        s = _mm256_sub_epi32(s, _mm256_castsi128_si256(_mm_cvtsi32_si128(8 * x[b].sum)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f16(w[b].scale) * x[b].d), acc);
    }
    return hsum(acc);
}

// ============================================================================
// Packed BQ4: groups of 8 rows; per (group, block) 128 bytes of nibbles + the 8 rows' f16 scales
// ============================================================================
// Nibble chunk c (0..3) of a (group, block): byte 4*r + k holds u[r][8c + k] in its low nibble
// and u[r][8c + 4 + k] in its high nibble (r: row in group, k: 0..3). Rows past `rows` are zero
// with scale 0.

constexpr int64_t PACK_ROWS = 8;

// One packed (group, block): 18 bytes per row-block, less than BQ4's 20.
struct PackedBlockAvx2 {
    uint8_t chunk[4][4 * PACK_ROWS];  // chunk c, byte 4 * r + k: u[r][8c + k] | u[r][8c + 4 + k] << 4
    uint16_t scales[PACK_ROWS];       // f16 bits, widened by vcvtph2ps when used
};
static_assert(sizeof(PackedBlockAvx2) == 144, "AVX2 packed block must be 144 bytes");
static_assert(offsetof(PackedBlockAvx2, scales) == 128, "AVX2 packed scales follow the 128 nibble bytes");
static_assert(sizeof(PackedBlockAvx2::chunk[0]) == sizeof(__m256i), "one chunk is one 32-byte vector");

constexpr int64_t PACK_BLOCK = sizeof(PackedBlockAvx2);
constexpr int64_t SCALES_AT = offsetof(PackedBlockAvx2, scales);

static int64_t packed_bq4_bytes_avx2(int64_t rows, int64_t nb) {
    return (rows + PACK_ROWS - 1) / PACK_ROWS * nb * PACK_BLOCK;
}

static void pack_bq4_avx2(const BlockBQ4* w, int64_t rows, int64_t nb, uint8_t* dst) {
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t* p = dst + (g * nb + b) * PACK_BLOCK;
            uint16_t* scales = (uint16_t*)(p + SCALES_AT);
            for (int64_t r = 0; r < PACK_ROWS; r++) {
                const int64_t row = g * PACK_ROWS + r;
                uint8_t u[QK];
                if (row < rows) {
                    const BlockBQ4& blk = w[row * nb + b];
                    for (int j = 0; j < QK / 2; j++) {
                        u[j] = (uint8_t)((blk.qs[j] & 0x0f) ^ 0x08);
                        u[j + QK / 2] = (uint8_t)((blk.qs[j] >> 4) ^ 0x08);
                    }
                    scales[r] = blk.scale;
                } else {
                    std::memset(u, 8, sizeof u);  // q = 0
                    scales[r] = 0;
                }
                for (int c = 0; c < 4; c++)
                    for (int k = 0; k < 4; k++) p[sizeof(PackedBlockAvx2::chunk[0]) * c + 4 * r + k] = (uint8_t)(u[8 * c + k] | (u[8 * c + 4 + k] << 4));
            }
        }
    }
}

namespace {

// Exact int32 dot products of the 8 rows of one packed (group, block) with one q8 block.
inline __m256i group_block_dot(const __m256i u[8], const BlockQ8& x, __m256i ones) {
    const int32_t* y4 = (const int32_t*)x.qs;  // 4 activation bytes at a time
    // int16 accumulation is safe: each maddubs lane is at most 2 * 15 * 127 = 3810, eight sum to 30480
    __m256i s = _mm256_maddubs_epi16(u[0], _mm256_set1_epi32(y4[0]));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[1], _mm256_set1_epi32(y4[1])));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[2], _mm256_set1_epi32(y4[2])));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[3], _mm256_set1_epi32(y4[3])));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[4], _mm256_set1_epi32(y4[4])));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[5], _mm256_set1_epi32(y4[5])));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[6], _mm256_set1_epi32(y4[6])));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[7], _mm256_set1_epi32(y4[7])));
    return _mm256_sub_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(8 * x.sum));
}

inline void unpack_group_block(const uint8_t* p, __m256i u[8], __m256i m0f) {
    for (int c = 0; c < 4; c++) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(p + sizeof(PackedBlockAvx2::chunk[0]) * c));
        u[2 * c] = _mm256_and_si256(v, m0f);
        u[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
    }
}

// the 8 rows' block scales, f16 -> f32 (exact)
inline __m256 load_scales(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + SCALES_AT))); }

inline void store_group(float* out, int64_t stride, int64_t valid, __m256 acc) {
    if (valid >= PACK_ROWS && stride == 1) {
        _mm256_storeu_ps(out, acc);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, acc);
        for (int64_t r = 0; r < valid && r < PACK_ROWS; r++) out[r * stride] = tmp[r];
    }
}

}  // namespace

// The groups are read front to back, which the hardware prefetcher follows (a software prefetch
// a few blocks ahead measured 5 % slower: the loop is bound by its vector instructions).
static void matvec_bq4_q8_avx2(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, float* out) {
    const uint8_t* w = (const uint8_t*)wv;
    const __m256i m0f = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t* p = w + g * nb * PACK_BLOCK;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++, p += PACK_BLOCK) {
            __m256i u[8];
            unpack_group_block(p, u, m0f);
            const __m256i s = group_block_dot(u, x[b], ones);
            const __m256 sc = _mm256_mul_ps(load_scales(p), _mm256_set1_ps(x[b].d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, acc);
        }
        store_group(out + g * PACK_ROWS, 1, rows - g * PACK_ROWS, acc);
    }
}

// Prefill: each (group, block) is unpacked once and applied to up to 64 tokens; the 8-row
// accumulators of those tokens live in a small stack buffer (2 KiB, in L1).
static void matmul_bq4_q8_avx2(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                               int64_t ldo) {
    const uint8_t* w = (const uint8_t*)wv;
    const __m256i m0f = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    constexpr int64_t TT = 64;
    alignas(32) float acc[TT * PACK_ROWS];
    for (int64_t t0 = 0; t0 < T; t0 += TT) {
        const int64_t tn = T - t0 < TT ? T - t0 : TT;
        for (int64_t g = 0; g < groups; g++) {
            const uint8_t* p = w + g * nb * PACK_BLOCK;
            for (int64_t t = 0; t < tn; t++) _mm256_store_ps(acc + t * 8, _mm256_setzero_ps());
            for (int64_t b = 0; b < nb; b++, p += PACK_BLOCK) {
                __m256i u[8];
                unpack_group_block(p, u, m0f);
                const __m256 dw = load_scales(p);
                const BlockQ8* xb = x + t0 * nb + b;
                for (int64_t t = 0; t < tn; t++, xb += nb) {
                    const __m256i s = group_block_dot(u, *xb, ones);
                    const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(xb->d));
                    _mm256_store_ps(acc + t * 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, _mm256_load_ps(acc + t * 8)));
                }
            }
            for (int64_t t = 0; t < tn; t++)
                store_group(out + (t0 + t) * ldo + g * PACK_ROWS, 1, rows - g * PACK_ROWS, _mm256_load_ps(acc + t * 8));
        }
    }
}

// ============================================================================
// Float vectors
// ============================================================================

static float dot_f32_avx2(const float* a, const float* b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];  // scalar tail, as dot_f32_ref
    return s;
}

static float dot_f16_avx2(const uint16_t* a, const float* b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i))), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i + 8))), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i))), _mm256_loadu_ps(b + i), s0);
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += f16_to_f32(a[i]) * b[i];  // scalar tail, as dot_f16_ref
    return s;
}

static void axpy_avx2(float a, const float* x, float* y, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void rmsnorm_avx2(float* out, const float* x, const float* w, int64_t n, float eps) {
    float ss = dot_f32_avx2(x, x, n);
    ss = 1.0f / std::sqrt(ss / (float)n + eps);
    const __m256 vs = _mm256_set1_ps(ss);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(vs, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

// ============================================================================
// exp, softmax, SwiGLU, attention
// ============================================================================

namespace {

// e^x for 8 floats: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes expf
// coefficients), 2^n built in the exponent bits. Within 2 ulp of expf over the clamped range;
// inputs below -87.3 give about 1e-38 instead of 0, which softmax and silu cannot tell apart.
inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3762626647949f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

}  // namespace

static void softmax_avx2(float* x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    int64_t i = 0;
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
        mx = hmax(m);
    }
    for (; i < n; i++) mx = std::fmax(mx, x[i]);
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum(vsum);
    for (; i < n; i++) {  // scalar tail, as softmax_ref
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const __m256 vs = _mm256_set1_ps(sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vs));
    for (; i < n; i++) x[i] /= sum;
}

static void swiglu_avx2(float* g, const float* u, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        const __m256 den = _mm256_add_ps(one, exp256(_mm256_xor_ps(v, sign)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, den), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = silu_mul_ref(g[i], u[i]);
}

// Pairs (2i, 2i+1) = (a, b) -> (a cos - b sin, a sin + b cos): with v = [a b ..], swapped
// v' = [b a ..] and duplicated c = [cos cos ..], s = [sin sin ..], fmaddsub(v, c, v' * s) gives
// exactly that (even lanes subtract, odd lanes add).
static void rope_avx2(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float* p = v + h * head_dim;
        int64_t i = 0;
        for (; i + 4 <= half; i += 4) {
            const __m128 c4 = _mm_loadu_ps(cos + i), s4 = _mm_loadu_ps(sin + i);
            const __m256 c = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
            const __m256 sn = _mm256_set_m128(_mm_unpackhi_ps(s4, s4), _mm_unpacklo_ps(s4, s4));
            const __m256 x = _mm256_loadu_ps(p + 2 * i);
            const __m256 sw = _mm256_permute_ps(x, 0xb1);
            _mm256_storeu_ps(p + 2 * i, _mm256_fmaddsub_ps(x, c, _mm256_mul_ps(sw, sn)));
        }
        for (; i < half; i++) {  // scalar tail, as rope_ref
            const float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * cos[i] - b * sin[i];
            p[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

// out[j] = scale * sum over i < m of c[i] * rows[i * stride + j], for j < w. Both halves of
// attention are this: scores (c = q over the head's dimensions, rows = the transposed K, j = the
// position) and the output (c = the weights over positions, rows = V, j = the element). Columns
// go 64 at a time in eight accumulators (an FMA waits 4 cycles for the one before it in its
// chain; eight chains keep both FMA units busy), so each c[i] is broadcast once per pass and no
// horizontal sums are needed; the last columns (fewer than 64) take one more pass of 32, then of
// 8, the final 8 through masked loads and stores. Every output is one FMA chain in i order.
// scale 1 leaves the sums exact.
namespace {

// lanes [0, left) of 8 set (all if left >= 8, none if left <= 0)
inline __m256i lanes8(int64_t left) {
    const int32_t l = left >= 8 ? 8 : left <= 0 ? 0 : (int32_t)left;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(l), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace

static void weighted_rows_avx2(const float* c, int64_t m, const float* rows, int64_t stride, int64_t w, float scale,
                               float* out) {
    const __m256 vscale = _mm256_set1_ps(scale);
    int64_t j = 0;
    for (; j + 64 <= w; j += 64) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t i = 0; i < m; i++) {
            const __m256 ci = _mm256_set1_ps(c[i]);
            const float* row = rows + i * stride + j;
            a0 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row), a0);
            a1 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 8), a1);
            a2 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 16), a2);
            a3 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 24), a3);
            a4 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 32), a4);
            a5 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 40), a5);
            a6 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 48), a6);
            a7 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 56), a7);
        }
        float* o = out + j;
        _mm256_storeu_ps(o, _mm256_mul_ps(a0, vscale));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(a1, vscale));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(a2, vscale));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(a3, vscale));
        _mm256_storeu_ps(o + 32, _mm256_mul_ps(a4, vscale));
        _mm256_storeu_ps(o + 40, _mm256_mul_ps(a5, vscale));
        _mm256_storeu_ps(o + 48, _mm256_mul_ps(a6, vscale));
        _mm256_storeu_ps(o + 56, _mm256_mul_ps(a7, vscale));
    }
    for (; j + 32 <= w; j += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < m; i++) {
            const __m256 ci = _mm256_set1_ps(c[i]);
            const float* row = rows + i * stride + j;
            a0 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row), a0);
            a1 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 8), a1);
            a2 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 16), a2);
            a3 = _mm256_fmadd_ps(ci, _mm256_loadu_ps(row + 24), a3);
        }
        _mm256_storeu_ps(out + j, _mm256_mul_ps(a0, vscale));
        _mm256_storeu_ps(out + j + 8, _mm256_mul_ps(a1, vscale));
        _mm256_storeu_ps(out + j + 16, _mm256_mul_ps(a2, vscale));
        _mm256_storeu_ps(out + j + 24, _mm256_mul_ps(a3, vscale));
    }
    if (j < w) {  // 1..31 columns: up to four vectors, the last one masked
        const __m256i k0 = lanes8(w - j), k1 = lanes8(w - j - 8), k2 = lanes8(w - j - 16), k3 = lanes8(w - j - 24);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < m; i++) {
            const __m256 ci = _mm256_set1_ps(c[i]);
            const float* row = rows + i * stride + j;
            a0 = _mm256_fmadd_ps(ci, _mm256_maskload_ps(row, k0), a0);
            a1 = _mm256_fmadd_ps(ci, _mm256_maskload_ps(row + 8, k1), a1);
            a2 = _mm256_fmadd_ps(ci, _mm256_maskload_ps(row + 16, k2), a2);
            a3 = _mm256_fmadd_ps(ci, _mm256_maskload_ps(row + 24, k3), a3);
        }
        _mm256_maskstore_ps(out + j, k0, _mm256_mul_ps(a0, vscale));
        _mm256_maskstore_ps(out + j + 8, k1, _mm256_mul_ps(a1, vscale));
        _mm256_maskstore_ps(out + j + 16, k2, _mm256_mul_ps(a2, vscale));
        _mm256_maskstore_ps(out + j + 24, k3, _mm256_mul_ps(a3, vscale));
    }
}

static void attention_avx2(const float* q, const float* kt, int64_t ks, const float* v, int64_t n, int64_t hd,
                           float* att, float* out) {
    weighted_rows_avx2(q, hd, kt, ks, n, 1.0f / std::sqrt((float)hd), att);  // att[t] = q . K[t] / sqrt(hd)
    softmax_avx2(att, n);
    weighted_rows_avx2(att, n, v, hd, hd, 1.0f, out);                          // out = sum_t att[t] V[t]
}

// Prefill attention for up to 4 queries of one head: every K row segment and V row is loaded once
// and used by all of them (the single-query kernel would stream the head's cache 4 times).
static void attention_multi_avx2(const float* q, int64_t qs, int64_t nq, const float* kt, int64_t ks, const float* v,
                                 int64_t n0, int64_t hd, float* att, float* out, int64_t os) {
    if (nq < 4) {
        for (int64_t i = 0; i < nq; i++) attention_avx2(q + i * qs, kt, ks, v, n0 + i + 1, hd, att, out + i * os);
        return;
    }
    const int64_t nmax = n0 + 4;  // query i uses the first n0 + i + 1 of these
    const float scale = 1.0f / std::sqrt((float)hd);
    const __m256 vscale = _mm256_set1_ps(scale);
    const float* q0 = q;
    const float* q1 = q + qs;
    const float* q2 = q + 2 * qs;
    const float* q3 = q + 3 * qs;
    float* a0 = att;
    float* a1 = att + nmax;
    float* a2 = att + 2 * nmax;
    float* a3 = att + 3 * nmax;
    // scores, 8 positions x 4 queries at a time
    int64_t t = 0;
    for (; t + 8 <= nmax; t += 8) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t d = 0; d < hd; d++) {
            const __m256 k = _mm256_loadu_ps(kt + d * ks + t);
            s0 = _mm256_fmadd_ps(_mm256_set1_ps(q0[d]), k, s0);
            s1 = _mm256_fmadd_ps(_mm256_set1_ps(q1[d]), k, s1);
            s2 = _mm256_fmadd_ps(_mm256_set1_ps(q2[d]), k, s2);
            s3 = _mm256_fmadd_ps(_mm256_set1_ps(q3[d]), k, s3);
        }
        _mm256_storeu_ps(a0 + t, _mm256_mul_ps(s0, vscale));
        _mm256_storeu_ps(a1 + t, _mm256_mul_ps(s1, vscale));
        _mm256_storeu_ps(a2 + t, _mm256_mul_ps(s2, vscale));
        _mm256_storeu_ps(a3 + t, _mm256_mul_ps(s3, vscale));
    }
    for (; t < nmax; t++) {  // scalar tail, as attention_ref
        float* rows[4] = {a0, a1, a2, a3};
        const float* qq[4] = {q0, q1, q2, q3};
        for (int i = 0; i < 4; i++) {
            float s = 0.0f;
            for (int64_t d = 0; d < hd; d++) s += qq[i][d] * kt[d * ks + t];
            rows[i][t] = s * scale;
        }
    }
    softmax_avx2(a0, n0 + 1);
    softmax_avx2(a1, n0 + 2);
    softmax_avx2(a2, n0 + 3);
    softmax_avx2(a3, n0 + 4);
    // out_i = sum over its positions s of att_i[s] V[s], 16 output elements x 4 queries in registers.
    // Positions 0..n0 are seen by all four queries; n0 + j (j = 1..3) only by queries j..3.
    int64_t d0 = 0;
    for (; d0 + 16 <= hd; d0 += 16) {
        __m256 o00 = _mm256_setzero_ps(), o01 = o00, o10 = o00, o11 = o00, o20 = o00, o21 = o00, o30 = o00, o31 = o00;
        int64_t s = 0;
        for (; s <= n0; s++) {
            const float* row = v + s * hd + d0;
            const __m256 v0 = _mm256_loadu_ps(row), v1 = _mm256_loadu_ps(row + 8);
            __m256 a = _mm256_set1_ps(a0[s]);
            o00 = _mm256_fmadd_ps(a, v0, o00);
            o01 = _mm256_fmadd_ps(a, v1, o01);
            a = _mm256_set1_ps(a1[s]);
            o10 = _mm256_fmadd_ps(a, v0, o10);
            o11 = _mm256_fmadd_ps(a, v1, o11);
            a = _mm256_set1_ps(a2[s]);
            o20 = _mm256_fmadd_ps(a, v0, o20);
            o21 = _mm256_fmadd_ps(a, v1, o21);
            a = _mm256_set1_ps(a3[s]);
            o30 = _mm256_fmadd_ps(a, v0, o30);
            o31 = _mm256_fmadd_ps(a, v1, o31);
        }
        for (; s < nmax; s++) {  // causal tail: position n0 + j for queries j..3
            const float* row = v + s * hd + d0;
            const __m256 v0 = _mm256_loadu_ps(row), v1 = _mm256_loadu_ps(row + 8);
            const int64_t j = s - n0;
            __m256 a;
            if (j <= 1) {
                a = _mm256_set1_ps(a1[s]);
                o10 = _mm256_fmadd_ps(a, v0, o10);
                o11 = _mm256_fmadd_ps(a, v1, o11);
            }
            if (j <= 2) {
                a = _mm256_set1_ps(a2[s]);
                o20 = _mm256_fmadd_ps(a, v0, o20);
                o21 = _mm256_fmadd_ps(a, v1, o21);
            }
            a = _mm256_set1_ps(a3[s]);
            o30 = _mm256_fmadd_ps(a, v0, o30);
            o31 = _mm256_fmadd_ps(a, v1, o31);
        }
        _mm256_storeu_ps(out + d0, o00);
        _mm256_storeu_ps(out + d0 + 8, o01);
        _mm256_storeu_ps(out + os + d0, o10);
        _mm256_storeu_ps(out + os + d0 + 8, o11);
        _mm256_storeu_ps(out + 2 * os + d0, o20);
        _mm256_storeu_ps(out + 2 * os + d0 + 8, o21);
        _mm256_storeu_ps(out + 3 * os + d0, o30);
        _mm256_storeu_ps(out + 3 * os + d0 + 8, o31);
    }
    for (; d0 < hd; d0++) {  // scalar tail: the reference's per-element order
        const float* as[4] = {a0, a1, a2, a3};
        for (int i = 0; i < 4; i++) {
            float acc = 0.0f;
            for (int64_t s = 0; s < n0 + i + 1; s++) acc += as[i][s] * v[s * hd + d0];
            out[i * os + d0] = acc;
        }
    }
}

const KernelTable& kernels_avx2() noexcept {
    static const KernelTable t = [] {
        KernelTable k{};
        k.name = "avx2";
        k.quantize_q8 = quantize_q8_avx2;
        k.dot_bq4_q8 = dot_bq4_q8_avx2;
        k.packed_bq4_bytes = packed_bq4_bytes_avx2;
        k.pack_bq4 = pack_bq4_avx2;
        k.matvec_bq4_q8 = matvec_bq4_q8_avx2;
        k.matmul_bq4_q8 = matmul_bq4_q8_avx2;
        k.dot_f32 = dot_f32_avx2;
        k.dot_f16 = dot_f16_avx2;
        k.axpy = axpy_avx2;
        k.rmsnorm = rmsnorm_avx2;
        k.softmax = softmax_avx2;
        k.swiglu = swiglu_avx2;
        k.rope = rope_avx2;
        k.attention = attention_avx2;
        k.attention_multi = attention_multi_avx2;
        return k;
    }();
    return t;
}

}  // namespace bullet
