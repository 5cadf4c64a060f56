// SPDX-License-Identifier: MIT
// examples/jupyter/kernel.hpp - a Jupyter kernel whose subshells (JEP 91) are routed by
// tether::router and whose runtime is GNU Guile, one evaluating thread per subshell.
//
// Threads:
//   main      - owns the shell, control, stdin and iopub sockets; waits in one tether::poller
//               on their ZMQ_FDs, on the router's replies and control replies, and on the
//               iopub queue the subshells publish into; parses, checks signatures, routes,
//               answers control requests, sends everything that leaves the kernel.
//   heartbeat - echoes the heartbeat socket (zmq_proxy onto itself); never waits on anything
//               else, so it answers while every subshell is busy.
//   router    - tether::router's thread: routes shell requests by subshell id.
//   parent    - the parent subshell: a tether::executor whose thread entered Guile mode.
//   subshell-N- one per child subshell, made by the router; enters Guile mode in its handler
//               factory, on that thread.
//   guile-interrupt - a thread in Guile mode that queues interrupts (Guile asyncs) on the
//               evaluating threads when a request's stop_token is stopped.
//
// Who may call what: construct and run() on the main thread; everything else is internal.
#pragma once

#include <memory>

#include "connection.hpp"

namespace tether_jupyter {

class kernel {
 public:
  explicit kernel(const connection_info& info);
  ~kernel();
  kernel(const kernel&) = delete;
  kernel& operator=(const kernel&) = delete;

  // Serves until a shutdown_request; returns the process's exit status.
  int run();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace tether_jupyter
