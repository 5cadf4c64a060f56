// The NDEBUG half of odr_test (see odr_checked.cpp): compiled with -DNDEBUG, so its consumer
// calls do not check for a second consumer. It pushes into and pops from queues and a
// channel that the other translation unit (built without NDEBUG) created.
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/channel.hpp>
#include <tether/mpsc_queue.hpp>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

#include "odr_shared.hpp"

#ifndef NDEBUG
#error "odr_unchecked.cpp must be compiled with NDEBUG (tests/CMakeLists.txt sets it)"
#endif

namespace odr {

layout layout_unchecked() noexcept {
  return {sizeof(tether::detail::consumer_check), sizeof(tether::mpsc_queue<std::uint64_t>),
          sizeof(tether::bounded_mpsc_queue<std::uint64_t>), sizeof(tether::detail::channel_direction<std::uint64_t>),
          tether::detail::consumer_checks_enabled};
}

std::uint64_t push_unchecked(tether::mpsc_queue<std::uint64_t>& q, std::uint64_t first, std::uint64_t n) {
  std::uint64_t sum = 0;
  auto h = q.make_producer();
  for (std::uint64_t i = first; i < first + n; ++i) {
    if (!(i % 2 == 0 ? q.push(i) : h.push(i))) return 0;
    sum += i;
  }
  return sum;
}

std::uint64_t push_unchecked(tether::bounded_mpsc_queue<std::uint64_t>& q, std::uint64_t first, std::uint64_t n) {
  std::uint64_t sum = 0;
  for (std::uint64_t i = first; i < first + n; ++i) {
    if (!q.push(i)) return 0;
    sum += i;
  }
  return sum;
}

std::uint64_t send_unchecked(tether::endpoint<std::uint64_t, std::uint64_t>& e, std::uint64_t first, std::uint64_t n) {
  std::uint64_t sum = 0;
  for (std::uint64_t i = first; i < first + n; ++i) {
    if (!e.send(i)) return 0;
    sum += i;
  }
  return sum;
}

counted_sum pop_unchecked(tether::mpsc_queue<std::uint64_t>& q, std::uint64_t n) {
  counted_sum r;
  std::vector<std::uint64_t> batch;
  while (r.count < n) {
    if (r.count % 3 == 0) {
      auto v = q.pop();
      if (!v) break;
      r.add(*v);
    } else {
      batch.clear();
      if (q.pop_bulk(std::back_inserter(batch), 7) == 0) break;
      for (auto v : batch) r.add(v);
    }
  }
  return r;
}

counted_sum pop_unchecked(tether::bounded_mpsc_queue<std::uint64_t>& q, std::uint64_t n) {
  counted_sum r;
  while (r.count < n) {
    auto v = q.pop();
    if (!v) break;
    r.add(*v);
  }
  return r;
}

counted_sum recv_unchecked(tether::endpoint<std::uint64_t, std::uint64_t>& e, std::uint64_t n) {
  counted_sum r;
  while (r.count < n) {
    auto v = e.recv();
    if (!v) break;
    r.add(*v);
  }
  return r;
}

}  // namespace odr
