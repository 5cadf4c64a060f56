// Declarations shared by the two halves of odr_test: odr_checked.cpp (built without NDEBUG)
// and odr_unchecked.cpp (built with NDEBUG). Each half pushes into and pops from queues and
// channel endpoints the other one created.
#pragma once

#include <tether/bounded_mpsc_queue.hpp>
#include <tether/channel.hpp>
#include <tether/mpsc_queue.hpp>

#include <cstddef>
#include <cstdint>

namespace odr {

struct layout {
  std::size_t consumer_check, mpsc_queue, bounded_mpsc_queue, channel_direction;
  bool checks;
};

struct counted_sum {
  std::uint64_t count = 0, sum = 0;
  void add(std::uint64_t v) {
    ++count;
    sum += v;
  }
};

layout layout_unchecked() noexcept;
// Each returns the sum of what it pushed (0 if a push was refused).
std::uint64_t push_unchecked(tether::mpsc_queue<std::uint64_t>& q, std::uint64_t first, std::uint64_t n);
std::uint64_t push_unchecked(tether::bounded_mpsc_queue<std::uint64_t>& q, std::uint64_t first, std::uint64_t n);
std::uint64_t send_unchecked(tether::endpoint<std::uint64_t, std::uint64_t>& e, std::uint64_t first, std::uint64_t n);
// Each takes up to n items (fewer only once closed).
counted_sum pop_unchecked(tether::mpsc_queue<std::uint64_t>& q, std::uint64_t n);
counted_sum pop_unchecked(tether::bounded_mpsc_queue<std::uint64_t>& q, std::uint64_t n);
counted_sum recv_unchecked(tether::endpoint<std::uint64_t, std::uint64_t>& e, std::uint64_t n);

}  // namespace odr
