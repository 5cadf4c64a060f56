// SPDX-License-Identifier: MIT
// tether/bounded_mpsc_queue.hpp - fixed-capacity ring: many producers, one consumer,
// backpressure.
//
// Who may call what:
//   try_push / push / push_for / push_until / try_emplace / close / is_closed /
//   size_approx / capacity         - any thread, concurrently.
//   try_pop / pop / pop_for / pop_until, try_pop_bulk / pop_bulk / pop_bulk_for /
//   pop_bulk_until, try_pop_each   - one consumer thread at a time (a translation unit built
//                                    without NDEBUG throws std::logic_error when two threads
//                                    consume at once).
//
// Outcomes: a push returns push_result: ok; full (try_push); timeout (push_for /
// push_until); cancelled (the std::stop_token forms); closed - on every outcome but ok its
// argument is untouched. push() blocks
// while the queue is full. A pop returns pop_result<T>: the oldest ready item, or empty
// (try_pop), timeout (_for / _until), cancelled (the std::stop_token forms) or closed (closed
// and every item taken); bulk pops return how many items they took. Items pushed by one thread come out in the order pushed. A
// throwing move of T leaves the item queued (see each method). The destructor destroys the
// items still queued. Memory is allocated once, by the constructor.
//
// Memory ordering: a push happens-before the pop that returns its item, and a pop
// happens-before the push that reuses its slot; a close() happens-before a push or pop that
// reports closed.
//
// After D. Vyukov's bounded MPMC queue (per-slot sequence numbers), with one consumer,
// close, and parking instead of spinning. Design notes: next to the private code below.
#pragma once

#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "detail/platform/config.hpp"
#include "detail/queue/consumer_check.hpp"
#include "detail/queue/consumer_ops.hpp"
#include "detail/platform/futex.hpp"
#include "detail/wait/parker.hpp"
#include "detail/wait/waiter_list.hpp"
#include "detail/queue/sink.hpp"
#include "result.hpp"

namespace tether {

template <class T>
class bounded_mpsc_queue : public detail::consumer_ops<bounded_mpsc_queue<T>, T> {
  using base = detail::consumer_ops<bounded_mpsc_queue<T>, T>;
  friend base;
  friend struct detail::source_access;  // room_* for producers that await room (coroutine.hpp)
  static_assert(std::is_nothrow_destructible_v<T>, "tether::bounded_mpsc_queue<T>: T's destructor must not throw");
  static_assert(std::is_move_constructible_v<T>, "tether::bounded_mpsc_queue<T>: T must be move-constructible");

 public:
  using value_type = T;

  // Holds at least `capacity` items: the ring is rounded up to a power of two (at least 2);
  // capacity() says how many. Throws std::invalid_argument for 0.
  explicit bounded_mpsc_queue(std::size_t capacity)
      : mask_(ring_size(capacity) - 1), slots_(std::make_unique<slot[]>(mask_ + 1)) {
    for (std::size_t i = 0; i <= mask_; ++i) slots_[i].seq.store(i, std::memory_order_relaxed);
  }
  bounded_mpsc_queue(const bounded_mpsc_queue&) = delete;
  bounded_mpsc_queue& operator=(const bounded_mpsc_queue&) = delete;

  // Destroys the items still queued (no producer or consumer may be running). Its loads are
  // relaxed: with no other thread left, they only read this thread's view.
  ~bounded_mpsc_queue() {
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed) >> index_shift;
    for (std::uint64_t pos = head_; pos != tail; ++pos) {
      slot& s = slots_[pos & mask_];
      if (s.seq.load(std::memory_order_relaxed) == pos + 1 && !s.abandoned) s.value()->~T();
    }
  }

  // ---- producers (any thread) ------------------------------------------------------------

  // Enqueues v if there is room; never blocks. status ok, full or closed; on full or closed
  // v is untouched (not moved from). Thread-safe.
  push_result try_push(T&& v) { return try_emplace(std::move(v)); }
  push_result try_push(const T& v) { return try_emplace(v); }

  // Constructs an item in place if there is room; never blocks. As try_push. If T's
  // constructor throws, the slot is skipped and the exception propagates.
  template <class... Args>
  push_result try_emplace(Args&&... args) {
    std::uint64_t pos;
    const status s = claim(pos);
    if (s == status::ok) publish(pos, std::forward<Args>(args)...);
    return s;
  }

  // Enqueues v, parking while the queue is full: ok, or closed if the queue is (or becomes)
  // closed, with v untouched. Thread-safe.
  push_result push(T&& v) { return push_until_steady(std::move(v), detail::no_deadline); }
  push_result push(const T& v) { return push_until_steady(v, detail::no_deadline); }

  // As push(), giving up at the deadline: status ok, timeout or closed; on timeout or closed
  // v is untouched. A zero or negative timeout (a deadline already past) tries once; a huge
  // one (duration::max()) waits like push(). Thread-safe.
  template <class U, class Rep, class Period>
  push_result push_for(U&& v, const std::chrono::duration<Rep, Period>& timeout) {
    return push_until_steady(std::forward<U>(v), detail::deadline_after(timeout));
  }
  template <class U, class Clock, class Duration>
  push_result push_until(U&& v, const std::chrono::time_point<Clock, Duration>& deadline) {
    return push_until_steady(std::forward<U>(v), detail::to_steady(deadline));
  }

  // The cancellable forms: as above, and cancelled (v untouched) once st's stop is requested
  // while the queue is full; a stop already requested still tries once. Thread-safe.
  push_result push(T&& v, std::stop_token st) { return push_until_steady(std::move(v), detail::no_deadline, &st); }
  push_result push(const T& v, std::stop_token st) { return push_until_steady(v, detail::no_deadline, &st); }
  template <class U, class Rep, class Period>
  push_result push_for(U&& v, const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return push_until_steady(std::forward<U>(v), detail::deadline_after(timeout), &st);
  }
  template <class U, class Clock, class Duration>
  push_result push_until(U&& v, const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return push_until_steady(std::forward<U>(v), detail::to_steady(deadline), &st);
  }

  // Closes the queue: later pushes fail (handing their item back) and blocked producers wake
  // with status::closed; the consumer still receives everything pushed before, then sees
  // closed. Returns true if this call closed it. Thread-safe; never blocks.
  bool close() noexcept {
    const std::uint64_t prev = tail_.fetch_or(closed_bit, std::memory_order_seq_cst);
    closed_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    consumer_wait_.notify_all();
    space_wait_.notify_all();
    return (prev & closed_bit) == 0;
  }

  // True once close() was called. Thread-safe.
  bool is_closed() const noexcept { return (tail_.load(std::memory_order_seq_cst) & closed_bit) != 0; }

  // How many items the queue holds at most. Thread-safe.
  std::size_t capacity() const noexcept { return mask_ + 1; }

  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept {
    // relaxed: a statistic; no decision that needs ordering is made from it.
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed) >> index_shift;
    const std::uint64_t head = head_published_.load(std::memory_order_relaxed);
    return tail > head ? static_cast<std::size_t>(tail - head) : 0;
  }
  bool empty_approx() const noexcept { return size_approx() == 0; }

  // ---- consumer (one thread at a time) ---------------------------------------------------
  //
  // Every call below: consumer thread only. A translation unit built without NDEBUG throws
  // std::logic_error when a second thread enters while one is inside. Popping frees slots:
  // producers blocked on a full queue are woken (see "Design" below for when).

  // Pops the oldest ready item; never blocks. ok with the item; empty when nothing is ready
  // (an item whose producer is mid-push is not ready yet); closed once closed and every item
  // taken. If T's move throws, the exception propagates and the item stays queued, the next
  // to pop (the item is moved exactly once, straight into the result).
  using base::try_pop;

  // Blocks (spins briefly, then parks) until an item is ready: ok with the item, or closed
  // once closed and every item taken. As try_pop if T's move throws.
  using base::pop;

  // As pop(), giving up at the deadline: ok, timeout or closed. A zero or negative timeout
  // (a deadline already past) tries once; a huge one (duration::max()) waits like pop().
  // As try_pop if T's move throws. Any clock's time point is accepted by pop_until.
  using base::pop_for;
  using base::pop_until;
  // pop, pop_for and pop_until (and the bulk pops below) also take a std::stop_token last:
  // a stop request wakes the wait at once and the call returns cancelled (bulk: 0), the item
  // left queued; an item ready when the stop is seen is still taken.

  // Moves up to max ready items to the output iterator out, oldest first; never blocks.
  // Returns how many (0: none ready, or closed). Each item leaves the queue only once its
  // assignment to out has returned: if an assignment throws, the items before it are popped
  // and that one stays queued. out must not use this queue (try_pop_each may).
  using base::try_pop_bulk;

  // As try_pop_bulk, but first blocks until at least one item is ready (pop_bulk), or until
  // the deadline (pop_bulk_for / pop_bulk_until). Returns how many; 0 only when closed with
  // every item taken, timed out, or max == 0 (is_closed() tells closed from timeout).
  using base::pop_bulk;
  using base::pop_bulk_for;
  using base::pop_bulk_until;

  // Calls f(T&&) for up to max ready items, oldest first; never blocks. Returns how many.
  // Each item leaves the queue before f sees it (f may pop from this queue): an item handed
  // to f counts as taken even if f throws (the exception propagates). If moving the item out
  // of its slot throws, it stays queued.
  using base::try_pop_each;

 private:
  // ---- design ----------------------------------------------------------------------------
  //
  // Each slot carries a sequence number saying whose turn it is: `pos` means free for the
  // producer of position pos, `pos + 1` means holding that producer's item, and the consumer
  // hands the slot to the next lap by storing `pos + capacity`. Producers claim positions
  // with one compare-and-swap on the tail, so try_push can fail fast when the slot is still
  // full. A full queue parks blocked producers. The consumer wakes them once it has freed a
  // batch of slots (capacity / 8), or as soon as it runs out of items: waking them for every
  // freed slot would make them all race for it and park again, a system call each time.
  // Waking parked threads is the parker's handshake (detail/wait/parker.hpp).

  using head_state = detail::head_state;

  static constexpr std::uint64_t closed_bit = 1;  // bit 0 of tail_
  static constexpr unsigned index_shift = 1;
  static constexpr std::uint64_t index_step = std::uint64_t{1} << index_shift;

  struct slot {
    // Turn counter (see the banner). Written by the producer that claimed the slot and by
    // the consumer; read by both.
    std::atomic<std::uint64_t> seq{0};
    // Set by a producer whose constructor threw, before its seq store; read by the consumer.
    bool abandoned = false;
    alignas(T) unsigned char storage[sizeof(T)];
    T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };

  static std::size_t ring_size(std::size_t capacity) {
    if (capacity == 0) throw std::invalid_argument("tether::bounded_mpsc_queue: capacity must be at least 1");
    if (capacity > (std::size_t{1} << 40)) throw std::invalid_argument("tether::bounded_mpsc_queue: capacity too large");
    return std::bit_ceil(capacity < 2 ? std::size_t{2} : capacity);
  }

  // Claims the tail position if its slot is free. status ok (pos set), full or closed.
  status claim(std::uint64_t& pos) {
    // relaxed: the slot's seq (acquire) is what orders our access to the slot.
    std::uint64_t tail = tail_.load(std::memory_order_relaxed);
    for (;;) {
      if (tail & closed_bit) return status::closed;
      pos = tail >> index_shift;
      slot& s = slots_[pos & mask_];
      // [B1] acquire: pairs with [B4] in release_head(); the slot's previous item is gone.
      const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
      const auto turn = static_cast<std::int64_t>(seq - pos);
      if (turn == 0) {
        // seq_cst claim; on failure relaxed (re-read as above).
        if (tail_.compare_exchange_weak(tail, tail + index_step, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
          return status::ok;
      } else if (turn < 0) {
        // The slot still holds the item from one lap ago. Full - unless the tail moved on.
        const std::uint64_t now = tail_.load(std::memory_order_relaxed);  // relaxed: as above
        if (now == tail) return (now & closed_bit) ? status::closed : status::full;
        tail = now;
      } else {
        tail = tail_.load(std::memory_order_relaxed);  // another producer claimed pos
      }
    }
  }

  template <class... Args>
  void publish(std::uint64_t pos, Args&&... args) {
    slot& s = slots_[pos & mask_];
    try {
      ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s.abandoned = true;
      s.seq.store(pos + 1, std::memory_order_release);  // [B2] release: as below
      consumer_wait_.notify_one();
      throw;
    }
    // [B2] release: publishes the item; pairs with [B3] in probe() / take_ready(). The
    // parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
    s.seq.store(pos + 1, std::memory_order_release);
    consumer_wait_.notify_one();
  }

  // The condition a blocked producer waits for: the tail slot is free, or closed.
  bool tail_ready() const noexcept {
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    if (tail & closed_bit) return true;
    const std::uint64_t pos = tail >> index_shift;
    return static_cast<std::int64_t>(slots_[pos & mask_].seq.load(std::memory_order_seq_cst) - pos) >= 0;
  }

  template <class U>
  push_result push_until_steady(U&& v, detail::steady_time deadline, const std::stop_token* st = nullptr) {
    detail::stop_wake stop(st);
    for (;;) {
      std::uint64_t pos;
      const status s = claim(pos);
      if (s == status::ok) {
        publish(pos, std::forward<U>(v));
        return status::ok;
      }
      if (s == status::closed) return s;
      if (stop.requested()) return status::cancelled;
      stop.arm(space_wait_);
      if (!detail::park_until(space_wait_, [this, &stop] { return tail_ready() || stop.requested(); }, deadline)) {
        return status::timeout;
      }
    }
  }

  // ---- consumer primitives (see detail/queue/consumer_ops.hpp) ----

  slot& head_slot() noexcept { return slots_[head_ & mask_]; }

  head_state probe() noexcept {
    // [B3] acquire: pairs with [B2] in publish().
    if (head_slot().seq.load(std::memory_order_acquire) == head_ + 1) return head_state::ready;
    wake_producers();  // out of items: hand over whatever room we made
    // Not ready. The tail line is hot with producers: read it only once closed. (A close
    // that has claimed the tail but not yet set closed_ reads as "not closed yet".)
    if (!closed_.load(std::memory_order_seq_cst)) return head_state::empty;
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) != head_ ? head_state::in_flight : head_state::closed;
  }

  bool head_ready() noexcept {
    if (head_slot().seq.load(std::memory_order_seq_cst) == head_ + 1) return true;
    // The tail line is hot with producers: read it only once closed.
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) == head_;
  }

  // Hands the head slot to the producer one lap ahead and moves on.
  void release_head(slot& s) noexcept {
    s.abandoned = false;
    // [B4] release: hands the slot over; pairs with [B1] in claim(). The parker handshake's
    // fence is in notify_all() (light) and prepare_wait() (heavy).
    s.seq.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    head_published_.store(head_, std::memory_order_relaxed);  // relaxed: only size_approx() reads it
    if (++freed_since_wake_ >= wake_batch_) wake_producers();
  }

  void wake_producers() noexcept {
    if (freed_since_wake_ == 0) return;
    freed_since_wake_ = 0;
    space_wait_.notify_all();
  }

  // After probe() said ready: true (and moved past it) if the head slot's producer's
  // constructor threw.
  bool skip_abandoned() noexcept {
    slot& s = head_slot();
    if (!s.abandoned) return false;
    release_head(s);
    return true;
  }

  // After probe() said ready and skip_abandoned() said no: the head item, moved once straight
  // into the result; if that move throws the item stays queued (pop_result's take_from_slot).
  pop_result<T> take() {
    slot& s = head_slot();
    return pop_result<T>(detail::take_from_slot, s.value(), [this, &s]() noexcept { release_head(s); });
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = head_slot();
      // [B3] acquire: pairs with [B2] in publish().
      if (s.seq.load(std::memory_order_acquire) != head_ + 1) {
        wake_producers();  // out of items: hand over whatever room we made
        break;
      }
      if (s.abandoned) {
        release_head(s);
        continue;
      }
      detail::hand_over(s.value(), sink, [&] { release_head(s); });
      ++n;
    }
    return n;
  }

  // Producer side: written by every claim (CAS) and close; read by everyone.
  alignas(detail::cache_line) std::atomic<std::uint64_t> tail_{0};

  // Consumer side.
  alignas(detail::cache_line) std::uint64_t head_ = 0;  // consumer only: next position to pop
  // A copy of head_ for size_approx(): written by the consumer, read by any thread.
  std::atomic<std::uint64_t> head_published_{0};
  detail::consumer_check check_;
  std::size_t freed_since_wake_ = 0;  // consumer only: slots freed since producers were woken
  detail::stream_watch stream_;  // consumer only: see park_until_streaming

  const std::size_t mask_;
  const std::size_t wake_batch_ = (mask_ + 1) / 8 > 0 ? (mask_ + 1) / 8 : 1;
  const std::unique_ptr<slot[]> slots_;

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  detail::parker consumer_wait_;  // the consumer waits for items
  alignas(detail::cache_line) detail::parker space_wait_;     // producers wait for room
  // Suspended producers (coroutines) waiting for room: space_wait_'s listener once the first
  // one waits; until then a notify pays nothing for it.
  detail::waiter_list room_waiters_;
};

}  // namespace tether
