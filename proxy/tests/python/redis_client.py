"""redis-py through a mu-sidecar, unchanged.

Usage: redis_client.py SIDECAR_PORT BACKEND_PORT...

Runs plain commands, a pipeline, a transaction (MULTI/EXEC with WATCH),
expirations, per-connection state (SELECT, CLIENT SETNAME), Pub/Sub and
RESP3 when the installed redis-py speaks it, against the sidecar; then
checks that every listed backend (the other nodes' servers, read
directly) holds the written data. Exits non-zero on the first mismatch.
"""

import sys

import redis

from checks import check, check_pubsub, wait_for


def main():
    port = int(sys.argv[1])
    backends = [int(p) for p in sys.argv[2:]]
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    check("PING", r.ping(), True)
    check("SET", r.set("py:str", "hello"), True)
    check("GET", r.get("py:str"), "hello")
    check("SET NX on an existing key", r.set("py:str", "other", nx=True), None)
    check("INCRBY", r.incrby("py:counter", 7), 7)
    check("MSET", r.mset({"py:m1": "a", "py:m2": "b"}), True)
    check("MGET", r.mget("py:m1", "py:m2", "py:missing"), ["a", "b", None])
    check("HSET", r.hset("py:hash", mapping={"f1": "1", "f2": "2"}), 2)
    check("HGETALL", r.hgetall("py:hash"), {"f1": "1", "f2": "2"})
    check("RPUSH", r.rpush("py:list", "x", "y", "z"), 3)
    check("LRANGE", r.lrange("py:list", 0, -1), ["x", "y", "z"])
    check("ZADD", r.zadd("py:zset", {"one": 1, "two": 2}), 2)
    check("ZRANGE", r.zrange("py:zset", 0, -1, withscores=True), [("one", 1.0), ("two", 2.0)])

    # Expirations: relative ones are replicated as absolute deadlines.
    check("SET EX", r.set("py:ttl", "v", ex=1000), True)
    ttl = r.ttl("py:ttl")
    if not 990 <= ttl <= 1000:
        sys.exit(f"TTL of py:ttl is {ttl}, want about 1000")
    check("EXPIRE", r.expire("py:hash", 500), True)
    check("PERSIST", r.persist("py:hash"), True)

    # A pipeline without a transaction: replies in request order.
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.rpush("py:piped", i)
    p.llen("py:piped")
    replies = p.execute()
    check("pipelined RPUSH replies", replies[:100], list(range(1, 101)))
    check("pipelined LLEN", replies[100], 100)

    # A transaction (redis-py wraps the pipeline in MULTI/EXEC).
    p = r.pipeline(transaction=True)
    p.set("py:tx", 1).incr("py:tx").get("py:tx")
    check("MULTI/EXEC", p.execute(), [True, 2, "2"])

    # Optimistic locking: WATCH, read, MULTI, write, EXEC.
    def bump(pipe):
        v = int(pipe.get("py:counter"))
        pipe.multi()
        pipe.set("py:counter", v + 1)

    r.transaction(bump, "py:counter")
    check("counter after WATCH transaction", r.get("py:counter"), "8")

    # Per-connection state: a database and a client name on one connection.
    one = redis.Redis(host="127.0.0.1", port=port, db=3, decode_responses=True,
                      single_connection_client=True)
    check("SET in db 3", one.set("py:db3", "three"), True)
    check("GET in db 3", one.get("py:db3"), "three")
    check("CLIENT SETNAME", one.client_setname("py-client"), True)
    check("CLIENT GETNAME", one.client_getname(), "py-client")
    check("db 0 does not see db 3", r.get("py:db3"), None)

    # Errors come back as errors.
    try:
        r.incr("py:str")
        sys.exit("INCR of a non-integer did not fail")
    except redis.ResponseError as e:
        if "not an integer" not in str(e):
            sys.exit(f"INCR of a non-integer failed with {e!r}")

    # Pub/Sub on a connection of its own.
    check_pubsub(r, "py")

    # RESP3 (redis-py 5 and later speak it).
    if int(redis.__version__.split(".")[0]) >= 5:
        r3 = redis.Redis(host="127.0.0.1", port=port, protocol=3, decode_responses=True)
        check("RESP3 SET", r3.set("py:resp3", "yes"), True)
        check("RESP3 HGETALL", r3.hgetall("py:hash"), {"f1": "1", "f2": "2"})
        expected_resp3 = ["py:resp3"]
    else:
        print(f"redis-py {redis.__version__} speaks RESP2 only; redis_resp3_client.py covers RESP3")
        expected_resp3 = []

    # Every other backend holds the data once it applied it.
    written = ["py:str", "py:counter", "py:m1", "py:m2", "py:hash", "py:list", "py:zset",
               "py:ttl", "py:piped", "py:tx"] + expected_resp3
    for bp in backends:
        b = redis.Redis(host="127.0.0.1", port=bp, decode_responses=True)
        wait_for(f"backend {bp} to hold py:counter=8", lambda: b.get("py:counter") == "8")
        check(f"backend {bp} keys in db 0", sorted(b.keys("py:*")), sorted(written))
        check(f"backend {bp} py:str", b.get("py:str"), "hello")
        check(f"backend {bp} py:hash", b.hgetall("py:hash"), {"f1": "1", "f2": "2"})
        check(f"backend {bp} py:hash TTL", b.ttl("py:hash"), -1)
        check(f"backend {bp} py:list", b.lrange("py:list", 0, -1), ["x", "y", "z"])
        check(f"backend {bp} py:piped", b.llen("py:piped"), 100)
        check(f"backend {bp} py:tx", b.get("py:tx"), "2")
        ttl = b.ttl("py:ttl")
        if not 990 <= ttl <= 1000:
            sys.exit(f"backend {bp}: TTL of py:ttl is {ttl}, want about 1000")
        b3 = redis.Redis(host="127.0.0.1", port=bp, db=3, decode_responses=True)
        check(f"backend {bp} py:db3", b3.get("py:db3"), "three")
    print("redis-py: all checks passed")


if __name__ == "__main__":
    main()
