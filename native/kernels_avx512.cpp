// AVX-512 VNNI kernels for BQ4 x q8 (vpdpbusd: u8 x s8 -> s32). Only this file is compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni (plus -mavx2 -mfma -mf16c); dispatch.cpp calls into
// it only after cpuid and xgetbv say the CPU and the OS support those (opmask and ZMM state).
//
// Layout: each BQ4 matrix is repacked once at load into groups of 16 rows, so that one 64-byte
// vector holds 4 consecutive weights of each of the 16 rows and vpdpbusd with the activation's 4
// bytes broadcast leaves each row's partial dot product in its own int32 lane (no horizontal sums).
// Weights are stored as u = q + 8 in [0, 15] (vpdpbusd wants the weights unsigned) and
// dot(u, y) - 8 * sum(y) == dot(q, y) exactly in int32.
//
// Nibble extraction without a shift (matvec): of a byte b = lo | hi << 4 the kernel feeds b & 0x0f
// to one accumulator and b & 0xf0 (= 16 hi) to another; the second sum is exactly 16x the wanted
// one, so an arithmetic shift right by 4 recovers it exactly (with the correction it starts from,
// |sum| <= 16 * 15 * 127 * 16 + 128 * 127 * 32, about 1e6: far from overflow).
// That leaves two independent vpdpbusd chains per block, which also hides part of their latency.
//
// The float side is the AVX2 path's, operation for operation (per block: f32(int dot) times
// (f16 scale * activation scale), fused into the row's accumulator, blocks in ascending order),
// so this path's results equal the AVX2 path's bit for bit. Attention (decode and prefill) has
// its own AVX-512 kernels below (more independent accumulators, masked tails), and SwiGLU runs
// the AVX2 kernel's operations on 16 lanes (the same bits); the other float kernels (rmsnorm,
// softmax, RoPE, dot, axpy) are the AVX2 ones: the table takes their pointers from
// kernels_avx2(), they are short and gained nothing measurable from 512 bits.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels.h"

namespace bullet {

namespace {

// the AVX2 softmax (its polynomial exp), taken from the AVX2 table
void softmax_avx2_(float* x, int64_t n) { kernels_avx2().softmax(x, n); }

// ============================================================================
// q8 activation quantisation (bit-identical to quantize_q8_ref for finite inputs; with a NaN in a
// block the vector max may keep or drop it by lane, where the reference's fmax drops it)
// ============================================================================

void quantize_q8_avx512(const float* x, BlockQ8* y, int64_t n) {
    const int64_t full = n / QK;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t b = 0; b < full; b++) {
        const float* xb = x + b * QK;
        const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        // cvtps2dq rounds half to even (default MXCSR), as nearbyint in the reference; the clamp after
        // it is the AVX2 path's (a NaN converts to INT_MIN and clamps to -127, as in the reference)
        const __m512i i0 = _mm512_min_epi32(hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid))));
        const __m512i i1 = _mm512_min_epi32(hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid))));
        y[b].d = d;
        y[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        // vpmovsdb narrows 16 int32 to 16 int8 in order (values are already within [-127, 127])
        _mm_storeu_si128((__m128i*)y[b].qs, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i*)(y[b].qs + 16), _mm512_cvtsepi32_epi8(i1));
    }
    if (full * QK < n) quantize_q8_block_ref(x + full * QK, n - full * QK, y + full);  // scalar tail
}

// ============================================================================
// BQ4 x q8 on raw blocks (one row; the model uses the packed kernels below)
// ============================================================================

float dot_bq4_q8_avx512(const BlockBQ4* w, const BlockQ8* x, int64_t nb) {
    const __m256i m0f = _mm256_set1_epi8(0x0f), m08 = _mm256_set1_epi8(0x08);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m128i raw = _mm_loadu_si128((const __m128i*)w[b].qs);
        // low nibbles are q[0..15], high nibbles q[16..31]; xor 8 turns q into u = q + 8 in [0, 15]
        __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m0f);
        u = _mm256_xor_si256(u, m08);
        const __m256i yq = _mm256_loadu_si256((const __m256i*)x[b].qs);
        // lane i = sum of bytes 4i..4i+3, the same lanes as AVX2's maddubs + madd
        __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, yq);
        s = _mm256_sub_epi32(s, _mm256_castsi128_si256(_mm_cvtsi32_si128(8 * x[b].sum)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(_cvtsh_ss(w[b].scale) * x[b].d), acc);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

// ============================================================================
// Packed BQ4: groups of 16 rows
// ============================================================================
// A group is nb nibble blocks of 256 bytes (64-byte aligned: one zmm load per chunk), then the
// group's f16 scales, 16 per block, padded to a multiple of 64 bytes.
// Nibble chunk c (0..3) of a block: byte 4*r + k holds u[r][8c + k] in its low nibble and
// u[r][8c + 4 + k] in its high nibble (r: row in group, k: 0..3). Rows past `rows` are q = 0 with
// scale 0, and are never stored.

constexpr int64_t PACK_ROWS = 16;

// The nibbles of one packed (group, block); a group's nb of them are followed by its scales.
struct PackedNibblesAvx512 {
    uint8_t chunk[4][4 * PACK_ROWS];  // chunk c, byte 4 * r + k: u[r][8c + k] | u[r][8c + 4 + k] << 4
};
static_assert(sizeof(PackedNibblesAvx512) == 256, "AVX-512 packed nibbles must be 256 bytes a block");
static_assert(sizeof(PackedNibblesAvx512::chunk[0]) == sizeof(__m512i), "one chunk is one 64-byte vector");

constexpr int64_t NIB_BLOCK = sizeof(PackedNibblesAvx512);
constexpr int64_t CHUNK = sizeof(PackedNibblesAvx512::chunk[0]);

inline int64_t scale_bytes(int64_t nb) { return (nb * PACK_ROWS * 2 + 63) / 64 * 64; }
inline int64_t group_bytes(int64_t nb) { return nb * NIB_BLOCK + scale_bytes(nb); }

int64_t packed_bq4_bytes_avx512(int64_t rows, int64_t nb) {
    return (rows + PACK_ROWS - 1) / PACK_ROWS * group_bytes(nb);
}

void pack_bq4_avx512(const BlockBQ4* w, int64_t rows, int64_t nb, uint8_t* dst) {
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        uint8_t* nib = dst + g * group_bytes(nb);
        uint16_t* scales = (uint16_t*)(nib + nb * NIB_BLOCK);
        std::memset(scales, 0, scale_bytes(nb));
        for (int64_t b = 0; b < nb; b++) {
            uint8_t* p = nib + b * NIB_BLOCK;
            for (int64_t r = 0; r < PACK_ROWS; r++) {
                const int64_t row = g * PACK_ROWS + r;
                uint8_t u[QK];
                if (row < rows) {
                    const BlockBQ4& blk = w[row * nb + b];
                    for (int j = 0; j < QK / 2; j++) {
                        u[j] = (uint8_t)((blk.qs[j] & 0x0f) ^ 0x08);
                        u[j + QK / 2] = (uint8_t)((blk.qs[j] >> 4) ^ 0x08);
                    }
                    scales[b * PACK_ROWS + r] = blk.scale;
                } else {
                    std::memset(u, 8, sizeof u);  // q = 0
                }
                for (int c = 0; c < 4; c++)
                    for (int k = 0; k < 4; k++)
                        p[CHUNK * c + 4 * r + k] = (uint8_t)(u[8 * c + k] | (u[8 * c + 4 + k] << 4));
            }
        }
    }
}

inline __m512i bcast4(const int8_t* q) {
    int32_t v;
    std::memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}

// Exact int32 dot products of the 16 rows of one packed block with one q8 block.
inline __m512i block_dot(const uint8_t* p, const BlockQ8& x, __m512i m0f, __m512i mf0) {
    // hi accumulates 16 * (u_hi . y) and starts at 16 * (-8 * sum(y)), the correction from u to q,
    // so the exact shift by 4 below leaves u_hi . y - 8 * sum(y)
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(-128 * x.sum);
    for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_load_si512((const void*)(p + CHUNK * c));
        lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(v, m0f), bcast4(x.qs + 8 * c));
        hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(v, mf0), bcast4(x.qs + 8 * c + 4));
    }
    return _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));
}

inline __m512 block_scales(const uint16_t* s) { return _mm512_cvtph_ps(_mm256_load_si256((const __m256i*)s)); }

inline void store_group(float* out, int64_t valid, __m512 acc) {
    if (valid >= PACK_ROWS)
        _mm512_storeu_ps(out, acc);
    else
        _mm512_mask_storeu_ps(out, (__mmask16)((1u << valid) - 1), acc);
}

void matvec_bq4_q8_avx512(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, float* out) {
    const uint8_t* w = (const uint8_t*)wv;
    const __m512i m0f = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS, gb = group_bytes(nb);
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t* nib = w + g * gb;
        const uint16_t* sc = (const uint16_t*)(nib + nb * NIB_BLOCK);
        __m512 acc = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const __m512i s = block_dot(nib + b * NIB_BLOCK, x[b], m0f, mf0);
            const __m512 scale = _mm512_mul_ps(block_scales(sc + b * PACK_ROWS), _mm512_set1_ps(x[b].d));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc);
        }
        store_group(out + g * PACK_ROWS, rows - g * PACK_ROWS, acc);
    }
}

// Prefill: NT tokens at a time against one row group; the group's unpacked nibbles of a block are
// shared by the NT tokens and their accumulators stay in registers across all blocks. (Measured:
// 16 tokens a tile is slightly faster than 8; the unpack is then amortised over 16 tokens.)
template <int NT>
inline void group_tokens(const uint8_t* nib, const uint16_t* sc, int64_t nb, const BlockQ8* x, float* out,
                         int64_t ldo, int64_t valid) {
    const __m512i m0f = _mm512_set1_epi8(0x0f);
    __m512 acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* p = nib + b * NIB_BLOCK;
        __m512i u[8];
        for (int c = 0; c < 4; c++) {
            const __m512i v = _mm512_load_si512((const void*)(p + CHUNK * c));
            u[2 * c] = _mm512_and_si512(v, m0f);
            u[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m0f);
        }
        const __m512 dw = block_scales(sc + b * PACK_ROWS);
        for (int t = 0; t < NT; t++) {
            const BlockQ8& xb = x[t * nb + b];
            __m512i s = _mm512_set1_epi32(-8 * xb.sum);
            for (int k = 0; k < 8; k++) s = _mm512_dpbusd_epi32(s, u[k], bcast4(xb.qs + 4 * k));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(xb.d)), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) store_group(out + t * ldo, valid, acc[t]);
}

void matmul_bq4_q8_avx512(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                          int64_t ldo) {
    const uint8_t* w = (const uint8_t*)wv;
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS, gb = group_bytes(nb);
    constexpr int64_t TT = 16;  // 16 accumulators + 8 unpacked vectors fit the 32 zmm registers
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t* nib = w + g * gb;
        const uint16_t* sc = (const uint16_t*)(nib + nb * NIB_BLOCK);
        const int64_t valid = rows - g * PACK_ROWS;
        float* o = out + g * PACK_ROWS;
        int64_t t = 0;
        for (; t + TT <= T; t += TT) group_tokens<TT>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid);
        if (T - t >= 8) { group_tokens<8>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); t += 8; }
        switch (T - t) {
            case 7: group_tokens<7>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            case 6: group_tokens<6>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            case 5: group_tokens<5>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            case 4: group_tokens<4>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            case 3: group_tokens<3>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            case 2: group_tokens<2>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            case 1: group_tokens<1>(nib, sc, nb, x + t * nb, o + t * ldo, ldo, valid); break;
            default: break;
        }
    }
}

// ============================================================================
// Attention (one query head over the cache)
// ============================================================================
// The AVX2 kernel keeps four 8-wide accumulators, so each fused multiply-add waits for the one
// before it in its chain: it runs at the FMA latency, not its throughput. Four 16-wide
// accumulators cover 64 positions (scores) or 64 output elements (att . V) per pass, and the
// tails are masked lanes instead of scalar loops. Every score and output element is still one
// chain of FMAs in the reference's order (d ascending, positions ascending).

// mask of the first min(max(left, 0), 16) lanes
inline __mmask16 lanes(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

// out[j] = scale * sum over i < m of c[i] * rows[i * stride + j], for j < w: the scores (c = q,
// rows = the transposed K) and the output (c = the weights, rows = V) of attention, as in
// kernels_avx2.cpp, 64 columns per pass and the tail as masked lanes. scale 1 is exact.
static void weighted_rows_avx512(const float* c, int64_t m, const float* rows, int64_t stride, int64_t w, float scale,
                                 float* out) {
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t j = 0; j < w; j += 64) {
        const __mmask16 m0 = lanes(w - j), m1 = lanes(w - j - 16), m2 = lanes(w - j - 32), m3 = lanes(w - j - 48);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        // masked loads cost the same as plain ones, so full tiles and the tail share one loop
        for (int64_t i = 0; i < m; i++) {
            const __m512 ci = _mm512_set1_ps(c[i]);
            const float* row = rows + i * stride + j;
            a0 = _mm512_fmadd_ps(ci, _mm512_maskz_loadu_ps(m0, row), a0);
            a1 = _mm512_fmadd_ps(ci, _mm512_maskz_loadu_ps(m1, row + 16), a1);
            a2 = _mm512_fmadd_ps(ci, _mm512_maskz_loadu_ps(m2, row + 32), a2);
            a3 = _mm512_fmadd_ps(ci, _mm512_maskz_loadu_ps(m3, row + 48), a3);
        }
        _mm512_mask_storeu_ps(out + j, m0, _mm512_mul_ps(a0, vscale));
        _mm512_mask_storeu_ps(out + j + 16, m1, _mm512_mul_ps(a1, vscale));
        _mm512_mask_storeu_ps(out + j + 32, m2, _mm512_mul_ps(a2, vscale));
        _mm512_mask_storeu_ps(out + j + 48, m3, _mm512_mul_ps(a3, vscale));
    }
}

void attention_avx512(const float* q, const float* kt, int64_t ks, const float* v, int64_t n, int64_t hd, float* att,
                      float* out) {
    weighted_rows_avx512(q, hd, kt, ks, n, 1.0f / std::sqrt((float)hd), att);  // att[t] = q . K[t] / sqrt(hd)
    softmax_avx2_(att, n);
    weighted_rows_avx512(att, n, v, hd, hd, 1.0f, out);                          // out = sum_t att[t] V[t]
}

// Prefill attention for 4 consecutive queries of one head (query i at position n0 + i sees
// positions 0 .. n0 + i): every K row segment and V row is loaded once for all four. Scores: 32
// positions x 4 queries per pass (8 accumulators); att . V: 32 output elements x 4 queries.
void attention_multi_avx512(const float* q, int64_t qs, int64_t nq, const float* kt, int64_t ks, const float* v,
                            int64_t n0, int64_t hd, float* att, float* out, int64_t os) {
    if (nq < 4) {
        for (int64_t i = 0; i < nq; i++) attention_avx512(q + i * qs, kt, ks, v, n0 + i + 1, hd, att, out + i * os);
        return;
    }
    const int64_t nmax = n0 + 4;  // query i uses the first n0 + i + 1 of these
    const __m512 vscale = _mm512_set1_ps(1.0f / std::sqrt((float)hd));
    const float* q0 = q;
    const float* q1 = q + qs;
    const float* q2 = q + 2 * qs;
    const float* q3 = q + 3 * qs;
    float* a[4] = {att, att + nmax, att + 2 * nmax, att + 3 * nmax};
    for (int64_t t = 0; t < nmax; t += 32) {
        const __mmask16 m0 = lanes(nmax - t), m1 = lanes(nmax - t - 16);
        __m512 s00 = _mm512_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
        for (int64_t d = 0; d < hd; d++) {
            const float* row = kt + d * ks + t;
            const __m512 k0 = _mm512_maskz_loadu_ps(m0, row), k1 = _mm512_maskz_loadu_ps(m1, row + 16);
            __m512 qd = _mm512_set1_ps(q0[d]);
            s00 = _mm512_fmadd_ps(qd, k0, s00);
            s01 = _mm512_fmadd_ps(qd, k1, s01);
            qd = _mm512_set1_ps(q1[d]);
            s10 = _mm512_fmadd_ps(qd, k0, s10);
            s11 = _mm512_fmadd_ps(qd, k1, s11);
            qd = _mm512_set1_ps(q2[d]);
            s20 = _mm512_fmadd_ps(qd, k0, s20);
            s21 = _mm512_fmadd_ps(qd, k1, s21);
            qd = _mm512_set1_ps(q3[d]);
            s30 = _mm512_fmadd_ps(qd, k0, s30);
            s31 = _mm512_fmadd_ps(qd, k1, s31);
        }
        _mm512_mask_storeu_ps(a[0] + t, m0, _mm512_mul_ps(s00, vscale));
        _mm512_mask_storeu_ps(a[0] + t + 16, m1, _mm512_mul_ps(s01, vscale));
        _mm512_mask_storeu_ps(a[1] + t, m0, _mm512_mul_ps(s10, vscale));
        _mm512_mask_storeu_ps(a[1] + t + 16, m1, _mm512_mul_ps(s11, vscale));
        _mm512_mask_storeu_ps(a[2] + t, m0, _mm512_mul_ps(s20, vscale));
        _mm512_mask_storeu_ps(a[2] + t + 16, m1, _mm512_mul_ps(s21, vscale));
        _mm512_mask_storeu_ps(a[3] + t, m0, _mm512_mul_ps(s30, vscale));
        _mm512_mask_storeu_ps(a[3] + t + 16, m1, _mm512_mul_ps(s31, vscale));
    }
    for (int i = 0; i < 4; i++) softmax_avx2_(a[i], n0 + i + 1);
    // Positions 0..n0 are seen by all four queries; n0 + j (j = 1..3) only by queries j..3.
    for (int64_t d0 = 0; d0 < hd; d0 += 32) {
        const __mmask16 m0 = lanes(hd - d0), m1 = lanes(hd - d0 - 16);
        __m512 o00 = _mm512_setzero_ps(), o01 = o00, o10 = o00, o11 = o00, o20 = o00, o21 = o00, o30 = o00, o31 = o00;
        int64_t s = 0;
        for (; s <= n0; s++) {
            const float* row = v + s * hd + d0;
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, row), v1 = _mm512_maskz_loadu_ps(m1, row + 16);
            __m512 w = _mm512_set1_ps(a[0][s]);
            o00 = _mm512_fmadd_ps(w, v0, o00);
            o01 = _mm512_fmadd_ps(w, v1, o01);
            w = _mm512_set1_ps(a[1][s]);
            o10 = _mm512_fmadd_ps(w, v0, o10);
            o11 = _mm512_fmadd_ps(w, v1, o11);
            w = _mm512_set1_ps(a[2][s]);
            o20 = _mm512_fmadd_ps(w, v0, o20);
            o21 = _mm512_fmadd_ps(w, v1, o21);
            w = _mm512_set1_ps(a[3][s]);
            o30 = _mm512_fmadd_ps(w, v0, o30);
            o31 = _mm512_fmadd_ps(w, v1, o31);
        }
        for (; s < nmax; s++) {  // causal tail: position n0 + j for queries j..3
            const float* row = v + s * hd + d0;
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, row), v1 = _mm512_maskz_loadu_ps(m1, row + 16);
            const int64_t j = s - n0;
            __m512 w;
            if (j <= 1) {
                w = _mm512_set1_ps(a[1][s]);
                o10 = _mm512_fmadd_ps(w, v0, o10);
                o11 = _mm512_fmadd_ps(w, v1, o11);
            }
            if (j <= 2) {
                w = _mm512_set1_ps(a[2][s]);
                o20 = _mm512_fmadd_ps(w, v0, o20);
                o21 = _mm512_fmadd_ps(w, v1, o21);
            }
            w = _mm512_set1_ps(a[3][s]);
            o30 = _mm512_fmadd_ps(w, v0, o30);
            o31 = _mm512_fmadd_ps(w, v1, o31);
        }
        _mm512_mask_storeu_ps(out + d0, m0, o00);
        _mm512_mask_storeu_ps(out + d0 + 16, m1, o01);
        _mm512_mask_storeu_ps(out + os + d0, m0, o10);
        _mm512_mask_storeu_ps(out + os + d0 + 16, m1, o11);
        _mm512_mask_storeu_ps(out + 2 * os + d0, m0, o20);
        _mm512_mask_storeu_ps(out + 2 * os + d0 + 16, m1, o21);
        _mm512_mask_storeu_ps(out + 3 * os + d0, m0, o30);
        _mm512_mask_storeu_ps(out + 3 * os + d0 + 16, m1, o31);
    }
}

// ============================================================================
// SwiGLU: 16 lanes of the AVX2 kernel's operations (its polynomial exp, then g / (1 + e^-g) * u),
// one for one, so every element has the AVX2 path's bits; the last n % 16 go to the AVX2 kernel.
// ============================================================================

inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3762626647949f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

void swiglu_avx512(float* g, const float* u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(g + i);
        // -v by the sign bit (vxorps on zmm needs AVX-512 DQ; the integer xor is the same bits)
        const __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
        const __m512 den = _mm512_add_ps(one, exp512(neg));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(v, den), _mm512_loadu_ps(u + i)));
    }
    if (i < n) kernels_avx2().swiglu(g + i, u + i, n - i);
}

KernelTable make_table() noexcept {
    KernelTable t = kernels_avx2();  // rmsnorm, softmax, swiglu, rope, dot_f32/f16, axpy: the AVX2 ones
    t.name = "avx512vnni";
    t.quantize_q8 = quantize_q8_avx512;
    t.dot_bq4_q8 = dot_bq4_q8_avx512;
    t.packed_bq4_bytes = packed_bq4_bytes_avx512;
    t.pack_bq4 = pack_bq4_avx512;
    t.matvec_bq4_q8 = matvec_bq4_q8_avx512;
    t.matmul_bq4_q8 = matmul_bq4_q8_avx512;
    t.attention = attention_avx512;
    t.attention_multi = attention_multi_avx512;
    t.swiglu = swiglu_avx512;
    return t;
}

}  // namespace

const KernelTable& kernels_avx512vnni() noexcept {
    static const KernelTable t = make_table();
    return t;
}

}  // namespace bullet
