// SPDX-License-Identifier: MIT
// tether/detail/platform/wake_fd.hpp - the platform seam for a file descriptor a foreign loop can watch.
//
// signal() makes the descriptor readable now; arm(deadline) makes it not readable until
// `deadline` (never, for no_deadline) and forgets earlier signals. So one descriptor wakes
// the loop both for posted tasks and for the executor's earliest delayed task.
//
// Linux: a timerfd on CLOCK_MONOTONIC (what steady_clock reads). signal() sets it to expire
// at an absolute time already past; arm() sets the real deadline (timerfd_settime resets
// the expiry count, which is what makes the descriptor readable).
// Other POSIX systems: a non-blocking pipe; arm() drains it and cannot honour a deadline, so
// there a foreign loop must also call poll() by the executor's next delayed deadline.
//
// The executor calls signal() once per batch, not once per task (see its wake_pending_).
//
// Who may call what: signal() and fd() - any thread; arm() - the owner.
// Memory ordering: none here; the executor orders its flag around these calls (and the
// kernel serializes the calls on one descriptor).
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/timerfd.h>
#endif

#include "futex.hpp"

namespace tether::detail {

class wake_fd {
 public:
  wake_fd() {
#if defined(__linux__)
    read_ = write_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (read_ < 0) throw std::system_error(errno, std::generic_category(), "tether: timerfd_create");
#else
    int fds[2];
    if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "tether: pipe");
    for (int fd : fds) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    read_ = fds[0];
    write_ = fds[1];
#endif
  }
  ~wake_fd() {
    ::close(read_);
    if (write_ != read_) ::close(write_);
  }
  wake_fd(const wake_fd&) = delete;
  wake_fd& operator=(const wake_fd&) = delete;

  int fd() const noexcept { return read_; }

  // Readable now.
  void signal() noexcept {
#if defined(__linux__)
    itimerspec past{};
    past.it_value.tv_nsec = 1;  // absolute 1 ns after boot: already expired (0 would disarm)
    ::timerfd_settime(read_, TFD_TIMER_ABSTIME, &past, nullptr);
#else
    const char one = 1;
    ssize_t rc;
    do rc = ::write(write_, &one, 1);
    while (rc < 0 && errno == EINTR);  // EAGAIN: the pipe is full, hence readable already
#endif
  }

  // Not readable until `deadline` (never for no_deadline); earlier signals are forgotten.
  void arm(steady_time deadline) noexcept {
#if defined(__linux__)
    itimerspec when{};
    if (deadline != no_deadline) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
      if (ns <= 0) ns = 1;
      when.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      when.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    }
    ::timerfd_settime(read_, TFD_TIMER_ABSTIME, &when, nullptr);
#else
    (void)deadline;
    char buf[256];
    for (;;) {
      const ssize_t rc = ::read(read_, buf, sizeof buf);
      if (rc > 0 || (rc < 0 && errno == EINTR)) continue;
      break;
    }
#endif
  }

 private:
  int read_ = -1;
  int write_ = -1;
};

}  // namespace tether::detail
