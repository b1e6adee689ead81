// The whole-model forward pass (llama2.c family) on top of the kernel table.
//
// Model: validated config + pointers into the caller's tensors (zero-copy; the caller keeps the
// memory alive). Session: one KV cache and all scratch buffers, allocated once, so a forward step
// allocates nothing. Sessions share one read-only Model and may run on different threads at once.
// No Python here: module.cpp wraps it for bulletd._native, tests/arm/driver.cpp links it directly.
#pragma once
#include <atomic>
#include <chrono>
#include <initializer_list>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"
#include "pool.h"

namespace bullet {

// The largest value of each config integer, the float range of norm_eps and rope_theta, and the
// default KV-cache cap. bulletd.format.arch owns the numbers; bulletd.kernels hands them over with
// set_arch_limits() when it imports the module. Until then validate_config refuses every config.
struct ArchLimits {
    int64_t dim = 0, n_layers = 0, n_heads = 0, hidden_dim = 0, vocab_size = 0, max_seq_len = 0, head_dim = 0;
    double max_float = 0;   // norm_eps and rope_theta lie in (0, max_float)
    int64_t kv_bytes = 0;   // KV-cache cap of a Config whose max_kv_bytes is 0
};
void set_arch_limits(const ArchLimits& limits);
const ArchLimits& arch_limits();

struct Config {
    int64_t dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, hidden_dim = 0, vocab_size = 0, max_seq_len = 0;
    float norm_eps = 1e-5f;      // RMSNorm epsilon
    float rope_theta = 10000.f;  // RoPE base
    bool tied = false;           // output projection shares tok_embd
    int64_t head_dim_ = 0;       // 0: dim / n_heads (llama2.c); else an explicit head size
    int64_t max_kv_bytes = 0;    // refuse a larger KV cache; 0: arch_limits().kv_bytes
    int64_t head_dim() const { return head_dim_ ? head_dim_ : dim / n_heads; }
    int64_t kv_dim() const { return head_dim() * n_kv_heads; }
    int64_t q_dim() const { return head_dim() * n_heads; }
};

enum class DType { F32, F16, BQ4 };

// A borrowed tensor as the caller has it. For BQ4 the shape is the raw byte array's shape
// (rows, n_blocks(cols) * 20) and dtype is BQ4 (uint8 in NumPy).
struct TensorView {
    DType dtype;
    std::vector<int64_t> shape;
    const void* data = nullptr;
    int64_t nbytes = 0;
};

struct Matrix {  // (rows, cols) row-major, y = W @ x
    DType dt = DType::F32;
    const void* data = nullptr;
    int64_t rows = 0, cols = 0;
    int64_t nb = 0;  // BQ4 blocks per row
    const void* packed = nullptr;  // the kernel path's repacked copy of a BQ4 matrix, if it wants one
    const void* kernel_data() const { return packed ? packed : data; }
};

struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // (dim,)
    Matrix wq, wk, wv, wo, w1, w2, w3;
};

// Throws std::invalid_argument with a message naming the field, what was expected and what was found.
void validate_config(const Config& c);
// norm_eps, rope_theta: in (0, arch_limits().max_float), else std::invalid_argument naming `what`
void check_config_float(const char* what, double v);

class Model {
  public:
    Model(const Config& cfg, const std::map<std::string, TensorView>& tensors, const KernelTable* k);
    const Config cfg;
    const KernelTable* k;
    Matrix tok_embd, output;  // output == tok_embd when tied
    std::vector<float> out_norm;
    std::vector<Layer> layers;
    int64_t weight_bytes = 0;
    int64_t packed_bytes = 0;  // memory held by repacked BQ4 copies
    // RoPE cos/sin per position, (max_seq_len, head_dim / 2) each; empty when too large to keep
    // (the session then computes a position's angles when it needs them)
    std::vector<float> rope_cos, rope_sin;

  private:
    void pack(Matrix& m);
    struct FreeDeleter {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    std::vector<std::unique_ptr<uint8_t, FreeDeleter>> packs_;
};

// Where a decode step's time goes (Session::set_profile): wall nanoseconds per part, summed over
// the profiled steps. A step on one thread records every part (a product's q8 quantisation of its
// input counts with the product); a step split across threads is not profiled. Off by default:
// forward() reads the flag once a step, and the unprofiled step runs with its timers compiled out.
enum ProfilePart {
    PROF_QKV,         // q, k, v products
    PROF_WO,          // attention output product
    PROF_FFN,         // w1, w3, w2 products
    PROF_CLASSIFIER,  // the output (vocabulary) product
    PROF_ATTENTION,   // scores, softmax and the weighted sum over the cache, all heads
    PROF_NORM,        // RMSNorms and residual adds
    PROF_ROPE,        // RoPE on q and k, the k and v stored into the cache
    PROF_ACT,         // SwiGLU
    PROF_EMBED,       // the token's embedding row
    PROF_SAMPLE,      // sampling the next token (decode batches)
    PROF_PARTS
};
struct Profile {
    int64_t ns[PROF_PARTS] = {};
    int64_t steps = 0;  // profiled forward steps
};
const char* profile_part_name(int part);

class Session {
  public:
    explicit Session(std::shared_ptr<const Model> m, int64_t prefill_chunk = 64);
    // Threads one step runs on: the matrix products (split by rows, in whole groups of ROW_ALIGN)
    // and the attention heads are shared among them. The logits are the same bit for bit with any
    // number: every output element is computed by the same code on the same inputs. 1 <= n <= 64.
    void set_threads(int n);
    int threads() const { return pool_ ? pool_->size() : 1; }
    // logits: vocab_size floats. Throws std::invalid_argument on a bad token or position.
    void forward(int64_t token, int64_t pos, float* logits);
    // tokens[0..n) at positions pos..pos+n-1; logits of the last token. Matrix-matrix per chunk.
    void prefill(const int64_t* tokens, int64_t n, int64_t pos, float* logits);
    int64_t kv_cache_bytes() const { return (int64_t)(kc_.size() + vc_.size()) * (int64_t)sizeof(float); }
    int64_t scratch_bytes() const;
    int64_t valid_len() const { return valid_; }
    const Model& model() const { return *m_; }
    // Per-part timers of decode steps (see ProfilePart); turning them on clears the counters.
    void set_profile(bool on);
    bool profiling() const { return prof_on_; }
    const Profile& profile() const { return prof_; }
    void profile_add(int part, int64_t ns) { prof_.ns[part] += ns; }

  private:
    struct Busy;  // guards against two threads using one session at once
    void check_token(int64_t token) const;
    void embed(int64_t token, float* out);
    void rope_angles(int64_t pos);
    void store_kv(int64_t l, int64_t pos, const float* k, const float* v);
    // the layers over T tokens at positions p0..p0+T-1 (x_ holds their embeddings, then the
    // residual stream): the one body of decode (T = 1) and prefill. Clock: NoClock, or StepClock
    // (model.cpp) charging the time between its marks to the profile's parts.
    template <class Clock>
    void layers(int64_t T, int64_t p0, Clock& clk);
    float* kcache(int64_t l, int64_t kvh) { return kc_.data() + ((l * cfg_.n_kv_heads + kvh) * cfg_.max_seq_len) * hd_; }
    float* vcache(int64_t l, int64_t kvh) { return vc_.data() + ((l * cfg_.n_kv_heads + kvh) * cfg_.max_seq_len) * hd_; }
    // rows [r0, r1) of out[t * ldo + r] = W @ X[t] for t < T; X rows have stride ldx, and for BQ4
    // the q8 scratch already holds them quantised. r0 is a multiple of ROW_ALIGN.
    void matmul_rows(const Matrix& w, const float* x, int64_t T, int64_t ldx, float* out, int64_t ldo, int64_t r0,
                     int64_t r1);
    // products of one input (q8 quantised once), each thread doing its share of every one's rows;
    // with glu, then out[0] = silu(out[0]) * out[1] (in a decode step on each thread's own rows)
    struct Product {
        const Matrix* w;
        float* out;
        int64_t ldo;  // out[t * ldo + r]
    };
    void products(std::initializer_list<Product> ps, const float* x, int64_t T, int64_t ldx, bool glu);
    // f(i, n) on each thread i of n (the caller is 0), returning when all are done
    template <class F>
    void parallel(const F& f) {
        if (!pool_) return f(0, 1);
        const int n = pool_->size();
        pool_->run([&](int i) { f(i, n); });
    }
    template <class Clock>
    void logits_from(float* x, float* logits, Clock& clk);
    // A decode step on several threads: one job, every thread keeping its own copy of the residual
    // stream (the same operations on the same values, so the same bits), with four barriers a
    // layer; between them the kv heads and the row groups of each product are handed out in
    // chunks, each thread taking its own share first and then what the others left.
    // tx_ (x, xb, q8 per thread) is its scratch.
    void step_parallel(int64_t pos, float* logits);
    bool heads_split() const;

    std::shared_ptr<const Model> m_;
    const Config cfg_;
    const KernelTable* k_;
    int64_t hd_, chunk_;
    int64_t valid_ = 0;  // positions 0..valid_-1 hold keys/values of the current sequence
    std::atomic<bool> busy_{false};
    std::vector<float> kc_, vc_;  // K: (n_layers, n_kv_heads, head_dim, max_seq_len); V: (.., max_seq_len, head_dim)
    // scratch, each sized for `chunk_` tokens
    std::vector<float> x_, xb_, xb2_, q_, kt_, vt_, hb_, hb2_, att_, rc_, rs_, emb_;
    const float* rc = nullptr;  // RoPE cos/sin of the current position (head_dim / 2 each)
    const float* rs = nullptr;
    std::vector<BlockQ8> q8_;
    std::unique_ptr<Pool> pool_;  // none: one thread
    struct ThreadScratch {
        std::vector<float> x, xb;
        std::vector<BlockQ8> q8;
    };
    std::vector<ThreadScratch> tx_;
    // one counter per thread and phase of a decode step (4 a layer and the classifier): chunks
    // of that thread's share taken so far, by it or by others (step_parallel)
    // A counter starts used up: a thread that comes for another's chunks before that thread has
    // reset its counters for the step must find none (else both compute a chunk, and RoPE, done
    // in place, runs twice on its rows).
    struct alignas(64) Claim {
        std::atomic<int64_t> next{INT64_C(1) << 62};
    };
    std::unique_ptr<Claim[]> claims_;
    bool prof_on_ = false;
    Profile prof_;
};

// Row splits between threads fall on multiples of this: a multiple of every kernel path's packed
// row group (8 on AVX2, 16 on AVX-512, 4 on NEON), so each group is computed whole, as alone.
constexpr int64_t ROW_ALIGN = 16;

}  // namespace bullet
