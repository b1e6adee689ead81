"""BQ4: the block layout and nibble order, the MSE scale rule, and native/NumPy agreement."""
import numpy as np
import pytest

from bulletd import _native
from bulletd.errors import FormatError
from bulletd.format import bq4_nbytes, bq4_rms_error, dequantize_bq4, quantize_bq4


def test_block_layout_and_nibble_order_are_fixed():
    # one block: q = [-8..7, -8..7] with scale 0.5 -> weights 0.5*q
    q = np.concatenate([np.arange(-8, 8), np.arange(7, -9, -1)]).astype(np.float32)
    blocks = quantize_bq4((0.5 * q)[None, :], rule="absmax")
    assert blocks.shape == (1, 20)
    b = blocks[0].tobytes()
    scale = np.frombuffer(b[0:2], "<f2")[0]
    assert b[2] == 0 and b[3] == 0
    # byte j = q[j] (low nibble) | q[j+16] (high nibble)
    for j in range(16):
        lo, hi = b[4 + j] & 0xF, b[4 + j] >> 4
        lo = lo - 16 if lo >= 8 else lo
        hi = hi - 16 if hi >= 8 else hi
        assert float(scale) * lo == pytest.approx(0.5 * q[j], abs=0.6) and float(scale) * hi == pytest.approx(0.5 * q[j + 16], abs=0.6)
    # an exact example: scale 1.0, q[0] = -8, q[16] = 7, everything else 0
    w = np.zeros((1, 32), np.float32)
    w[0, 0], w[0, 16] = -8.0, 7.0
    raw = quantize_bq4(w).tobytes()
    assert raw[:4] == np.float16(1.0).tobytes() + b"\x00\x00"
    assert raw[4] == 0x78 and raw[5:] == b"\x00" * 15


def test_dequantize_inverts_quantize_on_representable_values():
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(6, 64)).astype(np.float32)
    q[:, 0] = -8   # fixes the scale to exactly 0.25 under either rule's -8 candidate
    w = 0.25 * q
    np.testing.assert_array_equal(dequantize_bq4(quantize_bq4(w), 64), w)


def test_mse_rule_beats_absmax_on_gaussian_weights():
    w = np.random.default_rng(2).standard_normal((256, 256)).astype(np.float32)
    mse, absmax = bq4_rms_error(w, "mse"), bq4_rms_error(w, "absmax")
    assert mse < 0.9 * absmax, (mse, absmax)


def test_cols_not_multiple_of_32_are_zero_padded():
    w = np.random.default_rng(3).standard_normal((3, 172)).astype(np.float32)
    blocks = quantize_bq4(w)
    assert blocks.shape == (3, 6 * 20) and blocks.nbytes == bq4_nbytes(3, 172)
    back = dequantize_bq4(blocks, 192)
    np.testing.assert_array_equal(back[:, 172:], 0.0)
    assert back[:, :172].shape == w.shape


def test_dequantize_rejects_wrong_sizes():
    with pytest.raises(FormatError, match="needs 40 bytes"):
        dequantize_bq4(np.zeros((2, 20), np.uint8), 64)
    with pytest.raises(FormatError, match="2-D matrices"):
        quantize_bq4(np.zeros(32))


@pytest.mark.parametrize("rows,cols", [(1, 32), (7, 96), (33, 256)])
def test_native_dequantize_matches_numpy(rows, cols):
    w = np.random.default_rng(rows * cols).standard_normal((rows, cols)).astype(np.float32)
    blocks = quantize_bq4(w)
    np.testing.assert_array_equal(_native.bq4_dequantize(blocks, rows, cols), dequantize_bq4(blocks, cols))


def test_native_dequantize_rejects_mismatched_sizes():
    with pytest.raises(ValueError):
        _native.bq4_dequantize(np.zeros(20, np.uint8), 1, 64)


def test_dequantize_decodes_every_byte_and_scale_as_the_layout_says():
    """Every nibble byte under scales of both signs, zero, subnormal, inf and NaN: weight[j] =
    f32(scale) * q, q the two's-complement nibble (low nibble -> q[j], high -> q[j+16])."""
    scales = np.array([1.0, -0.5, 0.0, -0.0, 6e-8, 0.1, -65504.0, np.inf, np.nan], np.float16)
    nibble_bytes = np.arange(256, dtype=np.uint8).reshape(16, 16)     # 16 blocks cover all bytes
    blocks = np.zeros((len(scales), 16, 20), np.uint8)
    blocks[:, :, 0:2] = scales.view(np.uint8).reshape(-1, 1, 2)
    blocks[:, :, 4:] = nibble_bytes[None]
    with np.errstate(invalid="ignore"):                               # inf * 0 is NaN
        got = dequantize_bq4(blocks.reshape(len(scales), 16 * 20), 16 * 32)
        signed = lambda n: n - 16 if n >= 8 else n
        want = np.empty((len(scales), 16, 32), np.float32)
        for r, s in enumerate(scales.astype(np.float32)):
            for blk in range(16):
                for j in range(16):
                    byte = int(nibble_bytes[blk, j])
                    want[r, blk, j] = s * np.float32(signed(byte & 0xF))
                    want[r, blk, j + 16] = s * np.float32(signed(byte >> 4))
    want = want.reshape(len(scales), -1)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0.0 too
