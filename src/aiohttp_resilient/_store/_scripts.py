"""The Lua scripts of the Redis store: each operation is one script, atomic on the server and
timed by the server's ``TIME`` (milliseconds), so clients' clocks play no part. A host's keys
share a hash tag, so a Redis Cluster keeps them on one shard.

Slots: a sorted set of lease members scored by their expiry; every script first drops the
expired ones, and every write sets the key's TTL, so an idle host leaves nothing behind.
A pause (a host's ``Retry-After``) is a key holding when it ends, expiring then. The adaptive
rate (``_health/_rate.py``'s numbers, fleet-wide) is a hash: the sends of the current bucket
are counted as slots are leased, a 429 cuts the rate (:data:`THROTTLE`), and while it is on
each lease comes with the delay before its send (a GCRA schedule shared by the fleet).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACQUIRE",
    "BREAKER_PROBE",
    "BREAKER_REPORT",
    "BUDGET_SYNC",
    "HELD",
    "PAUSE",
    "RELEASE",
    "RENEW",
    "THROTTLE",
]

_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# The rate's fields and its bucket measure; ARGV[1..7]: beta, scale, min_rate, smoothing,
# bucket, cooldown, burst (seconds, requests per second).
_RATE: Final = """
local now_s = tonumber(t[1]) + tonumber(t[2]) / 1000000
local beta, scale, min_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local smoothing, bucket = tonumber(ARGV[4]), tonumber(ARGV[5])
local cooldown, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local f = redis.call('HMGET', KEYS[4], 'on', 'rate', 'wmax', 'k', 'cut', 'tat', 'bend', 'bn',
                     'bt', 'acc')
local on, rate = tonumber(f[1] or '0'), tonumber(f[2] or '0')
local wmax, k, cut = tonumber(f[3] or '0'), tonumber(f[4] or '0'), tonumber(f[5] or '-1e18')
local tat, bend = tonumber(f[6] or now_s), tonumber(f[7] or (now_s + bucket))
local bn, bt, acc = tonumber(f[8] or '0'), tonumber(f[9] or '0'), tonumber(f[10] or '0')
if now_s >= bend then
    if bn > 0 then acc = smoothing * math.max(0, bn - bt) / bucket + (1 - smoothing) * acc end
    bn, bt = 0, 0
    bend = bend + bucket * (math.floor((now_s - bend) / bucket) + 1)
end
if on == 1 then rate = math.max(min_rate, scale * (now_s - cut - k) ^ 3 + wmax) end
local function save()
    redis.call('HSET', KEYS[4], 'on', on, 'rate', rate, 'wmax', wmax, 'k', k, 'cut', cut,
               'tat', tat, 'bend', bend, 'bn', bn, 'bt', bt, 'acc', acc)
    redis.call('PEXPIRE', KEYS[4], 600000)
end
"""

# -- the breaker fleet-wide (issue 19) ------------------------------------------------------
# A host's breaker is a hash: 'ends' (ms: the break ends, a probe may go), 'since' (ms: the
# outage began), 'n' (openings in a row), 'why' (the reason), and while a probe is out 'pm' (its
# lease member) and 'pu' (ms: its lease ends). No hash: closed. An open breaker's key outlives
# its break by 10 minutes, then a host nobody probed leaves nothing behind.

#: Asked with a 5th key (the breaker), an acquire leases nothing while the breaker is open and
#: answers {0, wait_ms (until a probe may go), 0, 0, down_ms, why}.
_BROKEN: Final = """
if KEYS[5] then
    local b = redis.call('HMGET', KEYS[5], 'ends', 'since', 'why')
    if b[1] then
        return {0, math.max(0, tonumber(b[1]) - now), 0, 0, now - tonumber(b[2]), b[3]}
    end
end
"""

#: KEYS[1] the slots, KEYS[2] the breaker; ARGV: limit, ttl_ms, member, poll_ms ->
#: {verdict (0 closed, 1 probe: the member holds the probe lease and a slot, 2 open),
#: wait_ms, down_ms, why}. While a probe (or the slots) are out, the wait is at most poll_ms.
BREAKER_PROBE: Final = (
    _NOW
    + """
local b = redis.call('HMGET', KEYS[2], 'ends', 'since', 'why', 'pm', 'pu')
if not b[1] then return {0, 0, 0, ''} end
local ends, down, why = tonumber(b[1]), now - tonumber(b[2]), b[3]
if ends > now then return {2, ends - now, down, why} end
local poll = tonumber(ARGV[4])
if b[4] and tonumber(b[5]) > now then
    return {2, math.min(tonumber(b[5]) - now, poll), down, why}
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {2, math.min(tonumber(first[2]) - now, poll), down, why}
end
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], 'pm', ARGV[3], 'pu', now + ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, 0, down, why}
"""
)

#: KEYS[1] the breaker; ARGV: member, outcome (0 opened, 1 probe failed, 2 probe succeeded,
#: 3 probe abandoned), break_duration, break_multiplier, max_break, break_jitter, patience (-1:
#: none), rnd, retry_after (-1: none) (seconds), why -> 1 if it moved. ``next_break`` in Lua.
BREAKER_REPORT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local outcome = tonumber(ARGV[2])
if outcome == 2 then
    -- A close made alone while the store was down (ARGV[11]: seconds ago) does not close a
    -- break the fleet opened after it.
    local ago = tonumber(ARGV[11] or '0')
    local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '-1')
    if ago > 0 and since > now - ago * 1000 then return 0 end
    return redis.call('DEL', KEYS[1])
end
local bd, mult, maxb = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local jitter, patience = tonumber(ARGV[6]), tonumber(ARGV[7])
local rnd, ra = tonumber(ARGV[8]), tonumber(ARGV[9])
local function open(n, since)
    local base = bd * mult ^ n
    if base >= maxb then
        base = maxb
    elseif patience < 0 or (now - since) / 1000 >= patience then
        n = n + 1
    end
    local pause = base * (1 + jitter * rnd)
    if ra >= 0 and ra > pause then pause = math.min(ra, math.max(maxb, pause)) end
    local ends = now + math.floor(pause * 1000)
    redis.call('HSET', KEYS[1], 'ends', ends, 'since', since, 'n', n, 'why', ARGV[10])
    redis.call('HDEL', KEYS[1], 'pm', 'pu')
    redis.call('PEXPIRE', KEYS[1], ends - now + 600000)
    return 1
end
local b = redis.call('HMGET', KEYS[1], 'ends', 'since', 'n', 'pm')
if not b[1] then
    if outcome == 3 then return 0 end
    return open(0, now)
end
if ARGV[1] == '' or b[4] ~= ARGV[1] then return 0 end
if outcome == 1 then return open(tonumber(b[3]), tonumber(b[2])) end
redis.call('HSET', KEYS[1], 'ends', now)
redis.call('HDEL', KEYS[1], 'pm', 'pu')
return 1
"""
# -- end of the breaker fleet-wide ----------------------------------------------------------

# -- the retry budget fleet-wide (issue 19) -------------------------------------------------
#: KEYS[1] the budget: a hash of slot counters, 'r<slot>' requests and 's<slot>' net retries
#: charged, a slot being TIME / width. ARGV: width_ms, slots, requests, spent, then one refund
#: per charge given back, each the age (in slots) of the slot it was charged in. Adds them, drops
#: the slots out of the window -> {requests, spent} over the window.
BUDGET_SYNC: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width, slots = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur = math.floor(now / width)
local req, sp = tonumber(ARGV[3]), tonumber(ARGV[4])
if req ~= 0 then redis.call('HINCRBY', KEYS[1], 'r' .. cur, req) end
if sp ~= 0 then redis.call('HINCRBY', KEYS[1], 's' .. cur, sp) end
for i = 5, #ARGV do
    redis.call('HINCRBY', KEYS[1], 's' .. (cur - tonumber(ARGV[i])), -1)
end
local all = redis.call('HGETALL', KEYS[1])
local requests, spent = 0, 0
for i = 1, #all, 2 do
    local field = all[i]
    if tonumber(string.sub(field, 2)) <= cur - slots then
        redis.call('HDEL', KEYS[1], field)
    elseif string.sub(field, 1, 1) == 'r' then
        requests = requests + tonumber(all[i + 1])
    else
        spent = spent + tonumber(all[i + 1])
    end
end
redis.call('PEXPIRE', KEYS[1], width * slots)
return {requests, spent}
"""
# -- end of the retry budget fleet-wide -----------------------------------------------------

#: KEYS[1] the slots, KEYS[2] the pause, KEYS[3] the holders refused lately (by expiry),
#: KEYS[4] the rate; ARGV: the rate's 7 numbers (see _RATE; beta 0: no rate), limit, ttl_ms,
#: holder, members... -> {granted, wait_ms or -1, paused 0/1, waiting, delay_us...}.
ACQUIRE: Final = (
    _NOW
    + _RATE
    + _BROKEN
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, paused - now, 1, redis.call('ZCARD', KEYS[3])} end
local limit = tonumber(ARGV[8])
local ttl = tonumber(ARGV[9])
local held = redis.call('ZCARD', KEYS[1])
local granted = 0
for i = 11, #ARGV do
    if held >= limit then break end
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    held = held + 1
    granted = granted + 1
end
if granted > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local wait = -1
if granted < #ARGV - 10 then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if first[2] then wait = tonumber(first[2]) - now end
    redis.call('ZADD', KEYS[3], now + 1000, ARGV[10])
    redis.call('PEXPIRE', KEYS[3], 1000)
else
    redis.call('ZREM', KEYS[3], ARGV[10])
end
local result = {granted, wait, 0, redis.call('ZCARD', KEYS[3])}
if beta > 0 and granted > 0 then
    bn = bn + granted
    if on == 1 then
        for i = 1, granted do
            local at = math.max(tat, now_s)
            result[4 + i] = math.floor(math.max(0, at - burst - now_s) * 1000000)
            tat = at + 1 / rate
        end
    end
    save()
end
return result
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

#: KEYS[1] the slots, KEYS[2] the breaker; ARGV: ttl_ms, members... -> how many are held now.
RENEW: Final = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
-- [breaker] KEYS[2], the breaker: a probe whose slot is renewed keeps its probe lease too
local prober = KEYS[2] and redis.call('HGET', KEYS[2], 'pm')
if prober then
    for i = 2, #ARGV do
        if ARGV[i] == prober then redis.call('HSET', KEYS[2], 'pu', now + ttl) end
    end
end
-- [/breaker]
return redis.call('ZCARD', KEYS[1])
"""
)

#: KEYS[1..3] unused, KEYS[4] the rate; ARGV: the rate's 7 numbers -> the rate (mHz), or -1
#: within the cooldown of the last cut. The port of ``RateState.throttle``: the cut starts from
#: what the fleet's sends that were not refused came to.
THROTTLE: Final = (
    """
local t = redis.call('TIME')
"""
    + _RATE
    + """
bt = bt + 1
if now_s - cut < cooldown then
    save()
    return -1
end
local elapsed = now_s - (bend - bucket)
local accepted = math.max(acc, math.max(0, bn - bt) / math.max(elapsed, bucket / 5))
if on == 1 then accepted = math.min(rate, math.max(accepted, wmax)) end
wmax = math.max(accepted, min_rate)
k = (wmax * (1 - beta) / scale) ^ (1 / 3)
rate = math.max(min_rate, wmax * beta)
cut = now_s
if on == 0 then
    on = 1
    tat = now_s
end
save()
return math.floor(rate * 1000)
"""
)

#: KEYS[1] the slots -> how many unexpired leases it holds.
HELD: Final = (
    _NOW
    + """
return redis.call('ZCARD', KEYS[1])
"""
)
