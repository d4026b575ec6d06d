"""redis-py 5 or later in RESP3 through a mu-sidecar, unchanged.

Usage: redis_resp3_client.py SIDECAR_PORT BACKEND_PORT...

Writes whose RESP3 replies differ from RESP2 (doubles, maps, sets, nulls),
a transaction whose EXEC reply holds such types, and client-side caching
(CLIENT TRACKING with redis-py's push handler) and Pub/Sub, against the
sidecar; then
checks that every listed backend holds the written data. Exits non-zero
on the first mismatch.
"""

import sys

import redis

from checks import check, check_pubsub, wait_for


def main():
    port = int(sys.argv[1])
    backends = [int(p) for p in sys.argv[2:]]
    if int(redis.__version__.split(".")[0]) < 5:
        sys.exit(f"redis-py {redis.__version__} speaks RESP2 only: run scripts/install-deps.sh")
    r = redis.Redis(host="127.0.0.1", port=port, protocol=3, decode_responses=True)
    check("HELLO 3 took", r.connection_pool.get_connection("PING").protocol, 3)

    # Replies that RESP3 types differently, each parsed by redis-py's RESP3
    # reader (a RESP2 form, such as a bulk string for a double, makes it
    # return a string or fail).
    check("ZADD", r.zadd("py3:z", {"a": 1, "b": 2}), 2)
    check("ZINCRBY", r.zincrby("py3:z", 1.5, "a"), 2.5)
    check("ZADD INCR", r.zadd("py3:z", {"b": 0.25}, incr=True), 2.25)
    check("ZPOPMIN", r.zpopmin("py3:z"), ["b", 2.25])
    check("HSET", r.hset("py3:h", mapping={"f": "1", "g": "2"}), 2)
    check("GETDEL missing", r.getdel("py3:missing"), None)
    check("LPOP count missing", r.lpop("py3:missing", 2), None)

    # A transaction: its EXEC reply nests maps, sets, doubles and nulls.
    p = r.pipeline(transaction=True)
    p.hgetall("py3:h")
    p.sadd("py3:s", "x")
    p.smembers("py3:s")
    p.zscore("py3:z", "a")
    p.get("py3:missing")
    check("MULTI/EXEC", p.execute(), [{"f": "1", "g": "2"}, 1, {"x"}, 2.5, None])

    # Client-side caching: a tracked read, then a write by another client
    # through the sidecar; the invalidation reaches this connection.
    invalidated = []
    tracked = redis.Redis(host="127.0.0.1", port=port, protocol=3, decode_responses=True,
                          single_connection_client=True)
    conn = tracked.connection
    conn._parser.set_invalidation_push_handler(lambda msg: invalidated.append(msg))
    tracked.execute_command("CLIENT", "TRACKING", "ON")
    check("tracked GET", tracked.get("py3:h:seen"), None)
    check("SET by another client", r.set("py3:h:seen", "1"), True)

    def pushed():
        # Reads whatever the server pushed without sending anything.
        if conn.can_read(timeout=0.01):
            conn.read_response(push_request=True)
        return invalidated

    got = wait_for("the invalidation push", pushed)
    check("invalidated keys", got[0][1], ["py3:h:seen"])

    # Pub/Sub: under RESP3 confirmations and messages are pushes.
    check_pubsub(r, "py3")

    written = ["py3:z", "py3:h", "py3:s", "py3:h:seen"]
    for bp in backends:
        b = redis.Redis(host="127.0.0.1", port=bp, decode_responses=True)
        wait_for(f"backend {bp} to hold py3:h:seen", lambda: b.get("py3:h:seen") == "1")
        check(f"backend {bp} keys", sorted(b.keys("py3:*")), sorted(written))
        check(f"backend {bp} py3:z", b.zrange("py3:z", 0, -1, withscores=True), [("a", 2.5)])
    print("redis-py RESP3: all checks passed")


if __name__ == "__main__":
    main()
