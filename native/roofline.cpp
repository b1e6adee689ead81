// Roofline probes for `bullet bench`: what one core can do at most with a kernel path's own
// instructions, so a decode rate can be put beside the bound it runs against.
//   int8_macs_per_s: the path's int8 multiply-accumulate on register data, many independent
//     accumulators (no loads, no nibble unpacking): AVX2 vpmaddubsw + vpaddw (32 MACs), AVX-512
//     VNNI vpdpbusd (64), NEON-dot sdot (16), NEON smlal (8), scalar int multiply-adds (1).
//   read_bytes_per_s: reading a buffer of n bytes again and again with the path's widest loads;
//     the buffer stays in whichever cache level it fits, as a model's weights do between tokens.
// Each figure is the best of several runs of about 10 ms of this thread's CPU time.
// The SIMD functions carry target attributes (this file has no -m flags) and run only when the
// CPU has the path (kernels_by_name says so).
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace bullet {

namespace {

// keeps a register value opaque to the optimiser, so a loop-invariant operation is redone
#if defined(__x86_64__)
#define OPAQUE(v) asm volatile("" : "+x"(v))
#define OPAQUE512(v) asm volatile("" : "+v"(v))
#elif defined(__aarch64__)
#define OPAQUE(v) asm volatile("" : "+w"(v))
#else
#define OPAQUE(v) asm volatile("" : "+r"(v))
#endif

volatile uint64_t g_sink;

int64_t macs_scalar(int64_t iters) {
    int32_t acc[8] = {};
    int32_t a = 3, b = 5;
    for (int64_t i = 0; i < iters; i++) {
        OPAQUE(a);
        for (int k = 0; k < 8; k++) acc[k] += (int32_t)(int8_t)(a + k) * (int32_t)(int8_t)b;
    }
    uint64_t s = 0;
    for (int k = 0; k < 8; k++) s += (uint32_t)acc[k];
    g_sink = s;
    return iters * 8;
}

uint64_t read_scalar(const uint8_t* p, int64_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t v[4];
        std::memcpy(v, p + i, 32);
        s0 |= v[0];
        s1 |= v[1];
        s2 |= v[2];
        s3 |= v[3];
    }
    return s0 | s1 | s2 | s3;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) int64_t macs_avx2(int64_t iters) {
    // vpmaddubsw is off the accumulators' chains (only the 1-cycle vpaddw is on them)
    __m256i a0 = _mm256_set1_epi8(1), a1 = _mm256_set1_epi8(2), a2 = _mm256_set1_epi8(3), a3 = _mm256_set1_epi8(4);
    __m256i b = _mm256_set1_epi8(5);
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int64_t i = 0; i < iters; i++) {
        OPAQUE(b);
        c0 = _mm256_add_epi16(c0, _mm256_maddubs_epi16(a0, b));
        c1 = _mm256_add_epi16(c1, _mm256_maddubs_epi16(a1, b));
        c2 = _mm256_add_epi16(c2, _mm256_maddubs_epi16(a2, b));
        c3 = _mm256_add_epi16(c3, _mm256_maddubs_epi16(a3, b));
        c4 = _mm256_add_epi16(c4, _mm256_maddubs_epi16(a0, b));
        c5 = _mm256_add_epi16(c5, _mm256_maddubs_epi16(a1, b));
        c6 = _mm256_add_epi16(c6, _mm256_maddubs_epi16(a2, b));
        c7 = _mm256_add_epi16(c7, _mm256_maddubs_epi16(a3, b));
    }
    __m256i s = _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(c0, c1), _mm256_add_epi16(c2, c3)),
                                 _mm256_add_epi16(_mm256_add_epi16(c4, c5), _mm256_add_epi16(c6, c7)));
    g_sink = (uint64_t)_mm256_extract_epi64(s, 0);
    return iters * 8 * 32;
}

__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t* p, int64_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 128 <= n; i += 128) {
        s0 = _mm256_or_si256(s0, _mm256_load_si256((const __m256i*)(p + i)));
        s1 = _mm256_or_si256(s1, _mm256_load_si256((const __m256i*)(p + i + 32)));
        s2 = _mm256_or_si256(s2, _mm256_load_si256((const __m256i*)(p + i + 64)));
        s3 = _mm256_or_si256(s3, _mm256_load_si256((const __m256i*)(p + i + 96)));
    }
    const __m256i s = _mm256_or_si256(_mm256_or_si256(s0, s1), _mm256_or_si256(s2, s3));
    return (uint64_t)_mm256_extract_epi64(s, 0) | (uint64_t)_mm256_extract_epi64(s, 3);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t macs_avx512vnni(int64_t iters) {
    // vpdpbusd accumulates in place: 16 chains cover its latency at full throughput
    __m512i a0 = _mm512_set1_epi8(1), a1 = _mm512_set1_epi8(2), a2 = _mm512_set1_epi8(3), a3 = _mm512_set1_epi8(4);
    __m512i b = _mm512_set1_epi8(5);
    __m512i c[16];
    for (int k = 0; k < 16; k++) c[k] = _mm512_setzero_si512();
    for (int64_t i = 0; i < iters; i++) {
        OPAQUE512(b);
        c[0] = _mm512_dpbusd_epi32(c[0], a0, b);
        c[1] = _mm512_dpbusd_epi32(c[1], a1, b);
        c[2] = _mm512_dpbusd_epi32(c[2], a2, b);
        c[3] = _mm512_dpbusd_epi32(c[3], a3, b);
        c[4] = _mm512_dpbusd_epi32(c[4], a0, b);
        c[5] = _mm512_dpbusd_epi32(c[5], a1, b);
        c[6] = _mm512_dpbusd_epi32(c[6], a2, b);
        c[7] = _mm512_dpbusd_epi32(c[7], a3, b);
        c[8] = _mm512_dpbusd_epi32(c[8], a0, b);
        c[9] = _mm512_dpbusd_epi32(c[9], a1, b);
        c[10] = _mm512_dpbusd_epi32(c[10], a2, b);
        c[11] = _mm512_dpbusd_epi32(c[11], a3, b);
        c[12] = _mm512_dpbusd_epi32(c[12], a0, b);
        c[13] = _mm512_dpbusd_epi32(c[13], a1, b);
        c[14] = _mm512_dpbusd_epi32(c[14], a2, b);
        c[15] = _mm512_dpbusd_epi32(c[15], a3, b);
    }
    __m512i s = c[0];
    for (int k = 1; k < 16; k++) s = _mm512_add_epi32(s, c[k]);
    g_sink = (uint64_t)_mm512_reduce_add_epi32(s);
    return iters * 16 * 64;
}

__attribute__((target("avx512f"))) uint64_t read_avx512(const uint8_t* p, int64_t n) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 256 <= n; i += 256) {
        s0 = _mm512_or_si512(s0, _mm512_load_si512((const void*)(p + i)));
        s1 = _mm512_or_si512(s1, _mm512_load_si512((const void*)(p + i + 64)));
        s2 = _mm512_or_si512(s2, _mm512_load_si512((const void*)(p + i + 128)));
        s3 = _mm512_or_si512(s3, _mm512_load_si512((const void*)(p + i + 192)));
    }
    return (uint64_t)_mm512_reduce_or_epi64(_mm512_or_si512(_mm512_or_si512(s0, s1), _mm512_or_si512(s2, s3)));
}
#endif

#if defined(__aarch64__)
int64_t macs_neon(int64_t iters) {
    int8x8_t a0 = vdup_n_s8(1), a1 = vdup_n_s8(2), b = vdup_n_s8(3);
    int16x8_t c[8];
    for (int k = 0; k < 8; k++) c[k] = vdupq_n_s16(0);
    for (int64_t i = 0; i < iters; i++) {
        OPAQUE(b);
        for (int k = 0; k < 8; k++) c[k] = vmlal_s8(c[k], (k & 1) ? a1 : a0, b);
    }
    int16x8_t s = c[0];
    for (int k = 1; k < 8; k++) s = vaddq_s16(s, c[k]);
    g_sink = (uint64_t)vaddvq_s16(s);
    return iters * 8 * 8;
}

__attribute__((target("arch=armv8.2-a+dotprod"))) int64_t macs_neon_dot(int64_t iters) {
    int8x16_t a0 = vdupq_n_s8(1), a1 = vdupq_n_s8(2), b = vdupq_n_s8(3);
    int32x4_t c[12];
    for (int k = 0; k < 12; k++) c[k] = vdupq_n_s32(0);
    for (int64_t i = 0; i < iters; i++) {
        OPAQUE(b);
        for (int k = 0; k < 12; k++) c[k] = vdotq_s32(c[k], (k & 1) ? a1 : a0, b);
    }
    int32x4_t s = c[0];
    for (int k = 1; k < 12; k++) s = vaddq_s32(s, c[k]);
    g_sink = (uint64_t)vaddvq_s32(s);
    return iters * 12 * 16;
}

uint64_t read_neon(const uint8_t* p, int64_t n) {
    uint8x16_t s0 = vdupq_n_u8(0), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = vorrq_u8(s0, vld1q_u8(p + i));
        s1 = vorrq_u8(s1, vld1q_u8(p + i + 16));
        s2 = vorrq_u8(s2, vld1q_u8(p + i + 32));
        s3 = vorrq_u8(s3, vld1q_u8(p + i + 48));
    }
    return vmaxvq_u8(vorrq_u8(vorrq_u8(s0, s1), vorrq_u8(s2, s3)));
}
#endif

struct Probe {
    int64_t (*macs)(int64_t iters);
    uint64_t (*read)(const uint8_t* p, int64_t n);
};

Probe probe(const std::string& path) {
    const KernelTable* t = kernels_by_name(path.c_str());
    if (!t) throw std::invalid_argument("kernel path '" + path + "' is unknown or not supported by this CPU/build");
    const std::string name = t->name;
#if defined(__x86_64__)
    if (name == "avx2") return {macs_avx2, read_avx2};
    if (name == "avx512vnni") return {macs_avx512vnni, read_avx512};
#endif
#if defined(__aarch64__)
    if (name == "neon") return {macs_neon, read_neon};
    if (name == "neon_dot") return {macs_neon_dot, read_neon};
#endif
    return {macs_scalar, read_scalar};
}

// this thread's CPU time: a run that another process interrupts is not charged for the wait
double now_s() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

}  // namespace

double int8_macs_per_s(const std::string& path) {
    const Probe p = probe(path);
    int64_t iters = 1 << 12;
    while (true) {  // grow a run to about 10 ms
        const double t0 = now_s();
        p.macs(iters);
        if (now_s() - t0 > 0.01 || iters > (int64_t)1 << 40) break;
        iters *= 2;
    }
    double best = 0;
    for (int r = 0; r < 7; r++) {
        const double t0 = now_s();
        const int64_t macs = p.macs(iters);
        const double dt = now_s() - t0;
        if (dt > 0 && macs / dt > best) best = macs / dt;
    }
    return best;
}

double read_bytes_per_s(const std::string& path, int64_t n) {
    if (n < 4096 || n > ((int64_t)1 << 32)) throw std::invalid_argument("read probe: 4 KiB .. 4 GiB");
    const Probe p = probe(path);
    n = n / 256 * 256;
    uint8_t* buf = (uint8_t*)std::aligned_alloc(64, (size_t)n);
    if (!buf) throw std::bad_alloc();
    for (int64_t i = 0; i < n; i++) buf[i] = (uint8_t)(i * 131 + 7);
    int64_t reps = 1;
    uint64_t sink = 0;
    while (true) {
        const double t0 = now_s();
        for (int64_t r = 0; r < reps; r++) sink += p.read(buf, n);
        if (now_s() - t0 > 0.01 || reps > (1 << 20)) break;
        reps *= 2;
    }
    double best = 0;
    for (int r = 0; r < 7; r++) {
        const double t0 = now_s();
        for (int64_t k = 0; k < reps; k++) sink += p.read(buf, n);
        const double dt = now_s() - t0;
        if (dt > 0 && (double)n * reps / dt > best) best = (double)n * reps / dt;
    }
    g_sink = sink;
    std::free(buf);
    return best;
}

}  // namespace bullet
