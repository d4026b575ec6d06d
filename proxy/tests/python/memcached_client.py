"""pymemcache through a mu-sidecar in front of memcached, unchanged.

Usage: memcached_client.py SIDECAR_PORT BACKEND_PORT...

Runs set/get/add/replace/append/incr/decr/delete/get_many/touch and
noreply writes against the sidecar; then checks that every listed backend
(the other nodes' memcached, read directly) holds the same data. Exits
non-zero on the first mismatch.
"""

import sys

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

from checks import check, wait_for


class KeepFlags:
    """A serde that stores bytes as they are and reads (value, flags)."""

    def serialize(self, key, value):
        return value, 42

    def deserialize(self, key, value, flags):
        return value, flags


def flagged(port):
    """A client whose reads return (value, flags)."""
    return Client(("127.0.0.1", port), timeout=5, serde=KeepFlags())


def main():
    port = int(sys.argv[1])
    backends = [int(p) for p in sys.argv[2:]]
    c = Client(("127.0.0.1", port), timeout=20, connect_timeout=5)

    check("set", c.set("pm:a", b"alpha", noreply=False), True)
    check("get", c.get("pm:a"), b"alpha")
    check("add on an existing key", c.add("pm:a", b"other", noreply=False), False)
    check("add on a new key", c.add("pm:b", b"beta", noreply=False), True)
    check("replace", c.replace("pm:b", b"BETA", noreply=False), True)
    check("append", c.append("pm:b", b"!", noreply=False), True)
    check("set flags", flagged(port).set("pm:flags", b"f", noreply=False), True)
    check("flags", flagged(port).get("pm:flags"), (b"f", 42))
    check("set counter", c.set("pm:n", b"10", noreply=False), True)
    check("incr", c.incr("pm:n", 5, noreply=False), 15)
    check("decr", c.decr("pm:n", 3, noreply=False), 12)
    check("incr on a missing key", c.incr("pm:none", 1, noreply=False), None)
    check("set with expiry", c.set("pm:ttl", b"t", expire=1000, noreply=False), True)
    check("touch", c.touch("pm:ttl", expire=2000, noreply=False), True)
    check("set to delete", c.set("pm:gone", b"x", noreply=False), True)
    check("delete", c.delete("pm:gone", noreply=False), True)
    check("delete of a missing key", c.delete("pm:gone", noreply=False), False)
    # CAS uniques differ between replicas: the sidecar refuses cas clearly.
    try:
        c.cas("pm:a", b"other", c.gets("pm:a")[1], noreply=False)
        sys.exit("cas was not refused")
    except MemcacheClientError as e:
        if b"refuses 'cas'" not in e.args[0]:
            sys.exit(f"cas failed with {e!r}")
    check("set after a refusal", c.set("pm:a", b"alpha2", noreply=False), True)

    # noreply writes: nothing comes back; a later read on the same
    # connection sees them.
    for i in range(50):
        c.set(f"pm:nr{i}", str(i).encode(), noreply=True)
    c.incr("pm:n", 100, noreply=True)
    c.delete("pm:nr0", noreply=True)
    check("get_many", c.get_many(["pm:a", "pm:b", "pm:n", "pm:nr49", "pm:nr0", "pm:missing"]),
          {"pm:a": b"alpha2", "pm:b": b"BETA!", "pm:n": b"112", "pm:nr49": b"49"})
    check("set_many", c.set_many({"pm:s1": b"1", "pm:s2": b"2"}, noreply=False), [])

    expected = {"pm:a": b"alpha2", "pm:b": b"BETA!", "pm:flags": b"f", "pm:n": b"112",
                "pm:ttl": b"t", "pm:s1": b"1", "pm:s2": b"2"}
    expected.update({f"pm:nr{i}": str(i).encode() for i in range(1, 50)})
    absent = ["pm:gone", "pm:nr0", "pm:none"]
    for bp in backends:
        b = Client(("127.0.0.1", bp), timeout=5)
        wait_for(f"backend {bp} to hold pm:s2", lambda: b.get("pm:s2") == b"2")
        check(f"backend {bp} values", b.get_many(list(expected) + absent), expected)
        check(f"backend {bp} flags", flagged(bp).get("pm:flags"), (b"f", 42))
    print("pymemcache: all checks passed")


if __name__ == "__main__":
    main()
