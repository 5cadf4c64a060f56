// tether/detail/producer_lane.hpp - one producer handle's private FIFO inside an mpsc_queue.
//
// Who may call what: the producer half (emplace) - the thread using the handle that owns the
// lane; the consumer half (ready, take, take_ready, ...) - the queue's consumer; try_own /
// disown / size_approx - any thread.
//
// A lane is a single-producer single-consumer list of blocks of slots; a slot is the item and
// a `full` flag. The producer writes the item, then sets the flag (release); the consumer
// reads the flag of its head slot (acquire) and takes the item - no compare-and-swap and no
// cache line shared with other producers, the point of a lane. Per-slot flags rather than a
// published item count: a consumer that has caught up then reads the line the producer is
// filling anyway, instead of a counter line that every push rewrites (measured slower, see
// bench/README.md). The producer links the next block before it publishes a block's last
// slot, so the consumer always finds it. Emptied blocks go back to the producer through a
// bounded pool (block_pool.hpp); steady state allocates nothing.
//
// Closing (see mpsc_queue's banner): emplace raises pushing_ for its whole length and reads
// the queue's closing flag after a light fence; the consumer reads pushing_ before the head
// flag once closed, so a push that passed its check is either seen in flight or seen landed.
//
// Memory ordering: a slot's release flag store publishes its item (and, for a block's last
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
  struct slot;
  // About 16 KiB per block, at least 32 items.
  static constexpr std::size_t slot_size = (sizeof(T) + 1 + alignof(T) - 1) / alignof(T) * alignof(T);
  static constexpr std::size_t block_items = slot_size * 32 >= 16384 ? 32 : 16384 / slot_size;
  // Emptied blocks kept for reuse: up to about 1 MiB per lane, at least 4 blocks.
  static constexpr std::size_t max_cached = (block_items * slot_size * 4 >= (1u << 20)) ? 4 : (1u << 20) / (block_items * slot_size);

  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    // Set (release) by the producer once the item is written; reset by the consumer when it
    // recycles the block, while the producer cannot reach it.
    std::atomic<bool> full{false};
    T* item() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };
  struct block {
    slot slots[block_items];
    // Written by the producer before it publishes the block's last slot; read by the
    // consumer after it has taken that slot.
    std::atomic<block*> next{nullptr};
  };

 public:
  producer_lane() : tail_block_(new block), head_block_(tail_block_) {}
  producer_lane(const producer_lane&) = delete;
  producer_lane& operator=(const producer_lane&) = delete;

  // Destroys the items left (no thread may use the lane). relaxed loads: no other thread.
  ~producer_lane() {
    for (block* b = head_block_; b != nullptr;) {
      for (std::size_t i = b == head_block_ ? head_pos_ : 0; i < block_items; ++i)
        if (b->slots[i].full.load(std::memory_order_relaxed)) b->slots[i].item()->~T();
      delete std::exchange(b, b->next.load(std::memory_order_relaxed));
    }

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
    // release: publishes the item; pairs with the consumer's acquire load in ready().
    s.full.store(true, std::memory_order_release);
    // relaxed: a statistic on the producer's own line.
    pushed_.store(pushed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return true;
  }

  // ---- consumer --------------------------------------------------------------------------

  // Is the head item published?
  bool ready() noexcept {
    return head_slot().full.load(std::memory_order_acquire);  // acquire: pairs with emplace()
  }
  // The same with a seq_cst load: the re-check half of the parker handshake.
  bool ready_seq_cst() noexcept { return head_slot().full.load(std::memory_order_seq_cst); }
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
  void advance() noexcept {
    if (++head_pos_ == block_items) {
      // acquire: pairs with emplace()'s release store of next, made before the last slot.
      block* next = head_block_->next.load(std::memory_order_acquire);
      recycle(head_block_);
      head_block_ = next;
      head_pos_ = 0;
    }
    popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: size_approx() only
  }

  block* take_spare() {
    block* b = pool_.take();
    return b != nullptr ? b : new block;
  }
  void recycle(block* b) noexcept {
    for (slot& sl : b->slots) sl.full.store(false, std::memory_order_relaxed);  // relaxed: published by give()
    b->next.store(nullptr, std::memory_order_relaxed);                        // relaxed: as above
    pool_.give(b);
  }
  // Producer side; the consumer reads pushing_ only after close.
  alignas(cache_line) block* tail_block_;
  std::size_t tail_pos_ = 0;              // next slot in tail_block_
  std::atomic<bool> pushing_{false};      // raised for the length of each emplace()
  std::atomic<std::uint64_t> pushed_{0};  // for size_approx()

  // Consumer side.
  alignas(cache_line) block* head_block_;
  std::size_t head_pos_ = 0;              // next slot in head_block_
  std::atomic<std::uint64_t> popped_{0};  // for size_approx()

  // Shared, written about once per block or per handle.
  alignas(cache_line) block_pool<block> pool_{max_cached};  // emptied blocks, for the producer
  std::atomic<bool> owned_{true};
};

}  // namespace tether::detail
