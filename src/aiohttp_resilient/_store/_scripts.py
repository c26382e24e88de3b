"""The Lua scripts of the Redis store: each operation is one script, atomic on the server and
timed by the server's ``TIME`` (milliseconds), so clients' clocks play no part. A host's keys
share a hash tag, so a Redis Cluster keeps them on one shard.

Slots: a sorted set of lease members scored by their expiry; every script first drops the
expired ones, and every write sets the key's TTL, so an idle host leaves nothing behind.
A pause (a host's ``Retry-After``) is a key holding when it ends, expiring then.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "HELD", "PAUSE", "RELEASE", "RENEW"]

_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

#: KEYS[1] the slots, KEYS[2] the pause, KEYS[3] the holders refused lately (by expiry);
#: ARGV: limit, ttl_ms, holder, members... -> {granted, wait_ms or -1, paused 0/1, waiting}.
ACQUIRE: Final = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, paused - now, 1, redis.call('ZCARD', KEYS[3])} end
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local held = redis.call('ZCARD', KEYS[1])
local granted = 0
for i = 4, #ARGV do
    if held >= limit then break end
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    held = held + 1
    granted = granted + 1
end
if granted > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local wait = -1
if granted < #ARGV - 3 then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if first[2] then wait = tonumber(first[2]) - now end
    redis.call('ZADD', KEYS[3], now + 1000, ARGV[3])
    redis.call('PEXPIRE', KEYS[3], 1000)
else
    redis.call('ZREM', KEYS[3], ARGV[3])
end
return {granted, wait, 0, redis.call('ZCARD', KEYS[3])}
"""
)

#: KEYS[1] the pause; ARGV: ms -> 1 if it was set (a later pause already set stays).
PAUSE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= now + ms then return 0 end
redis.call('SET', KEYS[1], now + ms, 'PX', ms)
return 1
"""

#: KEYS[1] the slots; ARGV: members... -> how many were held.
RELEASE: Final = """
return redis.call('ZREM', KEYS[1], unpack(ARGV))
"""

#: KEYS[1] the slots; ARGV: ttl_ms, members... -> how many are held now.
RENEW: Final = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""
)

#: KEYS[1] the slots -> how many unexpired leases it holds.
HELD: Final = (
    _NOW
    + """
return redis.call('ZCARD', KEYS[1])
"""
)
