// Kernel declarations and the dispatch table.
//
// Every kernel exists as a scalar reference (suffix _ref, kernels_ref.cpp) and, where it pays, as
// SIMD variants (_avx2 in kernels_avx2.cpp, avx512vnni in kernels_avx512.cpp, _neon in
// kernels_neon.cpp, _neon_dot in kernels_neon_dot.cpp). Callers never name a variant: they go through a KernelTable, filled once
// by dispatch.cpp from the CPU's features (BULLET_KERNEL=scalar forces the reference table).
//
// Activations are quantised to int8 per 32-element block (BlockQ8, like ggml's q8_0 but with an
// f32 scale and the block's sum of quants, which the AVX2 path uses to turn the signed nibbles
// into unsigned ones). Quantisation is bit-identical on every path for finite inputs: d = amax / 127,
// q = round-half-even(x * (1 / d)); the last, partial block is padded with zeros.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "bq4.h"

namespace bullet {

struct BlockQ8 {
    float d;         // scale: x ~= d * q
    int32_t sum;     // sum of qs, so that dot(q4 + 8, q8) - 8 * sum == dot(q4, q8)
    int8_t qs[QK];
};
static_assert(sizeof(BlockQ8) == 40, "Q8 block must be 40 bytes");

inline int64_t n_blocks(int64_t n) { return (n + QK - 1) / QK; }

struct KernelTable {
    const char* name;  // "scalar", "avx2", "avx512vnni", "neon", "neon_dot"

    // y[0 .. n_blocks(n)) = q8(x[0 .. n)), zero-padded past n
    void (*quantize_q8)(const float* x, BlockQ8* y, int64_t n);
    // sum over nb blocks of d_w * d_x * dot(q_w, q_x)
    float (*dot_bq4_q8)(const BlockBQ4* w, const BlockQ8* x, int64_t nb);
    // A path may repack a BQ4 matrix once, at model load, into a layout its matvec/matmul prefer.
    // packed_bq4_bytes(rows, nb) == 0 means the path works on the raw blocks (no repack).
    int64_t (*packed_bq4_bytes)(int64_t rows, int64_t nb);
    void (*pack_bq4)(const BlockBQ4* w, int64_t rows, int64_t nb, uint8_t* dst);
    // out[r] = dot_bq4_q8(W row r, x), W is (rows, nb blocks), raw or packed as above
    void (*matvec_bq4_q8)(const void* w, int64_t rows, int64_t nb, const BlockQ8* x, float* out);
    // out[t * ldo + r] = dot_bq4_q8(W row r, X row t); X is (T, nb blocks); used by prefill
    void (*matmul_bq4_q8)(const void* w, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                          int64_t ldo);
    float (*dot_f32)(const float* a, const float* b, int64_t n);
    float (*dot_f16)(const uint16_t* a, const float* b, int64_t n);  // a is IEEE half
    void (*axpy)(float a, const float* x, float* y, int64_t n);        // y += a * x
    // out = w * x / sqrt(mean(x^2) + eps)   (llama2.c rmsnorm)
    void (*rmsnorm)(float* out, const float* x, const float* w, int64_t n, float eps);
    void (*softmax)(float* x, int64_t n);  // in place, max-subtracted
    // g = silu(g) * u   (llama2.c SwiGLU)
    void (*swiglu)(float* g, const float* u, int64_t n);
    // rotate pairs (2i, 2i+1) of each of n_heads heads by (cos[i], sin[i]), i < head_dim / 2
    void (*rope)(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);
    // One query head over n cached positions: att[t] = q.K[t] / sqrt(hd); softmax; out = sum att[t] V[t].
    // K is stored transposed, kt[d * kstride + t] (so scores vectorise over positions); V is (n, hd)
    // row-major; att is scratch of length n.
    void (*attention)(const float* q, const float* kt, int64_t kstride, const float* v, int64_t n, int64_t hd,
                      float* att, float* out);
    // Prefill: nq <= 4 consecutive queries of one head (query i at q + i * qstride, output at
    // out + i * ostride) over the same cache; query i sees positions 0 .. n0 + i (causal). Each K and
    // V row is read once for all of them. att: scratch of 4 * (n0 + nq). Fewer than 4 queries run
    // `attention` on each (a decode step of the forward pass gives the same numbers either way).
    void (*attention_multi)(const float* q, int64_t qstride, int64_t nq, const float* kt, int64_t kstride,
                            const float* v, int64_t n0, int64_t hd, float* att, float* out, int64_t ostride);
};

// ---- scalar references (kernels_ref.cpp) ----
void quantize_q8_ref(const float* x, BlockQ8* y, int64_t n);
float dot_bq4_q8_ref(const BlockBQ4* w, const BlockQ8* x, int64_t nb);
void matvec_bq4_q8_ref(const void* w, int64_t rows, int64_t nb, const BlockQ8* x, float* out);
void matmul_bq4_q8_ref(const void* w, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out,
                       int64_t ldo);
float dot_f32_ref(const float* a, const float* b, int64_t n);
float dot_f16_ref(const uint16_t* a, const float* b, int64_t n);
void axpy_ref(float a, const float* x, float* y, int64_t n);
void rmsnorm_ref(float* out, const float* x, const float* w, int64_t n, float eps);
void softmax_ref(float* x, int64_t n);
void swiglu_ref(float* g, const float* u, int64_t n);
void rope_ref(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);
void attention_ref(const float* q, const float* kt, int64_t kstride, const float* v, int64_t n, int64_t hd, float* att,
                   float* out);
void attention_multi_ref(const float* q, int64_t qstride, int64_t nq, const float* kt, int64_t kstride, const float* v,
                         int64_t n0, int64_t hd, float* att, float* out, int64_t ostride);

// Shared scalar pieces used by the SIMD tails (defined in kernels_ref.cpp).
void quantize_q8_block_ref(const float* x, int64_t n, BlockQ8* y);  // one block from n <= 32 values
int32_t dot_bq4_q8_block_ref(const BlockBQ4& w, const BlockQ8& x);  // exact integer dot of one block
float silu_mul_ref(float g, float u);

// ---- tables ----
const KernelTable& kernels_ref();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable& kernels_avx2() noexcept;
// AVX-512 F/BW/VL + VNNI: BQ4 kernels (vpdpbusd), q8 quantisation and attention; the other float
// kernels are AVX2's. Only in builds that compile kernels_avx512.cpp (BULLET_HAVE_AVX512VNNI).
const KernelTable& kernels_avx512vnni() noexcept;
#endif
#if defined(__aarch64__)
const KernelTable& kernels_neon() noexcept;
const KernelTable& kernels_neon_dot();
#endif

// roofline.cpp (for `bullet bench`): one core's best int8 multiply-accumulates per second with the
// named path's dot instruction on register data, and bytes per second reading an n-byte buffer
// over and over with its widest loads. std::invalid_argument for a path this CPU cannot run.
double int8_macs_per_s(const std::string& path);
double read_bytes_per_s(const std::string& path, int64_t n);

// dispatch.cpp: the active table (chosen once) and what the CPU can run.
const KernelTable& active_kernels();
// Table by name ("scalar", "avx2", "avx512vnni", "neon", "neon_dot", or "auto"); nullptr if this
// CPU or build cannot run it.
const KernelTable* kernels_by_name(const char* name);
struct CpuFeatures {
    const char* arch;  // "x86_64", "aarch64", "other"
    bool avx2 = false, fma = false, f16c = false;
    // AVX-512 foundation, byte/word, vector-length and VNNI; each false unless the OS also saves
    // the opmask and ZMM state (XCR0 bits 5-7, with SSE/AVX bits 1-2)
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
    bool neon = false, dotprod = false;
};
CpuFeatures cpu_features();

}  // namespace bullet
