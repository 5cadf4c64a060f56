// SPDX-License-Identifier: MIT
// tether/detail/queue/block_pool.hpp - emptied queue blocks kept for reuse, up to a limit.
//
// Who may call what: take / give / clear - any thread, concurrently; the destructor - no
// other thread.
//
// An unbounded queue would otherwise free each block its consumer empties and allocate a
// new one for its producers: with 16 KiB blocks that is the allocator's trim and the kernel's
// page faults on every block, which cost more than the items themselves.
//
// A Treiber stack whose only pop is "take everything" (exchange with null): a node is never
// popped while another thread may push it again, so there is no ABA. take() keeps the first
// block and pushes the rest back as one chain. The count is approximate (relaxed): at worst
// a block more or less is kept than the limit says; memory follows the backlog down.
//
// Memory ordering: give()'s release CAS [BP1] publishes the block (the giver's last reads
// and any reset of it) to take()'s and clear()'s acquire exchange [BP2].
#pragma once

#include <atomic>
#include <cstddef>
#include <utility>

namespace tether::detail {

// Block: any type with a member `std::atomic<Block*> next`, which the pool uses as its link
// while the block is inside (and sets to null on the way out).
template <class Block>
class block_pool {
 public:
  explicit block_pool(std::size_t limit) noexcept : limit_(limit) {}
  block_pool(const block_pool&) = delete;
  block_pool& operator=(const block_pool&) = delete;
  ~block_pool() {
    Block* b = head_.load(std::memory_order_relaxed);  // relaxed: no other thread
    while (b != nullptr) delete std::exchange(b, b->next.load(std::memory_order_relaxed));
  }

  // A kept block (its next null), or nullptr when none is kept.
  Block* take() noexcept {
    // [BP2] acquire: pairs with [BP1] in push(); the giver is done with the block.
    Block* b = head_.exchange(nullptr, std::memory_order_acquire);
    if (b == nullptr) return nullptr;
    count_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: the count only steers give()
    if (Block* rest = b->next.load(std::memory_order_relaxed)) {  // relaxed: ours since the exchange
      Block* last = rest;
      while (Block* n = last->next.load(std::memory_order_relaxed)) last = n;
      push(rest, last);
    }
    b->next.store(nullptr, std::memory_order_relaxed);  // relaxed: ours
    return b;
  }

  // Deletes every kept block; returns how many. Like take(), it pops by taking everything.
  std::size_t clear() noexcept {
    // [BP2] acquire: as in take().
    Block* b = head_.exchange(nullptr, std::memory_order_acquire);
    std::size_t n = 0;
    while (b != nullptr) {
      delete std::exchange(b, b->next.load(std::memory_order_relaxed));  // relaxed: ours since the exchange
      ++n;
    }
    count_.fetch_sub(n, std::memory_order_relaxed);  // relaxed: the count only steers give()
    return n;
  }

  // Keeps b for a later take(), or deletes it when the pool holds its limit.
  void give(Block* b) noexcept {
    // relaxed: the count only steers this choice.
    if (count_.load(std::memory_order_relaxed) >= limit_) {
      delete b;
      return;
    }
    count_.fetch_add(1, std::memory_order_relaxed);
    push(b, b);
  }

 private:
  void push(Block* first, Block* last) noexcept {
    Block* head = head_.load(std::memory_order_relaxed);  // relaxed: the CAS re-checks it
    do {
      last->next.store(head, std::memory_order_relaxed);  // relaxed: published by the CAS
      // [BP1] release: publishes the chain (and the givers' last accesses); pairs with [BP2].
    } while (!head_.compare_exchange_weak(head, first, std::memory_order_release, std::memory_order_relaxed));
  }

  std::atomic<Block*> head_{nullptr};
  std::atomic<std::size_t> count_{0};
  const std::size_t limit_;
};

}  // namespace tether::detail
