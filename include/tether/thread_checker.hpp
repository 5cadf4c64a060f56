// SPDX-License-Identifier: MIT
// tether/thread_checker.hpp - "this object belongs to one thread", checked in release builds.
//
//   class session_cache {
//     tether::thread_checker owner_;             // bound to the constructing thread
//     int hits_ TETHER_GUARDED_BY(owner_) = 0;   // clang -Wthread-safety checks the accesses
//    public:
//     void hit() { owner_.check(); ++hits_; }    // throws tether::wrong_thread elsewhere
//   };
//
// check() costs one thread-local read and a compare, so it stays on in release builds (a
// misplaced call from another thread becomes an exception naming both threads, not memory
// corruption). The thrown wrong_thread names the owner and the caller by thread id, name
// (set_thread_name() or the OS's thread name) and kernel thread id.
//
// For clang's -Wthread-safety, thread_checker is a capability and check() asserts it:
// members marked TETHER_GUARDED_BY(checker) may be used only after checker.check() in the
// same function.
//
// Who may call what: every member, any thread (that is the point); detach() and rebind
// semantics are racy by nature - call detach() only when no other thread uses the checker.
//
// Memory ordering: a lazy binder claims record_ with an acq_rel CAS, then publishes serial_
// (release); error paths read both with acquire. The fast path reads serial_ relaxed: it
// only compares it with the caller's own serial and reads nothing through it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "detail/platform/config.hpp"
#include "detail/platform/thread_record.hpp"
#include "errors.hpp"

namespace tether {

// Names the calling thread in tether's messages (in full) and for the OS (first 15 bytes:
// what top, gdb and /proc show).
inline void set_thread_name(std::string_view name) { detail::set_this_thread_name(name); }

struct defer_binding_t {
  explicit defer_binding_t() = default;
};
inline constexpr defer_binding_t defer_binding{};

class TETHER_CAPABILITY("thread") thread_checker {
 public:
  // Bound to the calling thread.
  thread_checker() : record_(&detail::this_thread_record()), serial_(detail::tls_serial) {}
  // Bound to the first thread that calls check() or is_current().
  explicit thread_checker(defer_binding_t) noexcept {}

  thread_checker(const thread_checker& other) noexcept
      : record_(other.record_.load(std::memory_order_acquire)),  // acquire: pairs with bind()'s CAS
        serial_(other.serial_.load(std::memory_order_acquire)) {}  // acquire: pairs with bind()'s store
  thread_checker& operator=(const thread_checker&) = delete;

  // true on the owner thread (binding a deferred checker to the caller). Thread-safe.
  bool is_current() const {
    // Only the value is compared; the record is read under acquire on other paths.
    const std::uint64_t owner = serial_.load(std::memory_order_relaxed);  // relaxed: pairs with nothing
    if (owner != 0 && owner == detail::tls_serial) return true;
    return owner == 0 && bind();
  }

  // Throws wrong_thread unless on the owner thread. `what` names the object in the message.
  void check(std::string_view what = "an object guarded by a tether::thread_checker") const
      TETHER_ASSERT_CAPABILITY(this) {
    if (!is_current()) throw wrong_thread(message(what));
  }

  // The next check() binds to its caller (e.g. after handing the object to another thread).
  void detach() noexcept {
    serial_.store(0, std::memory_order_release);      // release: pairs with the acquire loads
    record_.store(nullptr, std::memory_order_release);  // release: as above
  }

  // "thread 1403 'julia' (tid 4242)", or why there is none. Thread-safe.
  std::string describe_owner() const {
    const std::uint64_t owner = serial_.load(std::memory_order_acquire);  // acquire: pairs with bind()
    if (owner == 0) return "no thread yet";
    return detail::describe_thread(record_.load(std::memory_order_acquire), owner);  // acquire: pairs with bind()
  }

 private:
  // Binds an unbound checker to the calling thread; true if it is now (or was) ours.
  bool bind() const {
    detail::thread_record& me = detail::this_thread_record();
    detail::thread_record* expected = nullptr;
    // The first binder wins; acquire lets a loser read the winner's record.
    if (record_.compare_exchange_strong(expected, &me, std::memory_order_acq_rel)) {  // acq_rel: pairs with the acquire loads
      serial_.store(detail::tls_serial, std::memory_order_release);  // release: pairs with message()'s acquire
      return true;
    }
    return expected == &me && serial_.load(std::memory_order_acquire) == detail::tls_serial;  // acquire: pairs with the store above
  }

  std::string message(std::string_view what) const {
    const std::uint64_t owner = serial_.load(std::memory_order_acquire);  // acquire: pairs with bind()
    detail::thread_record* record = record_.load(std::memory_order_acquire);  // acquire: pairs with bind()
    return detail::wrong_thread_message(std::string(what), record, owner,
                                        "use it from its owner thread, or hand the work to that thread "
                                        "(executor::call/post, confined<T>::with)");
  }

  // The owner's record and serial. Written at construction or by the first bind(); read by
  // every check.
  mutable std::atomic<detail::thread_record*> record_{nullptr};
  mutable std::atomic<std::uint64_t> serial_{0};
};

}  // namespace tether
