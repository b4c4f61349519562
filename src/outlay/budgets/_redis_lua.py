"""The Lua scripts of the Redis budget store: every operation is one atomic script.

Redis runs one script at a time, so a reserve's check and hold on every key happen with nothing in
between, whichever gateway replica sent it. Money never becomes a Lua number: Lua numbers are
doubles (exact only to 2^53), so amounts stay canonical decimal strings ("0.125") and the scripts
add, subtract and compare them digit by digit, in chunks of 14 digits that a double holds exactly.
That is arbitrary-precision decimal arithmetic: any sum is exact, whatever its size; the Python side
only bounds the digits of each amount it sends (see ``_redis.py``).

Layout under the store's prefix ``P``:
``P c:<key>`` hash {spent, reserved, x: drop time (ms), for a calendar window's counter};
``P s:<key>`` hash {slice index: spent} for rolling windows;
``P h:<id>`` hash {k: keys JSON [[key, window, until ms or 0]], a: amount, s: state, n: reserve nonce,
sn: settle/release nonce}; ``P expiry`` sorted set of held ids by deadline (ms).

A calendar window's counter (``until`` > 0: the window's end) may be dropped at its drop time: the
later of that end and its last change, plus the retention (every hold finished on it is forgotten
by then). It carries that as a ``PEXPIRE`` while nothing is held on it, and no expiry while
something is (set in the same script that changes ``reserved``, so a hold taken just before the
expiry removes it). The scripts also treat a counter past its drop time as gone, so an injected
clock (whose time Redis's own expiry does not follow) sees the same counters.

Every script takes ``ARGV[1]`` = prefix and ``ARGV[2]`` = now in ms, or "" to read the Redis
server's ``TIME``, so that every replica agrees on the clock (tests pass an injected clock).
Nonces make a retried call (a reply lost to a dropped connection) answer as the first attempt did.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RELEASE", "RESERVE", "SETTLE", "STATUS"]

_COMMON: Final = r"""
local P = ARGV[1]
local EXPIRY = P .. 'expiry'
local CHUNK = 14
local RETENTION = 0  -- ms; each script sets it from its arguments before changing a counter

local function now_ms()
  if ARGV[2] ~= '' then return tonumber(ARGV[2]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- decimal strings -------------------------------------------------------------------------------
-- a literal table: building it in a loop costs more than the rest of a call
local FMT = {'%01d', '%02d', '%03d', '%04d', '%05d', '%06d', '%07d',
             '%08d', '%09d', '%010d', '%011d', '%012d', '%013d', '%014d'}

-- Two decimals as digit strings of equal length, plus their number of fraction digits.
local function align(a, b)
  local ai, af = string.match(a, '^(%d*)%.?(%d*)$')
  local bi, bf = string.match(b, '^(%d*)%.?(%d*)$')
  local il, fl = math.max(#ai, #bi), math.max(#af, #bf)
  return string.rep('0', il - #ai) .. ai .. af .. string.rep('0', fl - #af),
         string.rep('0', il - #bi) .. bi .. bf .. string.rep('0', fl - #bf), fl
end

local function canonical(digits, fl)
  local n = #digits
  local ip = string.match(string.sub(digits, 1, n - fl), '^0*(%d-)$')
  if ip == '' then ip = '0' end
  if fl == 0 then return ip end
  local fp = string.match(string.sub(digits, n - fl + 1), '^(%d-)0*$')
  if fp == '' then return ip end
  return ip .. '.' .. fp
end

-- a + sign * b on equal-length digit strings; nil when the result would be negative.
local function digit_op(a, b, sign)
  local n = #a
  if n <= CHUNK then  -- the common case: one chunk, exact in a double (a carry adds a digit)
    local v = tonumber(a) + sign * tonumber(b)
    if v < 0 then return nil end
    return string.format(FMT[n], v)
  end
  local out, carry, i = {}, 0, n
  while i >= 1 do
    local j = math.max(1, i - CHUNK + 1)
    local width = i - j + 1
    local base = 10 ^ width
    local v = tonumber(string.sub(a, j, i)) + sign * tonumber(string.sub(b, j, i)) + carry
    if v >= base then v = v - base; carry = 1
    elseif v < 0 then v = v + base; carry = -1
    else carry = 0 end
    out[#out + 1] = string.format(FMT[width], v)
    i = j - 1
  end
  if carry < 0 then return nil end
  if carry > 0 then out[#out + 1] = '1' end
  local m = #out
  for k = 1, math.floor(m / 2) do out[k], out[m - k + 1] = out[m - k + 1], out[k] end
  return table.concat(out)
end

local function dadd(a, b)
  local x, y, fl = align(a, b)
  return canonical(digit_op(x, y, 1), fl)
end

local function dsub(a, b)
  local x, y, fl = align(a, b)
  local d = digit_op(x, y, -1)
  if not d then error('outlay budget store: a counter would go negative: ' .. a .. ' - ' .. b) end
  return canonical(d, fl)
end

local function dle(a, b)
  local x, y = align(a, b)
  local i = 1
  while i <= #x do
    local j = math.min(#x, i + CHUNK - 1)
    local p, q = tonumber(string.sub(x, i, j)), tonumber(string.sub(y, i, j))
    if p ~= q then return p < q end
    i = j + 1
  end
  return true
end

-- counters --------------------------------------------------------------------------------------
local function ckey(key) return P .. 'c:' .. key end
local function skey(key) return P .. 's:' .. key end

local function reserved_of(key) return redis.call('HGET', ckey(key), 'reserved') or '0' end

-- After a change of the counter ``key`` at ``now``: a calendar window's counter (``ends`` ms > 0)
-- expires at its drop time while nothing is held on it; any other is kept for ever.
local function keep(key, ends, now, reserved)
  local c = ckey(key)
  if type(ends) ~= 'number' or ends <= 0 then
    if redis.call('HDEL', c, 'x') == 1 then redis.call('PERSIST', c) end
    return
  end
  local at = math.max(ends, now) + RETENTION
  redis.call('HSET', c, 'x', string.format('%d', at))
  if reserved == '0' then redis.call('PEXPIRE', c, math.max(1, at - now))
  else redis.call('PERSIST', c) end
end

-- Same slicing as outlay.budgets._store.rolling_slices, on milliseconds.
local function slices(window, now)
  local size = math.max(1, math.floor(window / 60))
  return math.floor(now / (size * 1000)), math.ceil(window / size), size
end

local function window_spent(key, window, now)
  local current, kept = slices(window, now)
  local flat = redis.call('HGETALL', skey(key))
  local total = '0'
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) < current - kept then redis.call('HDEL', skey(key), flat[i])
    else total = dadd(total, flat[i + 1]) end
  end
  return total
end

-- A counter's spend (within its window, for a rolling key) and reservations.
local function load(key, window, now)
  local c = redis.call('HMGET', ckey(key), 'spent', 'reserved', 'x')
  if c[3] and tonumber(c[3]) <= now and (c[2] or '0') == '0' then
    redis.call('DEL', ckey(key))  -- past its drop time (by the script's clock): gone
    return '0', '0'
  end
  if window ~= 0 then return window_spent(key, window, now), c[2] or '0' end
  return c[1] or '0', c[2] or '0'
end

-- Settle on one key: drop the hold (if still held), add the cost; returns the new status.
-- ``at``: when the cost was spent (a rolling window's slice); ``now``: when the script runs.
local function charge(key, window, held, cost, at, now, ends)
  local spent, reserved = load(key, 0, now)
  if held then reserved = dsub(reserved, held) end
  if window == 0 then
    spent = dadd(spent, cost)
    redis.call('HSET', ckey(key), 'spent', spent, 'reserved', reserved)
    keep(key, ends, now, reserved)
    return spent, reserved
  end
  if held then redis.call('HSET', ckey(key), 'reserved', reserved) end
  local current, kept, size = slices(window, at)
  local field = string.format('%d', current)
  redis.call('HSET', skey(key), field, dadd(redis.call('HGET', skey(key), field) or '0', cost))
  -- old slices are pruned by window_spent; the key's own TTL frees a window nobody reads any more
  redis.call('PEXPIRE', skey(key), (window + 2 * size) * 1000 + 60000)
  return window_spent(key, window, at), reserved
end

local function unreserve(keys, amount, now)
  for _, kw in ipairs(keys) do
    local reserved = dsub(reserved_of(kw[1]), amount)
    redis.call('HSET', ckey(kw[1]), 'reserved', reserved)
    if kw[2] == 0 then keep(kw[1], kw[3], now, reserved) end
  end
end

-- Take back what an expired hold was charged at its deadline ``at``, for a settle or release
-- the caller issued before that deadline but that reached Redis only after it (queued in an
-- outage). A rolling slice already past its window holds nothing to take back.
local function refund_expiry(keys, amount, at, now)
  for _, kw in ipairs(keys) do
    local key, window = kw[1], kw[2]
    if window == 0 then
      local spent, reserved = load(key, 0, now)
      redis.call('HSET', ckey(key), 'spent', dle(amount, spent) and dsub(spent, amount) or '0',
                 'reserved', reserved)
      keep(key, kw[3], now, reserved)
    else
      local current = slices(window, at)
      local field = string.format('%d', current)
      local value = redis.call('HGET', skey(key), field)
      if value then
        redis.call('HSET', skey(key), field, dle(amount, value) and dsub(value, amount) or '0')
      end
    end
  end
end

-- Whether a settle/release issued at ARGV ``issued`` (ms, "" for one sent at once) predates the
-- deadline ``d`` of the hold it finds expired: then its expiry charge is taken back first.
local function issued_in_time(issued, deadline)
  return issued ~= '' and deadline ~= nil and deadline ~= false and tonumber(issued) < tonumber(deadline)
end

local function statuses(keys, now)
  local out = {}
  for _, kw in ipairs(keys) do
    local spent, reserved = load(kw[1], kw[2], now)
    out[#out + 1] = spent
    out[#out + 1] = reserved
  end
  return out
end

-- Charge the holds of crashed callers whose deadline passed (their calls may have been billed:
-- the amount moves from reserved to spent, never just dropped); bounded work per call.
local function tick(now, retention)
  RETENTION = retention
  local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
  for i = 1, #due, 2 do
    local rid, deadline = due[i], math.min(tonumber(due[i + 1]), now)
    local h = P .. 'h:' .. rid
    local f = redis.call('HMGET', h, 's', 'a', 'k')
    if f[1] == 'held' then
      -- spent at its deadline, not whenever a script next runs (rolling windows)
      for _, kw in ipairs(cjson.decode(f[3])) do charge(kw[1], kw[2], f[2], f[2], deadline, now, kw[3])
      end
      redis.call('HSET', h, 's', 'expired')
      redis.call('PEXPIRE', h, retention)
    end
    redis.call('ZREM', EXPIRY, rid)
  end
end
"""

#: KEYS: expiry, hold. ARGV: prefix, now, id, amount, ttl ms, retention ms, nonce,
#: requests JSON [[key, limit or "", window or 0, window end ms or 0], ...].
#: Returns {"ok"|"denied"|"exists", denied index, spent1, reserved1, spent2, ...}.
RESERVE: Final = (
    _COMMON
    + r"""
local now = now_ms()
tick(now, tonumber(ARGV[6]))
local rid, amount, nonce = ARGV[3], ARGV[4], ARGV[7]
local h = P .. 'h:' .. rid
local requests = cjson.decode(ARGV[8])
local keys, stats = {}, {}
for i, req in ipairs(requests) do
  keys[i] = {req[1], req[3], req[4]}
  stats[2 * i - 1], stats[2 * i] = load(req[1], req[3], now)
end
local existing = redis.call('HGET', h, 'n')
if existing then
  if existing == nonce then return {'ok', 0, unpack(stats)} end
  return {'exists', 0}
end
for i, req in ipairs(requests) do
  if req[2] ~= '' and not dle(dadd(dadd(stats[2 * i - 1], stats[2 * i]), amount), req[2]) then
    return {'denied', i - 1, unpack(stats)}
  end
end
for i, req in ipairs(requests) do
  stats[2 * i] = dadd(stats[2 * i], amount)
  redis.call('HSET', ckey(req[1]), 'reserved', stats[2 * i])
  if req[3] == 0 then keep(req[1], req[4], now, stats[2 * i]) end
end
redis.call('HSET', h, 'k', cjson.encode(keys), 'a', amount, 's', 'held', 'n', nonce,
           'd', now + tonumber(ARGV[5]))
redis.call('ZADD', EXPIRY, now + tonumber(ARGV[5]), rid)
return {'ok', 0, unpack(stats)}
"""
)

#: KEYS: expiry, hold. ARGV: prefix, now, id, actual or "" (the estimate), retention ms, nonce,
#: keys JSON or "" and amount: a hold admitted locally while Redis was down, recorded if unknown;
#: issued (ms, or "" for a settle sent at once): when a queued settle was made.
#: Returns {"ok"|"done"|"unknown", keys JSON, spent1, reserved1, ...}.
SETTLE: Final = (
    _COMMON
    + r"""
local now = now_ms()
local retention = tonumber(ARGV[5])
tick(now, retention)
local rid = ARGV[3]
local h = P .. 'h:' .. rid
local f = redis.call('HMGET', h, 's', 'a', 'k', 'sn', 'd')
local state, amount, names = f[1], f[2], f[3]
if not state then
  if ARGV[7] == '' then return {'unknown'} end
  -- admitted locally while Redis was down: never held here, so charged in full below
  state, amount, names = 'local', ARGV[8], ARGV[7]
  redis.call('HSET', h, 'k', names, 'a', amount, 's', state)
end
local keys = cjson.decode(names)
if state == 'settled' or state == 'released' then
  if f[4] == ARGV[6] then return {'ok', names, unpack(statuses(keys, now))} end
  return {'done', names, unpack(statuses(keys, now))}
end
local cost = ARGV[4]
if cost == '' then cost = amount end
if state == 'expired' and issued_in_time(ARGV[9] or '', f[5]) then
  refund_expiry(keys, amount, tonumber(f[5]), now)  -- settled in time, applied late: the cost, exactly
elseif state == 'expired' then  -- charged its amount when it expired: only the excess is left
  if dle(cost, amount) then cost = '0' else cost = dsub(cost, amount) end
end
local held = state == 'held' and amount or nil
local out = {'ok', names}
for _, kw in ipairs(keys) do
  local spent, reserved = charge(kw[1], kw[2], held, cost, now, now, kw[3])
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
redis.call('HSET', h, 's', 'settled', 'sn', ARGV[6])
redis.call('PEXPIRE', h, retention)
if held then redis.call('ZREM', EXPIRY, rid) end
return out
"""
)

#: KEYS: expiry, hold. ARGV: prefix, now, id, retention ms, nonce, issued (ms, or "" for a release
#: sent at once), reserve nonce ("" for any): only the hold that reserve made (one whose reply was
#: lost). Returns "ok"|"done"|"unknown".
RELEASE: Final = (
    _COMMON
    + r"""
local now = now_ms()
local retention = tonumber(ARGV[4])
tick(now, retention)
local rid = ARGV[3]
local h = P .. 'h:' .. rid
local f = redis.call('HMGET', h, 's', 'a', 'k', 'sn', 'd', 'n')
if not f[1] then return 'unknown' end
if (ARGV[7] or '') ~= '' and f[6] ~= ARGV[7] then return 'unknown' end
if f[1] == 'expired' and issued_in_time(ARGV[6] or '', f[5]) then
  -- released in time, applied late (queued in an outage): the call cost nothing
  refund_expiry(cjson.decode(f[3]), f[2], tonumber(f[5]), now)
  redis.call('HSET', h, 's', 'released', 'sn', ARGV[5])
  redis.call('PEXPIRE', h, retention)
  return 'ok'
end
if f[1] ~= 'held' then
  if f[4] == ARGV[5] then return 'ok' end
  return 'done'
end
unreserve(cjson.decode(f[3]), f[2], now)
redis.call('HSET', h, 's', 'released', 'sn', ARGV[5])
redis.call('PEXPIRE', h, retention)
redis.call('ZREM', EXPIRY, rid)
return 'ok'
"""
)

#: KEYS: expiry. ARGV: prefix, now, key, window or 0, retention ms. Returns {spent, reserved}.
STATUS: Final = (
    _COMMON
    + r"""
local now = now_ms()
tick(now, tonumber(ARGV[5]))
local spent, reserved = load(ARGV[3], tonumber(ARGV[4]), now)
return {spent, reserved}
"""
)
