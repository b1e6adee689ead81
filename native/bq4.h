// BQ4 block layout, fixed by docs/BULLET_SPEC.md. One block holds 32 consecutive weights of a row.
//   bytes 0-1  scale, IEEE half, little-endian
//   byte  2    zero point, int8, always 0 in format v1
//   byte  3    padding, 0
//   bytes 4-19 nibbles: byte j holds q[j] in its low nibble and q[j+16] in its high nibble,
//              each a two's-complement 4-bit value in [-8, 7]
// weight[i] = scale * q[i]
#pragma once
#include <cstddef>
#include <cstdint>

namespace bullet {

constexpr int QK = 32;  // weights per block

struct BlockBQ4 {
    uint16_t scale;   // f16 bits
    int8_t zero;      // always 0 in v1
    uint8_t pad;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(BlockBQ4) == 20, "BQ4 block must be 20 bytes");

// The signed 4-bit weights of a nibble byte: q[j] (low nibble) and q[j + 16] (high nibble).
inline int nib_lo(uint8_t b) { return (int)(int8_t)(uint8_t)(b << 4) >> 4; }
inline int nib_hi(uint8_t b) { return (int)(int8_t)b >> 4; }

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Scalar reference: weights of a row of n / 32 blocks (embedding lookup, tests).
void bq4_dequantize_row_ref(const BlockBQ4* blocks, float* out, int64_t n);   // n % 32 == 0

}  // namespace bullet
