// SPDX-License-Identifier: MIT
// tether/detail/platform/thread_record.hpp - who a thread is, and which executor it is blocked on.
//
// Every thread tether meets gets a thread_record: a serial number unique for that thread's
// life (what affinity checks compare), its name and ids (what error messages print), and the
// edge "blocked in call() on the executor owned by record R" (what deadlock detection walks).
//
// Records are immortal: a record is recycled when its thread exits, never freed, so any
// thread may read another's record at any time without a lifetime protocol. A stale pointer
// is told apart by its serial: a recycled record carries a new one.
//
// Who may call what:
//   this_thread_serial / this_thread_record / acquire_record / adopt_record - any thread, for
//     itself (adopt_record: the thread a record was acquired for).
//   describe_thread - any thread (takes the record's mutex; error paths only).
//   blocking_call (the deadlock edge) - the thread that blocks; find_cycle reads others' edges.
//
// Memory ordering: call_seq stores and all edge loads are seq_cst; the other edge fields are
// written with release stores. A thread's edge is published by its call_seq store (written
// after the fields) and retired by storing call_seq = 0 first; a reader that sees the same
// call_seq before and after reading the fields read one consistent edge, held continuously
// in between (a seqlock whose sequence is the call's unique number). Release is enough for
// the fields: each orders the previous call's "call_seq = 0" before it, so a reader that
// loads a new field value reads 0 or the next number as its second call_seq.
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <typeinfo>
#include <unordered_set>
#include <vector>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tether::detail {

struct thread_record {
  // 0 while the record is free; otherwise unique to one thread's life. Written under the
  // record's mutex by acquire/release; read lock-free by checkers and deadlock walkers.
  std::atomic<std::uint64_t> serial{0};

  // The blocking call() this thread is in, if any. Written by the thread itself; read by
  // deadlock walkers on other threads. call_seq == 0: not blocked.
  std::atomic<std::uint64_t> call_seq{0};
  std::atomic<thread_record*> waits_for{nullptr};    // owner of the executor being called
  std::atomic<std::uint64_t> waits_for_serial{0};    // that owner's serial
  std::atomic<const char*> waits_on_name{nullptr};   // the executor's (interned) name

  // Identity for messages; guarded by mutex.
  std::mutex mutex;
  std::string name;          // set by tether::set_thread_name (may exceed the OS's 15 bytes)
  std::thread::id id{};
  pthread_t handle{};
  bool bound = false;        // id / handle / tid are set (the thread has started)
  long tid = 0;              // kernel thread id where known (what top and gdb show)
  std::uint64_t next_call = 0;  // the thread's own counter for call_seq (only it touches it)

  thread_record* next_free = nullptr;  // guarded by the registry mutex
};

// Holds every record ever made. Never destroyed: records must outlive every thread, static
// destructors included (a leaked singleton stays reachable, so leak checkers stay quiet).
struct thread_registry {
  std::mutex mutex;
  thread_record* free_list = nullptr;
  std::vector<thread_record*> all;
  std::uint64_t next_serial = 1;
  std::unordered_set<std::string> names;  // interned executor names

  static thread_registry& get() {
    static thread_registry* r = new thread_registry;
    return *r;
  }
};

// Returns a record with a fresh serial, not yet bound to a thread.
inline thread_record* acquire_record() {
  thread_registry& reg = thread_registry::get();
  thread_record* r = nullptr;
  std::uint64_t serial = 0;
  {
    std::lock_guard lock(reg.mutex);
    if (reg.free_list != nullptr) {
      r = reg.free_list;
      reg.free_list = r->next_free;
    } else {
      r = new thread_record;
      reg.all.push_back(r);
    }
    serial = reg.next_serial++;
  }
  std::lock_guard lock(r->mutex);
  r->name.clear();
  r->bound = false;
  r->serial.store(serial, std::memory_order_seq_cst);
  return r;
}

// The calling thread's record and serial (0 / nullptr until it has one).
inline constinit thread_local std::uint64_t tls_serial = 0;
inline constinit thread_local thread_record* tls_record = nullptr;

// Returns r to the pool: its serial becomes 0, so every stale reference sees it has gone.
inline void release_record(thread_record* r) noexcept {
  {
    std::lock_guard lock(r->mutex);
    r->serial.store(0, std::memory_order_seq_cst);
    r->call_seq.store(0, std::memory_order_seq_cst);
    r->bound = false;
  }
  thread_registry& reg = thread_registry::get();
  std::lock_guard lock(reg.mutex);
  r->next_free = reg.free_list;
  reg.free_list = r;
}

inline void release_this_thread_record() noexcept {
  thread_record* r = tls_record;
  if (r == nullptr) return;
  tls_record = nullptr;
  tls_serial = 0;
  release_record(r);
}

struct record_releaser {
  ~record_releaser() { release_this_thread_record(); }
};

// Makes r (from acquire_record) the calling thread's record; it is recycled at thread exit.
inline void adopt_record(thread_record* r) {
  static thread_local record_releaser releaser;  // registers the release at thread exit
  (void)&releaser;
  {
    std::lock_guard lock(r->mutex);
    r->id = std::this_thread::get_id();
    r->handle = ::pthread_self();
#if defined(__linux__)
    r->tid = static_cast<long>(::syscall(SYS_gettid));
#endif
    r->bound = true;
  }
  tls_record = r;
  tls_serial = r->serial.load(std::memory_order_seq_cst);
}

inline thread_record& this_thread_record() {
  if (tls_record == nullptr) adopt_record(acquire_record());
  return *tls_record;
}

inline std::uint64_t this_thread_serial() {
  if (tls_serial == 0) this_thread_record();
  return tls_serial;
}

// One copy of each executor name for the life of the process, so a deadlock walker may read
// a name through another thread's edge without caring whether that executor still exists.
inline const char* intern_name(std::string_view name) {
  if (name.empty()) return nullptr;
  thread_registry& reg = thread_registry::get();
  std::lock_guard lock(reg.mutex);
  return reg.names.emplace(name).first->c_str();
}

// "thread 139712 'julia' (tid 4242)", or a note that it has exited. Error paths only.
inline std::string describe_thread(thread_record* r, std::uint64_t serial) {
  if (r == nullptr) return "an unknown thread";
  std::lock_guard lock(r->mutex);
  if (r->serial.load(std::memory_order_seq_cst) != serial) return "a thread that has exited";
  if (!r->bound) return "a thread that has not started yet";
  std::string name = r->name;
  if (name.empty()) {
    // The thread is alive (its serial is current under the mutex it must take to exit), so
    // its handle is valid.
    char buf[64] = {};
    if (::pthread_getname_np(r->handle, buf, sizeof buf) == 0) name = buf;
  }
  std::ostringstream out;
  out << "thread " << r->id;
  if (!name.empty()) out << " '" << name << "'";
  if (r->tid != 0) out << " (tid " << r->tid << ")";
  return out.str();
}

inline std::string describe_this_thread() {
  thread_record& r = this_thread_record();
  return describe_thread(&r, tls_serial);
}

// The message of a wrong_thread exception: what was used, by whom, who owns it, what to do.
inline std::string wrong_thread_message(const std::string& what, thread_record* owner,
                                        std::uint64_t owner_serial, const char* advice) {
  return "tether: " + what + " belongs to " + describe_thread(owner, owner_serial) +
         " but was used from " + describe_this_thread() + "; " + advice;
}

// T's readable name where the ABI can demangle it (messages only).
template <class T>
std::string type_name() {
  const char* mangled = typeid(T).name();
#if __has_include(<cxxabi.h>)
  int status = 0;
  char* readable = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status == 0 && readable != nullptr) {
    std::string out(readable);
    std::free(readable);
    return out;
  }
#endif
  return mangled;
}

// Sets the calling thread's name for tether's messages (in full) and for the OS (the first
// 15 bytes, what top, gdb and /proc show).
inline void set_this_thread_name(std::string_view name) {
  thread_record& r = this_thread_record();
  {
    std::lock_guard lock(r.mutex);
    r.name.assign(name);
  }
  char os_name[16] = {};
  std::memcpy(os_name, name.data(), name.size() < 15 ? name.size() : 15);
#if defined(__APPLE__)
  ::pthread_setname_np(os_name);
#else
  ::pthread_setname_np(::pthread_self(), os_name);
#endif
}

// ---- deadlock detection ---------------------------------------------------------------------

// One link of a wait cycle: `from` is blocked in call() on executor `name`.
struct wait_link {
  thread_record* from;
  std::uint64_t from_serial;
  std::uint64_t call_seq;
  const char* name;
};

inline constexpr std::size_t max_cycle_length = 32;

struct wait_cycle {
  std::array<wait_link, max_cycle_length> links{};
  std::size_t size = 0;  // 0: no cycle
};

// Walks the chain of blocked threads that starts at `owner` (the owner of the executor the
// calling thread, `me`, is about to block on). Reports a cycle only if every link of it was
// held continuously from its first read to a second, confirming read - then at the moment of
// the last first read all links held at once, so every thread in it is blocked for good.
//
// Outline:
//   1. follow owner -> the owner it waits for -> ..., reading each edge seqlock-style;
//      stop at a thread that is not blocked, has exited, or after max_cycle_length links;
//   2. reaching `me` closes a candidate cycle; re-read every link's call_seq and serial;
//   3. all unchanged -> a cycle.
inline wait_cycle find_cycle(thread_record* me, thread_record* owner, std::uint64_t owner_serial) {
  wait_cycle c;
  thread_record* cur = owner;
  std::uint64_t cur_serial = owner_serial;
  std::size_t n = 0;
  while (cur != me) {
    if (n == max_cycle_length || cur == nullptr) return {};
    if (cur->serial.load(std::memory_order_seq_cst) != cur_serial) return {};
    const std::uint64_t seq = cur->call_seq.load(std::memory_order_seq_cst);
    if (seq == 0) return {};
    thread_record* next = cur->waits_for.load(std::memory_order_seq_cst);
    const std::uint64_t next_serial = cur->waits_for_serial.load(std::memory_order_seq_cst);
    const char* name = cur->waits_on_name.load(std::memory_order_seq_cst);
    if (cur->call_seq.load(std::memory_order_seq_cst) != seq) return {};
    if (cur->serial.load(std::memory_order_seq_cst) != cur_serial) return {};
    c.links[n++] = wait_link{cur, cur_serial, seq, name};
    cur = next;
    cur_serial = next_serial;
  }
  // n == 0: the caller owns the target (call() runs those inline before it gets here);
  // a stale serial: the target's owner is a thread that used `me` before and has exited.
  if (n == 0 || cur_serial != tls_serial) return {};
  for (std::size_t i = 0; i < n; ++i) {
    const wait_link& l = c.links[i];
    if (l.from->call_seq.load(std::memory_order_seq_cst) != l.call_seq ||
        l.from->serial.load(std::memory_order_seq_cst) != l.from_serial)
      return {};
  }
  c.size = n;
  return c;
}

// The calling thread's wait edge while it is blocked in call(): published by the
// constructor (before the caller walks the chain), retired by the destructor.
class blocking_call {
 public:
  blocking_call(thread_record& me, thread_record* owner, std::uint64_t owner_serial,
                const char* name) noexcept
      : me_(me) {
    // release: see the banner (the fields are re-checked through call_seq).
    me.waits_for.store(owner, std::memory_order_release);
    me.waits_for_serial.store(owner_serial, std::memory_order_release);
    me.waits_on_name.store(name, std::memory_order_release);
    // seq_cst: publishes the edge before this thread walks the others' (and they ours).
    me.call_seq.store(++me.next_call, std::memory_order_seq_cst);
  }
  ~blocking_call() { me_.call_seq.store(0, std::memory_order_seq_cst); }
  blocking_call(const blocking_call&) = delete;
  blocking_call& operator=(const blocking_call&) = delete;

 private:
  thread_record& me_;
};

}  // namespace tether::detail
