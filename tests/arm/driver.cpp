// Kernel test driver: plain C++, no Python. Links the native kernel files and the model, generates
// parity vectors from a fixed-seed RNG, and checks every kernel path this CPU can run against the
// scalar reference compiled into the same binary; then runs a whole random model on each path
// against the scalar path. Prints the dispatch choice, one line per failure (ref/got/err), and a
// summary; exit status 0 only if everything passed.
//
//   driver                         run all checks
//   driver --expect-path neon_dot  also fail unless the automatic dispatch chose this path
//   driver --bench [PATH]          decode/prefill timing of a random REFERENCE model per path
//   driver --force PATH            run one kernel of table PATH (neon_dot, avx2, avx512vnni) without asking the
//                                  CPU first: on a CPU without the feature it must die of SIGILL,
//                                  which shows that the dispatch is what keeps a build portable
//
// Built natively or cross-compiled by tests/arm/test_arm_driver.py, and also run under
// qemu-x86_64 -cpu Nehalem (no AVX: must pick scalar) and -cpu Haswell (AVX2, no AVX-512):
//   aarch64-linux-gnu-g++ -O2 -std=c++17 -static -Inative tests/arm/driver.cpp native/{kernels_ref,
//     bq4_ref,dispatch,model,kernels_neon}.cpp + native/kernels_neon_dot.cpp (-march=armv8.2-a+dotprod)
//   qemu-aarch64 -cpu cortex-a72 ./driver --expect-path neon       (no dotprod)
//   qemu-aarch64 -cpu cortex-a76 ./driver --expect-path neon_dot
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"
#include "model.h"

using namespace bullet;

namespace {

struct Rng {  // splitmix64: the same vectors on every machine
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    float uniform() { return (float)((next() >> 40) * (1.0 / 16777216.0)); }  // [0, 1)
    float normal() {
        float u1 = uniform() + 1e-7f, u2 = uniform();
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
};

int g_checks = 0, g_fail = 0;

void check(bool ok, const std::string& what, double ref, double got, double err, double tol) {
    g_checks++;
    if (!ok) {
        g_fail++;
        if (g_fail <= 40)
            std::printf("FAIL %s: ref=%.9g got=%.9g err=%.3g tol=%.3g\n", what.c_str(), ref, got, err, tol);
    }
}

void close(const std::string& what, const float* ref, const float* got, int64_t n, double rtol, double atol) {
    double worst = -1;
    int64_t wi = 0;
    double scale = 0;
    for (int64_t i = 0; i < n; i++) scale = std::fmax(scale, std::fabs(ref[i]));
    for (int64_t i = 0; i < n; i++) {
        const double err = std::fabs((double)ref[i] - got[i]);
        const double excess = err - (atol + rtol * scale);
        if (!(excess <= worst) || std::isnan(got[i])) {
            worst = std::isnan(got[i]) ? 1e30 : excess;
            wi = i;
        }
    }
    if (n == 0) return;
    const double err = std::fabs((double)ref[wi] - got[wi]);
    check(worst <= 0, what + " [" + std::to_string(wi) + "]", ref[wi], got[wi], err, atol + rtol * scale);
}

std::vector<float> randn(Rng& r, int64_t n, float sd = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = r.normal() * sd;
    return v;
}

std::vector<BlockBQ4> rand_bq4(Rng& r, int64_t rows, int64_t cols) {
    const int64_t nb = n_blocks(cols);
    std::vector<BlockBQ4> w(rows * nb);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t b = 0; b < nb; b++) {
            BlockBQ4& blk = w[i * nb + b];
            blk.scale = f32_to_f16(0.002f + 0.05f * r.uniform());
            blk.zero = 0;
            blk.pad = 0;
            for (int j = 0; j < QK / 2; j++) {
                int lo = (int)(r.next() % 16), hi = (int)(r.next() % 16);
                // weights past `cols` are zero, as the format requires
                if (b * QK + j >= cols) lo = 0;
                if (b * QK + j + QK / 2 >= cols) hi = 0;
                blk.qs[j] = (uint8_t)(lo | (hi << 4));
            }
        }
    return w;
}

struct Packed {
    std::vector<uint8_t> buf;
    const void* ptr;
};
Packed pack(const KernelTable& k, const std::vector<BlockBQ4>& w, int64_t rows, int64_t nb) {
    Packed p;
    const int64_t bytes = k.packed_bq4_bytes(rows, nb);
    if (bytes <= 0) {
        p.ptr = w.data();
        return p;
    }
    p.buf.resize(bytes + 64);
    uint8_t* a = p.buf.data() + (64 - ((uintptr_t)p.buf.data() % 64)) % 64;
    k.pack_bq4(w.data(), rows, nb, a);
    p.ptr = a;
    return p;
}

// ============================================================================
// Kernel parity against the scalar reference
// ============================================================================

void kernel_checks(const KernelTable& k, Rng& r) {
    const KernelTable& ref = kernels_ref();
    const std::string P = std::string(k.name) + " ";
    // q8 quantisation must be bit-identical
    for (int64_t n : {1, 5, 31, 32, 33, 64, 100, 256, 1000}) {
        std::vector<float> x = randn(r, n, 3.0f);
        if (n > 10) x[7] = 0.5f * (x[7] > 0 ? 1 : -1);  // a value that may round at a half
        std::vector<BlockQ8> a(n_blocks(n)), b(n_blocks(n));
        ref.quantize_q8(x.data(), a.data(), n);
        k.quantize_q8(x.data(), b.data(), n);
        bool same = true;
        for (size_t i = 0; i < a.size(); i++)
            same = same && a[i].d == b[i].d && a[i].sum == b[i].sum && std::memcmp(a[i].qs, b[i].qs, QK) == 0;
        check(same, P + "quantize_q8 n=" + std::to_string(n) + " bit-identical", 0, same ? 0 : 1, 0, 0);
    }
    // BQ4 x q8: single-row dot, matvec and matmul (packed as the model packs)
    for (int64_t cols : {32, 40, 64, 172, 256}) {
        const int64_t nb = n_blocks(cols);
        for (int64_t rows : {1, 7, 8, 9, 33}) {
            std::vector<BlockBQ4> w = rand_bq4(r, rows, cols);
            Packed pk = pack(k, w, rows, nb);
            for (int64_t T : {1, 2, 5, 70}) {
                std::vector<float> x = randn(r, T * cols);
                std::vector<BlockQ8> q(T * nb);
                for (int64_t t = 0; t < T; t++) ref.quantize_q8(x.data() + t * cols, q.data() + t * nb, cols);
                std::vector<float> want(T * rows), got(T * rows, NAN);
                ref.matmul_bq4_q8(w.data(), rows, nb, q.data(), T, want.data(), rows);
                if (T == 1)
                    k.matvec_bq4_q8(pk.ptr, rows, nb, q.data(), got.data());
                else
                    k.matmul_bq4_q8(pk.ptr, rows, nb, q.data(), T, got.data(), rows);
                close(P + "bq4 " + (T == 1 ? "matvec" : "matmul") + " rows=" + std::to_string(rows) +
                          " cols=" + std::to_string(cols) + " T=" + std::to_string(T),
                      want.data(), got.data(), T * rows, 1e-5, 1e-6);
            }
            std::vector<float> x = randn(r, cols);
            std::vector<BlockQ8> q(nb);
            ref.quantize_q8(x.data(), q.data(), cols);
            const float a = ref.dot_bq4_q8(w.data(), q.data(), nb), b = k.dot_bq4_q8(w.data(), q.data(), nb);
            close(P + "dot_bq4_q8 cols=" + std::to_string(cols), &a, &b, 1, 1e-5, 1e-6);
        }
    }
    for (int64_t n : {0, 1, 7, 8, 9, 16, 31, 33, 100, 257}) {
        const std::string N = " n=" + std::to_string(n);
        std::vector<float> a = randn(r, n), b = randn(r, n), w = randn(r, n);
        std::vector<uint16_t> h(n);
        for (int64_t i = 0; i < n; i++) h[i] = f32_to_f16(a[i]);
        float x = ref.dot_f32(a.data(), b.data(), n), y = k.dot_f32(a.data(), b.data(), n);
        close(P + "dot_f32" + N, &x, &y, 1, 1e-5, 1e-5);
        x = ref.dot_f16(h.data(), b.data(), n);
        y = k.dot_f16(h.data(), b.data(), n);
        close(P + "dot_f16" + N, &x, &y, 1, 1e-5, 1e-5);
        std::vector<float> y1 = b, y2 = b;
        ref.axpy(0.37f, a.data(), y1.data(), n);
        k.axpy(0.37f, a.data(), y2.data(), n);
        close(P + "axpy" + N, y1.data(), y2.data(), n, 1e-6, 1e-6);
        if (n == 0) continue;
        std::vector<float> o1(n), o2(n);
        ref.rmsnorm(o1.data(), a.data(), w.data(), n, 1e-5f);
        k.rmsnorm(o2.data(), a.data(), w.data(), n, 1e-5f);
        close(P + "rmsnorm" + N, o1.data(), o2.data(), n, 1e-5, 1e-6);
        std::vector<float> s1 = randn(r, n, 4.0f), s2 = s1;
        ref.softmax(s1.data(), n);
        k.softmax(s2.data(), n);
        close(P + "softmax" + N, s1.data(), s2.data(), n, 1e-5, 1e-7);
        std::vector<float> g1 = randn(r, n, 3.0f), g2 = g1;
        ref.swiglu(g1.data(), b.data(), n);
        k.swiglu(g2.data(), b.data(), n);
        close(P + "swiglu" + N, g1.data(), g2.data(), n, 1e-5, 1e-6);
    }
    for (int64_t hd : {2, 6, 8, 16, 24, 64}) {
        for (int64_t n : {1, 3, 8, 31, 33, 100, 300}) {
            const int64_t ks = n + 3;
            std::vector<float> q = randn(r, hd), kt = randn(r, hd * ks), v = randn(r, n * hd);
            std::vector<float> att(n), o1(hd), o2(hd);
            ref.attention(q.data(), kt.data(), ks, v.data(), n, hd, att.data(), o1.data());
            k.attention(q.data(), kt.data(), ks, v.data(), n, hd, att.data(), o2.data());
            close(P + "attention hd=" + std::to_string(hd) + " n=" + std::to_string(n), o1.data(), o2.data(), hd, 1e-5,
                  1e-6);
        }
        for (int64_t n0 : {0, 1, 5, 28, 60}) {
            for (int64_t nq : {1, 3, 4}) {
                const int64_t ks = n0 + nq + 2, qs = hd + 3, os = hd + 1;
                std::vector<float> q = randn(r, nq * qs), kt = randn(r, hd * ks), v = randn(r, (n0 + nq) * hd);
                std::vector<float> att(4 * (n0 + nq + 4)), o1(nq * os, 0.0f), o2(nq * os, 0.0f);
                ref.attention_multi(q.data(), qs, nq, kt.data(), ks, v.data(), n0, hd, att.data(), o1.data(), os);
                k.attention_multi(q.data(), qs, nq, kt.data(), ks, v.data(), n0, hd, att.data(), o2.data(), os);
                close(P + "attention_multi hd=" + std::to_string(hd) + " n0=" + std::to_string(n0) +
                          " nq=" + std::to_string(nq),
                      o1.data(), o2.data(), nq * os, 1e-5, 1e-6);
            }
        }
        std::vector<float> v1 = randn(r, 3 * hd), v2 = v1, c = randn(r, hd / 2), s = randn(r, hd / 2);
        ref.rope(v1.data(), 3, hd, c.data(), s.data());
        k.rope(v2.data(), 3, hd, c.data(), s.data());
        close(P + "rope hd=" + std::to_string(hd), v1.data(), v2.data(), 3 * hd, 1e-6, 1e-6);
    }
}

// ============================================================================
// Whole random model: path vs scalar
// ============================================================================

struct RandomModel {
    Config cfg;
    std::vector<std::vector<BlockBQ4>> q;
    std::vector<std::vector<float>> f;
    std::map<std::string, TensorView> views;
};

std::unique_ptr<RandomModel> random_model(const Config& c, Rng& r) {
    auto m = std::make_unique<RandomModel>();
    m->cfg = c;
    auto mat = [&](const std::string& name, int64_t rows, int64_t cols) {
        m->q.push_back(rand_bq4(r, rows, cols));
        TensorView v;
        v.dtype = DType::BQ4;
        v.shape = {rows, n_blocks(cols) * 20};
        v.data = m->q.back().data();
        v.nbytes = rows * n_blocks(cols) * 20;
        m->views[name] = v;
    };
    auto vec = [&](const std::string& name, int64_t n) {
        std::vector<float> x = randn(r, n, 0.1f);
        for (auto& e : x) e += 1.0f;
        m->f.push_back(x);
        TensorView v;
        v.dtype = DType::F32;
        v.shape = {n};
        v.data = m->f.back().data();
        v.nbytes = n * 4;
        m->views[name] = v;
    };
    m->q.reserve(16 + 7 * c.n_layers);
    m->f.reserve(4 + 2 * c.n_layers);
    const int64_t D = c.dim, H = c.hidden_dim, Q = c.q_dim(), KV = c.kv_dim();
    mat("tok_embd", c.vocab_size, D);
    if (!c.tied) mat("output", c.vocab_size, D);
    vec("out_norm", D);
    for (int64_t i = 0; i < c.n_layers; i++) {
        const std::string p = "blk." + std::to_string(i) + ".";
        vec(p + "attn_norm", D);
        vec(p + "ffn_norm", D);
        mat(p + "wq", Q, D);
        mat(p + "wk", KV, D);
        mat(p + "wv", KV, D);
        mat(p + "wo", D, Q);
        mat(p + "w1", H, D);
        mat(p + "w2", D, H);
        mat(p + "w3", H, D);
    }
    return m;
}

void model_checks(const KernelTable& k, Rng& r) {
    Config c;
    c.dim = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;  // grouped-query
    c.hidden_dim = 172;  // not a multiple of 32
    c.vocab_size = 300;
    c.max_seq_len = 40;
    c.tied = false;
    auto rm = random_model(c, r);
    auto mref = std::make_shared<Model>(c, rm->views, &kernels_ref());
    auto mk = std::make_shared<Model>(c, rm->views, &k);
    Session sref(mref, 8), sk(mk, 8);
    std::vector<float> a(c.vocab_size), b(c.vocab_size);
    std::vector<int64_t> toks;
    for (int i = 0; i < c.max_seq_len; i++) toks.push_back((int64_t)(r.next() % c.vocab_size));
    // prefill 13 tokens (two chunks), then decode to the end of the context
    sref.prefill(toks.data(), 13, 0, a.data());
    sk.prefill(toks.data(), 13, 0, b.data());
    close(std::string(k.name) + " model prefill", a.data(), b.data(), c.vocab_size, 2e-3, 1e-4);
    std::vector<std::vector<float>> one;  // this path's logits on one thread, step by step
    one.push_back(b);
    for (int64_t p = 13; p < c.max_seq_len; p++) {
        sref.forward(toks[p], p, a.data());
        sk.forward(toks[p], p, b.data());
        close(std::string(k.name) + " model forward pos=" + std::to_string(p), a.data(), b.data(), c.vocab_size, 2e-3,
              1e-4);
        one.push_back(b);
    }
    // the same steps on 2 and 3 threads: the same bits
    for (int threads : {2, 3}) {
        Session st(mk, 8);
        st.set_threads(threads);
        st.prefill(toks.data(), 13, 0, b.data());
        bool same = std::memcmp(b.data(), one[0].data(), b.size() * sizeof(float)) == 0;
        for (int64_t p = 13; p < c.max_seq_len; p++) {
            st.forward(toks[p], p, b.data());
            same = same && std::memcmp(b.data(), one[(size_t)(p - 12)].data(), b.size() * sizeof(float)) == 0;
        }
        check(same, std::string(k.name) + " model on " + std::to_string(threads) + " threads: the same logits as one",
              0, same ? 0 : 1, same ? 0 : 1, 0);
    }
}

void bench(const char* only) {
    Rng r(7);
    Config c;
    c.dim = 256;
    c.n_layers = 8;
    c.n_heads = 4;
    c.n_kv_heads = 4;
    c.hidden_dim = 768;
    c.vocab_size = 2048;
    c.max_seq_len = 256;
    c.tied = true;
    auto rm = random_model(c, r);
    for (const char* name : {"scalar", "avx2", "avx512vnni", "neon", "neon_dot"}) {
        const KernelTable* k = kernels_by_name(name);
        if (!k || (only && std::strcmp(only, name) != 0)) continue;
        auto m = std::make_shared<Model>(c, rm->views, k);
        Session s(m, 64);
        std::vector<float> logits(c.vocab_size);
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            auto t0 = std::chrono::steady_clock::now();
            for (int64_t p = 0; p < 256; p++) s.forward(p % c.vocab_size, p, logits.data());
            best = std::fmin(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::vector<int64_t> prompt(128);
        for (int i = 0; i < 128; i++) prompt[i] = i;
        double bp = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            auto t0 = std::chrono::steady_clock::now();
            s.prefill(prompt.data(), 128, 0, logits.data());
            bp = std::fmin(bp, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::printf("bench %-8s decode %.0f tok/s  prefill(128) %.2f ms\n", name, 256 / best, bp * 1e3);
    }
}

}  // namespace

int main(int argc, char** argv) {
    // bulletd.kernels hands the model its limits from bulletd.format.arch; this driver runs without
    // Python, so it allows what its own models need
    ArchLimits limits;
    limits.dim = limits.n_heads = limits.head_dim = 1 << 10;
    limits.n_layers = 64;
    limits.hidden_dim = limits.vocab_size = limits.max_seq_len = 1 << 12;
    limits.max_float = 1e12;
    limits.kv_bytes = (int64_t)1 << 30;
    set_arch_limits(limits);
    std::string expect;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--bench") == 0) {
            bench(i + 1 < argc ? argv[i + 1] : nullptr);
            return 0;
        }
        if (std::strcmp(argv[i], "--force") == 0 && i + 1 < argc) {
            // Run one SIMD kernel of the named table without asking the CPU first.
            const KernelTable* k = nullptr;
#if defined(__aarch64__)
            if (std::strcmp(argv[i + 1], "neon_dot") == 0) k = &kernels_neon_dot();
            if (std::strcmp(argv[i + 1], "neon") == 0) k = &kernels_neon();
#endif
#if defined(__x86_64__) && defined(BULLET_HAVE_AVX2)
            if (std::strcmp(argv[i + 1], "avx2") == 0) k = &kernels_avx2();
#endif
#if defined(__x86_64__) && defined(BULLET_HAVE_AVX512VNNI)
            if (std::strcmp(argv[i + 1], "avx512vnni") == 0) k = &kernels_avx512vnni();
#endif
            if (!k) {
                std::printf("no table %s in this build\n", argv[i + 1]);
                return 2;
            }
            Rng r(1);
            std::vector<BlockBQ4> w = rand_bq4(r, 1, 64);
            std::vector<float> x = randn(r, 64);
            std::vector<BlockQ8> q(2);
            quantize_q8_ref(x.data(), q.data(), 64);
            const float got = k->dot_bq4_q8(w.data(), q.data(), 2);
            const float want = dot_bq4_q8_ref(w.data(), q.data(), 2);
            std::printf("ran %s: %.6g (reference %.6g)\n", k->name, got, want);
            return std::fabs(got - want) <= 1e-4f * (1 + std::fabs(want)) ? 0 : 1;
        }
        if (std::strcmp(argv[i], "--expect-path") == 0 && i + 1 < argc) expect = argv[++i];
    }
    const CpuFeatures f = cpu_features();
    std::printf("cpu: arch=%s avx2=%d fma=%d f16c=%d avx512f=%d avx512bw=%d avx512vl=%d avx512vnni=%d neon=%d "
                "dotprod=%d\n",
                f.arch, f.avx2, f.fma, f.f16c, f.avx512f, f.avx512bw, f.avx512vl, f.avx512vnni, f.neon, f.dotprod);
    std::printf("kernel path: %s\n", active_kernels().name);
    if (!expect.empty()) check(expect == active_kernels().name, "dispatch chose " + std::string(active_kernels().name) +
                                                                   ", expected " + expect, 0, 0, 0, 0);
    for (const char* name : {"scalar", "avx2", "avx512vnni", "neon", "neon_dot"}) {
        const KernelTable* k = kernels_by_name(name);
        if (!k) continue;
        Rng r(12345);
        const int before = g_checks, fb = g_fail;
        kernel_checks(*k, r);
        model_checks(*k, r);
        std::printf("path %s: %d checks, %d failed\n", name, g_checks - before, g_fail - fb);
    }
    std::printf("%s: %d checks, %d failed\n", g_fail ? "FAILED" : "PASSED", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
