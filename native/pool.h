// A small pool of worker threads for one session: the calling thread and n - 1 workers run one
// job together (run), each knowing its index, and run returns when all have finished it; inside
// a job they can wait for each other (barrier). Used by
// Session to split the matrix products and attention heads of one forward step (model.cpp).
//
// Cheap to hand work to: a job is published by bumping one atomic counter that the workers spin
// on, and the caller spins on a done counter, so a step's ~40 jobs cost a few cache-line transfers
// each. A worker that finds no job for SPIN_US sleeps on a condition variable (the caller wakes it
// with the next job), so an idle session's workers use no CPU. On Linux each worker is pinned to
// its own CPU of the process's affinity set (worker i to the i-th allowed CPU; the caller, a
// thread of the application, is left to the scheduler, which puts it beside the busy workers:
// measured on a loaded 2-core VM, pinning the caller too made steps wait for a busy core).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace bullet {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

// Waits for a condition: spins first (a job's parts end within microseconds of each other on
// free cores), then yields the CPU at every try, so that a thread we wait for that shares our core
// (the machine is busy, or the caller runs on a worker's core) gets it at once.
template <class Done>
inline void spin_until(const Done& done) {
    for (int spins = 0; !done(); spins++) {
        if (spins < 4096)
            cpu_relax();
        else
            std::this_thread::yield();
    }
}

class Pool {
  public:
    static constexpr int MAX_THREADS = 64;
    static constexpr int SPIN_US = 200;  // a worker spins this long for the next job, then sleeps

    // n threads in all (the caller counts as one); 1 <= n <= MAX_THREADS
    explicit Pool(int n) : n_(n) {
        std::vector<int> cpus = allowed_cpus();
        workers_.reserve((size_t)(n - 1));
        for (int i = 1; i < n; i++) {
            workers_.emplace_back([this, i] { loop(i); });
#if defined(__linux__)
            if (!cpus.empty()) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(cpus[(size_t)i % cpus.size()], &set);
                pthread_setaffinity_np(workers_.back().native_handle(), sizeof(set), &set);  // best effort
            }
#endif
        }
    }

    ~Pool() {
        {
            std::lock_guard<std::mutex> g(mu_);
            stop_ = true;
            gen_.fetch_add(1, std::memory_order_seq_cst);
        }
        cv_.notify_all();
        for (auto& t : workers_) t.join();
    }

    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    int size() const { return n_; }

    // f(i) on every thread i in 0..size()-1 (the caller runs 0); returns when all are done.
    template <class F>
    void run(const F& f) {
        if (n_ == 1) {
            f(0);
            return;
        }
        ctx_ = &f;
        call_ = [](const void* c, int i) { (*(const F*)c)(i); };
        done_.store(0, std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_seq_cst);  // publishes ctx_, call_ and the reset
        if (sleepers_.load(std::memory_order_seq_cst) > 0) {
            std::lock_guard<std::mutex> g(mu_);
            cv_.notify_all();
        }
        f(0);
        spin_until([&] { return done_.load(std::memory_order_acquire) == n_ - 1; });
    }

    // Inside a job: every thread of it waits here until all have arrived (a spinning barrier)
    void barrier() {
        if (n_ == 1) return;
        const uint32_t ph = phase_.load(std::memory_order_relaxed);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
            arrived_.store(0, std::memory_order_relaxed);
            phase_.store(ph + 1, std::memory_order_release);
        } else {
            spin_until([&] { return phase_.load(std::memory_order_acquire) != ph; });
        }
    }

  private:
    static std::vector<int> allowed_cpus() {
        std::vector<int> out;
#if defined(__linux__)
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof(set), &set) == 0)
            for (int c = 0; c < CPU_SETSIZE; c++)
                if (CPU_ISSET(c, &set)) out.push_back(c);
#endif
        return out;
    }

    void loop(int i) {
        uint64_t seen = 0;
        for (;;) {
            uint64_t g = gen_.load(std::memory_order_acquire);
            if (g == seen) {
                const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(SPIN_US);
                for (int spins = 1; (g = gen_.load(std::memory_order_acquire)) == seen; spins++) {
                    if (spins < 4096)
                        cpu_relax();
                    else
                        std::this_thread::yield();
                    if (spins % 256 == 0 && std::chrono::steady_clock::now() > until) {
                        std::unique_lock<std::mutex> lk(mu_);
                        sleepers_.fetch_add(1, std::memory_order_seq_cst);
                        cv_.wait(lk, [&] { return gen_.load(std::memory_order_seq_cst) != seen; });
                        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
                    }
                }
            }
            seen = g;
            if (stop_) return;
            call_(ctx_, i);
            done_.fetch_add(1, std::memory_order_release);
        }
    }

    const int n_;
    std::vector<std::thread> workers_;
    const void* ctx_ = nullptr;
    void (*call_)(const void*, int) = nullptr;
    bool stop_ = false;
    alignas(64) std::atomic<uint64_t> gen_{0};   // bumped once per job
    alignas(64) std::atomic<int> done_{0};       // workers that finished the current job
    alignas(64) std::atomic<int> sleepers_{0};
    alignas(64) std::atomic<int> arrived_{0};     // barrier(): threads arrived in this phase
    alignas(64) std::atomic<uint32_t> phase_{0};
    std::mutex mu_;
    std::condition_variable cv_;
};

}  // namespace bullet
