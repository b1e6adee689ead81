"""`bullet bench` runs end to end and reports every figure it promises (no speed asserted:
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
                "numpy_decode_tok_s", "numpy_prefill128_ms", "decode_vs_numpy", "prefill_vs_numpy",
                "numpy_f32_decode_tok_s", "numpy_f32_prefill128_ms", "decode_vs_numpy_f32", "prefill_vs_numpy_f32",
                "open_ms", "loop_tok_s", "threads2_tok_s", "threads2_vs_one", "parallel2_vs_one", "processes2_tok_s", "user_raw_decode_tok_s", "user_generate_tok_s", "user_run_tok_s", "user_socket_tok_s"):
        assert res[key] > 0, key
    assert res["parallel2_vs_one"] == res["parallel2_tok_s"] / res["loop_tok_s"]
    assert res["processes2_vs_one"] == res["processes2_tok_s"] / res["loop_tok_s"]   # two processes at once
    # where a token's time goes, beside the roofline (bulletd.bench.roofline)
    br = res["breakdown"]
    assert set(br["part_s"]) == {"qkv", "wo", "ffn", "classifier", "attention", "norm", "rope", "act", "embed",
                                 "sample"}
    assert all(v > 0 for v in br["part_s"].values()) and br["tok_s"] > 0
    assert br["roofline"]["macs"] == 4 * (4 * 128 * 128 + 3 * 128 * 384) + 1024 * 128
    assert br["of_roofline"] == br["tok_s_cpu"] / br["roofline"]["roofline_tok_s"]
    if "core_tok_s" in res:                   # each core alone, in the same rounds
        assert len(res["core_tok_s"]) >= 2 and all(v > 0 for v in res["core_tok_s"].values())
        assert res["pinned2_vs_one"] == res["pinned2_tok_s"] / res["loop_tok_s"] > 0   # two threads, pinned
        assert 1.0 <= res["two_cores_ceiling"] <= 2.0
    for k in ("generate", "run", "socket"):   # the user path beside the raw loop of the same rounds
        assert res[f"user_{k}_vs_raw"] == res[f"user_{k}_tok_s"] / res["user_raw_decode_tok_s"]
    # the NumPy baseline in both weight modes: "numpy" is the fallback as it runs by default
    assert res["numpy_weights"] == "mapped" and res["numpy_f32_weights"] == "f32"
    assert res["numpy_decode_positions"] == res["numpy_f32_decode_positions"] == 32   # --quick
    assert res["decode_vs_numpy"] == res["decode_tok_s"] / res["numpy_decode_tok_s"]
    assert res["decode_vs_numpy_f32"] == res["decode_tok_s"] / res["numpy_f32_decode_tok_s"]
    assert res["numpy_f32_weight_bytes"] == 4 * 1_114_112           # every SMALL matrix (untied), as f32
    assert 6 < res["numpy_f32_weight_bytes"] / res["numpy_bq4_bytes"] < 6.5   # 20 bytes per 32 weights
    kv_f32 = 2 * 4 * 4 * 256 * 128                  # K and V, 4 layers, 256 positions x 128, f32
    assert res["kv_cache_bytes"] in (kv_f32, kv_f32 // 2)   # f32 or f16 cache
    assert res["session_rss_bytes"] >= 0 and res["rss_with_one_session"] > 0
    assert res["kernel_path"] in ("avx512vnni", "avx2", "neon", "neon_dot", "scalar")
    if res["kernel_path"] == "avx512vnni":  # the AVX2 baseline, measured in the same process
        assert res["baseline_kernel_path"] == "avx2"
        assert res["baseline_decode_tok_s"] > 0 and res["baseline_prefill128_ms"] > 0
        assert res["decode_vs_baseline"] > 0 and res["prefill_vs_baseline"] > 0
        assert res["baseline_breakdown"]["roofline"]["path"] == "avx2"
    else:
        assert "baseline_kernel_path" not in res
    assert out["targets"]["decode_tok_s"] == 2000.0


def test_bench_table_labels_both_numpy_baselines():
    from bulletd.bench.runtime import report
    from bulletd.format.synth import REFERENCE
    r = {"shape": "reference", "arch": dict(REFERENCE), "file_bytes": 4_000_000, "kernel_path": "avx2",
         "open_ms": 1.0, "decode_tok_s": 6000.0, "generate_tok_s": 5000.0, "parallel2_tok_s": 9000.0,
         "prefill128_ms": 10.0, "prefill128_tok_s": 12800.0, "ttft128_ms": 11.0, "kv_cache_bytes": 4 << 20,
         "session_rss_bytes": 5 << 20, "rss_with_one_session": 60 << 20,
         "numpy_decode_tok_s": 80.0, "numpy_prefill128_ms": 45.0, "numpy_decode_positions": 128,
         "decode_vs_numpy": 75.0, "prefill_vs_numpy": 4.5,
         "numpy_f32_decode_tok_s": 300.0, "numpy_f32_prefill128_ms": 35.0, "numpy_f32_decode_positions": 256,
         "decode_vs_numpy_f32": 20.0, "prefill_vs_numpy_f32": 3.5,
         "numpy_bq4_bytes": 4_587_520, "numpy_f32_weight_bytes": 29_360_128,
         "user_raw_decode_tok_s": 4000.0, "user_generate_tok_s": 3800.0, "user_run_tok_s": 3000.0,
         "user_socket_tok_s": 3700.0, "user_generate_vs_raw": 0.95, "user_run_vs_raw": 0.75,
         "user_socket_vs_raw": 0.925, "loop_tok_s": 5000.0, "threads2_tok_s": 8500.0, "threads2_vs_one": 1.7,
         "parallel2_vs_one": 1.8, "processes2_tok_s": 9500.0, "processes2_vs_one": 1.9,
         "pinned2_tok_s": 9250.0, "pinned2_vs_one": 1.85, "core_tok_s": {"0": 5000.0, "1": 4000.0}, "two_cores_ceiling": 1.8}
    text = report([r])
    run = next(line for line in text.splitlines() if "bullet run" in line)
    assert "3000.0 tok/s" in run and "0.75x the raw loop: MISSES target" in run
    gen = next(line for line in text.splitlines() if "Model.generate" in line)
    assert "0.95x the raw loop: meets target" in gen
    two = next(line for line in text.splitlines() if "2 sessions, 2 threads" in line)
    assert "1.80x one session; each core alone: cpu0 5000.0, cpu1 4000.0 tok/s, so two at once can reach 1.80x" in two
    procs = next(line for line in text.splitlines() if "2 processes, 1 session each" in line)
    assert "9500.0 tok/s in total" in procs and "(1.90x one session: nothing shared but the machine" in procs
    pinned = next(line for line in text.splitlines() if "each thread pinned to a core of its own" in line)
    assert "9250.0 tok/s in total" in pinned and "(1.85x one session" in pinned
    t2 = next(line for line in text.splitlines() if "1 session, 2 threads" in line)
    assert "1.70x one thread; target >= 1.6x on an idle machine: meets target" in t2
    mapped = next(line for line in text.splitlines() if "numpy (weights read from the map each step, the fallback)" in line)
    f32 = next(line for line in text.splitlines() if "numpy, weights dequantised once to f32 (+29.4 MB, 6.4x the bq4)" in line)
    assert "80.0 tok/s" in mapped and "75.0x" in mapped and "over 128 positions" in mapped and "45.00 ms" in mapped
    assert "300.0 tok/s" in f32 and "20.0x" in f32 and "over 256 positions" in f32 and "35.00 ms" in f32
    target = next(line for line in text.splitlines() if "x NumPy" in line)
    assert "(the fallback, weights mapped): meets target (75.0x; vs NumPy with f32 weights 20.0x)" in target


def test_bench_rejects_an_unknown_shape():
    r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "bench", "--shapes", "huge"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "unknown shape 'huge'" in r.stderr or "native module is unavailable" in r.stderr


def test_bench_grammar_quick_reports_its_figures():
    r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "bench", "--shapes", "grammar", "--quick",
                        "--json"], capture_output=True, text=True, timeout=300)
    if _native_kernels()[0] is None:
        assert r.returncode == 1
        return
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)["results"]
    assert res["shape"] == "grammar" and res["arch"]["vocab_size"] == 4096 and res["arch"]["dim"] == 256
    assert res["trie_ms"] > 0 and res["trie_nodes"] > 4096
    for name in ("home", "calc"):
        for key in ("compile_ms", "first_mask_ms", "first_request_ms", "request_ms", "decode_tok_s",
                    "free_decode_tok_s", "tokens_per_request"):
            assert res[f"{name}_{key}"] > 0, (name, key)
        assert res[f"{name}_decode_vs_free"] > 0
        json.loads(res[f"{name}_example"])          # the cold request's output is a whole document
    from bulletd.bench.runtime import report
    text = report([res])
    assert "STRUCTURED OUTPUT" in text and "decode with the grammar" in text and "first mask" in text
