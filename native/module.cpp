// pybind11 module bulletd._native. Python reaches it only through bulletd/kernels.py.
//
// Exposes: kernel_path(), cpu_features(), available_kernels(), Model, Session (the contract in
// docs/ARCHITECTURE.md), and k_* entry points that run one kernel on a named path, used by the
// parity tests (tests/test_kernels.py). Every long computation releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "model.h"
#include "sampling.h"
#include "generate.h"

namespace py = pybind11;
using namespace bullet;

namespace {

using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using u8arr = py::array_t<uint8_t, py::array::c_style>;

const KernelTable& table(const std::string& path) {
    // "auto" is the dispatch's choice, BULLET_KERNEL included (as kernel_path() reports it)
    if (path == "auto") return active_kernels();
    const KernelTable* t = kernels_by_name(path.c_str());
    if (!t) throw std::invalid_argument("kernel path '" + path + "' is unknown or not supported by this CPU/build");
    return *t;
}

// ---------------------------------------------------------------------------
// Model / Session wrappers
// ---------------------------------------------------------------------------

int64_t cfg_int(const py::dict& c, const char* key) {
    if (!c.contains(key)) throw std::invalid_argument(std::string("config: missing '") + key + "'");
    py::object v = c[key];
    // Python ints and NumPy integer scalars (anything with __index__), but not bools
    if (py::isinstance<py::bool_>(v) || !PyIndex_Check(v.ptr()))
        throw std::invalid_argument(std::string("config ") + key + ": expected an integer, found " +
                                    std::string(py::str(py::type::of(v).attr("__name__"))));
    try {
        return py::int_(v).cast<int64_t>();
    } catch (const py::cast_error&) {
        throw std::invalid_argument(std::string("config ") + key + ": integer out of range");
    }
}

float cfg_float(const py::dict& c, const char* key, float dflt) {
    if (!c.contains(key) || c[key].is_none()) return dflt;
    py::object v = c[key];
    if (py::isinstance<py::bool_>(v) || (!py::isinstance<py::float_>(v) && !py::isinstance<py::int_>(v)))
        throw std::invalid_argument(std::string("config ") + key + ": expected a number");
    const double d = v.cast<double>();
    check_config_float(key, d);  // the range of the value given, before rounding to float
    return (float)d;
}

Config parse_config(const py::dict& c) {
    Config cfg;
    cfg.dim = cfg_int(c, "dim");
    cfg.n_layers = cfg_int(c, "n_layers");
    cfg.n_heads = cfg_int(c, "n_heads");
    cfg.n_kv_heads = cfg_int(c, "n_kv_heads");
    cfg.hidden_dim = cfg_int(c, "hidden_dim");
    cfg.vocab_size = cfg_int(c, "vocab_size");
    cfg.max_seq_len = cfg_int(c, "max_seq_len");
    if (c.contains("head_dim") && !c["head_dim"].is_none()) {
        cfg.head_dim_ = cfg_int(c, "head_dim");
        if (cfg.head_dim_ < 1)  // 0 in a Config means "dim / n_heads"; given, it must be a size
            throw std::invalid_argument("config head_dim: expected an integer >= 1, found " + std::to_string(cfg.head_dim_));
    }
    if (c.contains("max_kv_bytes") && !c["max_kv_bytes"].is_none()) {
        cfg.max_kv_bytes = cfg_int(c, "max_kv_bytes");
        if (cfg.max_kv_bytes < 1)
            throw std::invalid_argument("config max_kv_bytes: expected an integer >= 1, found " +
                                        std::to_string(cfg.max_kv_bytes));
    }
    cfg.norm_eps = cfg_float(c, "norm_eps", 1e-5f);
    cfg.rope_theta = cfg_float(c, "rope_theta", 10000.0f);
    if (c.contains("tied_embeddings")) {
        py::object v = c["tied_embeddings"];
        if (!py::isinstance<py::bool_>(v)) throw std::invalid_argument("config tied_embeddings: expected true or false");
        cfg.tied = v.cast<bool>();
    }
    validate_config(cfg);
    return cfg;
}

struct PyModel {
    std::shared_ptr<Model> core;
    py::dict keep;  // the arrays the Model points into
    py::dict config;
};

PyModel make_model(const py::dict& config, const py::dict& tensors, const std::string& kernel) {
    const KernelTable& kt = table(kernel);
    Config cfg = parse_config(config);
    PyModel pm;
    std::map<std::string, TensorView> views;
    for (auto item : tensors) {
        if (!py::isinstance<py::str>(item.first)) throw std::invalid_argument("tensors: keys must be strings");
        const std::string name = item.first.cast<std::string>();
        if (!py::isinstance<py::array>(item.second))
            throw std::invalid_argument("tensor " + name + ": expected a NumPy array");
        py::array a = py::reinterpret_borrow<py::array>(item.second);
        TensorView v;
        const py::dtype dt = a.dtype();
        if (dt.is(py::dtype::of<float>()) || (dt.kind() == 'f' && dt.itemsize() == 4))
            v.dtype = DType::F32;
        else if (dt.kind() == 'f' && dt.itemsize() == 2)
            v.dtype = DType::F16;
        else if (dt.kind() == 'u' && dt.itemsize() == 1)
            v.dtype = DType::BQ4;
        else
            throw std::invalid_argument("tensor " + name + ": dtype " + std::string(py::str(dt)) +
                                        " is not float32, float16 or uint8 (bq4 blocks)");
        if (!(a.flags() & py::array::c_style)) throw std::invalid_argument("tensor " + name + ": array is not C-contiguous");
        if (dt.byteorder() == '>') throw std::invalid_argument("tensor " + name + ": big-endian arrays are not supported");
        for (py::ssize_t i = 0; i < a.ndim(); i++) v.shape.push_back((int64_t)a.shape(i));
        v.data = a.data();
        v.nbytes = (int64_t)a.nbytes();
        views[name] = v;
        pm.keep[item.first] = a;
    }
    pm.core = std::make_shared<Model>(cfg, views, &kt);
    pm.config = config;
    return pm;
}

struct PySession {
    std::shared_ptr<Session> core;
    py::object model;  // keeps the PyModel (and its arrays) alive
};

}  // namespace

// The arguments decode and decode_grammar share, checked once. logits is written in place: it
// must be the caller's own float32 buffer, not a copy.
static void check_decode_args(const py::array_t<float, py::array::c_style>& logits, int64_t vocab, int64_t pending,
                              int64_t n, const py::array_t<double, py::array::c_style | py::array::forcecast>& coins,
                              const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& seen,
                              const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& stop_ids,
                              double temperature, double top_p, float penalty) {
    if (logits.ndim() != 1 || logits.shape(0) != vocab || !logits.writeable())
        throw std::invalid_argument("decode: logits must be a writable float32 array of " + std::to_string(vocab) +
                                    " values");
    if (n < 0 || n > 1 << 20) throw std::invalid_argument("decode: n must be in 0..2^20");
    if (pending >= vocab) throw std::invalid_argument("decode: pending token id out of range");
    if (coins.ndim() != 1 || coins.shape(0) < n) throw std::invalid_argument("decode: coins must hold n values");
    if (seen.ndim() != 1 || stop_ids.ndim() != 1) throw std::invalid_argument("decode: seen and stop_ids must be 1-D");
    if (!(temperature >= 0.0) || !(top_p > 0.0) || !(penalty > 0.0f))
        throw std::invalid_argument("decode: temperature >= 0, top_p > 0 and penalty > 0 required");
    for (int64_t i = 0; temperature != 0.0 && i < n; i++)
        if (!(coins.data()[i] >= 0.0 && coins.data()[i] < 1.0))
            throw std::invalid_argument("decode: coins must lie in [0, 1)");
}

PYBIND11_MODULE(_native, m) {
    m.doc() = "Bullet OS native kernels and forward pass (reach it through bulletd.kernels)";

    m.attr("QK") = QK;
    m.attr("BQ4_BLOCK_BYTES") = (int)sizeof(BlockBQ4);
    m.def("set_arch_limits", [](const py::dict& d) {
        ArchLimits l;
        l.dim = cfg_int(d, "dim");
        l.n_layers = cfg_int(d, "n_layers");
        l.n_heads = cfg_int(d, "n_heads");
        l.hidden_dim = cfg_int(d, "hidden_dim");
        l.vocab_size = cfg_int(d, "vocab_size");
        l.max_seq_len = cfg_int(d, "max_seq_len");
        l.head_dim = cfg_int(d, "head_dim");
        l.kv_bytes = cfg_int(d, "kv_bytes");
        if (!d.contains("max_float")) throw std::invalid_argument("limits: missing 'max_float'");
        l.max_float = d["max_float"].cast<double>();
        set_arch_limits(l);
    }, "Set the config limits (bulletd.format.arch.native_limits(); bulletd.kernels calls it on import)");
    m.def("kernel_path", []() { return std::string(active_kernels().name); },
          "Active kernel path: avx512vnni, avx2, neon_dot, neon or scalar (BULLET_KERNEL=scalar forces scalar)");
    m.def("cpu_features", []() {
        const CpuFeatures f = cpu_features();
        py::dict d;
        d["arch"] = f.arch;
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f;
        d["avx512bw"] = f.avx512bw;
        d["avx512vl"] = f.avx512vl;
        d["avx512vnni"] = f.avx512vnni;
        d["neon"] = f.neon;
        d["dotprod"] = f.dotprod;
        return d;
    });
    m.def("available_kernels", []() {
        std::vector<std::string> out;
        for (const char* n : {"scalar", "avx2", "avx512vnni", "neon", "neon_dot"})
            if (kernels_by_name(n)) out.push_back(n);
        return out;
    });

    py::class_<PyModel>(m, "Model")
        .def(py::init(&make_model), py::arg("config"), py::arg("tensors"), py::arg("kernel") = "auto")
        .def_property_readonly("kernel_path", [](const PyModel& p) { return std::string(p.core->k->name); })
        .def_property_readonly("weight_bytes", [](const PyModel& p) { return p.core->weight_bytes; })
        .def_property_readonly("packed_bytes", [](const PyModel& p) { return p.core->packed_bytes; },
                               "bytes of the kernel path's repacked BQ4 copies (0 on the scalar path)")
        .def_property_readonly("vocab_size", [](const PyModel& p) { return p.core->cfg.vocab_size; })
        .def_property_readonly("max_seq_len", [](const PyModel& p) { return p.core->cfg.max_seq_len; })
        .def_property_readonly("config", [](const PyModel& p) { return p.config; });

    py::class_<PySession>(m, "Session")
        .def(py::init([](py::object model, int64_t chunk) {
                 if (!py::isinstance<PyModel>(model)) throw std::invalid_argument("Session(model): expected a _native.Model");
                 if (chunk < 1 || chunk > 4096) throw std::invalid_argument("prefill_chunk: expected 1..4096");
                 PySession s;
                 s.core = std::make_shared<Session>(model.cast<PyModel&>().core, chunk);
                 s.model = model;
                 return s;
             }),
             py::arg("model"), py::arg("prefill_chunk") = 64)
        .def("forward",
             [](PySession& s, int64_t token, int64_t pos) {
                 py::array_t<float> out(s.core->model().cfg.vocab_size);
                 float* o = out.mutable_data();
                 {
                     py::gil_scoped_release release;
                     s.core->forward(token, pos, o);
                 }
                 return out;
             },
             py::arg("token"), py::arg("pos"), "Logits (vocab,) for `token` at position `pos`; GIL released")
        .def("prefill",
             [](PySession& s, const std::vector<int64_t>& tokens, int64_t pos) {
                 py::array_t<float> out(s.core->model().cfg.vocab_size);
                 float* o = out.mutable_data();
                 {
                     py::gil_scoped_release release;
                     s.core->prefill(tokens.data(), (int64_t)tokens.size(), pos, o);
                 }
                 return out;
             },
             py::arg("tokens"), py::arg("pos"), "Logits (vocab,) of the last of `tokens` placed at pos..; GIL released")
        .def("decode",
             [](PySession& s, py::array_t<float, py::array::c_style> logits, int64_t pending, int64_t pos, int64_t n,
                py::array_t<double, py::array::c_style | py::array::forcecast> coins,
                py::array_t<int64_t, py::array::c_style | py::array::forcecast> seen, double temperature, int64_t top_k,
                double top_p, float penalty, py::array_t<int64_t, py::array::c_style | py::array::forcecast> stop_ids) {
                 const int64_t vocab = s.core->model().cfg.vocab_size;
                 check_decode_args(logits, vocab, pending, n, coins, seen, stop_ids, temperature, top_p, penalty);
                 SampleParams sp{temperature, top_k, top_p, penalty};
                 float* lp = logits.mutable_data();
                 DecodeResult r;
                 {
                     py::gil_scoped_release release;
                     r = decode_batch(*s.core, lp, pending, pos, n, coins.data(), seen.data(), seen.shape(0), sp,
                                      stop_ids.data(), stop_ids.shape(0));
                 }
                 static const char* names[] = {"count", "stop_id", "nonfinite"};
                 return py::make_tuple(r.tokens, names[(int)r.end], r.pos);
             },
             py::arg("logits").noconvert(), py::arg("pending"), py::arg("pos"), py::arg("n"), py::arg("coins"), py::arg("seen"),
             py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("penalty"), py::arg("stop_ids"),
             "Sample up to n tokens, running each through the model before the next draw (the last one is not "
             "run: pass it as `pending` next time). Returns (tokens, end, next_pos); end is 'count', 'stop_id' "
             "(last token is a stop id) or 'nonfinite'. GIL released for the whole batch.")
        .def("decode_grammar",
             [](PySession& s, py::array_t<float, py::array::c_style> logits, int64_t pending, int64_t pos, int64_t n,
                py::array_t<double, py::array::c_style | py::array::forcecast> coins,
                py::array_t<int64_t, py::array::c_style | py::array::forcecast> seen, double temperature, int64_t top_k,
                double top_p, float penalty, py::array_t<int64_t, py::array::c_style | py::array::forcecast> stop_ids,
                std::shared_ptr<TokenAutomaton> automaton, int64_t state) {
                 const int64_t vocab = s.core->model().cfg.vocab_size;
                 check_decode_args(logits, vocab, pending, n, coins, seen, stop_ids, temperature, top_p, penalty);
                 if (!automaton) throw std::invalid_argument("decode: no grammar automaton");
                 SampleParams sp{temperature, top_k, top_p, penalty};
                 float* lp = logits.mutable_data();
                 DecodeResult r;
                 {
                     py::gil_scoped_release release;
                     r = decode_grammar(*s.core, lp, pending, pos, n, coins.data(), seen.data(), seen.shape(0), sp,
                                        stop_ids.data(), stop_ids.shape(0), *automaton, state);
                 }
                 static const char* names[] = {"count", "stop_id", "nonfinite", "expand", "complete"};
                 return py::make_tuple(r.tokens, names[(int)r.end], r.pos, r.state);
             },
             py::arg("logits").noconvert(), py::arg("pending"), py::arg("pos"), py::arg("n"), py::arg("coins"), py::arg("seen"),
             py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("penalty"), py::arg("stop_ids"),
             py::arg("automaton"), py::arg("state"),
             "decode() under a grammar: draws among the ids the automaton's state allows and follows the "
             "transitions. Returns (tokens, end, next_pos, state); end is 'count', 'stop_id', 'nonfinite', "
             "'expand' (the state has no row yet) or 'complete' (the document is complete). GIL released.")
        .def_property("threads", [](const PySession& s) { return s.core->threads(); },
                      [](PySession& s, int n) {
                          py::gil_scoped_release release;  // a pool's workers start or end
                          s.core->set_threads(n);
                      },
                      "Threads one step runs on (1..64): matrix products and attention heads split among them; "
                      "the logits do not depend on it")
        .def_property("profiling", [](const PySession& s) { return s.core->profiling(); },
                      [](PySession& s, bool on) { s.core->set_profile(on); },
                      "Per-part timers of decode steps on one thread (turning them on clears them)")
        .def_property_readonly("profile",
                               [](const PySession& s) {
                                   const Profile& p = s.core->profile();
                                   py::dict d;
                                   for (int i = 0; i < PROF_PARTS; i++) d[profile_part_name(i)] = p.ns[i] * 1e-9;
                                   d["steps"] = p.steps;
                                   return d;
                               },
                               "Seconds spent in each part (qkv, wo, ffn, classifier, attention, norm, rope, "
                               "act, embed, sample) over `steps` profiled forward steps")
        .def_property_readonly("kv_cache_bytes", [](const PySession& s) { return s.core->kv_cache_bytes(); })
        .def_property_readonly("scratch_bytes", [](const PySession& s) { return s.core->scratch_bytes(); })
        .def_property_readonly("valid_len", [](const PySession& s) { return s.core->valid_len(); })
        .def_property_readonly("model", [](const PySession& s) { return s.model; });

    m.def("int8_macs_per_s",
          [](const std::string& path) {
              py::gil_scoped_release r;
              return int8_macs_per_s(path);
          },
          py::arg("path"), "One core's best int8 multiply-accumulates per second with the path's dot instruction");
    m.def("read_bytes_per_s",
          [](const std::string& path, int64_t n) {
              py::gil_scoped_release r;
              return read_bytes_per_s(path, n);
          },
          py::arg("path"), py::arg("n"), "Bytes per second reading an n-byte buffer again and again (one core)");

    // ---- single kernels on a named path (parity tests) ----
    m.def("k_quantize_q8", [](const std::string& path, farr x) {
        const KernelTable& k = table(path);
        if (x.ndim() != 1) throw std::invalid_argument("x must be 1-D");
        const int64_t n = x.size(), nb = n_blocks(n);
        std::vector<BlockQ8> q(nb);
        k.quantize_q8(x.data(), q.data(), n);
        py::array_t<float> d(nb);
        py::array_t<int32_t> sum(nb);
        py::array_t<int8_t> qs({nb, (int64_t)QK});
        for (int64_t b = 0; b < nb; b++) {
            d.mutable_data()[b] = q[b].d;
            sum.mutable_data()[b] = q[b].sum;
            std::memcpy(qs.mutable_data() + b * QK, q[b].qs, QK);
        }
        return py::make_tuple(d, sum, qs);
    });
    // Y = W @ X^T for BQ4 W (rows, cols) and X (T, cols), activations quantised on the same path.
    // T == 1 uses matvec, T > 1 matmul (as the forward pass does).
    m.def("k_matmul_bq4", [](const std::string& path, u8arr blocks, int64_t rows, int64_t cols, farr x) {
        const KernelTable& k = table(path);
        if (rows < 0 || cols <= 0) throw std::invalid_argument("rows/cols must be positive");
        const int64_t nb = n_blocks(cols);
        if (blocks.nbytes() != rows * nb * (int64_t)sizeof(BlockBQ4))
            throw std::invalid_argument("blocks: expected " + std::to_string(rows * nb * 20) + " bytes, found " +
                                        std::to_string(blocks.nbytes()));
        if (x.ndim() != 2 || x.shape(1) != cols) throw std::invalid_argument("x must be (T, cols)");
        const int64_t T = x.shape(0);
        std::vector<BlockQ8> q(T * nb);
        py::array_t<float> out({T, rows});
        const void* w = blocks.data();
        // the path's repacked layout, exactly as Model builds it
        std::vector<uint8_t> packed;
        const int64_t pb = k.packed_bq4_bytes(rows, nb);
        if (pb > 0) {
            packed.resize(pb + 64);
            uint8_t* p = packed.data() + (64 - ((uintptr_t)packed.data() % 64)) % 64;
            k.pack_bq4((const BlockBQ4*)blocks.data(), rows, nb, p);
            w = p;
        }
        const float* xp = x.data();
        float* o = out.mutable_data();
        {
            py::gil_scoped_release r;
            for (int64_t t = 0; t < T; t++) k.quantize_q8(xp + t * cols, q.data() + t * nb, cols);
            if (T == 1)
                k.matvec_bq4_q8(w, rows, nb, q.data(), o);
            else
                k.matmul_bq4_q8(w, rows, nb, q.data(), T, o, rows);
        }
        return out;
    });
    m.def("k_dot_bq4_q8", [](const std::string& path, u8arr blocks, farr x) {
        const KernelTable& k = table(path);
        const int64_t nb = (int64_t)blocks.nbytes() / 20;
        if (blocks.nbytes() % 20 || x.ndim() != 1 || n_blocks(x.size()) != nb)
            throw std::invalid_argument("blocks must hold n_blocks(len(x)) blocks");
        std::vector<BlockQ8> q(nb);
        k.quantize_q8(x.data(), q.data(), x.size());
        return k.dot_bq4_q8((const BlockBQ4*)blocks.data(), q.data(), nb);
    });
    m.def("k_dot_f32", [](const std::string& path, farr a, farr b) {
        if (a.size() != b.size()) throw std::invalid_argument("length mismatch");
        return table(path).dot_f32(a.data(), b.data(), a.size());
    });
    m.def("k_dot_f16", [](const std::string& path, py::array_t<uint16_t, py::array::c_style> a, farr b) {
        if (a.size() != b.size()) throw std::invalid_argument("length mismatch");
        return table(path).dot_f16(a.data(), b.data(), a.size());
    });
    m.def("k_axpy", [](const std::string& path, float a, farr x, farr y) {
        if (x.size() != y.size()) throw std::invalid_argument("length mismatch");
        py::array_t<float> out(y.size());
        std::memcpy(out.mutable_data(), y.data(), y.size() * 4);
        table(path).axpy(a, x.data(), out.mutable_data(), x.size());
        return out;
    });
    m.def("k_rmsnorm", [](const std::string& path, farr x, farr w, float eps) {
        if (x.size() != w.size()) throw std::invalid_argument("length mismatch");
        py::array_t<float> out(x.size());
        table(path).rmsnorm(out.mutable_data(), x.data(), w.data(), x.size(), eps);
        return out;
    });
    m.def("k_softmax", [](const std::string& path, farr x) {
        py::array_t<float> out(x.size());
        std::memcpy(out.mutable_data(), x.data(), x.size() * 4);
        table(path).softmax(out.mutable_data(), x.size());
        return out;
    });
    m.def("k_swiglu", [](const std::string& path, farr g, farr u) {
        if (g.size() != u.size()) throw std::invalid_argument("length mismatch");
        py::array_t<float> out(g.size());
        std::memcpy(out.mutable_data(), g.data(), g.size() * 4);
        table(path).swiglu(out.mutable_data(), u.data(), g.size());
        return out;
    });
    m.def("k_rope", [](const std::string& path, farr v, int64_t n_heads, int64_t head_dim, farr cos, farr sin) {
        if (v.size() != n_heads * head_dim || cos.size() != head_dim / 2 || sin.size() != head_dim / 2)
            throw std::invalid_argument("shape mismatch");
        py::array_t<float> out(v.size());
        std::memcpy(out.mutable_data(), v.data(), v.size() * 4);
        table(path).rope(out.mutable_data(), n_heads, head_dim, cos.data(), sin.data());
        return out;
    });
    m.def("k_attention", [](const std::string& path, farr q, farr k, farr v) {
        if (k.ndim() != 2 || v.ndim() != 2 || k.shape(1) != q.size() || v.shape(0) != k.shape(0) ||
            v.shape(1) != k.shape(1) || k.shape(0) < 1)
            throw std::invalid_argument("q (hd,), k and v (n, hd)");
        const int64_t n = k.shape(0), hd = q.size();
        // the cache layout: K transposed with a row stride larger than n, as in a session
        const int64_t stride = n + 5;
        std::vector<float> att(n), kt(hd * stride, 0.0f);
        for (int64_t t = 0; t < n; t++)
            for (int64_t d = 0; d < hd; d++) kt[d * stride + t] = k.data()[t * hd + d];
        py::array_t<float> out(hd);
        table(path).attention(q.data(), kt.data(), stride, v.data(), n, hd, att.data(), out.mutable_data());
        return out;
    });
    // q (nq, hd) consecutive queries whose positions are n0 .. n0 + nq - 1; k, v (n0 + nq, hd)
    m.def("k_attention_multi", [](const std::string& path, farr q, farr k, farr v, int64_t n0) {
        if (q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2 || q.shape(0) < 1 || q.shape(0) > 4 ||
            k.shape(1) != q.shape(1) || v.shape(1) != q.shape(1) || n0 < 0 || k.shape(0) != n0 + q.shape(0) ||
            v.shape(0) != k.shape(0))
            throw std::invalid_argument("q (nq <= 4, hd), k and v (n0 + nq, hd)");
        const int64_t nq = q.shape(0), hd = q.shape(1), n = k.shape(0);
        const int64_t stride = n + 3;
        std::vector<float> att(4 * (n + 4)), kt(hd * stride, 0.0f);
        for (int64_t t = 0; t < n; t++)
            for (int64_t d = 0; d < hd; d++) kt[d * stride + t] = k.data()[t * hd + d];
        py::array_t<float> out({nq, hd});
        table(path).attention_multi(q.data(), hd, nq, kt.data(), stride, v.data(), n0, hd, att.data(),
                                    out.mutable_data(), hd);
        return out;
    });
    py::class_<TokenAutomaton, std::shared_ptr<TokenAutomaton>>(m, "TokenAutomaton")
        .def(py::init([](int64_t vocab, std::shared_ptr<TokenAutomaton> base) {
                 return std::make_shared<TokenAutomaton>(vocab, std::move(base));
             }),
             py::arg("vocab"), py::arg("base") = nullptr)
        .def("set",
             [](TokenAutomaton& a, int64_t state, py::array_t<int32_t, py::array::c_style | py::array::forcecast> ids,
                py::array_t<int32_t, py::array::c_style | py::array::forcecast> next, bool done) {
                 if (ids.ndim() != 1 || next.ndim() != 1) throw std::invalid_argument("TokenAutomaton.set: 1-D arrays");
                 a.set(state, std::vector<int32_t>(ids.data(), ids.data() + ids.shape(0)),
                       std::vector<int32_t>(next.data(), next.data() + next.shape(0)), done);
             },
             py::arg("state"), py::arg("ids"), py::arg("next"), py::arg("done"),
             "Add the row of `state`: allowed ids (ascending), next state per id, done flag")
        .def("has", [](const TokenAutomaton& a, int64_t state) { return (bool)a.get(state); })
        .def_property_readonly("rows", &TokenAutomaton::size, "rows held here (not counting the base)")
        .def_readonly("vocab", &TokenAutomaton::vocab);
    // sample_token: the sampler of the decode loop; sample_token_ref: its plain reference
    for (const char* name : {"sample_token", "sample_token_ref"}) {
        const bool ref = std::strcmp(name, "sample_token_ref") == 0;
        m.def(name,
              [ref](farr logits, py::array_t<int64_t, py::array::c_style | py::array::forcecast> seen, double temperature,
                    int64_t top_k, double top_p, float penalty, double coin) {
                  if (logits.ndim() != 1) throw std::invalid_argument("sample_token: logits must be 1-D");
                  if (seen.ndim() != 1) throw std::invalid_argument("sample_token: seen must be 1-D");
                  if (!(temperature >= 0.0) || !(top_p > 0.0) || !(coin >= 0.0 && coin < 1.0))
                      throw std::invalid_argument("sample_token: temperature >= 0, top_p > 0 and coin in [0, 1) required");
                  const float* lp = logits.data();
                  const int64_t* sp = seen.data();
                  const int64_t n = logits.shape(0), ns = seen.shape(0);
                  int64_t t;
                  {
                      py::gil_scoped_release release;
                      t = (ref ? sample_token_ref : sample_token)(lp, n, sp, ns, temperature, top_k, top_p, penalty, coin);
                  }
                  return t;
              },
              py::arg("logits"), py::arg("seen"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"),
              py::arg("penalty"), py::arg("coin"),
              "Next token id (Sampler.sample's rules, scalar C++, GIL released); -1 if a logit is not finite.");
    }
    m.def("bq4_dequantize", [](u8arr blocks, int64_t rows, int64_t cols) {
        if (rows < 0 || cols <= 0) throw std::invalid_argument("rows/cols must be positive");
        const int64_t nb = n_blocks(cols);
        if (blocks.nbytes() != rows * nb * 20)
            throw std::invalid_argument("bq4_dequantize: expected " + std::to_string(rows * nb * 20) + " bytes, found " +
                                        std::to_string(blocks.nbytes()));
        py::array_t<float> out({rows, cols});
        std::vector<float> tmp(nb * QK);
        for (int64_t r = 0; r < rows; r++) {
            bq4_dequantize_row_ref((const BlockBQ4*)blocks.data() + r * nb, tmp.data(), nb * QK);
            std::memcpy(out.mutable_data() + r * cols, tmp.data(), cols * 4);
        }
        return out;
    });
}
