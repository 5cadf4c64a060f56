// Item types for the fault tests: a live-instance count, a check against double destruction,
// a moved-from mark, and moves / copies that throw on demand.
//
// fault_item carries a value; its move and copy constructors throw item_fault when armed
// (arm_move_throw(n): the n-th move from now on, on any thread, throws; arm_copy_throw
// likewise), before touching either object - so a throwing move leaves its source exactly as
// it was. Its destructor cannot throw (the queues require a non-throwing destructor) but it
// counts, and notes a second destruction of the same object.
//
// Single-threaded tests arm and read these directly; threaded ones read the atomics after
// joining their threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>

namespace tether_test {

// What an armed move or copy of fault_item throws.
struct item_fault : std::runtime_error {
  item_fault() : std::runtime_error("fault_item: injected move/copy failure") {}
};

struct fault_item {
  // Objects constructed and not yet destroyed.
  static inline std::atomic<long> live{0};
  // Destructor calls on an object already destroyed (or never constructed).
  static inline std::atomic<long> destroyed_twice{0};
  // Successful moves and copies, and injected throws.
  static inline std::atomic<long> moves{0};
  static inline std::atomic<long> copies{0};
  static inline std::atomic<long> throws{0};
  // 0: disarmed; n > 0: the n-th move (copy) from now on throws, once.
  static inline std::atomic<long> move_countdown{0};
  static inline std::atomic<long> copy_countdown{0};

  static void arm_move_throw(long n) noexcept { move_countdown.store(n); }
  static void arm_copy_throw(long n) noexcept { copy_countdown.store(n); }
  static void disarm() noexcept {
    move_countdown.store(0);
    copy_countdown.store(0);
  }
  // Resets the counters (not live / destroyed_twice, which must come back to 0 by themselves).
  static void reset_counters() noexcept {
    moves.store(0);
    copies.store(0);
    throws.store(0);
    disarm();
  }

  explicit fault_item(std::uint64_t v = 0) : value(v) { live.fetch_add(1); }
  fault_item(fault_item&& o) : value(o.value), moved_from(o.moved_from) {
    maybe_throw(move_countdown);
    o.moved_from = true;
    moves.fetch_add(1);
    live.fetch_add(1);
  }
  fault_item(const fault_item& o) : value(o.value), moved_from(o.moved_from) {
    maybe_throw(copy_countdown);
    copies.fetch_add(1);
    live.fetch_add(1);
  }
  // Assignment never throws here: the queues construct items, they do not assign them, and
  // output iterators that throw are a separate case (see throwing_items_test.cpp).
  fault_item& operator=(fault_item&& o) noexcept {
    value = o.value;
    moved_from = o.moved_from;
    o.moved_from = true;
    return *this;
  }
  fault_item& operator=(const fault_item& o) noexcept = default;
  ~fault_item() {
    if (alive != magic) destroyed_twice.fetch_add(1);
    alive = 0;
    live.fetch_sub(1);
  }

  // Still the value it was built with, not the shell of a move.
  bool intact(std::uint64_t expected) const noexcept { return !moved_from && alive == magic && value == expected; }

  static constexpr std::uint32_t magic = 0x7e7e7e7e;
  std::uint64_t value;
  bool moved_from = false;
  std::uint32_t alive = magic;

 private:
  static void maybe_throw(std::atomic<long>& countdown) {
    long n = countdown.load();
    while (n > 0) {
      if (countdown.compare_exchange_weak(n, n - 1)) {
        if (n == 1) {
          throws.fetch_add(1);
          throw item_fault();
        }
        return;
      }
    }
  }
};

}  // namespace tether_test
