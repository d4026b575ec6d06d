#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/seeds/<target>/) from the golden test inputs
in tests/testdata/*.txt, so every documented edge case starts the fuzzer."""
import hashlib
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "tests", "testdata")
TARGETS = {
    "resp_reply.txt": ["resp_reply"],
    "resp_request.txt": ["resp_request", "rewriter"],
    "memcached_request.txt": ["memcached_request", "rewriter"],
    "memcached_reply.txt": ["memcached_reply"],
}


def unescape(line):
    out = bytearray()
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            n = line[i + 1]
            if n == "x":
                out.append(int(line[i + 2 : i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\", "s": b" "}[n]
            i += 2
        else:
            out += c.encode()
            i += 1
    return bytes(out)


def cases(path):
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        i += 1
        data = b""
        while i < len(lines) and lines[i] != "----":
            data += unescape(lines[i])
            i += 1
        while i < len(lines) and lines[i] != "":
            i += 1
        yield data


for name, targets in TARGETS.items():
    for data in cases(os.path.join(TESTDATA, name)):
        for target in targets:
            seed = data
            if target == "rewriter":
                # The rewriter's first byte picks Redis (even) or memcached (odd).
                seed = (b"\x01" if name.startswith("memcached") else b"\x00") + data
            d = os.path.join(HERE, "seeds", target)
            os.makedirs(d, exist_ok=True)
            h = hashlib.sha1(seed).hexdigest()[:16]
            open(os.path.join(d, h), "wb").write(seed)
