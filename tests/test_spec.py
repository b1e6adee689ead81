"""docs/BULLET_SPEC.md's example hex dump is what the writer produces, and the file it shows reads."""
from pathlib import Path

import numpy as np

from bulletd.format import BulletFile, dequantize_bq4
from bulletd.format.example import example_bytes, hexdump

SPEC = Path(__file__).resolve().parent.parent / "docs" / "BULLET_SPEC.md"


def test_spec_hex_dump_matches_the_writer():
    text = SPEC.read_text()
    block = text.split("<!-- example-dump:begin -->")[1].split("<!-- example-dump:end -->")[0]
    dumped = block.strip().strip("`").strip()
    assert dumped == hexdump(example_bytes())


def test_example_file_reads_as_the_spec_describes(tmp_path):
    p = tmp_path / "example.bullet"
    p.write_bytes(example_bytes())
    with BulletFile.open(p) as bf:
        assert bf.size == 4374 and bf.body_offset == 0x1000 and bf.data_offset == 0x10C0
        w = dequantize_bq4(bf.tensor("w"), 32)
        assert w[1, 0] == -8.0 and w[1, 16] == 7.0 and np.count_nonzero(w[1]) == 2
        np.testing.assert_array_equal(bf.tensor("b"), [1.0, -2.0])
        assert [e.piece for e in bf.vocab] == [b"<s>", b"\n", b"hi", "न".encode()]
        bf.verify_body()
