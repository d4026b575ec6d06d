"""Helpers the client scripts share: a checked comparison and a bounded
wait, each ending the script with a message on failure."""

import sys
import time


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def wait_for(what, f, limit=10.0):
    """Polls f until it returns a true value or limit seconds pass."""
    until = time.monotonic() + limit
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > until:
            sys.exit(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.002)
