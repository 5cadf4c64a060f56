#!/usr/bin/env python3
"""Generates single_include/tether/tether.hpp from include/: every header reachable from
include/tether.hpp, in dependency order, each once, with repeated standard includes removed.

  scripts/make_single_header.py           write the single header
  scripts/make_single_header.py --check   exit 1 if the committed single header is stale
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENTRY = ROOT / "include" / "tether.hpp"
OUTPUT = ROOT / "single_include" / "tether" / "tether.hpp"

LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SYSTEM_INCLUDE = re.compile(r"^\s*#\s*include\s+<([^>]+)>")
OPENS = re.compile(r"^\s*#\s*if")
CLOSES = re.compile(r"^\s*#\s*endif")
PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once")
SPDX = re.compile(r"^// SPDX-License-Identifier:")


def amalgamate():
    seen_files = set()
    seen_system = set()
    out = []

    def visit(path):
        path = path.resolve()
        if path in seen_files:
            return
        seen_files.add(path)
        lines = path.read_text().splitlines()
        # Dependencies first, so each header's body follows everything it uses (and the
        # standard includes they bring are counted before ours).
        for line in lines:
            local = LOCAL_INCLUDE.match(line)
            if local:
                visit(path.parent / local.group(1))
        depth = 0
        body = []
        for line in lines:
            if LOCAL_INCLUDE.match(line):
                continue
            if PRAGMA_ONCE.match(line) or SPDX.match(line):
                continue
            system = SYSTEM_INCLUDE.match(line)
            if system and depth == 0:
                if system.group(1) in seen_system:
                    continue
                seen_system.add(system.group(1))
            if OPENS.match(line):
                depth += 1
            elif CLOSES.match(line):
                depth -= 1
            body.append(line)
        rel = path.relative_to(ROOT / "include")
        out.append(f"// ---- {rel} " + "-" * max(0, 80 - len(str(rel)) - 9))
        out.extend(body)
        out.append("")

    visit(ENTRY)
    header = [
        "// SPDX-License-Identifier: MIT",
        "// tether - single-header edition, generated from include/ by scripts/make_single_header.py.",
        "// Do not edit: change the headers under include/ and regenerate.",
        "#pragma once",
        "",
    ]
    return "\n".join(header + out).rstrip() + "\n"


def main():
    text = amalgamate()
    if "--check" in sys.argv[1:]:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run scripts/make_single_header.py")
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
