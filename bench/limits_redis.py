"""Decisions per second of Python's `limits` (moving window, Redis storage)
with C concurrent clients (threads sharing one connection pool), on the same
redis-server and key set size as bench/src/bin/redis_fleet.rs.
URL is redis://host:port/db (RedisStorage) or
redis+cluster://host:port,host:port,... (RedisClusterStorage).
Usage: limits_redis.py URL SECONDS CLIENTS..."""
import sys
import threading
import time

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

url, secs = sys.argv[1], float(sys.argv[2])
item = RateLimitItemPerMinute(50)  # 50 per 60 s, as portcullis
keys = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(100_000)]

for clients in map(int, sys.argv[3:]):
    storage = storage_from_string(url)
    kind = type(storage).__name__
    limiter = MovingWindowRateLimiter(storage)
    done = [0] * clients
    allowed = [0] * clients
    end = time.monotonic() + secs

    def run(t):
        i = (t * 7919) % len(keys)
        n = a = 0
        while time.monotonic() < end:
            i = (i + 48271) % len(keys)  # a prime stride: visits every key
            a += limiter.hit(item, f"py{clients}", keys[i])
            n += 1
        done[t], allowed[t] = n, a

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(t,)) for t in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    el = time.monotonic() - start
    n = sum(done)
    print(f"python limits moving-window  clients {clients:>3}  {n / el:>9.0f} decisions/s  "
          f"({n} ok, {100.0 * sum(allowed) / max(n, 1):.1f} % allowed, {kind})")
