"""GGUF files made for tests with the `gguf` package (the llama.cpp project's writer), as another
tool would make them: no Bullet header, any tensor type, either tokenizer model."""
import numpy as np

from bulletd.format.arch import check_arch, tensor_shapes
from bulletd.gguf.mapping import gguf_name

SMALL_ARCH = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300, max_seq_len=64)


def random_weights(arch: dict, seed: int = 0) -> dict:
    """f32 weights by .bullet name, scaled like a trained model's."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(check_arch(arch)).items():
        if len(shape) == 1:
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    return out


def spm_tokens(n: int):
    """A llama-style vocabulary: <unk> <s> </s>, 256 <0xHH> byte tokens, then pieces."""
    toks = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * 259
    words = ["\u2581the", "\u2581a", "he", "th", "\u2581t", "in", "er", "an", "\u2581o", "on"]
    words += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581"]
    k = 0
    while len(toks) < n:
        w = words[k] if k < len(words) else f"x{k}"
        toks.append(w.encode())
        types.append(1)
        scores.append(-float(k))
        k += 1
    return toks, scores, types


def write_gguf(path, arch: dict, weights: dict, qtype: str = "F32", *, architecture: str = "llama",
               tokenizer: str = "llama", tokens=None, extra=None) -> None:
    """A llama GGUF: matrices as `qtype` (F32, F16, Q4_0, Q8_0), vectors F32."""
    import gguf
    arch = check_arch(arch)
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_context_length(arch["max_seq_len"])
    w.add_embedding_length(arch["dim"])
    w.add_block_count(arch["n_layers"])
    w.add_feed_forward_length(arch["hidden_dim"])
    w.add_head_count(arch["n_heads"])
    w.add_head_count_kv(arch["n_kv_heads"])
    w.add_rope_dimension_count(arch["head_dim"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_name("test model")
    w.add_version("2.1")
    n = arch["vocab_size"]
    if tokens is None:
        tokens = spm_tokens(n)
    toks, scores, types = tokens[:3]
    w.add_tokenizer_model(tokenizer)
    w.add_token_list(toks)
    if scores is not None:
        w.add_token_scores(scores)
    w.add_token_types(types)
    if tokenizer == "gpt2" and len(tokens) > 3:
        w.add_token_merges(tokens[3])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for k, v in (extra or {}).items():
        v(w) if callable(v) else w.add_string(k, v)
    Q = gguf.GGMLQuantizationType
    for name, arr in weights.items():
        gname = gguf_name(name)
        if arr.ndim == 1 or qtype == "F32":
            w.add_tensor(gname, arr.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            t = getattr(Q, qtype)
            w.add_tensor(gname, gguf.quants.quantize(arr, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
