// libFuzzer: operation sequences on an mpsc_queue with producer handles, against a model.
//
// The model keeps, per source (plain push, or one producer handle), the items pushed and not
// yet popped. Every pop must return the oldest item of some source (per-producer FIFO), the
// queue must hold exactly what the model holds (one thread: every push is published), and
// after close() pushes are refused with the item left with the caller.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <vector>

#include <tether/mpsc_queue.hpp>

#include "fuzz_input.hpp"

namespace {

using tether_fuzz::require;

struct item {
  std::uint32_t source;
  std::uint32_t seq;
};

struct model {
  std::map<std::uint32_t, std::deque<std::uint32_t>> pending;  // source -> seqs in push order
  std::map<std::uint32_t, std::uint32_t> next_seq;
  std::size_t count = 0;
  bool closed = false;

  item make(std::uint32_t source) { return {source, next_seq[source]++}; }
  void pushed(const item& it) {
    pending[it.source].push_back(it.seq);
    ++count;
  }
  void popped(const item& it) {
    auto found = pending.find(it.source);
    require(found != pending.end() && !found->second.empty(), "popped an item never pushed", it.source, it.seq);
    require(found->second.front() == it.seq, "per-source order broken", found->second.front(), it.seq);
    found->second.pop_front();
    --count;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tether_fuzz::input in(data, size);
  tether::mpsc_queue<item> q;
  model m;
  constexpr std::size_t max_handles = 4;
  std::vector<std::optional<tether::mpsc_queue<item>::producer>> handles(max_handles);
  std::vector<std::uint32_t> handle_source(max_handles, 0);
  std::uint32_t next_source = 1;  // 0: plain push
  std::vector<item> out;

  while (!in.empty()) {
    const std::size_t k = in.below(max_handles);
    switch (in.below(10)) {
      case 0:  // a new handle (takes a dropped handle's lane if there is one)
        if (!handles[k]) {
          handles[k].emplace(q.make_producer());
          handle_source[k] = next_source++;
        }
        break;
      case 1:  // drop a handle: its items stay queued
        handles[k].reset();
        break;
      case 2:
      case 3: {  // push a run through a handle (or plain), up to about 3 blocks
        const std::size_t n = 1 + in.byte() * 6;
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint32_t src = handles[k] ? handle_source[k] : 0;
          item it = m.make(src);
          const bool ok = handles[k] ? static_cast<bool>(handles[k]->push(it)) : static_cast<bool>(q.push(it));
          require(ok == !m.closed, "push result disagrees with closed", ok, m.closed);
          if (ok) m.pushed(it);
          else m.next_seq[src]--;  // refused: that seq was never used
        }
        break;
      }
      case 4: {  // try_pop
        auto r = q.try_pop();
        if (m.count == 0) {
          require(!r, "try_pop returned an item from an empty queue");
          require(r.is_closed() == m.closed, "try_pop: closed status wrong", r.is_closed(), m.closed);
        } else {
          require(static_cast<bool>(r), "try_pop found nothing though items were pushed", m.count);
          m.popped(*r);
        }
        break;
      }
      case 5: {  // try_pop_bulk
        const std::size_t max = in.byte();
        out.clear();
        const std::size_t n = q.try_pop_bulk(std::back_inserter(out), max);
        require(n == out.size(), "try_pop_bulk count differs from items written", n, out.size());
        require(n == (max < m.count ? max : m.count), "try_pop_bulk took fewer than were ready", n, m.count);
        for (const item& it : out) m.popped(it);
        break;
      }
      case 6: {  // try_pop_each
        const std::size_t max = in.byte();
        const std::size_t before = m.count;
        std::size_t seen = 0;
        const std::size_t n = q.try_pop_each([&](item&& it) { m.popped(it); ++seen; }, max);
        require(n == seen && n == (max < before ? max : before), "try_pop_each count wrong", n, seen);
        break;
      }
      case 7: {  // pop_for with no time: as try_pop, reporting timeout
        auto r = q.pop_for(std::chrono::nanoseconds(0));
        if (m.count == 0) require(m.closed ? r.is_closed() : r.is_timeout(), "pop_for(0) on empty: wrong status");
        else {
          require(static_cast<bool>(r), "pop_for(0) found nothing though items were pushed");
          m.popped(*r);
        }
        break;
      }
      case 8:
        if (in.below(4) == 0) {  // close (rarely: the rest of the input then only drains)
          require(q.close() == !m.closed, "close() result wrong");
          m.closed = true;
          require(q.is_closed(), "is_closed() false after close()");
        }
        break;
      default:
        require(q.size_approx() == m.count, "size_approx() wrong with one thread", static_cast<long long>(q.size_approx()),
                static_cast<long long>(m.count));
        break;
    }
  }
  // Everything left comes out, in order.
  while (auto r = q.try_pop()) m.popped(*r);
  require(m.count == 0, "items lost", static_cast<long long>(m.count));
  return 0;
}
