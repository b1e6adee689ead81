// CPU feature detection and the kernel dispatch table, filled once.
//
// x86-64: cpuid (AVX2 + FMA + F16C, and the OS saving YMM state via xgetbv) selects "avx2";
// AVX-512 F + BW + VL + VNNI with the OS saving opmask and ZMM state as well selects "avx512vnni".
// aarch64: NEON is baseline; getauxval(AT_HWCAP) & HWCAP_ASIMDDP selects "neon_dot" (sdot/udot).
// BULLET_KERNEL=scalar (or avx2/avx512vnni/neon/neon_dot, if the CPU can run it) overrides the choice.
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace bullet {

static CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__)
    f.arch = "x86_64";
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        const bool osxsave = c & (1u << 27);
        f.fma = c & (1u << 12);
        f.f16c = c & (1u << 29);
        bool ymm = false, zmm = false;
        if (osxsave) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            ymm = (lo & 0x6) == 0x6;    // XMM and YMM state enabled by the OS
            zmm = (lo & 0xe6) == 0xe6;  // and opmask, ZMM0-15 upper halves, ZMM16-31
        }
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            f.avx2 = ymm && (b & (1u << 5));
            f.avx512f = zmm && (b & (1u << 16));
            f.avx512bw = zmm && (b & (1u << 30));
            f.avx512vl = zmm && (b & (1u << 31));
            f.avx512vnni = zmm && (c & (1u << 11));
        }
        if (!ymm) f.fma = f.f16c = false;
    }
#elif defined(__aarch64__)
    f.arch = "aarch64";
    f.neon = true;
#if defined(__linux__)
    f.dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
#else
    f.arch = "other";
#endif
    return f;
}

CpuFeatures cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

// Tables are filled entry by entry, by name; one that misses an entry is refused loudly here
// rather than jumping to a null pointer later.
static const KernelTable* complete(const KernelTable* t) {
    if (!t) return t;
    const bool ok = t->name && t->quantize_q8 && t->dot_bq4_q8 && t->packed_bq4_bytes && t->pack_bq4 &&
                    t->matvec_bq4_q8 && t->matmul_bq4_q8 && t->dot_f32 && t->dot_f16 && t->axpy && t->rmsnorm &&
                    t->softmax && t->swiglu && t->rope && t->attention && t->attention_multi;
    if (!ok) throw std::logic_error(std::string("kernel table ") + (t->name ? t->name : "?") + " misses an entry");
    return t;
}
static_assert(sizeof(KernelTable) == 16 * sizeof(void*), "a KernelTable entry was added: check it in complete()");

static const KernelTable* lookup(const char* name);

const KernelTable* kernels_by_name(const char* name) { return complete(lookup(name)); }

static const KernelTable* lookup(const char* name) {
    const CpuFeatures f = cpu_features();
    if (std::strcmp(name, "scalar") == 0) return &kernels_ref();
#if defined(__x86_64__) && defined(BULLET_HAVE_AVX2)
    if (std::strcmp(name, "avx2") == 0) return (f.avx2 && f.fma && f.f16c) ? &kernels_avx2() : nullptr;
#endif
#if defined(__x86_64__) && defined(BULLET_HAVE_AVX512VNNI)
    // the table also uses the AVX2 float kernels
    if (std::strcmp(name, "avx512vnni") == 0)
        return (f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.avx2 && f.fma && f.f16c)
                   ? &kernels_avx512vnni()
                   : nullptr;
#endif
#if defined(__aarch64__)
    if (std::strcmp(name, "neon") == 0) return &kernels_neon();
    if (std::strcmp(name, "neon_dot") == 0) return f.dotprod ? &kernels_neon_dot() : nullptr;
#endif
    if (std::strcmp(name, "auto") == 0) {
        for (const char* n : {"neon_dot", "neon", "avx512vnni", "avx2"}) {
            const KernelTable* t = kernels_by_name(n);
            if (t) return t;
        }
        return &kernels_ref();
    }
    (void)f;
    return nullptr;
}

static const KernelTable& choose() {
    const char* env = std::getenv("BULLET_KERNEL");
    if (env && *env && std::strcmp(env, "auto") != 0) {
        const KernelTable* t = kernels_by_name(env);
        // An unknown or unsupported request falls back to the reference, the always-safe choice.
        return t ? *t : kernels_ref();
    }
    return *kernels_by_name("auto");
}

const KernelTable& active_kernels() {
    static const KernelTable& t = choose();
    return t;
}

}  // namespace bullet
