#!/usr/bin/python3
"""An asyncio loop drives a tether::executor through its wake fd.

C++ threads post work to the asyncio thread (the executor's owner) and make blocking calls
that the asyncio thread answers; loop.add_reader(fd, lib.tether_py_try_run) is the whole
integration. Checks: every item arrives exactly once, in order per producer, on the asyncio
thread, and the blocking calls ran on it too. Exit status 0 only when every check passes.

Usage: asyncio_demo.py PATH/TO/libtether_py.so
"""

import asyncio
import ctypes
import sys
import threading

PRODUCERS = 4
PER_PRODUCER = 5000


def main(library_path):
    lib = ctypes.CDLL(library_path)
    item_callback = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64)
    lib.tether_py_start.argtypes = [item_callback]
    lib.tether_py_delivered.restype = ctypes.c_int64

    loop_thread = threading.get_ident()
    next_seq = [0] * PRODUCERS
    problems = {"out_of_order": 0, "off_thread": 0}
    total = PRODUCERS * PER_PRODUCER
    received = [0]

    async def run():
        all_in = asyncio.Event()

        def on_item(producer, seq):
            if threading.get_ident() != loop_thread:
                problems["off_thread"] += 1
            if next_seq[producer] != seq:
                problems["out_of_order"] += 1
            next_seq[producer] = seq + 1
            received[0] += 1
            if received[0] == total:
                all_in.set()

        callback = item_callback(on_item)  # kept alive for the whole run
        fd = lib.tether_py_start(callback)
        if fd < 0:
            raise SystemExit("tether_py_start failed")
        loop = asyncio.get_running_loop()
        wakeups = [0]

        def readable():
            wakeups[0] += 1
            lib.tether_py_try_run()

        loop.add_reader(fd, readable)
        lib.tether_py_spawn(PRODUCERS, PER_PRODUCER)
        try:
            await asyncio.wait_for(all_in.wait(), timeout=60)
        except asyncio.TimeoutError:
            print("asyncio_demo: stalled at %d of %d items" % (received[0], total))
        # The producers' last blocking calls are answered by the loop while we wait for them.
        call_errors = await loop.run_in_executor(None, lib.tether_py_join)
        loop.remove_reader(fd)
        leftover = lib.tether_py_stop()
        return call_errors, leftover, wakeups[0], callback

    call_errors, leftover, wakeups, _ = asyncio.run(run())
    ok = (received[0] == total and problems["out_of_order"] == 0 and problems["off_thread"] == 0
          and call_errors == 0 and leftover == 0)
    print("received %d/%d items in %d wake-ups; out of order %d, off the loop thread %d, call errors %d"
          % (received[0], total, wakeups, problems["out_of_order"], problems["off_thread"], call_errors))
    print("asyncio_demo: all checks passed" if ok else "asyncio_demo: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
