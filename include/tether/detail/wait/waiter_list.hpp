// SPDX-License-Identifier: MIT
// tether/detail/wait/waiter_list.hpp - many suspended waiters behind one parker listener.
//
// A parker carries one listener (parker.hpp). That is enough on a queue's consumer side (one
// consumer), but producers awaiting room in a bounded queue are many: waiter_list is a
// listener that holds any number of them. The first add() hangs the list on the parker; from
// then on every notify of that parker takes the whole list and wakes each waiter once. A
// woken waiter re-checks its condition and adds itself again if it lost the race.
//
// Exactly one party wakes a waiter: whoever unlinks it, under the list's lock - a notifier
// (which takes them all), or the waiter's owner through remove() (a stop request, or a
// re-check that found the condition true). remove() returning false means a notifier has the
// waiter and will wake it: the owner must let it (the wake may already be under way). A
// notifier reads a waiter's successor before it wakes it and never touches it after: a woken
// waiter may be gone at once.
//
// The handshake (parker.hpp): add() publishes the waiter (count_, seq_cst) after attaching the
// list; the caller then takes heavy_fence() and re-checks its condition. A notifier publishes
// the condition, takes its light fence in notify_*() and loads the listener and then count_.
// Either the waiter sees the condition or the notifier sees the waiter.
//
// Who may call what: add / remove - any thread (a waiter's owner); the notify - any notifier of
// the parker. The lock is held only to link and unlink, never while a waiter is woken.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>

#include "parker.hpp"

namespace tether::detail {

// One waiter: its owner sets wake before add(); the list owns prev / next / linked while it is
// linked (under the list's lock).
struct list_waiter {
  void (*wake)(list_waiter& self) noexcept = nullptr;
  list_waiter* prev = nullptr;
  list_waiter* next = nullptr;
  bool linked = false;
};

class waiter_list : parker_listener {
 public:
  waiter_list() noexcept { on_notify = &notified; }
  waiter_list(const waiter_list&) = delete;
  waiter_list& operator=(const waiter_list&) = delete;
  // No waiter may be linked and no notifier running (the owning queue's destruction contract).
  ~waiter_list() {
    if (parker_ != nullptr) parker_->detach(*this);
  }

  // Links w and, the first time, hangs the list on p (always the same parker). Returns false
  // (w not linked) when p carries another listener. Then: heavy_fence(), re-check, and if the
  // condition already holds, remove(w).
  bool add(parker& p, list_waiter& w) {
    std::lock_guard lock(m_);
    if (parker_ == nullptr) {
      if (!p.attach(*this)) return false;
      parker_ = &p;
    }
    w.prev = tail_;
    w.next = nullptr;
    (tail_ != nullptr ? tail_->next : head_) = &w;
    tail_ = &w;
    w.linked = true;
    count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);  // the handshake's announce
    return true;
  }

  // Unlinks w if it is still linked: true means the caller now owns waking it (or not); false
  // means a notifier has taken it and wakes it.
  bool remove(list_waiter& w) noexcept {
    std::lock_guard lock(m_);
    if (!w.linked) return false;
    (w.prev != nullptr ? w.prev->next : head_) = w.next;
    (w.next != nullptr ? w.next->prev : tail_) = w.prev;
    w.linked = false;
    // relaxed: a notifier that still reads the old count takes the lock and finds the list as it is.
    count_.store(count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    return true;
  }

  std::size_t size() const noexcept { return count_.load(std::memory_order_relaxed); }  // relaxed: a snapshot

 private:
  static void notified(parker_listener& l) noexcept {
    auto& self = static_cast<waiter_list&>(l);
    // The notifier's re-check (the handshake): nobody linked, nothing to take, no lock.
    if (self.count_.load(std::memory_order_seq_cst) == 0) return;
    list_waiter* taken;
    {
      std::lock_guard lock(self.m_);
      taken = self.head_;
      for (list_waiter* w = taken; w != nullptr; w = w->next) w->linked = false;
      self.head_ = self.tail_ = nullptr;
      self.count_.store(0, std::memory_order_relaxed);  // relaxed: as in remove()
    }
    while (taken != nullptr) {
      list_waiter* next = taken->next;  // before the wake: a woken waiter may be gone at once
      taken->wake(*taken);
      taken = next;
    }
  }

  std::mutex m_;
  list_waiter* head_ = nullptr;  // guarded by m_, as are tail_ and parker_
  list_waiter* tail_ = nullptr;
  parker* parker_ = nullptr;
  // How many are linked: written under m_, read without it by notifiers (the handshake).
  std::atomic<std::size_t> count_{0};
};

}  // namespace tether::detail
