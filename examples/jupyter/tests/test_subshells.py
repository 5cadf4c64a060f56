#!/usr/bin/python3
"""JEP 91 subshells of tether-guile-kernel, driven by jupyter_client over tcp loopback.

Run with Debian's Python and the build's kernelspec:
  JUPYTER_PATH=<build dir>/share/jupyter /usr/bin/python3 test_subshells.py -v
"""
import json
import queue
import time
import unittest

import zmq
from jupyter_client.manager import start_new_kernel
from jupyter_client.session import Session

KERNEL = "tether-guile"
TIMEOUT = 20


class Client:
    """A jupyter_client client that keeps replies and iopub messages of every request apart."""

    def __init__(self, kc):
        self.kc = kc
        self.replies = {}  # parent msg_id -> reply, from shell and control
        self.iopub = []    # every iopub message seen, in order

    def send(self, channel, msg_type, content=None, subshell=None, header=None):
        msg = self.kc.session.msg(msg_type, content or {})
        if subshell is not None:
            msg["header"]["subshell_id"] = subshell
        if header:
            msg["header"].update(header)
        getattr(self.kc, channel + "_channel").send(msg)
        return msg["header"]["msg_id"]

    def execute(self, code, subshell=None, **content):
        content = dict({"code": code, "silent": False, "store_history": True, "stop_on_error": True}, **content)
        return self.send("shell", "execute_request", content, subshell)

    def _pump(self, timeout):
        got = False
        for get in (self.kc.get_shell_msg, self.kc.get_control_msg):
            while True:
                try:
                    msg = get(timeout=0)
                except queue.Empty:
                    break
                self.replies[msg["parent_header"].get("msg_id")] = msg
                got = True
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=0)
            except queue.Empty:
                break
            self.iopub.append(msg)
            got = True
        if not got:
            time.sleep(timeout)

    def reply(self, msg_id, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while msg_id not in self.replies:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply to {msg_id} within {timeout} s")
            self._pump(0.002)
        return self.replies[msg_id]

    def idle(self, msg_id, timeout=TIMEOUT):
        """Waits for the idle status of msg_id; returns the iopub messages it parented."""
        deadline = time.monotonic() + timeout
        while True:
            mine = [m for m in self.iopub if m["parent_header"].get("msg_id") == msg_id]
            if any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in mine):
                return mine
            if time.monotonic() > deadline:
                raise AssertionError(f"no idle status for {msg_id} within {timeout} s")
            self._pump(0.002)

    def run(self, code, subshell=None, timeout=TIMEOUT):
        """Executes and returns (reply, iopub messages of the request)."""
        msg_id = self.execute(code, subshell)
        return self.reply(msg_id, timeout), self.idle(msg_id, timeout)

    def value(self, code, subshell=None):
        reply, out = self.run(code, subshell)
        assert reply["content"]["status"] == "ok", reply["content"]
        results = [m["content"]["data"]["text/plain"] for m in out if m["msg_type"] == "execute_result"]
        return results[-1] if results else None

    def control(self, msg_type, content=None, subshell=None):
        return self.reply(self.send("control", msg_type, content, subshell))["content"]

    def create(self):
        c = self.control("create_subshell_request")
        assert c["status"] == "ok", c
        return c["subshell_id"]


def start():
    km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)
    return km, kc, Client(kc)


class SubshellTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc, cls.c = start()

    @classmethod
    def tearDownClass(cls):
        cls.kc.stop_channels()
        cls.km.shutdown_kernel()

    def test_kernel_info_names_subshells(self):
        info = self.c.reply(self.c.send("shell", "kernel_info_request"))["content"]
        self.assertIn("kernel subshells", info["supported_features"])
        self.assertEqual(info["language_info"]["name"], "scheme")

    def test_create_list_delete(self):
        a, b = self.c.create(), self.c.create()
        self.assertNotEqual(a, b)
        listed = self.c.control("list_subshell_request")
        self.assertEqual(listed["status"], "ok")
        self.assertIn(a, listed["subshell_id"])
        self.assertIn(b, listed["subshell_id"])
        self.assertEqual(self.c.control("delete_subshell_request", {"subshell_id": a})["status"], "ok")
        self.assertNotIn(a, self.c.control("list_subshell_request")["subshell_id"])
        # deleted and unknown ids: error replies, on control and on shell
        self.assertEqual(self.c.control("delete_subshell_request", {"subshell_id": a})["status"], "error")
        self.assertEqual(self.c.control("delete_subshell_request", {"subshell_id": "no-such"})["status"], "error")
        for sid in (a, "subshell-999999", "no-such"):
            reply, out = self.c.run("(+ 1 1)", subshell=sid)
            self.assertEqual(reply["content"]["status"], "error", sid)
            states = [m["content"]["execution_state"] for m in out if m["msg_type"] == "status"]
            self.assertEqual(states, ["busy", "idle"])
        self.assertEqual(self.c.value("(+ 1 1)", subshell=b), "2")
        self.c.control("delete_subshell_request", {"subshell_id": b})

    def test_parent_variable_read_from_subshell(self):
        s = self.c.create()
        self.c.value("(define shared-from-parent 1234)")
        self.assertEqual(self.c.value("shared-from-parent", subshell=s), "1234")
        self.c.value("(define shared-from-child 'child)", subshell=s)
        self.assertEqual(self.c.value("shared-from-child"), "child")
        self.c.control("delete_subshell_request", {"subshell_id": s})

    def test_subshell_runs_on_another_thread(self):
        s = self.c.create()
        self.c.value("(use-modules (ice-9 threads))")
        parent = self.c.value("(object->string (current-thread))")
        child = self.c.value("(object->string (current-thread))", subshell=s)
        self.assertNotEqual(parent, child)
        self.assertEqual(child, self.c.value("(object->string (current-thread))", subshell=s))
        self.c.control("delete_subshell_request", {"subshell_id": s})

    def test_two_subshells_overlap_while_parent_busy(self):
        a, b = self.c.create(), self.c.create()
        span = "(let ((t0 (get-internal-real-time))) (usleep {}) (list t0 (get-internal-real-time)))"
        p = self.c.execute(span.format(1500000))
        time.sleep(0.1)
        ia = self.c.execute(span.format(500000), subshell=a)
        ib = self.c.execute(span.format(500000), subshell=b)
        spans = {}
        for name, msg_id in (("a", ia), ("b", ib), ("p", p)):
            self.assertEqual(self.c.reply(msg_id)["content"]["status"], "ok")
            result = [m for m in self.c.idle(msg_id) if m["msg_type"] == "execute_result"][0]
            spans[name] = [int(x) for x in result["content"]["data"]["text/plain"].strip("()").split()]
        # a and b ran at the same time, both inside the parent's cell
        self.assertLess(max(spans["a"][0], spans["b"][0]), min(spans["a"][1], spans["b"][1]))
        for name in ("a", "b"):
            self.assertGreater(spans[name][0], spans["p"][0])
            self.assertLess(spans[name][1], spans["p"][1])
        self.c.control("delete_subshell_request", {"subshell_id": a})
        self.c.control("delete_subshell_request", {"subshell_id": b})

    def test_stop_on_error_aborts_only_that_subshell(self):
        a, b = self.c.create(), self.c.create()
        fail = self.c.execute('(begin (usleep 300000) (error "fails on purpose"))', subshell=a)
        queued = [self.c.execute("(+ 1 1)", subshell=a) for _ in range(2)]
        other = self.c.execute("(begin (usleep 400000) 'b-ran)", subshell=b)
        parent = self.c.execute("'parent-ran")
        self.assertEqual(self.c.reply(fail)["content"]["status"], "error")
        for q in queued:
            self.assertEqual(self.c.reply(q)["content"]["status"], "aborted")
        self.assertEqual(self.c.reply(other)["content"]["status"], "ok")
        self.assertEqual(self.c.reply(parent)["content"]["status"], "ok")
        # what is sent after the error runs again
        self.assertEqual(self.c.value("(+ 2 2)", subshell=a), "4")
        # stop_on_error false: nothing is aborted
        self.c.execute('(error "again")', subshell=a, stop_on_error=False)
        self.assertEqual(self.c.value("(+ 3 3)", subshell=a), "6")
        self.c.control("delete_subshell_request", {"subshell_id": a})
        self.c.control("delete_subshell_request", {"subshell_id": b})

    def test_control_answered_while_parent_runs(self):
        busy = self.c.execute("(usleep 2000000)")
        time.sleep(0.2)
        t0 = time.monotonic()
        s = self.c.create()
        info = self.c.control("kernel_info_request")
        listed = self.c.control("list_subshell_request")
        elapsed = time.monotonic() - t0
        self.assertEqual(info["status"], "ok")
        self.assertIn(s, listed["subshell_id"])
        self.assertLess(elapsed, 1.0)
        self.assertNotIn(busy, self.c.replies, "the parent's cell should still be running")
        self.assertEqual(self.c.value("(+ 40 2)", subshell=s), "42")
        self.assertNotIn(busy, self.c.replies, "the parent's cell should still be running")
        self.c.reply(busy)
        self.c.control("delete_subshell_request", {"subshell_id": s})

    def test_iopub_parent_headers(self):
        s = self.c.create()
        ids = {self.c.execute('(display "from parent")'): None,
               self.c.execute('(display "from child")', subshell=s): s,
               self.c.send("shell", "kernel_info_request", subshell=s): s,
               self.c.send("shell", "complete_request", {"code": "(disp", "cursor_pos": 5}): None}
        for msg_id, sid in ids.items():
            self.c.reply(msg_id)
            out = self.c.idle(msg_id)
            states = [m["content"]["execution_state"] for m in out if m["msg_type"] == "status"]
            self.assertEqual(states, ["busy", "idle"], msg_id)
            self.assertEqual(out[0]["msg_type"], "status")
            self.assertEqual(out[-1]["msg_type"], "status")
            for m in out:
                self.assertEqual(m["parent_header"].get("subshell_id"), sid)
            streams = [m["content"]["text"] for m in out if m["msg_type"] == "stream"]
            if streams:
                self.assertEqual(streams, ["from child" if sid else "from parent"])
        self.c.control("delete_subshell_request", {"subshell_id": s})

    def test_heartbeat_while_every_subshell_is_busy(self):
        s = self.c.create()
        busy = [self.c.execute("(usleep 1500000)"), self.c.execute("(usleep 1500000)", subshell=s)]
        time.sleep(0.2)
        info = self.km.get_connection_info()
        ctx = zmq.Context.instance()
        hb = ctx.socket(zmq.REQ)
        hb.linger = 0
        hb.connect(f"tcp://{info['ip']}:{info['hb_port']}")
        hb.send(b"ping")
        self.assertTrue(hb.poll(1000), "the heartbeat did not answer within 1 s")
        self.assertEqual(hb.recv(), b"ping")
        hb.close()
        for b in busy:
            self.c.reply(b)
        self.c.control("delete_subshell_request", {"subshell_id": s})

    def test_interrupt_parent_and_subshell(self):
        s = self.c.create()
        for sid in (None, s):
            running = self.c.execute("(sleep 30)", subshell=sid)
            time.sleep(0.3)
            t0 = time.monotonic()
            self.assertEqual(self.c.control("interrupt_request", subshell=sid)["status"], "ok")
            reply = self.c.reply(running, timeout=5)["content"]
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertEqual(reply["status"], "error")
            self.assertEqual(reply["ename"], "KeyboardInterrupt")
            self.assertEqual(self.c.value("(+ 1 1)", subshell=sid), "2")  # still usable
        # an interrupt of one subshell leaves the others running
        other = self.c.execute("(begin (usleep 600000) 'finished)")
        running = self.c.execute("(sleep 30)", subshell=s)
        time.sleep(0.2)
        self.c.control("interrupt_request", subshell=s)
        self.assertEqual(self.c.reply(running, timeout=5)["content"]["status"], "error")
        self.assertEqual(self.c.reply(other)["content"]["status"], "ok")
        self.assertEqual(self.c.control("interrupt_request", subshell="no-such")["status"], "error")
        self.c.control("delete_subshell_request", {"subshell_id": s})

    def test_unknown_requests_and_missing_fields_get_replies(self):
        for channel in ("shell", "control"):
            reply = self.c.reply(self.c.send(channel, "no_such_request", {"x": 1}))
            self.assertEqual(reply["header"]["msg_type"], "no_such_reply")
            self.assertEqual(reply["content"]["status"], "error")
        reply = self.c.reply(self.c.send("shell", "execute_request", {"silent": False}))
        self.assertEqual(reply["content"]["status"], "error")
        reply = self.c.reply(self.c.send("shell", "complete_request", {"code": 5}))
        self.assertEqual(reply["content"]["status"], "error")

    def raw_shell(self):
        info = self.km.get_connection_info()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        session = Session(key=info["key"].encode() if isinstance(info["key"], str) else info["key"],
                          signature_scheme=info["signature_scheme"])
        return sock, session

    def test_bad_signatures_and_malformed_messages(self):
        sock, session = self.raw_shell()
        time.sleep(0.2)

        def frames(msg_type, content, key=None, corrupt=None):
            msg = session.msg(msg_type, content)
            parts = [session.pack(msg[k]) for k in ("header", "parent_header", "metadata", "content")]
            if corrupt is not None:
                parts[3] = corrupt
            sig = (key or session).sign(parts) if session.auth else b""
            return msg["header"]["msg_id"], [b"<IDS|MSG>", sig] + parts

        def answer(timeout_ms=1500):
            if not sock.poll(timeout_ms):
                return None
            parts = sock.recv_multipart()
            i = parts.index(b"<IDS|MSG>")
            return json.loads(parts[i + 5]), json.loads(parts[i + 3])

        evil = '(define hacked-by-unsigned 1)'
        _, f = frames("execute_request", {"code": evil, "silent": False})
        f[1] = b"0" * 64  # wrong signature
        sock.send_multipart(f)
        _, f = frames("execute_request", {"code": evil, "silent": False})
        f[1] = b""        # missing signature
        sock.send_multipart(f)
        other = Session(key=b"not-the-key")
        _, f = frames("execute_request", {"code": evil, "silent": False}, key=other)
        sock.send_multipart(f)
        sock.send_multipart([b"no delimiter at all"])
        sock.send_multipart([b"<IDS|MSG>", b"sig", b"{}"])
        self.assertIsNone(answer(), "a refused message was answered")
        msg_id, f = frames("execute_request", {}, corrupt=b"{not json")
        sock.send_multipart(f)
        content, parent = answer()
        self.assertEqual(content["status"], "error")
        self.assertEqual(parent["msg_id"], msg_id)
        sock.close()
        # none of it ran, and the kernel still serves
        self.assertEqual(self.c.value("(defined? 'hacked-by-unsigned)"), "#f")
        self.assertEqual(self.c.value("(+ 1 2)"), "3")


class ShutdownTests(unittest.TestCase):
    def test_shutdown_with_live_subshells(self):
        km, kc, c = start()
        try:
            subshells = [c.create() for _ in range(3)]
            c.execute("(sleep 60)", subshell=subshells[0])
            c.execute("(usleep 100000)")
            time.sleep(0.3)
            reply = c.control("shutdown_request", {"restart": False})
            self.assertEqual(reply["status"], "ok")
            process = km.provisioner.process
            t0 = time.monotonic()
            self.assertEqual(process.wait(timeout=15), 0)
            self.assertLess(time.monotonic() - t0, 10)
        finally:
            kc.stop_channels()
            if km.is_alive():
                km.shutdown_kernel(now=True)


if __name__ == "__main__":
    unittest.main()
