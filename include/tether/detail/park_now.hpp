// tether/detail/park_now.hpp - park_until without the spin, for waits known to be long.
//
// park_until (parker.hpp) spins (and yields) before it parks: right when the other side is
// running and about to publish, wasteful when it is not - and on a machine with more
// runnable threads than cores, a spinning waiter takes the core the other side needs.
// Executors know when a wait will be long (a caller with tasks queued ahead of it; an owner
// whose recent idle periods outlasted the spin), and then park at once through the same
// parker protocol: announce, re-check, sleep - park_until's last phase, unchanged.
//
// Who may call what: as park_until.
// Memory ordering: as park_until (the parker's handshake; see parker.hpp).
#pragma once

#include <cstdint>

#include "futex.hpp"
#include "parker.hpp"

namespace tether::detail {

// Returns ready()'s verdict: true as soon as it holds, false only when the deadline passed.
template <class Ready>
bool park_now(parker& p, Ready&& ready, steady_time deadline) {
  for (;;) {
    const std::uint32_t key = p.prepare_wait();
    if (ready()) {
      p.cancel_wait();
      return true;
    }
    if (!p.wait(key, deadline)) return ready();
    if (ready()) return true;
  }
}

// park_until when spin is true, park_now otherwise.
template <class Ready>
bool park(parker& p, Ready&& ready, steady_time deadline, bool spin) {
  return spin ? park_until(p, ready, deadline) : park_now(p, ready, deadline);
}

}  // namespace tether::detail
