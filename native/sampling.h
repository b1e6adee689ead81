// Token sampling, scalar C++: the same rules, in the same order, as Sampler.sample in
// bulletd/runtime/sampling.py, which is its reference (tests/test_sampling.py checks they pick
// the same token). Runs without the GIL so sessions on other threads keep going.
#pragma once
#include <cstdint>

namespace bullet {

// logits (n), seen: distinct token ids already in the context (for the repetition penalty).
// temperature 0 = argmax after the penalty (first maximum), coin unused.
// Otherwise: top-k (ties with the k-th value kept), stable sort by logit descending,
// weights exp((z - zmax) / T) in double, cumulative sum, top-p cut, inverse-CDF draw with coin
// in [0, 1). Returns the token id, or -1 if the logits hold a NaN or an infinity.
int64_t sample_token_ref(const float* logits, int64_t n, const int64_t* seen, int64_t n_seen, double temperature,
                         int64_t top_k, double top_p, float penalty, double coin);

// The same function, picking the same ids, with the work per call cut down for the decode loop
// (the finiteness check fused with the copy, the k-th largest logit from one pass with a small
// heap, candidates sorted by (logit, id)). tests/test_sampling_native.py checks the two agree.
int64_t sample_token(const float* logits, int64_t n, const int64_t* seen, int64_t n_seen, double temperature,
                     int64_t top_k, double top_p, float penalty, double coin);

}  // namespace bullet
