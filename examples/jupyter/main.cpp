// SPDX-License-Identifier: MIT
// examples/jupyter/main.cpp - tether-guile-kernel CONNECTION_FILE: a Jupyter kernel for GNU
// Guile with JEP 91 subshells (see kernel.hpp).
#include <csignal>
#include <cstdio>
#include <exception>

#include "connection.hpp"
#include "kernel.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CONNECTION_FILE\n", argv[0]);
    return 2;
  }
  // Interrupts come as interrupt_request messages (kernelspec interrupt_mode "message"); a
  // terminal's Ctrl-C reaching the process group must not kill the kernel.
  std::signal(SIGINT, SIG_IGN);
  try {
    tether_jupyter::kernel k(tether_jupyter::read_connection_file(argv[1]));
    return k.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tether-guile-kernel: %s\n", e.what());
    return 1;
  }
}
