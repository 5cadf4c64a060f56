#!/usr/bin/python3
"""tether-guile-kernel side by side with ipykernel, driven by jupyter_client over tcp loopback.

  JUPYTER_PATH=<build dir>/share/jupyter /usr/bin/python3 bench/jupyter_bench.py [--quick]

Kernels are started with jupyter_client's KernelManager (kernelspecs "tether-guile" and, where
installed, "python3" = ipykernel); requests are signed and sent with jupyter_client's Session
on plain ZeroMQ sockets, so that the client's own event loop does not dominate the figures.
Workloads:
  roundtrip    a trivial execute, request -> execute_reply, one at a time
  subshell     an execute on a subshell sent 50 ms into a 2 s cell on the parent: its reply
               latency (ipykernel 6.17 has no subshells: the request goes to its shell)
  control      kernel_info_request on control while the parent runs a cell
  idle_cpu     process CPU per second with 100 idle subshells (and with none)
  throughput   executes per second from 8 client processes, each on its own subshell
"""
import argparse
import multiprocessing
import os
import statistics
import sys
import time

import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session

CODE = {  # trivial cell, a cell that sleeps s seconds
    "tether-guile": ("(+ 1 1)", "(usleep {us})"),
    "python3": ("1 + 1", "import time; time.sleep({s})"),
}


class Raw:
    """Signed requests on DEALER sockets to one kernel."""

    def __init__(self, info):
        self.ctx = zmq.Context()
        key = info["key"].encode() if isinstance(info["key"], str) else info["key"]
        self.session = Session(key=key, signature_scheme=info["signature_scheme"])
        self.sockets = {}
        self.early = {}  # replies that came before they were asked for
        for name in ("shell", "control"):
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(f"tcp://{info['ip']}:{info[name + '_port']}")
            self.sockets[name] = s

    def send(self, channel, msg_type, content=None, subshell=None):
        msg = self.session.msg(msg_type, content or {})
        if subshell is not None:
            msg["header"]["subshell_id"] = subshell
        self.session.send(self.sockets[channel], msg)
        return msg["header"]["msg_id"]

    def recv(self, channel, msg_id, timeout=30.0):
        if msg_id in self.early:
            return self.early.pop(msg_id)
        sock = self.sockets[channel]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise TimeoutError(f"no reply to {msg_id}")
            _, msg = self.session.recv(sock, mode=0)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
            self.early[msg["parent_header"].get("msg_id")] = msg

    def call(self, channel, msg_type, content=None, subshell=None, timeout=30.0):
        return self.recv(channel, self.send(channel, msg_type, content, subshell), timeout)

    def execute(self, code, subshell=None):
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}
        return self.send("shell", "execute_request", content, subshell)

    def close(self):
        for s in self.sockets.values():
            s.close()
        self.ctx.term()


def percentiles(samples_ms):
    s = sorted(samples_ms)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return statistics.median(s), p99


def cpu_seconds(pid):
    """CPU time of every thread of the process, in seconds (schedstat: nanoseconds)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def throughput_client(info, subshell, code, seconds, start_at, out):
    raw = Raw(info)
    while time.time() < start_at:
        time.sleep(0.001)
    n = 0
    end = start_at + seconds
    while time.time() < end:
        raw.recv("shell", raw.execute(code, subshell))
        n += 1
    out.put(n)
    raw.close()


def bench_kernel(name, args):
    km = KernelManager(kernel_name=name)
    km.start_kernel(env=dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    info = km.get_connection_info()
    pid = km.provisioner.process.pid
    raw = Raw(info)
    trivial, sleeper = CODE[name]
    subshells = name == "tether-guile"
    results = {}
    try:
        raw.recv("shell", raw.execute(trivial))  # warm up
        # 1. trivial execute round trip
        samples = []
        for _ in range(args.roundtrips):
            t0 = time.perf_counter()
            raw.recv("shell", raw.execute(trivial))
            samples.append((time.perf_counter() - t0) * 1e3)
        results["roundtrip"] = percentiles(samples)

        # 2. a request 50 ms into a 2 s parent cell (on a subshell where the kernel has them)
        sub = raw.call("control", "create_subshell_request")["content"]["subshell_id"] if subshells else None
        samples = []
        for _ in range(args.subshell_reps if subshells else min(3, args.subshell_reps)):
            busy = raw.execute(sleeper.format(us=2000000, s=2))
            time.sleep(0.05)
            t0 = time.perf_counter()
            raw.recv("shell", raw.execute(trivial, sub))
            samples.append((time.perf_counter() - t0) * 1e3)
            raw.recv("shell", busy)
        results["subshell"] = percentiles(samples)

        # 3. kernel_info on control while the parent is busy
        samples = []
        busy = raw.execute(sleeper.format(us=3000000, s=3))
        time.sleep(0.05)
        for _ in range(args.control_reps):
            t0 = time.perf_counter()
            raw.call("control", "kernel_info_request")
            samples.append((time.perf_counter() - t0) * 1e3)
        raw.recv("shell", busy)
        results["control"] = percentiles(samples)

        # 4. idle CPU: none, then 100 subshells
        def idle_cpu():
            time.sleep(0.5)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.idle_seconds)
            return (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 1e3  # ms per s
        results["idle_cpu_0"] = idle_cpu()
        if subshells:
            many = [raw.call("control", "create_subshell_request")["content"]["subshell_id"] for _ in range(100)]
            results["idle_cpu_100"] = idle_cpu()
            for s in many:
                raw.call("control", "delete_subshell_request", {"subshell_id": s})

        # 5. throughput: 8 client processes, each on its own subshell (ipykernel: all on its shell)
        subs = [raw.call("control", "create_subshell_request")["content"]["subshell_id"] if subshells else None
                for _ in range(8)]
        out = multiprocessing.Queue()
        start_at = time.time() + 1.0
        procs = [multiprocessing.Process(target=throughput_client,
                                         args=(info, s, trivial, args.throughput_seconds, start_at, out))
                 for s in subs]
        for p in procs:
            p.start()
        total = sum(out.get(timeout=120) for _ in procs)
        for p in procs:
            p.join()
        results["throughput"] = total / args.throughput_seconds
    finally:
        raw.close()
        kc.stop_channels()
        km.shutdown_kernel()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--kernels", default="tether-guile,python3")
    args = ap.parse_args()
    args.roundtrips = 200 if args.quick else 1000
    args.subshell_reps = 5 if args.quick else 20
    args.control_reps = 50 if args.quick else 200
    args.idle_seconds = 2.0 if args.quick else 5.0
    args.throughput_seconds = 2.0 if args.quick else 5.0

    from jupyter_client.kernelspec import KernelSpecManager
    installed = KernelSpecManager().find_kernel_specs()
    table = {}
    for name in args.kernels.split(","):
        if name not in installed:
            print(f"kernelspec {name!r} not found - skipped", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr)
        table[name] = bench_kernel(name, args)

    def ms(pair):
        return f"{pair[0]:.2f} / {pair[1]:.2f} ms"
    rows = [
        ("trivial execute round trip, median / p99", lambda r: ms(r["roundtrip"])),
        ("request 50 ms into a 2 s parent cell: reply latency, median / p99", lambda r: ms(r["subshell"])),
        ("kernel_info on control during a busy parent, median / p99", lambda r: ms(r["control"])),
        ("idle CPU, no subshells", lambda r: f"{r['idle_cpu_0']:.3f} ms/s"),
        ("idle CPU, 100 subshells", lambda r: f"{r['idle_cpu_100']:.3f} ms/s" if "idle_cpu_100" in r else "(no subshells)"),
        ("executes/s, 8 clients (on 8 subshells where supported)", lambda r: f"{r['throughput']:.0f}"),
    ]
    names = list(table)
    print("| workload | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for label, cell in rows:
        print(f"| {label} | " + " | ".join(cell(table[n]) for n in names) + " |")


if __name__ == "__main__":
    main()
