// Token sampling (see sampling.h). Mirrors bulletd/runtime/sampling.py Sampler.sample step by step.
#include "sampling.h"

#include <algorithm>
#include <cmath>
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

}  // namespace bullet
