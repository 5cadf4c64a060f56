// tether/detail/producer_lane.hpp - one producer handle's private FIFO inside an mpsc_queue.
//
// Who may call what: the producer half (emplace) - the thread using the handle that owns the
// lane; the consumer half (ready, take, take_ready, ...) - the queue's consumer; try_own /
// disown / size_approx - any thread.
//
// A lane is a single-producer single-consumer list of blocks of slots; a slot is the item and
// a stamp, the item's 1-based position in the lane. The producer writes the item, then stores
// the stamp (release); the consumer compares its head slot's stamp (acquire) with the position
// it expects and takes the item - no compare-and-swap and no cache line shared with other
// producers, the point of a lane. Stamps rather than a published item count: a consumer that
// has caught up then reads the line the producer is filling anyway, instead of a counter line
// that every push rewrites (measured slower, see bench/README.md). Stamps rather than a flag
// the consumer clears: the consumer only reads a block's lines, so the producer refilling a
// reused block does not have to pull them back dirty. The producer links the next block
// before it publishes a block's last slot, so the consumer always finds it. Emptied blocks
// go back to the producer through a bounded pool (block_pool.hpp); steady state allocates
// nothing.
//
// Closing (see mpsc_queue's banner): emplace raises pushing_ for its whole length and reads
// the queue's closing flag after a light fence; the consumer reads pushing_ before the head
// stamp once closed, so a push that passed its check is either seen in flight or seen landed.
//
// Memory ordering: a slot's release stamp store publishes its item (and, for a block's last
// slot, the link to the next block); the consumer's acquire load pairs with it. pushing_'s
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
#include "config.hpp"
#include "fence.hpp"

namespace tether::detail {

template <class T>
class producer_lane {
  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    // The item's stamp: its 1-based position in the lane, stored (release) by the producer
    // once the item is written. A slot of a reused block keeps an older, smaller stamp, so
    // the consumer never writes to a slot: recycling a block touches none of its lines.
    std::atomic<std::uint64_t> stamp{0};
    T* item() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };
  // About 16 KiB per block, at least 32 items.
  static constexpr std::size_t block_items = sizeof(slot) * 32 >= 16384 ? 32 : 16384 / sizeof(slot);
  // Emptied blocks kept for reuse: up to about 1 MiB per lane, at least 4 blocks.
  static constexpr std::size_t max_cached = (block_items * sizeof(slot) * 4 >= (1u << 20)) ? 4 : (1u << 20) / (block_items * sizeof(slot));

  // The producer asks for the line this many slots ahead of the one it writes (about 512
  // bytes): the consumer has read those lines since the block's last use.
  static constexpr std::size_t prefetch_slots = (512 + sizeof(slot) - 1) / sizeof(slot);

  struct block {
    slot slots[block_items];
    // Stored by the producer before it publishes the block's last slot; read by the
    // consumer after it has taken that slot. A reused block keeps a stale value until then.
    std::atomic<block*> next{nullptr};
  };

 public:
  producer_lane() : tail_block_(new block), head_block_(tail_block_) {}
  producer_lane(const producer_lane&) = delete;
  producer_lane& operator=(const producer_lane&) = delete;

  // Destroys the items left (no thread may use the lane). relaxed loads: no other thread.
  ~producer_lane() {
    std::uint64_t left = pushed_.load(std::memory_order_relaxed) - popped_.load(std::memory_order_relaxed);
    for (; left != 0; --left) {
      head_slot().item()->~T();
      if (step_head()) delete std::exchange(spent_, nullptr);
    }
    // head_block_ is the producer's tail block now; blocks after it are stale links.
    delete head_block_;
  }

  // ---- producer (the owning handle's thread) ---------------------------------------------

  // Appends an item built from args unless `closing` is set; false (args untouched) if it is.
  // If T's constructor throws nothing is published and the exception propagates. The caller
  // wakes the consumer afterwards, however this returns.
  template <class... Args>
  bool emplace(const std::atomic<bool>& closing, Args&&... args) {
    // relaxed: the light fence orders it before the closing load (the close handshake).
    pushing_.store(true, std::memory_order_relaxed);
    light_fence();
    const lower_on_exit lower{pushing_};
    // relaxed: ordered by the handshake's fences; close() heavy-fences after its store.
    if (closing.load(std::memory_order_relaxed)) return false;
    slot& s = tail_block_->slots[tail_pos_];
    if (tail_pos_ + prefetch_slots < block_items) prefetch_for_write(&s + prefetch_slots);
    if (tail_pos_ + 1 == block_items) {
      std::unique_ptr<block> next(take_spare());          // may throw: nothing written yet
      ::new (s.storage) T(std::forward<Args>(args)...);  // throws: nothing published
      // release: the consumer reads next only after it has taken the slot published below.
      tail_block_->next.store(next.get(), std::memory_order_release);
      tail_block_ = next.release();
      tail_pos_ = 0;
    } else {
      ::new (s.storage) T(std::forward<Args>(args)...);  // throws: the slot is reused next time
      ++tail_pos_;
    }
    // relaxed: only this thread writes pushed_ (size_approx() reads it as a statistic).
    const std::uint64_t stamp = pushed_.load(std::memory_order_relaxed) + 1;
    // release: publishes the item; pairs with the consumer's acquire load in ready().
    s.stamp.store(stamp, std::memory_order_release);
    pushed_.store(stamp, std::memory_order_relaxed);  // relaxed: as above
    return true;
  }

  // ---- consumer --------------------------------------------------------------------------

  // Is the head item published?
  bool ready() noexcept {
    return head_slot().stamp.load(std::memory_order_acquire) == next_stamp();  // acquire: pairs with emplace()
  }
  // The same with a seq_cst load: the re-check half of the parker handshake.
  bool ready_seq_cst() noexcept { return head_slot().stamp.load(std::memory_order_seq_cst) == next_stamp(); }
  // A push is between its closed check and its end. Read before ready_seq_cst() (banner).
  bool pushing() const noexcept { return pushing_.load(std::memory_order_seq_cst); }

  // Precondition: ready(). Hands the head item to f(T&&), then drops it; if f throws, the
  // item stays queued.
  template <class F>
  void take(F&& f) {
    T* p = head_slot().item();
    f(std::move(*p));
    p->~T();
    advance();
  }

  // Takes up to max ready items, oldest first, calling sink(T&&) for each. Returns how many.
  // Each item leaves the lane before the sink sees it: a sink may pop from the same queue.
  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink& sink) {
    std::size_t n = 0;
    while (n < max && ready()) {
      T* p = head_slot().item();
      T v(std::move(*p));
      p->~T();
      advance();
      ++n;
      sink(std::move(v));
    }
    return n;
  }

  // ---- any thread ------------------------------------------------------------------------

  std::size_t size_approx() const noexcept {
    // relaxed: statistics; no decision that needs ordering is made from them.
    const std::uint64_t tail = pushed_.load(std::memory_order_relaxed);
    const std::uint64_t head = popped_.load(std::memory_order_relaxed);
    return tail > head ? static_cast<std::size_t>(tail - head) : 0;
  }

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

  slot& head_slot() noexcept { return head_block_->slots[head_pos_]; }
  // The stamp the head slot carries once its item is published.
  std::uint64_t next_stamp() const noexcept {
    return popped_.load(std::memory_order_relaxed) + 1;  // relaxed: only the consumer writes popped_
  }
  void advance() noexcept {
    if (step_head()) pool_.give(std::exchange(spent_, nullptr));
    // relaxed: the consumer's own counter; size_approx() reads it as a statistic.
    popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // Moves past the head slot; true if that left a block behind (in spent_).
  bool step_head() noexcept {
    if (++head_pos_ != block_items) return false;
    // acquire: pairs with emplace()'s release store of next, made before the last slot.
    spent_ = std::exchange(head_block_, head_block_->next.load(std::memory_order_acquire));
    head_pos_ = 0;
    return true;
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
  block* spent_ = nullptr;                // the block just emptied, on its way to pool_

  // Shared, written about once per block or per handle.
  alignas(cache_line) block_pool<block> pool_{max_cached};  // emptied blocks, for the producer
  std::atomic<bool> owned_{true};
};

}  // namespace tether::detail
