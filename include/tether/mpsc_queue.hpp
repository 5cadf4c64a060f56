// tether/mpsc_queue.hpp - unbounded, lock-free queue: many producers, one consumer.
//
// Who may call what:
//   push / emplace / close / is_closed / size_approx  - any thread, concurrently.
//   try_pop / pop / pop_for / pop_until / *_bulk / drain - one consumer thread at a time
//     (debug builds throw std::logic_error when two threads consume at once).
//
// Items live in blocks of slots. A producer claims a slot with one compare-and-swap on the
// tail index, writes the item and publishes the slot; the producer that claims a block's last
// slot links the next block (taken from a one-block cache, so steady state allocates
// nothing). The consumer reads slots in index order - so items from one producer come out
// in the order that producer pushed them - and recycles each block it has emptied.
//
// A producer preempted between claiming and publishing its slot holds up only the consumer,
// which parks on that slot (it does not spin) and is woken by the publish. A producer
// preempted while linking a block holds up other producers for the two stores it has left;
// they back off and yield meanwhile.
//
// Memory ordering: a slot's release state store publishes the item to the consumer's
// acquire load of that state; a block's `next` is stored before its last slot is
// published, so the consumer always finds it. Waking a parked consumer is the parker's
// handshake (detail/parker.hpp): a push pays no locked instruction beyond its claim.
//
// After crossbeam-channel's list flavour (block list, CAS-claimed slots, a sentinel index
// while the next block is linked), adapted to one consumer, block reuse and parking.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "detail/config.hpp"
#include "detail/consumer_check.hpp"
#include "detail/consumer_ops.hpp"
#include "detail/futex.hpp"
#include "detail/parker.hpp"
#include "result.hpp"

namespace tether {

template <class T>
class mpsc_queue : public detail::consumer_ops<mpsc_queue<T>, T> {
  friend class detail::consumer_ops<mpsc_queue<T>, T>;
  static_assert(std::is_nothrow_destructible_v<T>, "tether::mpsc_queue<T>: T's destructor must not throw");
  static_assert(std::is_move_constructible_v<T>, "tether::mpsc_queue<T>: T must be move-constructible");

 public:
  using value_type = T;

  // relaxed: nothing is shared before the constructor returns.
  mpsc_queue() : head_block_(new block) { tail_block_.store(head_block_, std::memory_order_relaxed); }
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;

  // Destroys the items still queued (no producer or consumer may be running). Its loads are
  // relaxed: with no other thread left, they only read this thread's view.
  ~mpsc_queue() {
    std::uint64_t head = head_;
    const std::uint64_t tail = tail_index_.load(std::memory_order_relaxed) >> index_shift;
    block* b = head_block_;
    while (head != tail) {
      const std::uint64_t offset = head % lap;
      if (offset == block_cap) {
        head++;
        b = b->next.load(std::memory_order_relaxed);
        continue;
      }
      slot& s = b->slots[offset];
      if (s.state.load(std::memory_order_relaxed) == slot_written) s.value()->~T();
      head++;
    }
    for (block* p = head_block_; p != nullptr;) {
      block* next = p->next.load(std::memory_order_relaxed);
      delete p;
      p = next;
    }
    delete spare_.load(std::memory_order_relaxed);
  }

  // ---- producers (any thread) ------------------------------------------------------------

  // Enqueues v; never blocks. Returns false if the queue is closed, leaving v untouched
  // (not moved from), so the caller still owns it. Thread-safe.
  bool push(T&& v) { return emplace(std::move(v)); }
  bool push(const T& v) { return emplace(v); }

  // Constructs an item in place from args. Returns false if closed (args untouched).
  // If T's constructor throws, the slot is skipped and the exception propagates. Thread-safe.
  //
  // Outline:
  //   1. read the tail index; closed -> hand back; at the sentinel -> another producer is
  //      linking the next block: back off (the point where a preempted thread makes other
  //      producers wait, for two stores);
  //   2. claiming the block's last slot -> have the next block ready before the CAS;
  //   3. CAS the tail index one step; the winner of the last slot links the next block and
  //      moves the index past the sentinel;
  //   4. construct the item, publish the slot, wake the consumer if it is parked.
  template <class... Args>
  bool emplace(Args&&... args) {
    detail::backoff backoff;
    block* next_block = nullptr;  // ready for linking when we claim a block's last slot
    // acquire: pairs with [P3] so the tail_block_ read below is the index's block or newer.
    std::uint64_t tail = tail_index_.load(std::memory_order_acquire);
    for (;;) {
      if (tail & closed_bit) {
        return_spare(next_block);
        return false;
      }
      const std::uint64_t offset = (tail >> index_shift) % lap;
      if (offset == block_cap) {
        backoff.snooze();
        tail = tail_index_.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      if (offset + 1 == block_cap && next_block == nullptr) next_block = take_spare();
      // acquire: pairs with [P2]; if the CAS below succeeds, b is the block of our slot.
      block* b = tail_block_.load(std::memory_order_acquire);
      // seq_cst claim; on failure acquire (as the first load).
      if (!tail_index_.compare_exchange_weak(tail, tail + index_step, std::memory_order_seq_cst,
                                             std::memory_order_acquire))
        continue;
      if (offset + 1 == block_cap) {
        // [P1] release: the consumer reads next only after our slot below is published.
        b->next.store(next_block, std::memory_order_release);
        // [P2] release: publishes the new block to producers; pairs with the acquire above.
        tail_block_.store(next_block, std::memory_order_release);
        // [P3] release: moves the index past the sentinel; pairs with the acquire loads above.
        tail_index_.fetch_add(index_step, std::memory_order_release);
        next_block = nullptr;
      } else {
        return_spare(next_block);
      }
      publish(b->slots[offset], std::forward<Args>(args)...);
      return true;
    }
  }

  // Closes the queue: later pushes fail (handing their item back); the consumer still
  // receives everything pushed before, then sees closed. Wakes a parked consumer.
  // Returns true if this call closed it. Thread-safe; never blocks.
  bool close() noexcept {
    const std::uint64_t prev = tail_index_.fetch_or(closed_bit, std::memory_order_seq_cst);
    closed_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    consumer_wait_.notify_all();
    return (prev & closed_bit) == 0;
  }

  bool is_closed() const noexcept { return (tail_index_.load(std::memory_order_seq_cst) & closed_bit) != 0; }

  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept {
    // relaxed: a statistic; no decision that needs ordering is made from it.
    const std::uint64_t tail = tail_index_.load(std::memory_order_relaxed) >> index_shift;
    const std::uint64_t head = head_published_.load(std::memory_order_relaxed);
    if (tail <= head) return 0;
    return static_cast<std::size_t>((tail - head) - (tail / lap - head / lap));
  }
  bool empty_approx() const noexcept { return size_approx() == 0; }

 // Consumer side (one thread at a time), from detail::consumer_ops: try_pop, pop, pop_for,
 // pop_until, try_pop_bulk, pop_bulk, drain.

 private:
  // Slots per block + 1: the last index of each lap is the sentinel "next block being linked".
  static constexpr std::uint64_t pick_lap() {
    std::uint64_t lap = 32;
    while (lap < 1024 && lap * 2 * (sizeof(T) + alignof(T)) <= 16384) lap *= 2;
    return lap;
  }
  static constexpr std::uint64_t lap = pick_lap();
  static constexpr std::uint64_t block_cap = lap - 1;
  static constexpr std::uint64_t closed_bit = 1;  // bit 0 of tail_index_
  static constexpr unsigned index_shift = 1;
  static constexpr std::uint64_t index_step = std::uint64_t{1} << index_shift;

  static constexpr std::uint8_t slot_empty = 0;
  static constexpr std::uint8_t slot_written = 1;
  static constexpr std::uint8_t slot_abandoned = 2;  // the producer's constructor threw

  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    // Written by the producer that claimed the slot (publish) and by the consumer (reset on
    // recycling, while no producer can reach the block); read by the consumer.
    std::atomic<std::uint8_t> state{slot_empty};
    T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };
  struct block {
    // Written once by the producer that claims slot block_cap-1; read by the consumer.
    std::atomic<block*> next{nullptr};
    slot slots[block_cap];
  };

  using head_state = detail::head_state;

  template <class... Args>
  void publish(slot& s, Args&&... args) {
    try {
      ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s.state.store(slot_abandoned, std::memory_order_release);  // release: as below
      consumer_wait_.notify_one();
      throw;
    }
    // release: publishes the item; pairs with the acquire in probe() / take_ready(). The
    // parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
    s.state.store(slot_written, std::memory_order_release);
    consumer_wait_.notify_one();
  }

  block* take_spare() {
    // acquire: pairs with the release in recycle(): the reset slots are visible.
    block* b = spare_.exchange(nullptr, std::memory_order_acquire);
    return b != nullptr ? b : new block;
  }
  void return_spare(block* b) noexcept {
    if (b == nullptr) return;
    block* expected = nullptr;
    // release: hands the (clean) block to the next take_spare().
    if (!spare_.compare_exchange_strong(expected, b, std::memory_order_release, std::memory_order_relaxed))
      delete b;
  }
  void recycle(block* b) noexcept {
    // No producer can reach b: every slot was claimed, published and consumed, and
    // tail_block_ moved on before the last slot was published.
    for (slot& s : b->slots) s.state.store(slot_empty, std::memory_order_relaxed);  // relaxed: published by the exchange below
    b->next.store(nullptr, std::memory_order_relaxed);                             // relaxed: as above
    // acq_rel: release publishes the reset; acquire lets us delete a block another thread
    // returned.
    delete spare_.exchange(b, std::memory_order_acq_rel);
  }

  slot& head_slot() noexcept { return head_block_->slots[head_ % lap]; }

  head_state probe() noexcept {
    // acquire: pairs with the release publish in publish().
    if (head_slot().state.load(std::memory_order_acquire) != slot_empty) return head_state::ready;
    // Not ready. The tail line is hot with producers: read it only once closed. (A close
    // that has claimed the tail but not yet set closed_ reads as "not closed yet".)
    if (!closed_.load(std::memory_order_seq_cst)) return head_state::empty;
    const std::uint64_t tail = tail_index_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) != head_ ? head_state::in_flight : head_state::closed;
  }

  // The condition a parked consumer waits for: the head slot is published, or the queue is
  // closed with nothing in flight. seq_cst loads: the re-check half of the parker handshake.
  bool head_ready() noexcept {
    if (head_slot().state.load(std::memory_order_seq_cst) != slot_empty) return true;
    // The tail line is hot with producers: read it only once closed.
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    const std::uint64_t tail = tail_index_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) == head_;
  }

  void advance() noexcept {
    std::uint64_t head = head_ + 1;
    if (head % lap == block_cap) {
      // acquire: pairs with [P1]; the last slot's producer linked next before publishing.
      block* next = head_block_->next.load(std::memory_order_acquire);
      recycle(head_block_);
      head_block_ = next;
      ++head;
    }
    head_ = head;
    head_published_.store(head, std::memory_order_relaxed);  // relaxed: only size_approx() reads it
  }

  // Precondition: the head slot is published. Empty optional: the slot was abandoned.
  std::optional<T> take() {
    slot& s = head_slot();
    if (s.state.load(std::memory_order_relaxed) == slot_abandoned) {  // relaxed: probe() acquired it
      advance();
      return std::nullopt;
    }
    std::optional<T> v(std::move(*s.value()));  // if this throws, the item stays queued
    s.value()->~T();
    advance();
    return v;
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = head_slot();
      const std::uint8_t st = s.state.load(std::memory_order_acquire);  // acquire: pairs with publish()
      if (st == slot_empty) break;
      if (st == slot_abandoned) {
        advance();
        continue;
      }
      T v(std::move(*s.value()));
      s.value()->~T();
      advance();
      ++n;
      sink(std::move(v));
    }
    return n;
  }

  // Producer side: written by every push (CAS), read by producers and the consumer.
  alignas(detail::cache_line) std::atomic<std::uint64_t> tail_index_{0};
  // Written by the producer that links a block; read by producers before their CAS.
  std::atomic<block*> tail_block_{nullptr};
  // A one-block cache: written by the consumer (recycle) and producers (take / return).
  std::atomic<block*> spare_{nullptr};

  // Consumer side.
  alignas(detail::cache_line) std::uint64_t head_ = 0;  // consumer only: next index to pop
  block* head_block_;                                  // consumer only: the block holding head_
  // A copy of head_ for size_approx(): written by the consumer, read by any thread.
  std::atomic<std::uint64_t> head_published_{0};
  detail::consumer_check check_;

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  detail::parker consumer_wait_;
};

}  // namespace tether
