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


def next_message(pubsub, what, limit=10.0):
    """The next message or confirmation of a redis-py PubSub, waited for
    up to limit seconds."""
    m = pubsub.get_message(timeout=limit)
    if m is None:
        sys.exit(f"timed out after {limit}s waiting for {what}")
    return (m["type"], m["channel"], m["data"])


def check_pubsub(r, prefix):
    """Subscribes through r's sidecar to a channel and a pattern, publishes
    through it (PUBLISH is replicated; the local server then publishes to
    its subscribers) and checks what the subscriber gets, then leaves."""
    ps = r.pubsub()
    ps.subscribe(f"{prefix}:news")
    ps.psubscribe(f"{prefix}:n*")
    check("SUBSCRIBE", next_message(ps, "SUBSCRIBE"), ("subscribe", f"{prefix}:news", 1))
    check("PSUBSCRIBE", next_message(ps, "PSUBSCRIBE"), ("psubscribe", f"{prefix}:n*", 2))
    check("PUBLISH receivers", r.publish(f"{prefix}:news", "hi"), 2)
    got = sorted([next_message(ps, "a message"), next_message(ps, "a message")])
    check("messages", got, [("message", f"{prefix}:news", "hi"), ("pmessage", f"{prefix}:news", "hi")])
    ps.unsubscribe()
    check("UNSUBSCRIBE", next_message(ps, "UNSUBSCRIBE"), ("unsubscribe", f"{prefix}:news", 1))
    check("PUBLISH after UNSUBSCRIBE", r.publish(f"{prefix}:news", "pattern only"), 1)
    check("pattern message", next_message(ps, "a message"),
          ("pmessage", f"{prefix}:news", "pattern only"))
    ps.punsubscribe()
    check("PUNSUBSCRIBE", next_message(ps, "PUNSUBSCRIBE"), ("punsubscribe", f"{prefix}:n*", 0))
    ps.close()
