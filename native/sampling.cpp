// Token sampling (see sampling.h). sample_token_ref mirrors bulletd/runtime/sampling.py
// Sampler.sample step by step; sample_token is the same function made cheap for the decode loop.
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace bullet {

int64_t sample_token_ref(const float* logits, int64_t n, const int64_t* seen, int64_t n_seen, double temperature,
                         int64_t top_k, double top_p, float penalty, double coin) {
    if (n <= 0) return -1;
    thread_local std::vector<float> z;
    thread_local std::vector<int64_t> ids;
    thread_local std::vector<double> cum;
    z.assign(logits, logits + n);
    for (int64_t i = 0; i < n; i++)
        if (!std::isfinite(z[i])) return -1;
    // repetition penalty, once per distinct seen id: positive logits divided, negative multiplied
    if (penalty != 1.0f) {
        for (int64_t j = 0; j < n_seen; j++) {
            const int64_t t = seen[j];
            if (t < 0 || t >= n) continue;
            z[t] = z[t] > 0.0f ? z[t] / penalty : z[t] * penalty;
        }
    }
    if (temperature == 0.0) {
        return (int64_t)(std::max_element(z.begin(), z.end()) - z.begin());  // first maximum
    }
    // top-k: every id whose logit is >= the k-th largest value, ascending ids
    ids.clear();
    if (top_k <= 0 || top_k >= n) {
        ids.resize(n);
        std::iota(ids.begin(), ids.end(), 0);
    } else {
        thread_local std::vector<float> tmp;
        tmp = z;
        std::nth_element(tmp.begin(), tmp.begin() + (n - top_k), tmp.end());
        const float kth = tmp[n - top_k];
        for (int64_t i = 0; i < n; i++)
            if (z[i] >= kth) ids.push_back(i);
    }
    // stable sort by logit, descending
    std::stable_sort(ids.begin(), ids.end(), [](int64_t a, int64_t b) { return z[a] > z[b]; });
    const double zmax = (double)z[ids[0]];
    cum.resize(ids.size());
    double acc = 0.0;
    for (size_t i = 0; i < ids.size(); i++) {
        acc += std::exp(((double)z[ids[i]] - zmax) / temperature);
        cum[i] = acc;
    }
    size_t m = cum.size();
    if (top_p < 1.0) {
        // first index where the cumulative weight reaches top_p of the total (searchsorted left)
        const double target = top_p * cum.back();
        const size_t last = (size_t)(std::lower_bound(cum.begin(), cum.end(), target) - cum.begin());
        m = std::min(last, m - 1) + 1;
    }
    // inverse-CDF draw (searchsorted right)
    const double x = coin * cum[m - 1];
    size_t i = (size_t)(std::upper_bound(cum.begin(), cum.begin() + m, x) - cum.begin());
    return ids[std::min(i, m - 1)];
}

// The same picks as sample_token_ref, with less work per call:
//  - the finiteness check is a branch-free OR of x - x over the copy;
//  - the k-th largest logit is found among the few candidates at or above the k-th largest of
//    the maxima of about 2k groups (every value that can be it is one of them, repeats included);
//  - the passes over all the logits have no long dependency chain (a few lanes, or SSE2);
//  - candidates are ordered as (logit descending, id ascending), the order a stable sort by
//    logit of ascending ids gives (by counting each one's rank when they are few), so the
//    weights and their sums come out in the same order.
constexpr int64_t RANK_MAX = 256;  // candidates ranked by counting; more are partitioned and sorted

// The largest of v[0..n) (n >= 1, no NaN). Eight running maxima break the dependency chain of one
// (and become SIMD max instructions); a maximum is exact, so the order of the comparisons does not
// matter (of +0 and -0 either may come out: they compare equal, as every use here compares).
// 1 when v[0..n) holds an inf or a NaN: x - x is 0 for every finite x and NaN for the others.
static inline int any_nonfinite(const float* v, int64_t n) {
    int64_t i = 0;
    int bad = 0;
#if defined(__SSE2__)
    __m128 acc = _mm_setzero_ps();  // the bits of the differences ORed: a NaN stays a NaN
    for (; i + 4 <= n; i += 4) {
        const __m128 x = _mm_loadu_ps(v + i);
        acc = _mm_or_ps(acc, _mm_sub_ps(x, x));
    }
    bad = _mm_movemask_ps(_mm_cmpneq_ps(acc, _mm_setzero_ps())) != 0;
#endif
    for (; i < n; i++) bad |= v[i] - v[i] != 0.0f;
    return bad;
}

// Bit j set when v[j] >= t, for j < 8.
static inline unsigned at_least8(const float* v, float t) {
#if defined(__SSE2__)
    const __m128 tt = _mm_set1_ps(t);
    return (unsigned)_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(v), tt)) |
           (unsigned)_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(v + 4), tt)) << 4;
#else
    unsigned m = 0;
    for (int j = 0; j < 8; j++) m |= (unsigned)(v[j] >= t) << j;
    return m;
#endif
}

static inline float max_of(const float* v, int64_t n) {
    constexpr int L = 8;
    float m[L];
    for (int j = 0; j < L; j++) m[j] = v[0];
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int j = 0; j < L; j++) m[j] = v[i + j] > m[j] ? v[i + j] : m[j];
    float r = m[0];
    for (int j = 1; j < L; j++) r = m[j] > r ? m[j] : r;
    for (; i < n; i++) r = v[i] > r ? v[i] : r;
    return r;
}

int64_t sample_token(const float* logits, int64_t n, const int64_t* seen, int64_t n_seen, double temperature,
                     int64_t top_k, double top_p, float penalty, double coin) {
    if (n <= 0) return -1;
    thread_local std::vector<float> z;
    thread_local std::vector<float> buf;
    thread_local std::vector<int64_t> cand;
    thread_local std::vector<float> bmax;
    thread_local std::vector<int32_t> rank;
    thread_local std::vector<int64_t> ids;
    thread_local std::vector<double> cum;
    z.resize((size_t)n);
    float* zp = z.data();
    std::memcpy(zp, logits, (size_t)n * sizeof(float));
    if (any_nonfinite(zp, n)) return -1;
    if (penalty != 1.0f) {
        for (int64_t j = 0; j < n_seen; j++) {
            const int64_t t = seen[j];
            if (t < 0 || t >= n) continue;
            zp[t] = zp[t] > 0.0f ? zp[t] / penalty : zp[t] * penalty;
        }
    }
    if (temperature == 0.0) {
        // the largest value (a max that vectorises: no NaN is left), then its first index
        const float bv = max_of(zp, n);
        int64_t best = 0;
        while (zp[best] != bv) best++;
        return best;
    }
    ids.clear();
    bool sorted = false;
    if (top_k <= 0 || top_k >= n) {
        ids.resize((size_t)n);
        std::iota(ids.begin(), ids.end(), 0);
    } else {
        // t0 = the k-th largest of the maxima of about 2k groups (group b: the ids b, b + g, b + 2g
        // .., so that the maxima of all groups are taken at once, g at a time): k values are
        // >= t0, so the k-th largest of all is too, and every value >= it is among the
        // candidates >= t0 (few)
        const int64_t k = top_k;
        const int64_t g = std::min(n, (2 * k + 7) / 8 * 8);  // k <= g <= n: no group is empty
        bmax.assign(zp, zp + g);
        float* bm = bmax.data();
        for (int64_t r = g; r < n; r += g) {
            const float* row = zp + r;
            const int64_t w = std::min(g, n - r);
            for (int64_t b = 0; b < w; b++) bm[b] = row[b] > bm[b] ? row[b] : bm[b];
        }
        buf.assign(bmax.begin(), bmax.end());
        std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<float>());
        const float t0 = buf[k - 1];
        // candidates, ascending ids: eight values compared at a time, the few set bits taken out
        cand.resize((size_t)n);
        int64_t* cp = cand.data();
        int64_t nc = 0, i = 0;
        for (; i + 8 <= n; i += 8)
            for (unsigned m = at_least8(zp + i, t0); m; m &= m - 1) cp[nc++] = i + __builtin_ctz(m);
        for (; i < n; i++) {
            cp[nc] = i;
            nc += zp[i] >= t0;
        }
        buf.resize((size_t)nc);
        for (int64_t j = 0; j < nc; j++) buf[j] = zp[cp[j]];
        if (nc <= RANK_MAX) {
            // each candidate's place in the order (logit descending, id ascending) by counting,
            // which vectorises and never mispredicts: the kept ids come out sorted
            const float* v = buf.data();
            rank.resize((size_t)nc);
            for (int64_t j = 0; j < nc; j++) {
                int32_t r = 0;
                const float x = v[j];
                for (int64_t i = 0; i < j; i++) r += v[i] >= x;
                for (int64_t i = j + 1; i < nc; i++) r += v[i] > x;
                rank[j] = r;
            }
            int64_t at_k = 0;  // the candidate of rank k - 1: the k-th largest value
            for (int64_t j = 0; j < nc; j++) at_k = rank[j] == k - 1 ? j : at_k;
            const float kth = v[at_k];
            int64_t m = 0;
            for (int64_t j = 0; j < nc; j++) m += v[j] >= kth;
            ids.resize((size_t)m);
            for (int64_t j = 0; j < nc; j++)
                if (rank[j] < m) ids[rank[j]] = cp[j];
            sorted = true;
        } else {
            std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<float>());
            const float kth = buf[k - 1];
            for (int64_t j = 0; j < nc; j++)
                if (zp[cp[j]] >= kth) ids.push_back(cp[j]);
        }
    }
    if (!sorted)
        std::sort(ids.begin(), ids.end(), [zp](int64_t a, int64_t b) { return zp[a] > zp[b] || (zp[a] == zp[b] && a < b); });
    const double zmax = (double)zp[ids[0]];
    cum.resize(ids.size());
    double acc = 0.0;
    for (size_t i = 0; i < ids.size(); i++) {
        acc += std::exp(((double)zp[ids[i]] - zmax) / temperature);
        cum[i] = acc;
    }
    size_t m = cum.size();
    if (top_p < 1.0) {
        const double target = top_p * cum.back();
        const size_t last = (size_t)(std::lower_bound(cum.begin(), cum.end(), target) - cum.begin());
        m = std::min(last, m - 1) + 1;
    }
    const double x = coin * cum[m - 1];
    size_t i = (size_t)(std::upper_bound(cum.begin(), cum.begin() + m, x) - cum.begin());
    return ids[std::min(i, m - 1)];
}

}  // namespace bullet
