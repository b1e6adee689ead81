// Whole-model forward pass: validation, decode step, chunked matrix-matrix prefill.
// Reads like llama2.c's forward(): comments tie each step to the math.
#include "model.h"

#include <cmath>
#include <cstdlib>
#include <new>
#include <cstring>
#include <initializer_list>
#include <algorithm>
#include <stdexcept>

namespace bullet {

// ============================================================================
// Validation: a hostile file must produce a clear error, never a crash
// ============================================================================

static std::string shape_str(const std::vector<int64_t>& s) {
    std::string o = "(";
    for (size_t i = 0; i < s.size(); i++) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + (s.size() == 1 ? ",)" : ")");
}

static const char* dtype_str(DType d) { return d == DType::F32 ? "f32" : d == DType::F16 ? "f16" : "bq4"; }

static void need_range(const char* what, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
        throw std::invalid_argument("config " + std::string(what) + ": expected an integer in [" + std::to_string(lo) +
                                    ", " + std::to_string(hi) + "], found " + std::to_string(v));
}

void rope_angles(const Config& c, int64_t pos, float* cos, float* sin);

static ArchLimits g_limits;

void set_arch_limits(const ArchLimits& limits) { g_limits = limits; }
const ArchLimits& arch_limits() { return g_limits; }

void check_config_float(const char* what, double v) {
    if (!(v > 0.0 && v < g_limits.max_float))
        throw std::invalid_argument("config " + std::string(what) + ": expected a finite value in (0, " +
                                    std::to_string(g_limits.max_float) + "), found " + std::to_string(v));
}

void validate_config(const Config& c) {
    const ArchLimits& L = g_limits;
    if (L.dim <= 0 || L.kv_bytes <= 0)
        throw std::invalid_argument("config: the architecture limits are not set (bulletd.kernels sets them on import)");
    need_range("dim", c.dim, 1, L.dim);
    need_range("n_layers", c.n_layers, 1, L.n_layers);
    need_range("n_heads", c.n_heads, 1, L.n_heads);
    need_range("n_kv_heads", c.n_kv_heads, 1, c.n_heads);
    need_range("hidden_dim", c.hidden_dim, 1, L.hidden_dim);
    need_range("vocab_size", c.vocab_size, 1, L.vocab_size);
    need_range("max_seq_len", c.max_seq_len, 1, L.max_seq_len);
    need_range("head_dim", c.head_dim_, 0, L.head_dim);
    if (c.head_dim_ == 0 && c.dim % c.n_heads != 0)
        throw std::invalid_argument("config: dim " + std::to_string(c.dim) + " is not divisible by n_heads " +
                                    std::to_string(c.n_heads));
    if (c.head_dim() % 2 != 0)
        throw std::invalid_argument("config: head_dim " + std::to_string(c.head_dim()) + " (dim / n_heads) must be even for RoPE");
    if (c.n_heads % c.n_kv_heads != 0)
        throw std::invalid_argument("config: n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                                    std::to_string(c.n_kv_heads));
    check_config_float("norm_eps", c.norm_eps);
    check_config_float("rope_theta", c.rope_theta);
    // the KV cache, sized by max_seq_len which no tensor bounds: the last guard of the runtime's cap
    const int64_t cap = c.max_kv_bytes > 0 ? c.max_kv_bytes : L.kv_bytes;
    const double kv = 2.0 * (double)c.n_layers * (double)c.max_seq_len * (double)c.kv_dim() * 4.0;
    if (kv > (double)cap)
        throw std::invalid_argument("config: KV cache would need " + std::to_string((int64_t)(kv / 1048576)) +
                                    " MiB (n_layers x max_seq_len x kv_dim), more than the limit of " +
                                    std::to_string(cap) + " bytes");
}

static const TensorView& find(const std::map<std::string, TensorView>& t, const std::string& name) {
    auto it = t.find(name);
    if (it == t.end()) throw std::invalid_argument("tensor " + name + ": missing");
    return it->second;
}

static void check_align(const std::string& name, const void* p, size_t a) {
    if (((uintptr_t)p) % a != 0)
        throw std::invalid_argument("tensor " + name + ": data is not " + std::to_string(a) + "-byte aligned");
}

static Matrix get_matrix(const std::map<std::string, TensorView>& t, const std::string& name, int64_t rows,
                         int64_t cols, int64_t* total) {
    const TensorView& v = find(t, name);
    Matrix m;
    m.dt = v.dtype;
    m.data = v.data;
    m.rows = rows;
    m.cols = cols;
    m.nb = n_blocks(cols);
    std::vector<int64_t> want;
    int64_t bytes;
    if (v.dtype == DType::BQ4) {
        want = {rows, m.nb * (int64_t)sizeof(BlockBQ4)};
        bytes = rows * m.nb * (int64_t)sizeof(BlockBQ4);
    } else {
        want = {rows, cols};
        bytes = rows * cols * (v.dtype == DType::F32 ? 4 : 2);
    }
    if (v.shape != want)
        throw std::invalid_argument("tensor " + name + " (" + dtype_str(v.dtype) + "): expected array shape " +
                                    shape_str(want) + " for a (" + std::to_string(rows) + ", " + std::to_string(cols) +
                                    ") matrix, found " + shape_str(v.shape));
    if (v.nbytes != bytes)
        throw std::invalid_argument("tensor " + name + ": expected " + std::to_string(bytes) + " bytes, found " +
                                    std::to_string(v.nbytes));
    if (v.data == nullptr) throw std::invalid_argument("tensor " + name + ": no data");
    check_align(name, v.data, v.dtype == DType::F32 ? 4 : 2);
    *total += bytes;
    return m;
}

static std::vector<float> get_vector(const std::map<std::string, TensorView>& t, const std::string& name, int64_t n) {
    const TensorView& v = find(t, name);
    if (v.dtype == DType::BQ4) throw std::invalid_argument("tensor " + name + ": expected f32 or f16, found bq4");
    if (v.shape != std::vector<int64_t>{n})
        throw std::invalid_argument("tensor " + name + ": expected shape " + shape_str({n}) + ", found " + shape_str(v.shape));
    const int64_t bytes = n * (v.dtype == DType::F32 ? 4 : 2);
    if (v.nbytes != bytes || v.data == nullptr)
        throw std::invalid_argument("tensor " + name + ": expected " + std::to_string(bytes) + " bytes, found " +
                                    std::to_string(v.nbytes));
    std::vector<float> out(n);
    if (v.dtype == DType::F32) {
        std::memcpy(out.data(), v.data, bytes);
    } else {
        uint16_t h;
        for (int64_t i = 0; i < n; i++) {
            std::memcpy(&h, (const char*)v.data + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
    }
    return out;
}

Model::Model(const Config& c, const std::map<std::string, TensorView>& t, const KernelTable* kt)
    : cfg(c), k(kt ? kt : &active_kernels()) {
    validate_config(cfg);
    const int64_t D = cfg.dim, H = cfg.hidden_dim, Q = cfg.q_dim(), KV = cfg.kv_dim(), V = cfg.vocab_size;
    tok_embd = get_matrix(t, "tok_embd", V, D, &weight_bytes);
    const bool has_output = t.count("output") != 0;
    if (cfg.tied) {
        if (has_output) throw std::invalid_argument("tensor output: present, but tied_embeddings is true");
        output = tok_embd;
    } else {
        if (!has_output) throw std::invalid_argument("tensor output: missing (tied_embeddings is false)");
        output = get_matrix(t, "output", V, D, &weight_bytes);
    }
    out_norm = get_vector(t, "out_norm", D);
    layers.resize(cfg.n_layers);
    for (int64_t i = 0; i < cfg.n_layers; i++) {
        const std::string p = "blk." + std::to_string(i) + ".";
        Layer& L = layers[i];
        L.attn_norm = get_vector(t, p + "attn_norm", D);
        L.ffn_norm = get_vector(t, p + "ffn_norm", D);
        L.wq = get_matrix(t, p + "wq", Q, D, &weight_bytes);
        L.wk = get_matrix(t, p + "wk", KV, D, &weight_bytes);
        L.wv = get_matrix(t, p + "wv", KV, D, &weight_bytes);
        L.wo = get_matrix(t, p + "wo", D, Q, &weight_bytes);
        L.w1 = get_matrix(t, p + "w1", H, D, &weight_bytes);
        L.w2 = get_matrix(t, p + "w2", D, H, &weight_bytes);
        L.w3 = get_matrix(t, p + "w3", H, D, &weight_bytes);
    }
    // Names we do not know point at a file we do not understand: refuse rather than ignore.
    const size_t expected = 2 + (cfg.tied ? 0 : 1) + 9 * (size_t)cfg.n_layers;
    if (t.size() != expected) {
        for (const auto& kv : t) {
            const std::string& n = kv.first;
            bool known = n == "tok_embd" || n == "output" || n == "out_norm";
            if (!known && n.rfind("blk.", 0) == 0) {
                const size_t dot = n.find('.', 4);
                if (dot != std::string::npos) {
                    const std::string idx = n.substr(4, dot - 4), rest = n.substr(dot + 1);
                    const bool digits = !idx.empty() && idx.size() < 6 && idx.find_first_not_of("0123456789") == std::string::npos;
                    if (digits && std::stoll(idx) < cfg.n_layers && std::to_string(std::stoll(idx)) == idx)
                        for (const char* s : {"attn_norm", "ffn_norm", "wq", "wk", "wv", "wo", "w1", "w2", "w3"})
                            if (rest == s) known = true;
                }
            }
            if (!known) throw std::invalid_argument("tensor " + n + ": not part of an lm model with this config");
        }
    }
    // Validated: build the RoPE table and the kernel path's packed copies of the BQ4 matrices.
    const int64_t half = cfg.head_dim() / 2;
    if (cfg.max_seq_len * half <= (int64_t)1 << 22) {  // at most 32 MiB for both tables
        rope_cos.resize(cfg.max_seq_len * half);
        rope_sin.resize(cfg.max_seq_len * half);
        for (int64_t p = 0; p < cfg.max_seq_len; p++) rope_angles(cfg, p, &rope_cos[p * half], &rope_sin[p * half]);
    }
    if (cfg.tied) {
        pack(tok_embd);
        output = tok_embd;
    } else {
        pack(output);
    }
    for (Layer& L : layers)
        for (Matrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) pack(*m);
}

void Model::pack(Matrix& m) {
    if (m.dt != DType::BQ4) return;
    const int64_t bytes = k->packed_bq4_bytes(m.rows, m.nb);
    if (bytes <= 0) return;
    uint8_t* p = (uint8_t*)std::aligned_alloc(64, (size_t)((bytes + 63) / 64 * 64));
    if (!p) throw std::bad_alloc();
    packs_.emplace_back(p);
    k->pack_bq4((const BlockBQ4*)m.data, m.rows, m.nb, p);
    m.packed = p;
    packed_bytes += bytes;
}

// ============================================================================
// Session: KV cache and scratch, allocated once
// ============================================================================

struct Session::Busy {
    std::atomic<bool>& f;
    explicit Busy(std::atomic<bool>& flag) : f(flag) {
        if (f.exchange(true)) throw std::runtime_error("session is already running a step on another thread");
    }
    ~Busy() { f.store(false); }
};

Session::Session(std::shared_ptr<const Model> m, int64_t prefill_chunk)
    : m_(std::move(m)), cfg_(m_->cfg), k_(m_->k), hd_(cfg_.head_dim()) {
    chunk_ = std::max<int64_t>(1, std::min<int64_t>(prefill_chunk, cfg_.max_seq_len));
    const int64_t kvn = cfg_.n_layers * cfg_.n_kv_heads * cfg_.max_seq_len * hd_;
    kc_.assign(kvn, 0.0f);
    vc_.assign(kvn, 0.0f);
    const int64_t C = chunk_, D = cfg_.dim, H = cfg_.hidden_dim;
    x_.assign(C * D, 0.f);
    xb_.assign(C * std::max(D, cfg_.q_dim()), 0.f);
    xb2_.assign(C * cfg_.q_dim(), 0.f);
    q_.assign(C * cfg_.q_dim(), 0.f);
    kt_.assign(C * cfg_.kv_dim(), 0.f);
    vt_.assign(C * cfg_.kv_dim(), 0.f);
    hb_.assign(C * H, 0.f);
    hb2_.assign(C * H, 0.f);
    att_.assign(4 * (cfg_.max_seq_len + 4), 0.f);  // per thread (set_threads grows it)
    rc_.assign(hd_ / 2, 0.f);
    rs_.assign(hd_ / 2, 0.f);
    emb_.assign(n_blocks(D) * QK, 0.f);
    q8_.resize(C * n_blocks(std::max(std::max(D, H), cfg_.q_dim())));
}

int64_t Session::scratch_bytes() const {
    int64_t f = 0;
    for (const auto* v : {&x_, &xb_, &xb2_, &q_, &kt_, &vt_, &hb_, &hb2_, &att_, &rc_, &rs_, &emb_}) f += (int64_t)v->size();
    int64_t q8 = (int64_t)q8_.size();
    for (const ThreadScratch& t : tx_) {
        f += (int64_t)(t.x.size() + t.xb.size());
        q8 += (int64_t)t.q8.size();
    }
    return f * 4 + q8 * (int64_t)sizeof(BlockQ8);
}

// K is kept transposed per head (head_dim rows of max_seq_len) so that attention scores vectorise
// over positions; V stays (max_seq_len, head_dim).
void Session::store_kv(int64_t l, int64_t pos, const float* k, const float* v) {
    for (int64_t h = 0; h < cfg_.n_kv_heads; h++) {
        float* kc = kcache(l, h);
        for (int64_t d = 0; d < hd_; d++) kc[d * cfg_.max_seq_len + pos] = k[h * hd_ + d];
        std::memcpy(vcache(l, h) + pos * hd_, v + h * hd_, hd_ * sizeof(float));
    }
}

void Session::check_token(int64_t token) const {
    if (token < 0 || token >= cfg_.vocab_size)
        throw std::invalid_argument("token id " + std::to_string(token) + " is out of range [0, " +
                                    std::to_string(cfg_.vocab_size) + ")");
}

// x = tok_embd[token]
void Session::embed(int64_t token, float* out) {
    const Matrix& e = m_->tok_embd;
    const int64_t D = cfg_.dim;
    if (e.dt == DType::F32) {
        std::memcpy(out, (const float*)e.data + token * D, D * sizeof(float));
    } else if (e.dt == DType::F16) {
        const uint16_t* r = (const uint16_t*)e.data + token * D;
        for (int64_t i = 0; i < D; i++) out[i] = f16_to_f32(r[i]);
    } else {
        bq4_dequantize_row_ref((const BlockBQ4*)e.data + token * e.nb, emb_.data(), e.nb * QK);
        std::memcpy(out, emb_.data(), D * sizeof(float));
    }
}

// llama2.c: freq = 1 / theta^(2i / head_dim), angle = pos * freq, all in float
void rope_angles(const Config& c, int64_t pos, float* cos, float* sin) {
    const int64_t hd = c.head_dim();
    for (int64_t i = 0; i < hd / 2; i++) {
        const float freq = 1.0f / std::pow(c.rope_theta, (float)(2 * i) / (float)hd);
        const float val = (float)pos * freq;
        cos[i] = std::cos(val);
        sin[i] = std::sin(val);
    }
}

// Points rc/rs at this position's angles: the model's table, or computed into the scratch.
void Session::rope_angles(int64_t pos) {
    if (!m_->rope_cos.empty()) {
        rc = m_->rope_cos.data() + pos * (hd_ / 2);
        rs = m_->rope_sin.data() + pos * (hd_ / 2);
    } else {
        bullet::rope_angles(cfg_, pos, rc_.data(), rs_.data());
        rc = rc_.data();
        rs = rs_.data();
    }
}

void Session::set_threads(int n) {
    if (n < 1 || n > Pool::MAX_THREADS)
        throw std::invalid_argument("threads: expected 1.." + std::to_string(Pool::MAX_THREADS) + ", found " +
                                    std::to_string(n));
    Busy busy(busy_);
    if (n == threads()) return;
    pool_.reset();
    att_.assign((size_t)n * 4 * (cfg_.max_seq_len + 4), 0.f);
    tx_.clear();
    if (n == 1) return;
    pool_.reset(new Pool(n));
    claims_.reset(new Claim[(size_t)n * (size_t)(4 * cfg_.n_layers + 1)]);
    const int64_t D = cfg_.dim, W = std::max(std::max(D, cfg_.hidden_dim), cfg_.q_dim());
    tx_.resize((size_t)n);
    for (ThreadScratch& t : tx_) {
        t.x.assign(D, 0.f);
        t.xb.assign(std::max(D, cfg_.q_dim()), 0.f);
        t.q8.resize(n_blocks(W));
    }
}

// A thread's share of the heads must be whole row groups of q, k and v
bool Session::heads_split() const { return hd_ % ROW_ALIGN == 0; }

void Session::step_parallel(int64_t pos, float* logits) {
    const int64_t D = cfg_.dim, H = cfg_.hidden_dim, QD = cfg_.q_dim();
    const int64_t kv_mul = cfg_.n_heads / cfg_.n_kv_heads, att_n = 4 * (cfg_.max_seq_len + 4);
    const int64_t phases = 4 * cfg_.n_layers + 1;
    float* Q = q_.data();
    float* K = kt_.data();
    float* V = vt_.data();
    float* XB = xb_.data();    // shared: wo and w2 outputs
    float* XB2 = xb2_.data();  // shared: attention outputs
    float* HB = hb_.data();
    float* HB2 = hb2_.data();
    rope_angles(pos);
    Pool& pool = *pool_;
    pool.run([&](int i) {
        const int n = pool.size();
        ThreadScratch& ts = tx_[(size_t)i];
        float* x = ts.x.data();
        float* xb = ts.xb.data();
        BlockQ8* q8 = ts.q8.data();
        float* att = att_.data() + i * att_n;
        // this thread's counters of the step's phases start afresh (another thread that looks at
        // one first finds it used up, or reset: either way it takes only chunks not yet taken)
        Claim* mine = claims_.get() + (int64_t)i * phases;
        for (int64_t p = 0; p < phases; p++) mine[p].next.store(0, std::memory_order_relaxed);
        std::memcpy(x, x_.data(), D * sizeof(float));
        const float* in = xb;  // the products' input (input() sets it), quantised into q8 for BQ4 weights
        // rows [r0, r1) of w @ in, in whole row groups
        auto rows = [&](const Matrix& w, float* out, int64_t r0, int64_t r1) {
            if (r1 <= r0) return;
            if (w.dt == DType::BQ4) {
                const uint8_t* wb = (const uint8_t*)w.kernel_data() +
                                    (w.packed ? k_->packed_bq4_bytes(r0, w.nb) : r0 * w.nb * (int64_t)sizeof(BlockBQ4));
                k_->matvec_bq4_q8(wb, r1 - r0, w.nb, q8, out + r0);
            } else {
                for (int64_t r = r0; r < r1; r++)
                    out[r] = w.dt == DType::F32 ? k_->dot_f32((const float*)w.data + r * w.cols, in, w.cols)
                                                : k_->dot_f16((const uint16_t*)w.data + r * w.cols, in, w.cols);
            }
        };
        // Chunks 0..total-1 of a phase: thread t's share is [total * t / n, total * (t + 1) / n);
        // a thread takes the chunks of its own share, then those still left in the others'
        // (a thread on a busy or slower core leaves them to the others). A counter per share and
        // phase hands each chunk to one thread; it stays in its owner's cache unless another
        // thread comes for its chunks. Which thread computes a chunk does not change its bits.
        auto work = [&](int64_t phase, int64_t total, const auto& f) {
            for (int k = 0; k < n; k++) {
                const int t = (i + k) % n;
                const int64_t b = total * t / n, e = total * (t + 1) / n;
                std::atomic<int64_t>& c = claims_[(size_t)(t * phases + phase)].next;
                for (int64_t v; (v = b + c.fetch_add(1, std::memory_order_relaxed)) < e;) f(v);
            }
        };
        // a product's rows in chunks of whole row groups, about 4 chunks per thread
        auto split = [&](int64_t phase, int64_t rows_n, const auto& f) {
            const int64_t g = (rows_n + ROW_ALIGN - 1) / ROW_ALIGN, per = std::max<int64_t>(1, g / (4 * n));
            work(phase, (g + per - 1) / per, [&](int64_t c) {
                f(std::min(rows_n, c * per * ROW_ALIGN), std::min(rows_n, (c + 1) * per * ROW_ALIGN));
            });
        };
        auto input = [&](const float* v, int64_t len, const Matrix& w) {
            in = v;
            if (w.dt == DType::BQ4) k_->quantize_q8(v, q8, len);
        };
        for (int64_t l = 0; l < cfg_.n_layers; l++) {
            const Layer& L = m_->layers[l];
            const int64_t ph = 4 * l;
            k_->rmsnorm(xb, x, L.attn_norm.data(), D, cfg_.norm_eps);
            input(xb, D, L.wq);
            // a kv head at a time: its q, k, v rows, RoPE, the cache, and the query heads that read it
            work(ph, cfg_.n_kv_heads, [&](int64_t h) {
                rows(L.wq, Q, h * kv_mul * hd_, (h + 1) * kv_mul * hd_);
                rows(L.wk, K, h * hd_, (h + 1) * hd_);
                rows(L.wv, V, h * hd_, (h + 1) * hd_);
                k_->rope(Q + h * kv_mul * hd_, kv_mul, hd_, rc, rs);
                k_->rope(K + h * hd_, 1, hd_, rc, rs);
                float* kc = kcache(l, h);
                for (int64_t d = 0; d < hd_; d++) kc[d * cfg_.max_seq_len + pos] = K[h * hd_ + d];
                std::memcpy(vcache(l, h) + pos * hd_, V + h * hd_, hd_ * sizeof(float));
                for (int64_t qh = h * kv_mul; qh < (h + 1) * kv_mul; qh++)
                    k_->attention_multi(Q + qh * hd_, QD, 1, kcache(l, h), cfg_.max_seq_len, vcache(l, h), pos, hd_,
                                        att, XB2 + qh * hd_, QD);
            });
            pool.barrier(i);  // every head's output is in XB2
            input(XB2, QD, L.wo);
            split(ph + 1, D, [&](int64_t r0, int64_t r1) { rows(L.wo, XB, r0, r1); });
            pool.barrier(i);  // all of Wo xb2 is in XB
            for (int64_t j = 0; j < D; j++) x[j] += XB[j];
            k_->rmsnorm(xb, x, L.ffn_norm.data(), D, cfg_.norm_eps);
            input(xb, D, L.w1);
            split(ph + 2, H, [&](int64_t r0, int64_t r1) {
                rows(L.w1, HB, r0, r1);
                rows(L.w3, HB2, r0, r1);
                k_->swiglu(HB + r0, HB2 + r0, r1 - r0);
            });
            pool.barrier(i);  // all of the hidden layer is in HB
            input(HB, H, L.w2);
            split(ph + 3, D, [&](int64_t r0, int64_t r1) { rows(L.w2, XB, r0, r1); });
            pool.barrier(i);  // all of W2 hb is in XB; nobody reads XB again before the next barrier
            for (int64_t j = 0; j < D; j++) x[j] += XB[j];
        }
        k_->rmsnorm(xb, x, m_->out_norm.data(), D, cfg_.norm_eps);
        input(xb, D, m_->output);
        split(phases - 1, cfg_.vocab_size, [&](int64_t r0, int64_t r1) { rows(m_->output, logits, r0, r1); });
        if (i == 0) std::memcpy(x_.data(), x, D * sizeof(float));
    });
}

void Session::matmul_rows(const Matrix& w, const float* x, int64_t T, int64_t ldx, float* out, int64_t ldo, int64_t r0,
                          int64_t r1) {
    if (r1 <= r0) return;
    if (w.dt == DType::BQ4) {
        const int64_t nb = w.nb;
        // a packed layout keeps whole row groups one after another; raw blocks are nb per row
        const uint8_t* wb = (const uint8_t*)w.kernel_data() +
                            (w.packed ? k_->packed_bq4_bytes(r0, nb) : r0 * nb * (int64_t)sizeof(BlockBQ4));
        if (T == 1)
            k_->matvec_bq4_q8(wb, r1 - r0, nb, q8_.data(), out + r0);
        else
            k_->matmul_bq4_q8(wb, r1 - r0, nb, q8_.data(), T, out + r0, ldo);
    } else if (w.dt == DType::F32) {
        const float* wf = (const float*)w.data;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < T; t++) out[t * ldo + r] = k_->dot_f32(wf + r * w.cols, x + t * ldx, w.cols);
    } else {
        const uint16_t* wh = (const uint16_t*)w.data;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < T; t++) out[t * ldo + r] = k_->dot_f16(wh + r * w.cols, x + t * ldx, w.cols);
    }
}

// Thread i of n takes row groups [g * i / n, g * (i + 1) / n) of each product's g groups of
// ROW_ALIGN rows.
void Session::products(std::initializer_list<Product> ps, const float* x, int64_t T, int64_t ldx, bool glu) {
    for (const Product& p : ps)  // the products share the input (and its width): one q8 serves all
        if (p.w->dt == DType::BQ4) {
            for (int64_t t = 0; t < T; t++) k_->quantize_q8(x + t * ldx, q8_.data() + t * p.w->nb, p.w->cols);
            break;
        }
    parallel([&](int i, int n) {
        int64_t r0 = 0, r1 = 0;
        for (const Product& p : ps) {
            const int64_t g = (p.w->rows + ROW_ALIGN - 1) / ROW_ALIGN;
            r0 = std::min(p.w->rows, g * i / n * ROW_ALIGN);
            r1 = std::min(p.w->rows, g * (i + 1) / n * ROW_ALIGN);
            matmul_rows(*p.w, x, T, ldx, p.out, p.ldo, r0, r1);
        }
        // the SwiGLU of this thread's rows (both products have the same rows); a whole vector
        // kernel's lanes start at a multiple of ROW_ALIGN, so each element is computed as in one call
        if (glu && T == 1 && r1 > r0) k_->swiglu(ps.begin()[0].out + r0, ps.begin()[1].out + r0, r1 - r0);
    });
    if (glu && T > 1) k_->swiglu(ps.begin()[0].out, ps.begin()[1].out, T * ps.begin()[0].ldo);
}

// ============================================================================
// Profile clocks: mark(part) charges the time since the previous mark to `part`
// ============================================================================

namespace {

struct NoClock {
    static constexpr bool on = false;
    void mark(int) {}
};

struct StepClock {
    static constexpr bool on = true;
    Profile& p;
    std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
    explicit StepClock(Profile& prof) : p(prof) {}
    void mark(int part) {
        const auto now = std::chrono::steady_clock::now();
        p.ns[part] += std::chrono::duration_cast<std::chrono::nanoseconds>(now - t).count();
        t = now;
    }
};

}  // namespace

const char* profile_part_name(int part) {
    static const char* names[PROF_PARTS] = {"qkv", "wo", "ffn", "classifier", "attention",
                                            "norm", "rope", "act", "embed", "sample"};
    return part >= 0 && part < PROF_PARTS ? names[part] : "?";
}

void Session::set_profile(bool on) {
    Busy busy(busy_);
    if (on && !prof_on_) prof_ = Profile{};
    prof_on_ = on;
}

template <class Clock>
void Session::logits_from(float* x, float* logits, Clock& clk) {
    // final rmsnorm, then the classifier (tok_embd when tied)
    k_->rmsnorm(x, x, m_->out_norm.data(), cfg_.dim, cfg_.norm_eps);
    clk.mark(PROF_NORM);
    products({{&m_->output, logits, cfg_.vocab_size}}, x, 1, cfg_.dim, false);
    clk.mark(PROF_CLASSIFIER);
}

// ============================================================================
// The layers: T tokens at positions p0..p0+T-1 at once (T <= chunk_); a decode step is T = 1.
// x_ holds the T embeddings (rows of dim) on entry and the residual stream on return.
// ============================================================================

template <class Clock>
void Session::layers(int64_t T, int64_t p0, Clock& clk) {
    const int64_t D = cfg_.dim, H = cfg_.hidden_dim, QD = cfg_.q_dim(), KVD = cfg_.kv_dim();
    const int64_t kv_mul = cfg_.n_heads / cfg_.n_kv_heads;
    float* X = x_.data();
    float* XB = xb_.data();
    float* XB2 = xb2_.data();
    float* Q = q_.data();
    float* HB = hb_.data();
    float* HB2 = hb2_.data();
    for (int64_t l = 0; l < cfg_.n_layers; l++) {
        const Layer& L = m_->layers[l];
        // attention: xb = rmsnorm(x); q, k, v = Wq xb, Wk xb, Wv xb (one matrix-matrix product each)
        for (int64_t t = 0; t < T; t++) k_->rmsnorm(XB + t * D, X + t * D, L.attn_norm.data(), D, cfg_.norm_eps);
        clk.mark(PROF_NORM);
        products({{&L.wq, Q, QD}, {&L.wk, kt_.data(), KVD}, {&L.wv, vt_.data(), KVD}}, XB, T, D, false);
        clk.mark(PROF_QKV);
        // RoPE on q and k, then store k, v at their positions in the cache (one token keeps the
        // angles of its position for every layer)
        for (int64_t t = 0; t < T; t++) {
            if (T > 1 || l == 0) rope_angles(p0 + t);
            k_->rope(Q + t * QD, cfg_.n_heads, hd_, rc, rs);
            k_->rope(kt_.data() + t * KVD, cfg_.n_kv_heads, hd_, rc, rs);
            store_kv(l, p0 + t, kt_.data() + t * KVD, vt_.data() + t * KVD);
        }
        clk.mark(PROF_ROPE);
        // causal: query head h of token t (position p0 + t) attends over positions 0..p0 + t of
        // kv head h / kv_mul, all stored above; four tokens at a time share each head's reads
        // (fewer than four run the single-query kernel, one at a time)
        // (heads shared among the threads, each with its own scratch)
        const int64_t att_n = 4 * (cfg_.max_seq_len + 4);
        parallel([&](int i, int n) {
            float* att = att_.data() + i * att_n;
            for (int64_t h = cfg_.n_heads * i / n; h < cfg_.n_heads * (i + 1) / n; h++)
                for (int64_t t = 0; t < T; t += 4)
                    k_->attention_multi(Q + t * QD + h * hd_, QD, std::min<int64_t>(4, T - t), kcache(l, h / kv_mul),
                                        cfg_.max_seq_len, vcache(l, h / kv_mul), p0 + t, hd_, att,
                                        XB2 + t * QD + h * hd_, QD);
        });
        clk.mark(PROF_ATTENTION);
        // x += Wo xb2
        products({{&L.wo, XB, D}}, XB2, T, QD, false);
        clk.mark(PROF_WO);
        for (int64_t i = 0; i < T * D; i++) X[i] += XB[i];
        // ffn: xb = rmsnorm(x), x += W2 (silu(W1 xb) * W3 xb)
        for (int64_t t = 0; t < T; t++) k_->rmsnorm(XB + t * D, X + t * D, L.ffn_norm.data(), D, cfg_.norm_eps);
        clk.mark(PROF_NORM);
        // profiled, the SwiGLU runs apart from the products (element by element: the same values)
        products({{&L.w1, HB, H}, {&L.w3, HB2, H}}, XB, T, D, !Clock::on);
        clk.mark(PROF_FFN);
        if (Clock::on) k_->swiglu(HB, HB2, T * H);
        clk.mark(PROF_ACT);
        products({{&L.w2, XB, D}}, HB, T, H, false);
        clk.mark(PROF_FFN);
        for (int64_t i = 0; i < T * D; i++) X[i] += XB[i];
        clk.mark(PROF_NORM);
    }
}

// ============================================================================
// Decode: one token
// ============================================================================

void Session::forward(int64_t token, int64_t pos, float* logits) {
    Busy busy(busy_);
    check_token(token);
    if (pos < 0 || pos >= cfg_.max_seq_len)
        throw std::invalid_argument("position " + std::to_string(pos) + " is outside the context [0, " +
                                    std::to_string(cfg_.max_seq_len) + ")");
    if (pos > valid_)
        throw std::invalid_argument("position " + std::to_string(pos) + " skips positions " + std::to_string(valid_) +
                                    ".." + std::to_string(pos - 1) + " that this session has not computed");
    if (pool_ && heads_split()) {
        embed(token, x_.data());
        step_parallel(pos, logits);
        valid_ = pos + 1;
        return;
    }
    if (prof_on_ && !pool_) {  // one thread: every part timed on it
        StepClock clk(prof_);
        embed(token, x_.data());
        clk.mark(PROF_EMBED);
        layers(1, pos, clk);
        logits_from(x_.data(), logits, clk);
        prof_.steps++;
    } else {
        NoClock clk;
        embed(token, x_.data());
        layers(1, pos, clk);
        logits_from(x_.data(), logits, clk);
    }
    valid_ = pos + 1;
}

// ============================================================================
// Prefill: chunks of up to chunk_ tokens, each matrix applied to the whole chunk at once
// ============================================================================

void Session::prefill(const int64_t* tokens, int64_t n, int64_t pos, float* logits) {
    Busy busy(busy_);
    if (n <= 0) throw std::invalid_argument("prefill: the prompt is empty");
    for (int64_t i = 0; i < n; i++) check_token(tokens[i]);
    if (pos < 0 || pos + n > cfg_.max_seq_len)
        throw std::invalid_argument("prefill: positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1) +
                                    " do not fit the context [0, " + std::to_string(cfg_.max_seq_len) + ")");
    if (pos > valid_)
        throw std::invalid_argument("prefill: position " + std::to_string(pos) + " skips positions " +
                                    std::to_string(valid_) + ".." + std::to_string(pos - 1) +
                                    " that this session has not computed");
    const int64_t D = cfg_.dim;
    valid_ = std::min(valid_, pos);  // positions past pos are about to be overwritten
    for (int64_t s = 0; s < n; s += chunk_) {
        const int64_t T = std::min(chunk_, n - s);
        for (int64_t t = 0; t < T; t++) embed(tokens[s + t], x_.data() + t * D);
        NoClock clk;  // prefill is not profiled
        layers(T, pos + s, clk);
        valid_ = pos + s + T;
        if (s + T == n) logits_from(x_.data() + (T - 1) * D, logits, clk);
    }
}

}  // namespace bullet
