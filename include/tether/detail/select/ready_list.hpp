// SPDX-License-Identifier: MIT
// tether/detail/select/ready_list.hpp - the nodes a poller must look at, and the parker it sleeps on.
//
// Every source a poller watches has a poll_node. A notifier that finds the node unsignalled
// pushes it here (a Treiber stack: one compare-and-swap) and wakes the poller; the poller
// takes the whole list with one exchange. A node is on the list at most once (its signalled
// flag says so), so a burst of pushes to one source costs one push and one wake-up.
//
// Who may call what: push - any thread (notifiers, add/remove); take_all / has_work - the
// poller's waiting thread; wake is the poller's parker (park_until on it: the waiting thread).
//
// Memory ordering: push's release CAS [R1] publishes the node's next_ready link (and what the
// pusher did before) to take_all's acquire exchange [R2]. The waiting thread parks on `wake`
// with has_work() as its condition: push stores the head, then notify_one() (light fence);
// the waiter announces itself (heavy fence), then loads the head - the parker's handshake.
#pragma once

#include <atomic>

#include "../platform/config.hpp"
#include "../wait/parker.hpp"

namespace tether::detail {

class ready_list;

// One watched source, as its poller and the source's notifiers see it. The poller that owns
// the node fills in the rest (see poller_core.hpp).
struct poll_node : parker_listener {
  // Set by a notifier that finds it false (it then pushes the node) and by add(); cleared by
  // the poller when it takes the node off the list. True exactly while the node is on the
  // ready list, outside the poller's scan.
  std::atomic<bool> signalled{false};
  poll_node* next_ready = nullptr;  // the ready-list link: written by the pusher
  ready_list* list = nullptr;       // fixed at creation
};

class ready_list {
 public:
  // Pushes n and wakes the waiting thread. n must not be on the list. Never blocks.
  void push(poll_node& n) noexcept {
    poll_node* head = head_.load(std::memory_order_relaxed);  // relaxed: the CAS re-validates it
    do {
      n.next_ready = head;
      // [R1] release: publishes n.next_ready and the pusher's earlier writes; pairs with [R2].
    } while (!head_.compare_exchange_weak(head, &n, std::memory_order_release, std::memory_order_relaxed));
    wake.notify_one();
  }

  // Takes every node pushed so far, most recent first. Waiting thread only.
  poll_node* take_all() noexcept {
    return head_.exchange(nullptr, std::memory_order_acquire);  // [R2] acquire: pairs with [R1]
  }

  // The parked poller's condition. seq_cst: the re-check half of the parker handshake.
  bool has_work() const noexcept { return head_.load(std::memory_order_seq_cst) != nullptr; }

  parker wake;  // the poller's waiting thread sleeps here

 private:
  // Written by pushers (CAS) and the waiting thread (exchange); read by both.
  std::atomic<poll_node*> head_{nullptr};
};

// The listener a poller hangs on each watched source's parker (parker_listener::on_notify):
// runs on the notifying thread, after the source published. One push per burst: only the
// notifier that flips `signalled` from false pushes the node.
inline void notify_poller(parker_listener& l) noexcept {
  auto& n = static_cast<poll_node&>(l);
  // [N1] acq_rel, pairs with [W1] (poller_core.hpp). Release: our publish (sequenced before this
  // notify) reaches the poller's probe when [W1] reads our true. Acquire: when we read the
  // poller's false, its last use of n.next_ready happened before push() rewrites it.
  if (!n.signalled.exchange(true, std::memory_order_acq_rel)) n.list->push(n);
}

}  // namespace tether::detail
