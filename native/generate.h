// The per-token generation loop in one native call: forward pass, sampling, stop ids, repeated
// without returning to Python, so a generating thread holds the GIL only between batches of
// tokens (the event loop and other sessions' threads run meanwhile).
#pragma once
#include <cstdint>
#include <vector>

#include "model.h"

namespace bullet {

struct SampleParams {
    double temperature = 0.0;  // 0: greedy
    int64_t top_k = 0;         // <= 0: off
    double top_p = 1.0;
    float penalty = 1.0f;      // repetition penalty over `seen`
};

enum class DecodeEnd { Count = 0, StopId = 1, NonFinite = 2 };

struct DecodeResult {
    std::vector<int64_t> tokens;  // sampled ids in order; with StopId the last one is the stop id
    DecodeEnd end = DecodeEnd::Count;
    int64_t pos = 0;              // next free position after the batch (the cache holds 0..pos-1)
};

// logits (vocab_size floats) hold the logits for position pos - 1 on entry, unless `pending` >= 0:
// then pending is first run at `pos` (the token the previous batch sampled last but did not run).
// Samples up to n tokens, running each sampled token through the model before sampling the next
// one, except the last sampled token, which is never run (it becomes the caller's next `pending`).
// Stops early at a stop id or at logits holding NaN/inf. coins[i] is the uniform draw of sample i
// (unused when greedy). seen: distinct ids already in the context (prompt and output), for the
// repetition penalty; the batch's new ids are added as they are sampled. The caller checks that
// the context has room: every run position must be < max_seq_len (the Session throws otherwise).
DecodeResult decode_batch(Session& s, float* logits, int64_t pending, int64_t pos, int64_t n, const double* coins,
                          const int64_t* seen, int64_t n_seen, const SampleParams& p, const int64_t* stop_ids,
                          int64_t n_stop);

}  // namespace bullet
