// Token sampling (see sampling.h). sample_token_ref mirrors bulletd/runtime/sampling.py
// Sampler.sample step by step; sample_token is the same function made cheap for the decode loop.
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

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
//  - the finiteness check is a branch-free OR over the exponent bits, fused with the copy;
//  - the k-th largest logit comes from one pass that keeps only values above a rising threshold
//    (the k largest with repeats survive, so it is exactly the value nth_element finds);
//  - candidates are sorted as (logit descending, id ascending), the order a stable sort by
//    logit of ascending ids gives, so the weights and their sums come out in the same order.
// whether any of x[0..n) is > t; n <= CHUNK. A full chunk is a fixed-length loop, which vectorises.
constexpr int64_t CHUNK = 32;
static inline bool any_above(const float* x, int64_t n, float t) {
    int any = 0;
    if (n == CHUNK) {
        for (int64_t i = 0; i < CHUNK; i++) any |= x[i] > t;
    } else {
        for (int64_t i = 0; i < n; i++) any |= x[i] > t;
    }
    return any != 0;
}

int64_t sample_token(const float* logits, int64_t n, const int64_t* seen, int64_t n_seen, double temperature,
                     int64_t top_k, double top_p, float penalty, double coin) {
    if (n <= 0) return -1;
    thread_local std::vector<float> z;
    thread_local std::vector<float> buf;
    thread_local std::vector<int64_t> ids;
    thread_local std::vector<double> cum;
    z.resize((size_t)n);
    float* zp = z.data();
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        std::memcpy(&b, logits + i, 4);
        bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
        zp[i] = logits[i];
    }
    if (bad) return -1;
    if (penalty != 1.0f) {
        for (int64_t j = 0; j < n_seen; j++) {
            const int64_t t = seen[j];
            if (t < 0 || t >= n) continue;
            zp[t] = zp[t] > 0.0f ? zp[t] / penalty : zp[t] * penalty;
        }
    }
    if (temperature == 0.0) {
        // the largest value (a max that vectorises: no NaN is left), then its first index
        float bv = zp[0];
        for (int64_t i = 1; i < n; i++) bv = zp[i] > bv ? zp[i] : bv;
        int64_t best = 0;
        while (zp[best] != bv) best++;
        return best;
    }
    ids.clear();
    if (top_k <= 0 || top_k >= n) {
        ids.resize((size_t)n);
        std::iota(ids.begin(), ids.end(), 0);
    } else {
        // values above a threshold t go to buf; when it fills, it is cut to its k largest and t
        // becomes the least of those. A value <= t is never the k-th largest of all unless t is,
        // and the k kept values already make t that.
        const size_t k = (size_t)top_k, cap = 4 * k + 64;
        buf.resize(cap + 1);
        float* bp = buf.data();
        float t = -INFINITY;
        size_t nb = 0;
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            const int64_t i1 = std::min(n, i0 + CHUNK);
            if (!any_above(zp + i0, i1 - i0, t)) continue;  // the common case once t has risen
            for (int64_t i = i0; i < i1; i++) {
                bp[nb] = zp[i];
                nb += zp[i] > t;
                if (nb == cap) {
                    std::nth_element(bp, bp + (k - 1), bp + nb, std::greater<float>());
                    t = bp[k - 1];
                    nb = k;
                }
            }
        }
        std::nth_element(bp, bp + (k - 1), bp + nb, std::greater<float>());
        const float kth = bp[k - 1];
        ids.resize((size_t)n);
        int64_t* ip = ids.data();
        size_t m = 0;
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            const int64_t i1 = std::min(n, i0 + CHUNK);
            if (!any_above(zp + i0, i1 - i0, std::nextafter(kth, -INFINITY))) continue;
            for (int64_t i = i0; i < i1; i++) {
                ip[m] = i;
                m += zp[i] >= kth;
            }
        }
        ids.resize(m);
    }
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
