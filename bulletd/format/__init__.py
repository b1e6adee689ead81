"""bulletd.format: the .bullet v1 file (reader, writer), BQ4, the tokenizer block, router features.

Needs only the standard library and NumPy. docs/BULLET_SPEC.md is the specification.
"""
from .bq4 import BLOCK_BYTES, QK, bq4_nbytes, bq4_row_blocks, bq4_rms_error, dequantize_bq4, quantize_bq4
from .container import (FORMAT_VERSION, FOOTER, BulletFile, TensorInfo, build_bullet, lm_tensor_shapes,
                        tensor_nbytes, validate_lm_arch, write_bullet)
from .features import router_features
from .tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, StreamDecoder, Tokenizer, VocabEntry

__all__ = [
    "BLOCK_BYTES", "QK", "bq4_nbytes", "bq4_row_blocks", "bq4_rms_error", "dequantize_bq4", "quantize_bq4",
    "FORMAT_VERSION", "FOOTER", "BulletFile", "TensorInfo", "build_bullet", "lm_tensor_shapes", "tensor_nbytes",
    "validate_lm_arch", "write_bullet", "router_features",
    "TOKEN_BYTE", "TOKEN_CONTROL", "TOKEN_NORMAL", "StreamDecoder", "Tokenizer", "VocabEntry",
]
