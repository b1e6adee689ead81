// The packed BQ4 layout and the matrix drivers both NEON tables share (kernels_neon.cpp and
// kernels_neon_dot.cpp include it; nothing else may). They differ only in how one (group, block)
// dot product is formed: widening multiplies on plain NEON, sdot on CPUs with the dot-product
// extension, passed in as a template argument.
//
// Everything here has internal linkage (an anonymous namespace), so each of the two files compiles
// its own copy with its own -march flags. Shared inline or template code with external linkage
// would become weak symbols, and the linker could keep the copy built for armv8.2+dotprod for
// both tables: a Cortex-A72 (Raspberry Pi 4) would then die with SIGILL on the plain path
// (tests/arm checks the SIMD objects hold no weak symbols and runs both paths under qemu).
//
// Layout: groups of 4 rows; per (group, block) 64 bytes of nibbles + the 4 rows' f16 scales.
// Chunk c (0..3, 16 bytes): byte 4*r + k holds q[r][8c + k] in its low nibble and
// q[r][8c + 4 + k] in its high nibble (r: row in group, k: 0..3). Rows past `rows` are zero with
// scale 0. So one 16-byte vector holds 4 consecutive weights of each of the 4 rows.
#pragma once
#include <arm_neon.h>

#include <cstddef>

#include "kernels.h"

namespace bullet {
namespace {

constexpr int64_t PACK_ROWS = 4;

// One packed (group, block): nibbles + 4 f16 scales, 18 bytes per row-block.
struct PackedBlockNeon {
    uint8_t chunk[4][4 * PACK_ROWS];  // chunk c, byte 4 * r + k: q[r][8c + k] | q[r][8c + 4 + k] << 4
    uint16_t scales[PACK_ROWS];       // f16 bits, widened by fcvtl when used
};
static_assert(sizeof(PackedBlockNeon) == 72, "NEON packed block must be 72 bytes");
static_assert(offsetof(PackedBlockNeon, scales) == 64, "NEON packed scales follow the 64 nibble bytes");
static_assert(sizeof(PackedBlockNeon::chunk[0]) == 16, "one chunk is one 16-byte vector");

constexpr int64_t PACK_BLOCK = sizeof(PackedBlockNeon);
constexpr int64_t SCALES_AT = offsetof(PackedBlockNeon, scales);

struct GroupBlock {
    int8x16_t w[8];  // w[j]: 4 rows x weights 4j..4j+3, sign-extended
};

inline void unpack_group_block(const uint8_t* p, GroupBlock& gb) {
    for (int c = 0; c < 4; c++) {
        const int8x16_t v = vreinterpretq_s8_u8(vld1q_u8(p + sizeof(PackedBlockNeon::chunk[0]) * c));
        gb.w[2 * c] = vshrq_n_s8(vshlq_n_s8(v, 4), 4);
        gb.w[2 * c + 1] = vshrq_n_s8(v, 4);
    }
}

// the 4 rows' block scales, f16 -> f32 (exact)
inline float32x4_t group_scales(const uint8_t* p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)(p + SCALES_AT))));
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

// Dot(gb, x): exact int32 dot products of the 4 rows of a (group, block) with one q8 block
template <int32x4_t (*Dot)(const GroupBlock&, const BlockQ8&)>
void matvec_packed(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, float* out) {
    const uint8_t* w = (const uint8_t*)wv;
    const int64_t groups = (rows + PACK_ROWS - 1) / PACK_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t* p = w + g * nb * PACK_BLOCK;
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int64_t b = 0; b < nb; b++, p += PACK_BLOCK) {
            GroupBlock gb;
            unpack_group_block(p, gb);
            const int32x4_t s = Dot(gb, x[b]);
            acc = vfmaq_f32(acc, vcvtq_f32_s32(s), vmulq_n_f32(group_scales(p), x[b].d));
        }
        store_group(out + g * PACK_ROWS, rows - g * PACK_ROWS, acc);
    }
}

// Prefill: each (group, block) is unpacked once and applied to up to 64 tokens.
template <int32x4_t (*Dot)(const GroupBlock&, const BlockQ8&)>
void matmul_packed(const void* wv, int64_t rows, int64_t nb, const BlockQ8* x, int64_t T, float* out, int64_t ldo) {
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
                const float32x4_t dw = group_scales(p);
                const BlockQ8* xb = x + t0 * nb + b;
                for (int64_t t = 0; t < tn; t++, xb += nb) {
                    const int32x4_t s = Dot(gb, *xb);
                    vst1q_f32(acc + 4 * t, vfmaq_f32(vld1q_f32(acc + 4 * t), vcvtq_f32_s32(s), vmulq_n_f32(dw, xb->d)));
                }
            }
            for (int64_t t = 0; t < tn; t++)
                store_group(out + (t0 + t) * ldo + g * PACK_ROWS, rows - g * PACK_ROWS, vld1q_f32(acc + 4 * t));
        }
    }
}

}  // namespace
}  // namespace bullet
