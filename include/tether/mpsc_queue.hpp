// SPDX-License-Identifier: MIT
// tether/mpsc_queue.hpp - unbounded, lock-free queue: many producers, one consumer.
//
// Who may call what:
//   push / emplace / make_producer / close / is_closed / size_approx / shrink_to_fit
//                                  - any thread, concurrently;
//   producer::push / producer::emplace - the thread using that handle (one at a time);
//   try_pop / pop / pop_for / pop_until, try_pop_bulk / pop_bulk / pop_bulk_for /
//   pop_bulk_until, try_pop_each   - one consumer thread at a time (a translation unit built
//                                    without NDEBUG throws std::logic_error when two threads
//                                    consume at once).
//
// Outcomes: a push never blocks and returns push_result ok, or closed with its argument
// untouched. A pop returns pop_result<T>: the oldest ready item, or empty (try_pop), timeout
// (_for / _until), cancelled (the std::stop_token forms) or closed (closed and every item
// taken). Bulk pops return how many items
// they took. Items pushed by one thread (or one producer handle) come out in the order pushed;
// plain pushes from different threads too, whenever one push happens-before the other (they
// share one ring, claimed in turn); items of different handles keep only per-handle order.
// A throwing move of T leaves the item queued (see each method). The destructor destroys the
// items still queued.
//
// Memory: items live in blocks of about 16 KiB; emptied blocks are kept for reuse up to
// about 1 MiB for the shared ring and 1 MiB per producer handle's lane, and freed beyond
// that, so after a burst memory follows the backlog down to those pools (plus the block in
// use per source); shrink_to_fit() frees the pools too.
//
// Memory ordering: a push happens-before the pop that returns its item; a close()
// happens-before a push that reports closed and a pop that reports closed.
//
// After crossbeam-channel's list flavour (block list, CAS-claimed slots, a sentinel index
// while the next block is linked), adapted to one consumer, producer lanes, block reuse and
// parking. Design notes: next to the private code below, and docs/mpsc_queue.md.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "detail/queue/block_pool.hpp"
#include "detail/platform/config.hpp"
#include "detail/queue/consumer_check.hpp"
#include "detail/queue/consumer_ops.hpp"
#include "detail/platform/futex.hpp"
#include "detail/wait/parker.hpp"
#include "detail/queue/producer_lane.hpp"
#include "detail/queue/sink.hpp"
#include "result.hpp"

namespace tether {

namespace detail {
class executor_core;
}  // namespace detail

template <class T>
class mpsc_queue : public detail::consumer_ops<mpsc_queue<T>, T> {
  using base = detail::consumer_ops<mpsc_queue<T>, T>;
  friend base;
  friend class detail::executor_core;  // its owner's idle wait watches the head (head_has_item)
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
      destroy_if_written(b->slots[offset]);
      head++;
    }
    delete_chain(head_block_);
    for (lane* l = lanes_.load(std::memory_order_relaxed); l != nullptr;) delete std::exchange(l, l->next_lane);
  }

  // ---- producers (any thread) ------------------------------------------------------------

  // Enqueues v; never blocks. ok, or closed with v untouched (not moved from), so the
  // caller still owns it. Thread-safe.
  push_result push(T&& v) { return emplace(std::move(v)); }
  push_result push(const T& v) { return emplace(v); }

  // Constructs an item in place from args; never blocks. ok, or closed with args untouched.
  // If T's constructor throws, the slot is skipped and the exception propagates. Thread-safe.
  //
  // Outline (the ring; see "Design" below):
  //   1. read the tail index; closed -> hand back; at the sentinel -> another producer is
  //      linking the next block: back off (the point where a preempted thread makes other
  //      producers wait, for two stores);
  //   2. claiming the block's last slot -> have the next block ready before the CAS;
  //   3. CAS the tail index one step; the winner of the last slot links the next block and
  //      moves the index past the sentinel;
  //   4. construct the item, publish the slot, wake the consumer if it is parked.
  template <class... Args>
  push_result emplace(Args&&... args) {
    detail::backoff backoff;
    block* next_block = nullptr;  // ready for linking when we claim a block's last slot
    // [Q4] acquire: pairs with [Q3]; the tail_block_ read below is the index's block or newer.
    std::uint64_t tail = tail_index_.load(std::memory_order_acquire);
    for (;;) {
      if (tail & closed_bit) {
        return_spare(next_block);
        return status::closed;
      }
      const std::uint64_t offset = (tail >> index_shift) % lap;
      if (offset == block_cap) {
        backoff.snooze();
        tail = tail_index_.load(std::memory_order_acquire);  // [Q4] acquire: as above
        continue;
      }
      if (offset + 1 == block_cap && next_block == nullptr) next_block = take_spare();
      // [Q5] acquire: pairs with [Q2]; if the CAS below succeeds, b is the block of our slot.
      block* b = tail_block_.load(std::memory_order_acquire);
      // seq_cst claim; on failure acquire (as the first load).
      if (!tail_index_.compare_exchange_weak(tail, tail + index_step, std::memory_order_seq_cst,
                                             std::memory_order_acquire))
        continue;
      if (offset + 1 == block_cap) {
        // [Q1] release: the consumer reads next only after our slot below is published; pairs
        // with [Q7] in advance_ring().
        b->next.store(next_block, std::memory_order_release);
        // [Q2] release: publishes the new block to producers; pairs with [Q5] above.
        tail_block_.store(next_block, std::memory_order_release);
        // [Q3] release: moves the index past the sentinel; pairs with [Q4] above.
        tail_index_.fetch_add(index_step, std::memory_order_release);
        next_block = nullptr;
      } else {
        return_spare(next_block);
      }
      // The lines about to be written were read by the consumer in the block's last use: ask
      // for them ahead, as lanes do (docs/design/queue_measurements.md).
      if (offset + prefetch_ahead < block_cap) detail::prefetch_for_write(&b->slots[offset + prefetch_ahead]);
      const notify_on_exit notify{consumer_wait_};
      fill(b->slots[offset], std::forward<Args>(args)...);
      return status::ok;
    }
  }

  // A producer handle owning a private lane (see the banner): faster pushes for a thread that
  // pushes many items. The handle must not outlive the queue; use it from one thread at a
  // time. Dropping it keeps the items it pushed. Thread-safe; allocates a lane the first time
  // (lanes of dropped handles are reused).
  class producer;
  producer make_producer();

  // Closes the queue: later pushes fail (handing their item back); the consumer still
  // receives everything pushed before, then sees closed. Wakes a parked consumer.
  // Returns true if this call closed it. Thread-safe; never blocks.
  bool close() noexcept {
    const std::uint64_t prev = tail_index_.fetch_or(closed_bit, std::memory_order_seq_cst);
    closing_.store(true, std::memory_order_seq_cst);
    // The close half of the lane handshake (Design, below). Without lanes there is nothing to wait
    // out; a lane registered after this load reads closing_ (make_producer()).
    if (lanes_.load(std::memory_order_seq_cst) != nullptr) detail::heavy_fence();
    closed_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    consumer_wait_.notify_all();
    return (prev & closed_bit) == 0;
  }

  // True once close() was called. Thread-safe.
  bool is_closed() const noexcept { return (tail_index_.load(std::memory_order_seq_cst) & closed_bit) != 0; }

  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept {
    // relaxed: a statistic; no decision that needs ordering is made from it.
    const std::uint64_t tail = tail_index_.load(std::memory_order_relaxed) >> index_shift;
    const std::uint64_t head = head_published_.load(std::memory_order_relaxed);
    std::size_t n = tail <= head ? 0 : static_cast<std::size_t>((tail - head) - (tail / lap - head / lap));
    // acquire: pairs with the release that publishes a lane, so its fields are initialised.
    for (const lane* l = lanes_.load(std::memory_order_acquire); l != nullptr; l = l->next_lane) n += l->size_approx();
    return n;
  }
  bool empty_approx() const noexcept { return size_approx() == 0; }

  // Frees the emptied blocks kept for reuse (the ring's pool and every lane's), returning
  // how many bytes it freed; the blocks holding items stay. After a burst, for a queue that
  // will stay quiet for a while: the next burst allocates again. Thread-safe.
  std::size_t shrink_to_fit() noexcept {
    std::size_t bytes = pool_.clear() * sizeof(block);
    // acquire: pairs with the CAS that published a lane; its fields are initialised.
    for (lane* l = lanes_.load(std::memory_order_acquire); l != nullptr; l = l->next_lane) bytes += l->shrink_to_fit();
    return bytes;
  }

  // ---- consumer (one thread at a time) ---------------------------------------------------
  //
  // The consumer reads the shared ring and every producer handle's lane, staying with one
  // source while it has items (up to a quota, so that a busy source cannot starve the
  // others). Every call below: consumer thread only. A translation unit built without NDEBUG
  // throws std::logic_error when a second thread enters while one is inside.

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
  // The ring: items live in blocks of slots. A producer claims a slot with one compare-and-
  // swap on the tail index, writes the item and publishes the slot (a release store of its
  // state); the producer that claims a block's last slot links the next block (taken from
  // the pool of emptied blocks) before it publishes, so the consumer always finds it. The
  // consumer reads slots in index order and recycles each block it has emptied.
  //
  // Who makes whom wait: a producer preempted between claiming and publishing its slot holds
  // up only the consumer, which parks on that slot (it does not spin) and is woken by the
  // publish. A producer preempted while linking a block holds up other producers for the two
  // stores it has left; they back off and yield meanwhile.
  //
  // Lanes (make_producer): a handle owns a private lane - its own list of blocks, written by
  // that thread alone, so a push is a plain store and a release store with no compare-and-
  // swap and no shared cache line (detail/queue/producer_lane.hpp). A dropped handle's lane
  // is kept (with its items) and reused by the next make_producer().
  //
  // Closing with lanes is Dekker's handshake: a lane push raises its `pushing` flag, then
  // (light fence) reads closing_; close() stores closing_, then (heavy fence) sets closed_.
  // Either the push sees closing_ and hands its item back, or the consumer - which decides
  // "closed" only after it sees closed_ - sees the flag and waits for that push to land.
  //
  // Waking a parked consumer is the parker's handshake (detail/wait/parker.hpp): a push pays
  // no locked instruction beyond its claim.

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
  // Slots between the one a producer fills and the one it prefetches: about 512 bytes.
  static constexpr std::uint64_t prefetch_ahead = (512 + sizeof(slot) - 1) / sizeof(slot);
  // Emptied blocks kept for reuse: about 1 MiB, at least 4.
  static constexpr std::size_t pool_limit = sizeof(block) * 4 >= (1u << 20) ? 4 : (1u << 20) / sizeof(block);

  using head_state = detail::head_state;

  using lane = detail::producer_lane<T>;

  // Items a consumer takes from one source in a row before it looks at the others.
  static constexpr std::uint32_t source_quota = 256;

  // Constructs the item in s and publishes the slot: written, or abandoned (and rethrows)
  // if T's constructor throws. The caller wakes the consumer.
  template <class... Args>
  static void fill(slot& s, Args&&... args) {
    try {
      ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s.state.store(slot_abandoned, std::memory_order_release);  // [Q6] release: as below
      throw;
    }
    // [Q6] release: publishes the item; pairs with [Q8] in ring_ready() / take_ready_ring().
    // The parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
    s.state.store(slot_written, std::memory_order_release);
  }

  struct notify_on_exit {
    detail::parker& p;
    ~notify_on_exit() { p.notify_one(); }
  };

  static void destroy_if_written(slot& s) noexcept {
    if (s.state.load(std::memory_order_relaxed) == slot_written) s.value()->~T();  // relaxed: destructor only
  }
  static void delete_chain(block* b) noexcept {
    while (b != nullptr) delete std::exchange(b, b->next.load(std::memory_order_relaxed));  // relaxed: destructor only
  }

  // ---- lanes (producer handles) ----------------------------------------------------------

  // A lane for a new handle: a dropped handle's lane if there is one, else a new lane.
  // seq_cst list loads: make_producer()'s closing_ check relies on them (see there).
  lane* acquire_lane() {
    for (lane* l = lanes_.load(std::memory_order_seq_cst); l != nullptr; l = l->next_lane)
      if (l->try_own()) return l;
    auto* l = new lane;
    lane* head = lanes_.load(std::memory_order_relaxed);  // relaxed: the CAS below re-checks it
    do {
      l->next_lane = head;
    } while (!lanes_.compare_exchange_weak(head, l, std::memory_order_seq_cst, std::memory_order_relaxed));
    return l;
  }

  template <class... Args>
  push_result lane_emplace(lane& l, Args&&... args) {
    // After the lane push has lowered its flag, however it ends: the consumer may be waiting
    // for this push to land after close.
    const notify_on_exit notify{consumer_wait_};
    return l.emplace(closing_, std::forward<Args>(args)...);
  }

  // ---- blocks ----------------------------------------------------------------------------

  block* take_spare() {
    block* b = pool_.take();
    return b != nullptr ? b : new block;
  }
  void return_spare(block* b) noexcept {
    if (b != nullptr) pool_.give(b);
  }
  void recycle(block* b) noexcept {
    // No producer can reach b: every slot was claimed, published and consumed, and
    // tail_block_ moved on before the last slot was published.
    for (slot& s : b->slots) s.state.store(slot_empty, std::memory_order_relaxed);  // relaxed: published by give()
    b->next.store(nullptr, std::memory_order_relaxed);                             // relaxed: as above
    pool_.give(b);
  }

  // ---- consumer --------------------------------------------------------------------------
  //
  // The consumer reads one source at a time: current_ is a lane, or nullptr for the ring.

  slot& ring_slot() noexcept { return head_block_->slots[head_ % lap]; }
  bool ring_ready() noexcept {
    return ring_slot().state.load(std::memory_order_acquire) != slot_empty;  // [Q8] acquire: pairs with [Q6] in fill()
  }
  bool current_ready() noexcept { return current_ != nullptr ? current_->ready() : ring_ready(); }

  // Makes the next source (after current_, round the ring and the lanes) with an item
  // ready current; false if no other source has one.
  bool switch_to_ready() noexcept {
    // acquire: pairs with the CAS that published a lane; its fields are initialised.
    lane* const first = lanes_.load(std::memory_order_acquire);
    if (first == nullptr) return false;
    for (lane* l = current_ != nullptr ? current_->next_lane : first;; l = l->next_lane) {
      if (l == nullptr) {  // past the last lane: the ring, then the first lane
        if (current_ == nullptr) return false;
        if (ring_ready()) return switch_to(nullptr);
        l = first;
      }
      if (l == current_) return false;
      if (l->ready()) return switch_to(l);
    }
  }
  bool switch_to(lane* l) noexcept {
    current_ = l;
    quota_ = source_quota;
    return true;
  }
  // After an item: once source_quota came from one source in a row, the others get a turn.
  void count_taken(std::size_t n) noexcept {
    if (quota_ > n) {
      quota_ -= static_cast<std::uint32_t>(n);
      return;
    }
    quota_ = source_quota;
    switch_to_ready();
  }

  head_state probe() noexcept {
    if (current_ready() || switch_to_ready()) return head_state::ready;
    // Nothing ready. The ring's tail line is hot with producers: read it only once closed.
    // (A close that has claimed the tail but not yet set closed_ reads as "not closed yet".)
    if (!closed_.load(std::memory_order_seq_cst)) return head_state::empty;
    return closed_state();
  }

  // After closed_ is set: ready (and made current) if some source has an item, in flight
  // while a push that passed its closed check is unfinished, else closed. seq_cst loads:
  // also the re-check half of the parker handshake.
  head_state closed_state() noexcept {
    bool in_flight = false;
    for (lane* l = lanes_.load(std::memory_order_seq_cst); l != nullptr; l = l->next_lane) {
      // The flag before the items: a push that ends between the two loads shows its item.
      if (l->pushing()) {
        in_flight = true;
      } else if (l->ready_seq_cst()) {
        switch_to(l);
        return head_state::ready;
      }
    }
    if (ring_slot().state.load(std::memory_order_seq_cst) != slot_empty) {
      switch_to(nullptr);
      return head_state::ready;
    }
    const std::uint64_t tail = tail_index_.load(std::memory_order_seq_cst);
    if ((tail >> index_shift) != head_) in_flight = true;  // a claimed ring slot not yet published
    return in_flight ? head_state::in_flight : head_state::closed;
  }

  // Some source has an item ready at its head (made current). Reads the consumer's own lines
  // and the slots the producers publish into, never the ring's tail: a waiting owner can poll
  // it without pulling the line every push writes. Consumer thread only.
  bool head_has_item() noexcept { return current_ready() || switch_to_ready(); }

  // The condition a parked consumer waits for: some source has an item, or the queue is
  // closed with nothing in flight. seq_cst loads: the re-check half of the parker handshake.
  bool head_ready() noexcept {
    if (ring_slot().state.load(std::memory_order_seq_cst) != slot_empty) return true;
    for (lane* l = lanes_.load(std::memory_order_seq_cst); l != nullptr; l = l->next_lane)
      if (l->ready_seq_cst()) return true;
    // The ring's tail line is hot with producers: read it only once closed.
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    return closed_state() != head_state::in_flight;
  }

  void advance_ring() noexcept {
    std::uint64_t head = head_ + 1;
    if (head % lap == block_cap) {
      // [Q7] acquire: pairs with [Q1]; the last slot's producer linked next before publishing.
      block* next = head_block_->next.load(std::memory_order_acquire);
      recycle(head_block_);
      head_block_ = next;
      ++head;
    }
    head_ = head;
    head_published_.store(head, std::memory_order_relaxed);  // relaxed: only size_approx() reads it
  }

  // After probe() said ready: true (and moved past it) if the head is a ring slot whose
  // producer's constructor threw.
  bool skip_abandoned() noexcept {
    // relaxed: probe() acquired the state.
    if (current_ != nullptr || ring_slot().state.load(std::memory_order_relaxed) != slot_abandoned) return false;
    advance_ring();
    return true;
  }

  // After probe() said ready and skip_abandoned() said no: the head item, moved once straight
  // into the result; if that move throws the item stays queued (pop_result's take_from_slot).
  pop_result<T> take() {
    if (current_ != nullptr) {
      return pop_result<T>(detail::take_from_slot, current_->head_item(), [this]() noexcept {
        current_->pop_head();
        count_taken(1);
      });
    }
    return pop_result<T>(detail::take_from_slot, ring_slot().value(), [this]() noexcept {
      advance_ring();
      count_taken(1);
    });
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      if (current_ != nullptr) {
        const std::size_t k = current_->take_ready(std::min<std::size_t>(max - n, quota_), sink);
        n += k;
        if (k != 0) {
          count_taken(k);
          continue;
        }
      } else if (const std::size_t k = take_ready_ring(std::min<std::size_t>(max - n, quota_), sink); k != 0) {
        n += k;
        count_taken(k);
        continue;
      }
      if (!switch_to_ready()) break;
    }
    return n;
  }

  template <class Sink>
  std::size_t take_ready_ring(std::size_t max, Sink& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = ring_slot();
      const std::uint8_t st = s.state.load(std::memory_order_acquire);  // [Q8] acquire: pairs with [Q6] in fill()
      if (st == slot_empty) break;
      if (st == slot_abandoned) {
        advance_ring();
        continue;
      }
      detail::hand_over(s.value(), sink, [this] { advance_ring(); });
      ++n;
    }
    return n;
  }

  // Producer side: written by every push (CAS), read by producers and the consumer.
  alignas(detail::cache_line) std::atomic<std::uint64_t> tail_index_{0};
  // Written by the producer that links a block; read by producers before their CAS.
  std::atomic<block*> tail_block_{nullptr};
  // Emptied blocks for reuse (up to about 1 MiB): the consumer gives, producers take,
  // shrink_to_fit() empties it.
  detail::block_pool<block> pool_{pool_limit};

  // The lanes of producer handles, newest first; a lane is never removed before the
  // destructor. Written by make_producer(), read by the consumer and close().
  alignas(detail::cache_line) std::atomic<lane*> lanes_{nullptr};

  // Consumer side.
  alignas(detail::cache_line) std::uint64_t head_ = 0;  // consumer only: next index to pop
  block* head_block_;                                  // consumer only: the block holding head_
  // A copy of head_ for size_approx(): written by the consumer, read by any thread.
  std::atomic<std::uint64_t> head_published_{0};
  lane* current_ = nullptr;                 // consumer only: the source read now (nullptr: the ring)
  std::uint32_t quota_ = source_quota;      // consumer only: items left before the others' turn
  detail::consumer_check check_;
  detail::stream_watch stream_;  // consumer only: see park_until_streaming

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  // Set by close() before its heavy fence; read by every lane push (Design, above).
  std::atomic<bool> closing_{false};
  detail::parker consumer_wait_;
};

// A producer handle of an mpsc_queue: see mpsc_queue::make_producer(). Movable, not
// copyable; a moved-from handle may only be destroyed or assigned to.
template <class T>
class mpsc_queue<T>::producer {
 public:
  producer(producer&& o) noexcept : q_(std::exchange(o.q_, nullptr)), lane_(std::exchange(o.lane_, nullptr)) {}
  producer& operator=(producer&& o) noexcept {
    if (this != &o) {
      release();
      q_ = std::exchange(o.q_, nullptr);
      lane_ = std::exchange(o.lane_, nullptr);
    }
    return *this;
  }
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;
  ~producer() { release(); }

  // As mpsc_queue::push / emplace: ok, or closed (item untouched) once the queue is closed.
  // Never blocks. Items pushed through this handle are popped in the order pushed. The
  // thread using this handle.
  push_result push(T&& v) { return emplace(std::move(v)); }
  push_result push(const T& v) { return emplace(v); }
  template <class... Args>
  push_result emplace(Args&&... args) {
    return q_->lane_emplace(*lane_, std::forward<Args>(args)...);
  }

  mpsc_queue& queue() const noexcept { return *q_; }

 private:
  friend class mpsc_queue<T>;
  producer(mpsc_queue& q, lane& l) noexcept : q_(&q), lane_(&l) {}
  void release() noexcept {
    if (lane_ != nullptr) lane_->disown();
  }

  mpsc_queue* q_;
  lane* lane_;
};

template <class T>
typename mpsc_queue<T>::producer mpsc_queue<T>::make_producer() {
  lane& l = *acquire_lane();
  // A close() that read lanes_ before this lane was listed skipped its heavy fence. This
  // seq_cst load, ordered after acquire_lane()'s seq_cst list access, reads that close's
  // closing_ = true - and then so does every later push here (coherence) - or else that
  // close comes later in the seq_cst order and finds the lane, and fences.
  (void)closing_.load(std::memory_order_seq_cst);
  return producer(*this, l);
}

}  // namespace tether
