"""`bullet bench` runs end to end and reports every figure the issue asks for (no speed asserted:
speed is shown by the command, never judged inside tests).

    pytest tests/test_runtime_bench.py -q
"""
import json
import subprocess
import sys

from bulletd.runtime.model import _native_kernels


def test_bench_quick_json_reports_all_figures():
    r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "bench", "--shapes", "small", "--quick",
                        "--json"], capture_output=True, text=True, timeout=300)
    if _native_kernels()[0] is None:
        assert r.returncode == 1 and "native module is unavailable" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (res,) = out["results"]
    assert res["shape"] == "small" and res["arch"]["dim"] == 128
    for key in ("decode_tok_s", "generate_tok_s", "parallel2_tok_s", "prefill128_ms", "prefill128_tok_s", "ttft128_ms",
                "numpy_decode_tok_s", "numpy_prefill128_ms", "decode_vs_numpy", "open_ms"):
        assert res[key] > 0, key
    kv_f32 = 2 * 4 * 4 * 256 * 128                  # K and V, 4 layers, 256 positions x 128, f32
    assert res["kv_cache_bytes"] in (kv_f32, kv_f32 // 2)   # f32 or f16 cache
    assert res["session_rss_bytes"] >= 0 and res["rss_with_one_session"] > 0
    assert res["kernel_path"] in ("avx512vnni", "avx2", "neon", "neon_dot", "scalar")
    if res["kernel_path"] == "avx512vnni":  # the AVX2 baseline, measured in the same process
        assert res["baseline_kernel_path"] == "avx2"
        assert res["baseline_decode_tok_s"] > 0 and res["baseline_prefill128_ms"] > 0
        assert res["decode_vs_baseline"] > 0 and res["prefill_vs_baseline"] > 0
    else:
        assert "baseline_kernel_path" not in res
    assert out["targets"]["decode_tok_s"] == 2000.0


def test_bench_rejects_an_unknown_shape():
    r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "bench", "--shapes", "huge"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "unknown shape 'huge'" in r.stderr or "native module is unavailable" in r.stderr
