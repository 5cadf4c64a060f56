// SPDX-License-Identifier: MIT
// tether/detail/queue/producer_lane.hpp - one producer handle's private FIFO inside an mpsc_queue.
//
// Who may call what: the producer half (emplace) - the thread using the handle that owns the
// lane; the consumer half (ready, head_item, pop_head, take_ready, ...) - the queue's
// consumer; try_own / disown / size_approx / shrink_to_fit - any thread.
//
// A lane is a single-producer single-consumer list of blocks of items, each item with a
// stamp: its 1-based position in the lane. The producer writes the item, then stores the
// stamp (release); the consumer compares its head stamp (acquire) with the position it
// expects and takes the item - no compare-and-swap and no cache line shared with other
// producers, the point of a lane. Stamps rather than a published item count: a consumer
// that has caught up then polls near the producer's current item, instead of a counter line
// that every push rewrites (docs/design/queue_measurements.md). Stamps rather than a flag
// the consumer clears: the consumer only reads a block, so a reused block's stale stamps are
// simply smaller than expected. The producer links the next block before it publishes a
// block's last item, so the consumer always finds it. Emptied blocks go back to the producer
// through a bounded pool (block_pool.hpp): while the lane's backlog fits it, nothing is
// allocated; past it, blocks are freed and allocated again. Small items sit next to their stamps; items of a cache line or more on
// whole lines (lane_block below).
//
// Closing (see mpsc_queue's banner): emplace raises pushing_ for its whole length and reads
// the queue's closing flag after a light fence; the consumer reads pushing_ before the head
// stamp once closed, so a push that passed its check is either seen in flight or seen landed.
//
// Memory ordering: an item's release stamp store [L2] publishes it (and, for a block's last
// item, the link [L1] to the next block); the consumer's acquire loads [L3] / [L4] pair with
// them. pushing_'s
// release store pairs with the consumer's seq_cst load after close. Ownership of the
// producer side moves between handles by owned_'s release/acquire.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "block_pool.hpp"
#include "../platform/config.hpp"
#include "../platform/fence.hpp"
#include "sink.hpp"
#include "../../result.hpp"

namespace tether::detail {

// A lane's block: about 16 KiB of items (at least 32) with their stamps, in one of two
// layouts chosen by the item's size. Both say which line to prefetch ahead of a write.
template <class T, bool StampsApart = (sizeof(T) >= cache_line)>
struct lane_block;

// Items smaller than a cache line: each slot holds the item and its stamp, so reading the
// stamp brings in the item's line too.
template <class T>
struct lane_block<T, false> {
  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    std::atomic<std::uint64_t> stamp{0};
  };
  static constexpr std::size_t items = sizeof(slot) * 32 >= 16384 ? 32 : 16384 / sizeof(slot);
  // About 512 bytes ahead of the slot being written.
  static constexpr std::size_t prefetch_ahead = (512 + sizeof(slot) - 1) / sizeof(slot);

  slot slots[items];
  // Stored by the producer before it publishes the block's last item; read by the consumer
  // after it has taken that item. A reused block keeps a stale value until then.
  std::atomic<lane_block*> next{nullptr};

  unsigned char* item(std::size_t i) noexcept { return slots[i].storage; }
  std::atomic<std::uint64_t>& stamp(std::size_t i) noexcept { return slots[i].stamp; }
  void prefetch(std::size_t i) noexcept { prefetch_for_write(&slots[i]); }
};

// Items of a cache line or more: items on whole lines, stamps in an array of their own. A
// consumer that has caught up polls a stamp line, not the line the producer is writing an
// item into (the comparison with the layout above: docs/design/queue_measurements.md).
template <class T>
struct lane_block<T, true> {
  static constexpr std::size_t items = sizeof(T) * 32 >= 16384 ? 32 : 16384 / sizeof(T);
  static constexpr std::size_t prefetch_ahead = (512 + sizeof(T) - 1) / sizeof(T);

  alignas(alignof(T) > cache_line ? alignof(T) : cache_line) unsigned char storage[items][sizeof(T)];
  alignas(cache_line) std::atomic<std::uint64_t> stamps[items] = {};
  std::atomic<lane_block*> next{nullptr};  // as above

  unsigned char* item(std::size_t i) noexcept { return storage[i]; }
  std::atomic<std::uint64_t>& stamp(std::size_t i) noexcept { return stamps[i]; }
  void prefetch(std::size_t i) noexcept {
    prefetch_for_write(storage[i]);
    prefetch_for_write(&stamps[i]);
  }
};

template <class T>
class producer_lane {
  using block = lane_block<T>;
  static constexpr std::size_t block_items = block::items;
  // Emptied blocks kept for reuse: up to about 1 MiB per lane, at least 4 blocks.
  static constexpr std::size_t max_cached = sizeof(block) * 4 >= (1u << 20) ? 4 : (1u << 20) / sizeof(block);

 public:
  producer_lane() : tail_block_(new block), head_block_(tail_block_) {}
  producer_lane(const producer_lane&) = delete;
  producer_lane& operator=(const producer_lane&) = delete;

  // Destroys the items left (no thread may use the lane). relaxed loads: no other thread.
  ~producer_lane() {
    std::uint64_t left = pushed_.load(std::memory_order_relaxed) - popped_.load(std::memory_order_relaxed);
    for (; left != 0; --left) {
      head_item()->~T();
      delete step_head();
    }
    // head_block_ is the producer's tail block now; blocks after it are stale links.
    delete head_block_;
  }

  // ---- producer (the owning handle's thread) ---------------------------------------------

  // Appends an item built from args unless `closing` is set; false (args untouched) if it is.
  // If T's constructor throws nothing is published and the exception propagates. The caller
  // wakes the consumer afterwards, however this returns.
  template <class... Args>
  push_result emplace(const std::atomic<bool>& closing, Args&&... args) {
    // relaxed: the light fence orders it before the closing load (the close handshake).
    pushing_.store(true, std::memory_order_relaxed);
    light_fence();
    const lower_on_exit lower{pushing_};
    // relaxed: ordered by the handshake's fences; close() heavy-fences after its store.
    if (closing.load(std::memory_order_relaxed)) return status::closed;
    block& b = *tail_block_;
    const std::size_t pos = tail_pos_;
    unsigned char* const s = b.item(pos);
    // The lines about to be written were read by the consumer since the block's last use: ask
    // for them ahead, or each store waits for its line in turn (no hardware prefetcher helps).
    if (pos + block::prefetch_ahead < block_items) b.prefetch(pos + block::prefetch_ahead);
    if (pos + 1 == block_items) {
      std::unique_ptr<block> next(take_spare());          // may throw: nothing written yet
      ::new (s) T(std::forward<Args>(args)...);  // throws: nothing published
      // [L1] release: the consumer reads next only after it has taken the item published
      // below; pairs with [L4] in step_head().
      b.next.store(next.get(), std::memory_order_release);
      tail_block_ = next.release();
      tail_pos_ = 0;
    } else {
      ::new (s) T(std::forward<Args>(args)...);  // throws: the slot is reused next time
      ++tail_pos_;
    }
    // relaxed: only this thread writes pushed_ (size_approx() reads it as a statistic).
    const std::uint64_t stamp = pushed_.load(std::memory_order_relaxed) + 1;
    // [L2] release: publishes the item; pairs with [L3] in ready().
    b.stamp(pos).store(stamp, std::memory_order_release);
    pushed_.store(stamp, std::memory_order_relaxed);  // relaxed: as above
    return status::ok;
  }

  // ---- consumer --------------------------------------------------------------------------

  // Is the head item published?
  bool ready() noexcept {
    return head_stamp().load(std::memory_order_acquire) == next_stamp();  // [L3] acquire: pairs with [L2]
  }
  // The same with a seq_cst load: the re-check half of the parker handshake.
  bool ready_seq_cst() noexcept { return head_stamp().load(std::memory_order_seq_cst) == next_stamp(); }
  // A push is between its closed check and its end. Read before ready_seq_cst() (banner).
  bool pushing() const noexcept { return pushing_.load(std::memory_order_seq_cst); }

  // Precondition: ready(). The head item, for the consumer to move out and destroy; then
  // pop_head() moves past its slot (nothing is destroyed there).
  T* head_item() noexcept { return std::launder(reinterpret_cast<T*>(head_block_->item(head_pos_))); }
  void pop_head() noexcept { advance(); }

  // Takes up to max ready items, oldest first, calling sink(T&&) for each. Returns how many.
  // A sink that may pop from the same queue sees each item after it has left the lane
  // (hand_over, sink.hpp).
  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink& sink) {
    std::size_t n = 0;
    for (; n < max && ready(); ++n) detail::hand_over(head_item(), sink, [this] { advance(); });
    return n;
  }

  // ---- any thread ------------------------------------------------------------------------

  std::size_t size_approx() const noexcept {
    // relaxed: statistics; no decision that needs ordering is made from them.
    const std::uint64_t tail = pushed_.load(std::memory_order_relaxed);
    const std::uint64_t head = popped_.load(std::memory_order_relaxed);
    return tail > head ? static_cast<std::size_t>(tail - head) : 0;
  }

  // Frees the emptied blocks kept for reuse; returns how many bytes.
  std::size_t shrink_to_fit() noexcept { return pool_.clear() * sizeof(block); }

  // Claims the lane for a new handle; false if a handle holds it.
  bool try_own() noexcept {
    bool expected = false;
    // relaxed pre-check: a hint only, the CAS decides. acquire: pairs with disown(); the
    // previous owner's producer fields are ours now.
    return !owned_.load(std::memory_order_relaxed) &&
           owned_.compare_exchange_strong(expected, true, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void disown() noexcept { owned_.store(false, std::memory_order_release); }  // release: see try_own()

  // The next lane of the queue's list: set before the lane is published, then constant.
  producer_lane* next_lane = nullptr;

 private:
  struct lower_on_exit {
    std::atomic<bool>& flag;
    // release: a consumer that reads false also sees the item this push published.
    ~lower_on_exit() { flag.store(false, std::memory_order_release); }
  };

  std::atomic<std::uint64_t>& head_stamp() noexcept { return head_block_->stamp(head_pos_); }
  // The stamp the head slot carries once its item is published.
  std::uint64_t next_stamp() const noexcept {
    return popped_.load(std::memory_order_relaxed) + 1;  // relaxed: only the consumer writes popped_
  }
  void advance() noexcept {
    if (block* emptied = step_head()) pool_.give(emptied);
    // relaxed: the consumer's own counter; size_approx() reads it as a statistic.
    popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // Moves past the head slot; returns the block it left, if it left one (else nullptr).
  block* step_head() noexcept {
    if (++head_pos_ != block_items) return nullptr;
    // [L4] acquire: pairs with [L1], made before the last slot was published.
    block* const emptied = std::exchange(head_block_, head_block_->next.load(std::memory_order_acquire));
    head_pos_ = 0;
    return emptied;
  }

  block* take_spare() {
    block* b = pool_.take();
    return b != nullptr ? b : new block;
  }
  // Producer side; the consumer reads pushing_ only after close.
  alignas(cache_line) block* tail_block_;
  std::size_t tail_pos_ = 0;              // next slot in tail_block_
  std::atomic<bool> pushing_{false};      // raised for the length of each emplace()
  std::atomic<std::uint64_t> pushed_{0};  // items published: the last stamp stored

  // Consumer side.
  alignas(cache_line) block* head_block_;
  std::size_t head_pos_ = 0;              // next slot in head_block_
  std::atomic<std::uint64_t> popped_{0};  // items taken; the head slot's stamp is popped_ + 1

  // Shared, written about once per block or per handle.
  alignas(cache_line) block_pool<block> pool_{max_cached};  // emptied blocks, for the producer
  std::atomic<bool> owned_{true};
};

}  // namespace tether::detail
