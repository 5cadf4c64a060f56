#!/usr/bin/env python3
"""Checks that tether's headers include only headers at their own level or below.

The stack, bottom to top (a header may include its own level and the levels under it):

  0 platform   result.hpp errors.hpp version.hpp detail/platform/
  1 wait       detail/wait/
  2 queue      mpsc_queue.hpp bounded_mpsc_queue.hpp receiver.hpp detail/queue/
  3 executor   executor.hpp executor_options.hpp executor_stats.hpp confined.hpp context_guard.hpp
               thread_checker.hpp detail/executor/
  4 channel, select, coroutines   channel.hpp select.hpp fd_source.hpp coroutine.hpp detail/channel/
                                   detail/select/ detail/coro/
  5 router     router.hpp router_messages.hpp detail/router/
  6 umbrella   tether.hpp

Every header must be listed: a new one fails the check until it is given a level here.
Exit status 1 names each include that points up the stack.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "include"
LEVELS = [
    ("platform", ["tether/result.hpp", "tether/errors.hpp", "tether/version.hpp", "tether/detail/platform/"]),
    ("wait", ["tether/detail/wait/"]),
    ("queue", ["tether/mpsc_queue.hpp", "tether/bounded_mpsc_queue.hpp", "tether/receiver.hpp",
               "tether/detail/queue/"]),
    ("executor", ["tether/executor.hpp", "tether/executor_options.hpp", "tether/executor_stats.hpp", "tether/confined.hpp",
                  "tether/context_guard.hpp", "tether/thread_checker.hpp", "tether/detail/executor/"]),
    ("channel/select/coroutine", ["tether/channel.hpp", "tether/select.hpp", "tether/fd_source.hpp",
                                  "tether/coroutine.hpp", "tether/detail/channel/", "tether/detail/select/",
                                  "tether/detail/coro/"]),
    ("router", ["tether/router.hpp", "tether/router_messages.hpp", "tether/detail/router/"]),
    ("umbrella", ["tether.hpp"]),
]
LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def level_of(rel):
    for index, (_, prefixes) in enumerate(LEVELS):
        for prefix in prefixes:
            if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
                return index
    return None


def main():
    failures = []
    for path in sorted(ROOT.rglob("*.hpp")):
        rel = path.relative_to(ROOT).as_posix()
        own = level_of(rel)
        if own is None:
            failures.append(f"{rel}: not placed on any level (add it to scripts/check_layers.py)")
            continue
        for target in LOCAL_INCLUDE.findall(path.read_text()):
            target_rel = (path.parent / target).resolve().relative_to(ROOT.resolve()).as_posix()
            theirs = level_of(target_rel)
            if theirs is None:
                failures.append(f"{rel}: includes {target_rel}, which is on no level")
            elif theirs > own:
                failures.append(f"{rel} ({LEVELS[own][0]}) includes {target_rel} ({LEVELS[theirs][0]}): "
                                "an include must point down the stack")
    for failure in failures:
        print(failure)
    if failures:
        return 1
    print(f"layers ok: {sum(1 for _ in ROOT.rglob('*.hpp'))} headers, every include points down the stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
