// The per-token generation loop in one native call: forward pass, sampling, stop ids, repeated
// without returning to Python, so a generating thread holds the GIL only between batches of
// tokens (the event loop and other sessions' threads run meanwhile).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "model.h"

namespace bullet {

struct SampleParams {
    double temperature = 0.0;  // 0: greedy
    int64_t top_k = 0;         // <= 0: off
    double top_p = 1.0;
    float penalty = 1.0f;      // repetition penalty over `seen`
};

enum class DecodeEnd { Count = 0, StopId = 1, NonFinite = 2, Expand = 3, Complete = 4 };

struct DecodeResult {
    std::vector<int64_t> tokens;  // sampled ids in order; with StopId the last one is the stop id
    DecodeEnd end = DecodeEnd::Count;
    int64_t pos = 0;              // next free position after the batch (the cache holds 0..pos-1)
    int64_t state = -1;           // decode_grammar: the automaton state after the last token
};

// One state of a token-level grammar automaton (bulletd/runtime/grammar.py builds them): the
// allowed token ids in ascending order, the state each one leads to (-1 for a stop id, allowed
// only where the document is complete), and whether the document is complete with no token able
// to extend it.
struct GrammarRow {
    std::vector<int32_t> ids;
    std::vector<int32_t> next;
    bool done = false;
};

// States are expanded lazily by Python and added here; a state without a row sends the decode
// loop back to Python. A request's automaton has the grammar's shared one as `base` (rows that do
// not depend on the request) and holds only its own rows (states inside copy strings).
// Thread-safe: rows are added under a lock and never change once added.
class TokenAutomaton {
public:
    TokenAutomaton(int64_t vocab, std::shared_ptr<TokenAutomaton> base);
    const int64_t vocab;  // every id of every row is below it
    void set(int64_t state, std::vector<int32_t> ids, std::vector<int32_t> next, bool done);
    std::shared_ptr<const GrammarRow> get(int64_t state) const;
    int64_t size() const;

private:
    mutable std::mutex mu_;
    std::shared_ptr<TokenAutomaton> base_;
    std::vector<std::shared_ptr<const GrammarRow>> rows_;
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

// decode_batch under a grammar: each draw is among the ids the current state allows (the
// sampling rules run on those ids only: penalty, greedy, top-k, top-p and the draw, exactly as
// sample_token on the gathered logits), then the state follows the drawn id. Ends early with
// StopId (a stop id, allowed only where the document is complete), Complete (the new state is
// done: nothing can extend the document), Expand (the new state has no row yet: Python expands it
// and calls again with the last id as `pending`) or NonFinite. `state` must have a row. coins[i]
// is the draw of sample i; the caller keeps the coins of draws that did not happen.
DecodeResult decode_grammar(Session& s, float* logits, int64_t pending, int64_t pos, int64_t n, const double* coins,
                            const int64_t* seen, int64_t n_seen, const SampleParams& p, const int64_t* stop_ids,
                            int64_t n_stop, const TokenAutomaton& ta, int64_t state);

}  // namespace bullet
