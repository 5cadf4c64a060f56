#!/usr/bin/python3
"""bench/report.py: the comparison of mpsc repetitions by cross-core speed, on made-up results."""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import report  # noqa: E402


def mpsc_run(queue, producers, rate, start_ns, end_ns):
    return {"name": "mpsc/%s/producers:%d/manual_time" % (queue, producers),
            "run_name": "mpsc/%s/producers:%d/manual_time" % (queue, producers),
            "run_type": "iteration", "items_per_second": rate, "real_time": 1.0, "time_unit": "ms",
            "cross_core_ns_start": start_ns, "cross_core_ns_end": end_ns, "label": "unbounded"}


def repetitions(n, producers, *cells):
    """n repetitions of each (queue, items/s, probe at start, probe at end)."""
    return [mpsc_run(q, producers, rate, a, b) for _ in range(n) for q, rate, a, b in cells]


def render(runs, summary=False):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "mpsc_bench.json"), "w", encoding="utf-8") as f:
            json.dump({"context": {}, "benchmarks": runs}, f)
        body, problems = report.render(d, summary=summary)
    return body


def timed_run(name, ns):
    return {"name": name + "/real_time", "run_name": name + "/real_time", "run_type": "iteration",
            "real_time": ns, "time_unit": "ns"}


def target_line(body):
    return next(line for line in body.splitlines() if line.startswith("| Unbounded tether"))


class BySpeed(unittest.TestCase):
    def test_two_speeds_are_compared_apart(self):
        # Fast spells: tether 90 vs peer 100 (0.90x). Slow spells: tether 70 vs peer 20 (3.5x).
        # Over all repetitions tether's median is ahead (70 vs 60), which would hide the loss.
        runs = repetitions(5, 4, ("tether_producer", 90e6, 70, 75), ("moodycamel_bulk", 100e6, 72, 71),
                           ("tether_producer", 70e6, 480, 470), ("moodycamel_bulk", 20e6, 490, 460))
        runs.append(mpsc_run("tether_producer", 4, 1e6, 70, 480))  # one probe of each: left out
        body = render(runs)
        self.assertIn("### mpsc — by cross-core speed", body)
        self.assertIn("A repetition with one probe of each is left out (1)", body)
        self.assertIn("| uint64_t | fast | **0.90×** (tether_producer 90.0 M ÷ moodycamel_bulk 100.0 M) |", body)
        self.assertIn("| uint64_t | slow | **3.50×** (tether_producer 70.0 M ÷ moodycamel_bulk 20.0 M) |", body)
        self.assertIn("| **tether_producer ÷ best peer** | 1.17× |", body)
        line = target_line(body)
        self.assertIn("**not met**", line)
        self.assertIn("fast spells: 0.90× at mpsc/producers:4", line)

    def test_one_speed_has_no_split(self):
        runs = [mpsc_run(q, 2, rate, 400 + i, 420 - i)
                for i in range(6) for q, rate in (("tether", 50e6), ("moodycamel", 20e6))]
        body = render(runs)
        self.assertNotIn("by cross-core speed", body)
        line = target_line(body)
        self.assertIn("| met |", line)
        self.assertNotIn("spells", line)

    def test_a_stray_probe_does_not_make_a_speed(self):
        # One slow probe among many fast ones is under the minimum share of a speed.
        runs = repetitions(10, 1, ("tether", 30e6, 80, 85), ("moodycamel", 30e6, 80, 85))
        runs.append(mpsc_run("tether", 1, 30e6, 80, 900))
        self.assertNotIn("by cross-core speed", render(runs))

    def test_too_few_repetitions_at_a_speed_give_no_ratio(self):
        runs = repetitions(4, 8, ("tether", 40e6, 60, 60), ("moodycamel", 20e6, 60, 60), ("tether", 30e6, 500, 500))
        runs += repetitions(2, 8, ("moodycamel", 10e6, 500, 500))  # below MIN_SAMPLES at the slow speed
        body = render(runs)
        self.assertIn("| uint64_t | fast | **2.00×**", body)
        self.assertIn("| uint64_t | slow | — |", body)


class Headline(unittest.TestCase):
    def test_one_row_per_column_best_against_best(self):
        runs = repetitions(3, 2, ("tether", 40e6, 400, 400), ("tether_producer", 60e6, 400, 400),
                           ("moodycamel", 30e6, 400, 400), ("moodycamel_bulk", 50e6, 400, 400))
        runs += [timed_run("pingpong/tether/blocking", 500.0), timed_run("pingpong/moodycamel_blocking/blocking", 2000.0)]
        body = render(runs)
        self.assertIn("| mpsc/producers:2 | tether_producer 60.0 M | moodycamel_bulk 50.0 M | 1.20× | higher |", body)
        self.assertIn("| pingpong/blocking | tether 500 ns | moodycamel_blocking 2.0 µs | 0.25× | lower |", body)

    def test_summary_leaves_out_the_full_tables(self):
        runs = repetitions(3, 1, ("tether", 40e6, 400, 400), ("moodycamel", 30e6, 400, 400))
        self.assertIn("### mpsc\n", render(runs))
        summary = render(runs, summary=True)
        self.assertNotIn("### mpsc\n", summary)
        self.assertIn("### Headline", summary)
        self.assertIn("### Targets", summary)


class Header(unittest.TestCase):
    def test_a_busy_machine_is_flagged(self):
        runs = repetitions(3, 1, ("tether", 40e6, 400, 400), ("moodycamel", 30e6, 400, 400))
        with tempfile.TemporaryDirectory() as d:
            for load, name in ((3.5, "quiet"), (4.5, "busy")):
                with open(os.path.join(d, "mpsc_bench.json"), "w", encoding="utf-8") as f:
                    json.dump({"context": {"num_cpus": 2, "load_avg": [load, 1.0, 1.0]}, "benchmarks": runs}, f)
                body, _ = report.render(d)
                (self.assertIn if name == "busy" else self.assertNotIn)("**busy**", body)


if __name__ == "__main__":
    unittest.main()
