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
//  - the k-th largest logit is found among the few candidates at or above the k-th largest of
//    about 2k block maxima (every value that can be it is one of them, repeats included);
//  - candidates are ordered as (logit descending, id ascending), the order a stable sort by
//    logit of ascending ids gives (by counting each one's rank when they are few), so the
//    weights and their sums come out in the same order.
constexpr int64_t RANK_MAX = 256;  // candidates ranked by counting; more are partitioned and sorted

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
    bool sorted = false;
    if (top_k <= 0 || top_k >= n) {
        ids.resize((size_t)n);
        std::iota(ids.begin(), ids.end(), 0);
    } else {
        // t0 = the k-th largest of the maxima of about 2k blocks: k values are >= t0, so the
        // k-th largest of all is too, and every value >= it is among the candidates >= t0 (few)
        const int64_t k = top_k;
        const int64_t bs = std::max<int64_t>(1, n / (2 * k)), nbk = (n + bs - 1) / bs;  // nbk >= k
        bmax.resize((size_t)nbk);
        for (int64_t b = 0; b < nbk; b++) {
            const int64_t lo = b * bs, hi = std::min(n, lo + bs);
            float mx = zp[lo];
            for (int64_t i = lo + 1; i < hi; i++) mx = zp[i] > mx ? zp[i] : mx;
            bmax[b] = mx;
        }
        buf.assign(bmax.begin(), bmax.end());
        std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<float>());
        const float t0 = buf[k - 1];
        // candidates: only blocks whose maximum reaches t0 hold any; ascending ids
        cand.resize((size_t)n);
        int64_t* cp = cand.data();
        int64_t nc = 0;
        for (int64_t b = 0; b < nbk; b++) {
            if (bmax[b] < t0) continue;
            const int64_t lo = b * bs, hi = std::min(n, lo + bs);
            for (int64_t i = lo; i < hi; i++) {
                cp[nc] = i;
                nc += zp[i] >= t0;
            }
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
