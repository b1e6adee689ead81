// See generate.h.
#include "generate.h"

#include <algorithm>
#include <stdexcept>

#include "sampling.h"

namespace bullet {

DecodeResult decode_batch(Session& s, float* logits, int64_t pending, int64_t pos, int64_t n, const double* coins,
                          const int64_t* seen, int64_t n_seen, const SampleParams& p, const int64_t* stop_ids,
                          int64_t n_stop) {
    const int64_t vocab = s.model().cfg.vocab_size;
    if (n < 0) throw std::invalid_argument("decode: n must be >= 0");
    DecodeResult r;
    r.tokens.reserve((size_t)n);
    // the penalty's distinct-id list, grown as the batch samples new ids
    std::vector<int64_t> ids;
    std::vector<uint8_t> in(vocab, 0);
    ids.reserve((size_t)(n_seen + n));
    for (int64_t i = 0; i < n_seen; i++) {
        const int64_t t = seen[i];
        if (t >= 0 && t < vocab && !in[t]) {
            in[t] = 1;
            ids.push_back(t);
        }
    }
    if (pending >= 0) {
        s.forward(pending, pos, logits);
        pos++;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = sample_token_ref(logits, vocab, ids.data(), (int64_t)ids.size(), p.temperature, p.top_k,
                                           p.top_p, p.penalty, p.temperature != 0.0 ? coins[i] : 0.0);
        if (t < 0) {
            r.end = DecodeEnd::NonFinite;
            break;
        }
        r.tokens.push_back(t);
        if (std::find(stop_ids, stop_ids + n_stop, t) != stop_ids + n_stop) {
            r.end = DecodeEnd::StopId;
            break;
        }
        if (!in[t]) {
            in[t] = 1;
            ids.push_back(t);
        }
        if (i + 1 == n) break;  // the last sample is the caller's pending token
        s.forward(t, pos, logits);
        pos++;
    }
    r.pos = pos;
    return r;
}

}  // namespace bullet
