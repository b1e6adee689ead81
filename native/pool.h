// A small pool of worker threads for one session: the calling thread and n - 1 workers run one
// job together (run), each knowing its index, and run returns when all have finished it; inside
// a job they can wait for each other (barrier). Session uses it to split the matrix products and
// attention heads of one forward step (model.cpp).
//
// Cheap to hand work to: a job is published by bumping one atomic counter that the workers spin
// on, the caller spins on a done counter, and at a barrier each thread on the others' epoch
// counters, so a hand-off costs a few cache-line transfers. A thread that has spun a while yields the CPU between tries (a thread
// it waits for may share its core); a worker without a job for IDLE_US sleeps on a condition
// variable until the next job wakes it, so an idle session's workers use no CPU.
//
// On Linux each worker is pinned to a CPU of the caller's set other than the one the caller runs
// on when the pool starts (worker i to the i-th after it). The caller, a thread of the
// application, is not pinned: measured on a loaded 2-core VM, pinning it too made steps wait for a
// busy core. When the caller turns up on a worker's CPU, that worker moves to the CPU the caller
// left (follow_caller), so the two never take turns on one CPU.
#pragma once
#include <algorithm>
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

class Pool {
  public:
    static constexpr int MAX_THREADS = 64;
    // Pauses before yielding (~0.2 ms here), and how long a worker without a job waits before it
    // sleeps (between decode calls Python runs for a while; between requests the session idles)
    static constexpr int64_t SPINS = 1 << 12, IDLE_US = 2000;

    // n threads in all (the caller counts as one); 1 <= n <= MAX_THREADS
    explicit Pool(int n) : n_(n), slots_((size_t)n), cpu_of_((size_t)n, -1) {
        std::vector<int> cpus = allowed_cpus();
        workers_.reserve((size_t)(n - 1));
        if (!cpus.empty()) caller_cpu_ = cpus[0];
        for (int i = 1; i < n; i++) {
            workers_.emplace_back([this, i] { loop(i); });
            if (!cpus.empty()) pin(i, cpus[(size_t)i % cpus.size()]);
        }
    }

    ~Pool() {
        {
            std::lock_guard<std::mutex> g(mu_);
            stop_ = true;
            gen_.fetch_add(1, std::memory_order_seq_cst);
            cv_.notify_all();
        }
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
        follow_caller();
        ctx_ = &f;
        call_ = [](const void* c, int i) { (*(const F*)c)(i); };
        done_.store(0, std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_seq_cst);  // publishes ctx_, call_ and the reset
        wake();
        f(0);
        wait_until([&] { return done_.load(std::memory_order_seq_cst) == n_ - 1; }, SPINS);
    }

    // Inside a job: thread i waits here until every thread of the job has arrived. Each thread
    // bumps its own counter and reads the others' (one cache-line transfer each way, no
    // read-modify-write on a line they all share).
    void barrier(int i) {
        if (n_ == 1) return;
        const uint64_t e = slots_[(size_t)i].epoch.load(std::memory_order_relaxed) + 1;
        slots_[(size_t)i].epoch.store(e, std::memory_order_seq_cst);
        for (int j = 0; j < n_; j++)
            if (j != i) wait_until([&] { return slots_[(size_t)j].epoch.load(std::memory_order_seq_cst) >= e; }, SPINS);
    }

  private:
    // Worker i to CPU cpu (best effort)
    void pin(int i, int cpu) {
        cpu_of_[(size_t)i] = cpu;
#if defined(__linux__)
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(workers_[(size_t)(i - 1)].native_handle(), sizeof(set), &set);
#endif
    }

    // The caller is not pinned, and the system may move it onto a worker's CPU (it woke there
    // while the worker slept, or a benchmark pinned it there for a while). Left so, the two would
    // take turns on one CPU while another idles. At each job the worker on the caller's CPU, if
    // any, moves to the CPU the caller left.
    void follow_caller() {
#if defined(__linux__)
        const int here = sched_getcpu();
        if (here < 0 || here == caller_cpu_) return;
        for (int i = 1; i < n_; i++)
            if (cpu_of_[(size_t)i] == here && caller_cpu_ >= 0) {
                pin(i, caller_cpu_);
                break;
            }
        caller_cpu_ = here;
#endif
    }

    // The calling thread's allowed CPUs, starting with the one it runs on now (which the workers,
    // taking the ones after it, then leave to it)
    static std::vector<int> allowed_cpus() {
        std::vector<int> out;
#if defined(__linux__)
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof(set), &set) == 0)
            for (int c = 0; c < CPU_SETSIZE; c++)
                if (CPU_ISSET(c, &set)) out.push_back(c);
        const int here = sched_getcpu();
        for (size_t k = 0; k < out.size(); k++)
            if (out[k] == here) {
                std::rotate(out.begin(), out.begin() + (long)k, out.end());
                break;
            }
#endif
        return out;
    }

    // Waits for pred: spins (pause) `spins` times, then keeps trying but yields the CPU between
    // tries; with `sleep_us`, after that long it sleeps until a wake() finds pred true. Spinning
    // keeps a job's hand-offs cheap when every thread has a core. Within a job a thread never
    // sleeps: on a loaded VM, waking a sleeper took hundreds of microseconds, while yielding lets
    // a thread we wait for that shares our core run at once.
    template <class P>
    void wait_until(const P& pred, int64_t spins, int64_t sleep_us = -1) {
        for (int64_t k = 0; k < spins; k++) {
            if (pred()) return;
            cpu_relax();
        }
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(sleep_us);
        for (int64_t k = 0; !pred(); k++) {
            std::this_thread::yield();
            if (sleep_us >= 0 && k % 64 == 63 && std::chrono::steady_clock::now() > until) {
                std::unique_lock<std::mutex> lk(mu_);
                waiters_.fetch_add(1, std::memory_order_seq_cst);
                cv_.wait(lk, pred);
                waiters_.fetch_sub(1, std::memory_order_seq_cst);
                return;
            }
        }
    }

    // After a change a sleeper may wait for (seq_cst, as its count and check are)
    void wake() {
        if (waiters_.load(std::memory_order_seq_cst) > 0) {
            std::lock_guard<std::mutex> g(mu_);
            cv_.notify_all();
        }
    }

    void loop(int i) {
        uint64_t seen = 0;
        for (;;) {
            wait_until([&] { return gen_.load(std::memory_order_seq_cst) != seen; }, SPINS, IDLE_US);
            seen = gen_.load(std::memory_order_acquire);
            if (stop_) return;
            call_(ctx_, i);
            done_.fetch_add(1, std::memory_order_seq_cst);
            wake();
        }
    }

    const int n_;
    std::vector<std::thread> workers_;
    const void* ctx_ = nullptr;
    void (*call_)(const void*, int) = nullptr;
    bool stop_ = false;
    alignas(64) std::atomic<uint64_t> gen_{0};   // bumped once per job
    alignas(64) std::atomic<int> done_{0};       // workers that finished the current job
    alignas(64) std::atomic<int> waiters_{0};     // threads asleep in wait_until
    struct alignas(64) Slot {
        std::atomic<uint64_t> epoch{0};   // barriers thread i has reached
    };
    std::vector<Slot> slots_;
    std::vector<int> cpu_of_;   // the CPU worker i is pinned to (-1: none)
    int caller_cpu_ = -1;       // the caller's CPU at its last job
    std::mutex mu_;
    std::condition_variable cv_;
};

}  // namespace bullet
