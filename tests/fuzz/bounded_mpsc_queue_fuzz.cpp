// libFuzzer: operation sequences on a bounded_mpsc_queue against a FIFO model.
//
// One thread: try_push reports full exactly when the model holds capacity() items, pops
// return the model's oldest item, bulk calls take min(max, count), and after close() pushes
// are refused with the item left with the caller while the rest still drains.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <vector>

#include <tether/bounded_mpsc_queue.hpp>

#include "fuzz_input.hpp"

namespace {
using tether_fuzz::require;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tether_fuzz::input in(data, size);
  const std::size_t asked = 1 + in.below(100);
  tether::bounded_mpsc_queue<std::uint64_t> q(asked);
  const std::size_t cap = q.capacity();
  require(cap >= asked && cap >= 2 && (cap & (cap - 1)) == 0, "capacity() not the next power of two", cap, asked);
  std::deque<std::uint64_t> model;
  std::uint64_t next = 0;
  bool closed = false;
  std::vector<std::uint64_t> out;

  auto popped = [&](std::uint64_t v) {
    require(!model.empty() && model.front() == v, "pop out of order", model.empty() ? -1 : (long long)model.front(), (long long)v);
    model.pop_front();
  };
  auto expect_push = [&](tether::push_result r, std::uint64_t v) {
    if (closed) {
      require(r.is_closed(), "push after close not refused as closed");
    } else if (model.size() == cap) {
      require(r.is_full() || r.is_timeout(), "push into a full queue accepted", (long long)model.size());
    } else {
      require(static_cast<bool>(r), "push refused with room left", (long long)model.size(), (long long)cap);
      model.push_back(v);
      ++next;
    }
  };

  while (!in.empty()) {
    switch (in.below(9)) {
      case 0:
      case 1: {  // a run of try_push
        const std::size_t n = 1 + in.below(3 * cap);
        for (std::size_t i = 0; i < n; ++i) {
          std::uint64_t v = next;
          const tether::push_result r = q.try_push(std::move(v));
          expect_push(r, next);
          if (!r) require(v == next, "refused try_push changed its argument");
        }
        break;
      }
      case 2: {  // push_for with no time: full reports timeout
        std::uint64_t v = next;
        expect_push(q.push_for(std::move(v), std::chrono::nanoseconds(0)), next);
        break;
      }
      case 3: {
        auto r = q.try_pop();
        if (model.empty()) require(closed ? r.is_closed() : r.is_empty(), "try_pop on empty: wrong status");
        else {
          require(static_cast<bool>(r), "try_pop found nothing though items were pushed");
          popped(*r);
        }
        break;
      }
      case 4: {
        auto r = q.pop_for(std::chrono::nanoseconds(0));
        if (model.empty()) require(closed ? r.is_closed() : r.is_timeout(), "pop_for(0) on empty: wrong status");
        else {
          require(static_cast<bool>(r), "pop_for(0) found nothing though items were pushed");
          popped(*r);
        }
        break;
      }
      case 5: {
        const std::size_t max = in.byte();
        const std::size_t before = model.size();
        out.clear();
        const std::size_t n = q.try_pop_bulk(std::back_inserter(out), max);
        require(n == out.size() && n == (max < before ? max : before), "try_pop_bulk count wrong", n, before);
        for (std::uint64_t v : out) popped(v);
        break;
      }
      case 6: {
        const std::size_t max = in.byte();
        const std::size_t before = model.size();
        const std::size_t n = q.try_pop_each([&](std::uint64_t&& v) { popped(v); }, max);
        require(n == (max < before ? max : before), "try_pop_each count wrong", n, before);
        break;
      }
      case 7:
        if (in.below(4) == 0) {
          require(q.close() == !closed, "close() result wrong");
          closed = true;
        }
        break;
      default:
        require(q.size_approx() == model.size(), "size_approx() wrong with one thread", (long long)q.size_approx(),
                (long long)model.size());
        break;
    }
  }
  while (auto r = q.try_pop()) popped(*r);
  require(model.empty(), "items lost", (long long)model.size());
  return 0;
}
