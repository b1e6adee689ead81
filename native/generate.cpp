// See generate.h.
#include "generate.h"

#include <algorithm>
#include <chrono>
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
    const bool prof = s.profiling();
    for (int64_t i = 0; i < n; i++) {
        const auto t0 = prof ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
        const int64_t t = sample_token(logits, vocab, ids.data(), (int64_t)ids.size(), p.temperature, p.top_k,
                                           p.top_p, p.penalty, p.temperature != 0.0 ? coins[i] : 0.0);
        if (prof)
            s.profile_add(PROF_SAMPLE, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::steady_clock::now() - t0).count());
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

TokenAutomaton::TokenAutomaton(int64_t vocab_, std::shared_ptr<TokenAutomaton> base) : vocab(vocab_), base_(std::move(base)) {
    if (vocab < 1) throw std::invalid_argument("TokenAutomaton: vocab must be >= 1");
    if (base_ && base_->vocab != vocab) throw std::invalid_argument("TokenAutomaton: the base has another vocab size");
}

void TokenAutomaton::set(int64_t state, std::vector<int32_t> ids, std::vector<int32_t> next, bool done) {
    if (state < 0 || state > (1 << 30)) throw std::invalid_argument("TokenAutomaton.set: state out of range");
    if (ids.size() != next.size()) throw std::invalid_argument("TokenAutomaton.set: ids and next differ in length");
    for (size_t i = 1; i < ids.size(); i++)
        if (ids[i] <= ids[i - 1]) throw std::invalid_argument("TokenAutomaton.set: ids must be strictly ascending");
    if (!ids.empty() && (ids[0] < 0 || ids.back() >= vocab))
        throw std::invalid_argument("TokenAutomaton.set: token id outside the vocabulary");
    auto row = std::make_shared<GrammarRow>();
    row->ids = std::move(ids);
    row->next = std::move(next);
    row->done = done;
    std::lock_guard<std::mutex> g(mu_);
    if ((size_t)state >= rows_.size()) rows_.resize((size_t)state + 1);
    rows_[(size_t)state] = std::move(row);
}

std::shared_ptr<const GrammarRow> TokenAutomaton::get(int64_t state) const {
    if (state < 0) return nullptr;
    {
        std::lock_guard<std::mutex> g(mu_);
        if ((size_t)state < rows_.size() && rows_[(size_t)state]) return rows_[(size_t)state];
    }
    return base_ ? base_->get(state) : nullptr;
}

int64_t TokenAutomaton::size() const {
    std::lock_guard<std::mutex> g(mu_);
    int64_t k = 0;
    for (const auto& r : rows_) k += r != nullptr;
    return k;
}

DecodeResult decode_grammar(Session& s, float* logits, int64_t pending, int64_t pos, int64_t n, const double* coins,
                            const int64_t* seen, int64_t n_seen, const SampleParams& p, const int64_t* stop_ids,
                            int64_t n_stop, const TokenAutomaton& ta, int64_t state) {
    const int64_t vocab = s.model().cfg.vocab_size;
    if (n < 0) throw std::invalid_argument("decode: n must be >= 0");
    std::shared_ptr<const GrammarRow> row = ta.get(state);
    if (ta.vocab != vocab) throw std::invalid_argument("decode: the grammar automaton is for another vocab size");
    if (!row) throw std::invalid_argument("decode: the grammar state has no row");
    DecodeResult r;
    r.tokens.reserve((size_t)n);
    std::vector<uint8_t> in(vocab, 0);
    for (int64_t i = 0; i < n_seen; i++) {
        const int64_t t = seen[i];
        if (t >= 0 && t < vocab) in[t] = 1;
    }
    std::vector<float> z;                 // the allowed ids' logits
    std::vector<int64_t> local;           // positions in row->ids of the ids seen so far
    if (pending >= 0) {
        s.forward(pending, pos, logits);
        pos++;
    }
    for (int64_t i = 0; i < n; i++) {
        const int32_t* ids = row->ids.data();
        const int64_t na = (int64_t)row->ids.size();
        z.resize((size_t)na);
        local.clear();
        for (int64_t j = 0; j < na; j++) {
            z[j] = logits[ids[j]];
            if (in[ids[j]]) local.push_back(j);
        }
        const int64_t k = sample_token(z.data(), na, local.data(), (int64_t)local.size(), p.temperature, p.top_k,
                                           p.top_p, p.penalty, p.temperature != 0.0 ? coins[i] : 0.0);
        if (k < 0) {
            r.end = DecodeEnd::NonFinite;
            break;
        }
        const int64_t t = ids[k];
        r.tokens.push_back(t);
        if (std::find(stop_ids, stop_ids + n_stop, t) != stop_ids + n_stop) {
            r.end = DecodeEnd::StopId;
            break;
        }
        in[t] = 1;
        state = row->next[k];
        row = ta.get(state);
        if (!row) {
            r.end = DecodeEnd::Expand;
            break;
        }
        if (row->done) {
            r.end = DecodeEnd::Complete;
            break;
        }
        if (i + 1 == n) break;  // the last sample is the caller's pending token
        s.forward(t, pos, logits);
        pos++;
    }
    r.pos = pos;
    r.state = state;
    return r;
}

}  // namespace bullet
