-- portcullis fleet rules: the decision rules of portcullis-core, translated
-- once into Redis Lua. One call = one decision, atomic inside Redis.
--
-- The Rust wrapper (host/src/fleet/mod.rs) applies the allow/deny lists,
-- aggregates addresses, hashes usernames and builds the keys; this script
-- holds the per-key state and the rules. A differential proptest
-- (tests/tests/redis_diff.rs) runs the same operations through the core and
-- through this script and requires identical answers.
--
-- Numbers: Lua numbers are doubles, so every time is an integer count of
-- microseconds kept below 2^53 (MAXI) and all arithmetic stays integral.
-- State is stored with cmsgpack, which encodes integral doubles as
-- integers (no %.14g rounding as with tostring/cjson).
--
-- ARGV layout (all decimal integers, times in microseconds, growth factors
-- in thousandths: 1500 is 1.5):
--   1 op          2 now
--   3 max_requests     4 request window
--   5 block_after      6 violation_memory   7 block_for   8 block_growth
--   9 max_block       10 ban_after (0 = off) 11 ban_lookback
--  12 max_failures    13 failure_window     14 lock_for
--  15 lock_ip_on_account_lock (0/1)
--  16 account_max_failures (0 = off)        17 account_window
--  18 penalty base    19 penalty multiplier 20 penalty max
--  21 slots           22 slot_ttl           23 refuse without slot (0/1)
--  24 violation log capacity                25 TTL slack (milliseconds)
--  26 ip_max_failures (0 = the ip's own count never locks it)
--  27.. op arguments ('req': 27 block_jitter, 28 jitter fraction 0..65535)
--
-- Entry (one Redis string per key, cmsgpack map):
--   l  log of timestamps, oldest first     v  violation timestamps
--   bu block until        bl block level   lb last block start
--   b  banned (0/1)       lk lock until
--   s  slots, array of {id, taken_at}      n  next slot id
--   c  latest `now` this key has seen (its clock never runs backwards)

local MAXI = 9007199254740991 -- 2^53 - 1: "the end of time"

local A = {}
for i = 2, 26 do
  local x = tonumber(ARGV[i])
  if x == nil or x < 0 or x ~= math.floor(x) then
    return redis.error_reply('PORTCULLIS bad argument ' .. i)
  end
  if x > MAXI then x = MAXI end
  A[i] = x
end
local op = ARGV[1]
local NOW = A[2]
local REQ_MAX, REQ_WIN = A[3], A[4]
local BLOCK_AFTER, VMEM, BLOCK_FOR, GROWTH, MAX_BLOCK = A[5], A[6], A[7], A[8], A[9]
local BAN_AFTER, BAN_LOOKBACK = A[10], A[11]
local MAX_FAIL, FAIL_WIN, LOCK_FOR, LOCK_IP = A[12], A[13], A[14], A[15]
local ACCT_MAX, ACCT_WIN = A[16], A[17]
local P_BASE, P_MULT, P_MAX = A[18], A[19], A[20]
local SLOTS, SLOT_TTL, REFUSE = A[21], A[22], A[23]
local VCAP, SLACK_MS = A[24], A[25]
local IP_MAX = A[26]

-- Whether the ip's own count `n` locks it (rule 5; IP_MAX 0 = never).
local function ip_full(n)
  return IP_MAX > 0 and n >= IP_MAX
end

-- Saturating integer helpers (core/src/time.rs).
local function sat_add(a, b)
  local s = a + b
  if s > MAXI then return MAXI end
  return s
end
local function sub0(a, b)
  if a > b then return a - b end
  return 0
end
local function age(now, t) return sub0(now, t) end
local function within(now, t, w) return age(now, t) < w end
local function left_in_window(now, t, w) return sub0(w, age(now, t)) end
local function until_(now, deadline) return sub0(deadline, now) end
local function running(deadline, now) return deadline > now or deadline == MAXI end
-- floor(d * g / 1000) capped at max (Growth::grow in core/src/config.rs,
-- with the cap of grown): split as (d // 1000) * g + (d % 1000) * g // 1000
-- so every intermediate is an exact integer below 2^53, or already above
-- max (then the answer is max).
local function div1000(x) return (x - x % 1000) / 1000 end
local function grow(d, g, max)
  local r = d % 1000
  local whole = (d - r) / 1000 * g
  if whole >= max then return max end
  local part = div1000(r * g) -- r * g < 1000 * 2^32: exact
  if part >= max - whole then return max end
  return whole + part
end
-- min(first * growth^n, max), rounded down at every step, stopping at max
-- or once a step changes nothing (core/src/time.rs `grown`).
local function grown(first, growth, n, max)
  local d = math.min(first, max)
  for _ = 1, n do
    local nxt = grow(d, growth, max)
    if nxt == d then break end
    d = nxt
  end
  return d
end

-- Sliding logs (core/src/window.rs), arrays oldest first.
local function count(log, now, w)
  local n = 0
  for _, t in ipairs(log) do
    if within(now, t, w) then n = n + 1 end
  end
  return n
end
local function prune(log, now, w)
  local out = {}
  local keep = false
  for _, t in ipairs(log) do
    if keep or within(now, t, w) then
      keep = true
      out[#out + 1] = t
    end
  end
  return out
end
local function oldest_in(log, now, w)
  for _, t in ipairs(log) do
    if within(now, t, w) then return t end
  end
  return nil
end
local function push(log, t, cap)
  log[#log + 1] = t
  local out = log
  if cap ~= nil and #log > cap then
    out = {}
    for i = #log - cap + 1, #log do out[#out + 1] = log[i] end
  end
  return out
end

-- Validation of stored state: anything else is an error, never a guess.
local function is_int(x)
  return type(x) == 'number' and x >= 0 and x == math.floor(x) and x <= MAXI
end
local function int_array(x)
  if type(x) ~= 'table' then return false end
  for _, t in ipairs(x) do
    if not is_int(t) then return false end
  end
  return true
end
local function opt_int(x) return x == nil or is_int(x) end

local function fresh()
  return { l = {}, v = {}, bl = 0, b = 0, s = {}, n = 1, c = 0 }
end

-- The entry at `key` (a fresh one if absent), or raise a script error.
local function load(key)
  local raw = redis.call('GET', key)
  if not raw then return fresh(), false end
  local ok, e = pcall(cmsgpack.unpack, raw)
  if not ok or type(e) ~= 'table' then
    error('PORTCULLIS corrupt state (not an entry) at ' .. key)
  end
  e.l = e.l or {}
  e.v = e.v or {}
  e.s = e.s or {}
  e.bl = e.bl or 0
  e.b = e.b or 0
  e.n = e.n or 1
  e.c = e.c or 0
  local good = int_array(e.l) and int_array(e.v) and type(e.s) == 'table'
    and is_int(e.bl) and (e.b == 0 or e.b == 1) and is_int(e.n) and is_int(e.c)
    and opt_int(e.bu) and opt_int(e.lb) and opt_int(e.lk)
  if good then
    for _, s in ipairs(e.s) do
      if type(s) ~= 'table' or not is_int(s[1]) or not is_int(s[2]) then good = false end
    end
  end
  if not good then
    error('PORTCULLIS corrupt state (bad field) at ' .. key)
  end
  return e, true
end

-- The log window of a key, from its name.
local function log_window(key)
  if string.sub(key, -4) == ':req' then return REQ_WIN end
  if string.sub(key, -5) == ':acct' then return ACCT_WIN end
  return FAIL_WIN
end

-- Latest time at which the entry's state can still affect a decision.
local function relevant_until(key, e, now)
  local r = now
  local function at(t)
    if t > r then r = t end
  end
  local n = #e.l
  if n > 0 then at(sat_add(e.l[n], log_window(key))) end
  n = #e.v
  if n > 0 then at(sat_add(e.v[n], math.max(REQ_WIN, VMEM, BAN_LOOKBACK))) end
  if e.lb ~= nil then at(sat_add(e.lb, VMEM)) end
  if e.bu ~= nil then at(e.bu) end
  if e.lk ~= nil then at(e.lk) end
  for _, s in ipairs(e.s) do at(sat_add(s[2], SLOT_TTL)) end
  return r
end

-- Store the entry with a TTL covering everything that can still matter
-- (plus the slack); a banned key has none.
local function save(key, e, now)
  if e.c < now then e.c = now end
  local blob = cmsgpack.pack(e)
  if e.b == 1 then
    redis.call('SET', key, blob)
    return
  end
  local left = sub0(relevant_until(key, e, now), now)
  local ms = math.floor((left + 999) / 1000) + SLACK_MS
  if ms < 1 then ms = 1 end
  if ms > 4611686018427387 then ms = 4611686018427387 end
  redis.call('SET', key, blob, 'PX', string.format('%d', ms))
end

-- The key's clock: never behind what it has seen.
local function clock(now, e)
  if e.c > now then return e.c end
  return now
end

-- Jitter (core Jitter::extra): floor(d * j / 65536) for a jitter of d
-- microseconds and a fraction j, split so that every product stays below 2^53.
local function jitter_extra(d, j)
  local hi = (d - d % 65536) / 65536
  local lo = d % 65536
  local part = lo * j
  return hi * j + (part - part % 65536) / 65536
end

-- Rules 2-4 (core/src/block.rs): returns 0 none, 2 blocked (and until), 3 banned.
local function on_denial(e, now, extra)
  local newest = e.v[#e.v]
  if newest ~= nil and age(now, newest) < REQ_WIN then return 0 end
  e.v = push(e.v, now, VCAP)
  if BAN_AFTER > 0 and count(e.v, now, BAN_LOOKBACK) >= BAN_AFTER then
    e.b = 1
    return 3
  end
  local since = 0
  for _, t in ipairs(e.v) do
    if within(now, t, VMEM) and (e.lb == nil or t > e.lb) then since = since + 1 end
  end
  if since < BLOCK_AFTER then return 0 end
  local level = 0
  if e.lb ~= nil and within(now, e.lb, VMEM) then level = e.bl end
  local u = sat_add(now, sat_add(grown(BLOCK_FOR, GROWTH, level, MAX_BLOCK), extra))
  e.bu = u
  e.bl = math.min(level + 1, 255)
  e.lb = now
  return 2, u
end

-- Replies for request decisions: {0, remaining, reset_after} allow,
-- {1, retry_after} rate limited, {2, retry_after} blocked, {3, 0} banned.
local function standing(e, now)
  if e.b == 1 then return { 3, 0 } end
  if e.bu ~= nil and running(e.bu, now) then return { 2, until_(now, e.bu) } end
  return nil
end

local function lock_left(e, now)
  if e.lk ~= nil and running(e.lk, now) then return until_(now, e.lk) end
  return nil
end

-- Rule 7: take a slot on `e`; returns its id or 0.
local function acquire(e, now)
  local live = {}
  for _, s in ipairs(e.s) do
    if within(now, s[2], SLOT_TTL) then live[#live + 1] = s end
  end
  e.s = live
  if #live >= SLOTS then return 0 end
  local id = e.n
  e.n = id + 1
  live[#live + 1] = { id, now }
  return id
end

-- Remove one event equal to `t` (a reservation taken back), keeping order.
local function remove_one(log, t)
  for j, x in ipairs(log) do
    if x == t then
      table.remove(log, j)
      return log, true
    end
  end
  return log, false
end

-- Rule 5 check on a pair and its ip: nil when the login may proceed, else
-- the denial reply. Reserved, unsettled attempts count as failures.
local function login_denial(u, i, now)
  local ul, il = lock_left(u, now), lock_left(i, now)
  if ul ~= nil then return { 4, math.max(ul, il or 0) } end
  if il ~= nil then return { 5, il } end
  local function reset(e)
    local oldest = oldest_in(e.l, now, FAIL_WIN)
    if oldest == nil then return 0 end
    return left_in_window(now, oldest, FAIL_WIN)
  end
  if count(u.l, now, FAIL_WIN) >= MAX_FAIL then return { 4, reset(u) } end
  if ip_full(count(i.l, now, FAIL_WIN)) then return { 5, reset(i) } end
  return nil
end

-- Rules 6-7: the delay after `k` earlier failures, in a slot of `i`:
-- delay, refused (0/1), slot id or 0.
local function penalty(i, k, throttled, now)
  local d
  if throttled == 1 then d = P_MAX else d = grown(P_BASE, P_MULT, k, P_MAX) end
  local slot = acquire(i, now)
  local refused = 0
  if slot == 0 then
    if REFUSE == 1 then
      refused = 1
      d = 0
    else
      d = math.min(d, P_BASE)
    end
  end
  return d, refused, slot
end

local function flag_arg(n)
  local x = tonumber(ARGV[n])
  if x ~= 0 and x ~= 1 then return nil end
  return x
end

if op == 'req' then
  local k = KEYS[1]
  local e = load(k)
  local now = clock(NOW, e)
  local d = standing(e, now)
  if d then return d end
  e.l = prune(e.l, now, REQ_WIN)
  local used = count(e.l, now, REQ_WIN)
  if used < REQ_MAX then
    e.l = push(e.l, now, nil)
    local oldest = oldest_in(e.l, now, REQ_WIN) or now
    save(k, e, now)
    return { 0, sub0(sub0(REQ_MAX, used), 1), left_in_window(now, oldest, REQ_WIN) }
  end
  local oldest = oldest_in(e.l, now, REQ_WIN) or now
  local jd, jf = tonumber(ARGV[27] or '0'), tonumber(ARGV[28] or '0')
  if jd == nil or jf == nil or jd < 0 or jf < 0 or jf > 65535
    or jd ~= math.floor(jd) or jf ~= math.floor(jf) then
    return redis.error_reply('PORTCULLIS bad jitter')
  end
  if jd > MAXI then jd = MAXI end
  local esc, u = on_denial(e, now, jitter_extra(jd, jf))
  save(k, e, now)
  if esc == 3 then return { 3, 0 } end
  if esc == 2 then return { 2, until_(now, u) } end
  return { 1, left_in_window(now, oldest, REQ_WIN) }
elseif op == 'peek' then
  local e = load(KEYS[1])
  local now = clock(NOW, e)
  local d = standing(e, now)
  if d then return d end
  local used = count(e.l, now, REQ_WIN)
  local oldest = oldest_in(e.l, now, REQ_WIN)
  local reset = 0
  if oldest ~= nil then reset = left_in_window(now, oldest, REQ_WIN) end
  if used < REQ_MAX then return { 0, sub0(REQ_MAX, used), reset } end
  return { 1, reset }
elseif op == 'login' then
  -- Rule 5 check: {0, remaining, reset_after} | {4, retry} pair locked | {5, retry} ip locked.
  local u = load(KEYS[1])
  local i = load(KEYS[2])
  local now = clock(clock(NOW, u), i)
  local denied = login_denial(u, i, now)
  if denied then return denied end
  local fu, fi = count(u.l, now, FAIL_WIN), count(i.l, now, FAIL_WIN)
  -- The key nearer its lock limits (the pair on a tie; never an ip that
  -- does not lock).
  local ru = sub0(MAX_FAIL, fu)
  local ri = MAXI
  if IP_MAX > 0 then ri = sub0(IP_MAX, fi) end
  local limiting = i
  if ru <= ri then limiting = u end
  local oldest = oldest_in(limiting.l, now, FAIL_WIN)
  local reset = 0
  if oldest ~= nil then reset = left_in_window(now, oldest, FAIL_WIN) end
  return { 0, math.min(ru, ri), reset }
elseif op == 'acct' then
  -- Rule 8: count a failure for the account; 1 if its throttle was on.
  if ACCT_MAX == 0 then return 0 end
  local k = KEYS[1]
  local e = load(k)
  local now = clock(NOW, e)
  e.l = prune(e.l, now, ACCT_WIN)
  local throttled = 0
  if count(e.l, now, ACCT_WIN) >= ACCT_MAX then throttled = 1 end
  e.l = push(e.l, now, ACCT_MAX)
  save(k, e, now)
  return throttled
elseif op == 'fail' then
  -- Rules 5-7 for one failure: {delay, throttled, refused, locked, slot id or 0}.
  local throttled = tonumber(ARGV[27])
  if throttled ~= 0 and throttled ~= 1 then
    return redis.error_reply('PORTCULLIS bad argument 27')
  end
  local uk, ik = KEYS[1], KEYS[2]
  local u = load(uk)
  local i = load(ik)
  local now = clock(clock(NOW, u), i)
  local lock_until = sat_add(now, LOCK_FOR)
  u.l = prune(u.l, now, FAIL_WIN)
  local k = count(u.l, now, FAIL_WIN)
  u.l = push(u.l, now, nil)
  local user_locked = false
  if k + 1 >= MAX_FAIL then
    u.lk = lock_until
    u.l = {}
    user_locked = true
  end
  local locked = user_locked
  i.l = prune(i.l, now, FAIL_WIN)
  local before = count(i.l, now, FAIL_WIN)
  i.l = push(i.l, now, nil)
  if ip_full(before + 1) or (user_locked and LOCK_IP == 1) then
    i.lk = lock_until
    i.l = {}
    locked = true
  end
  local d, refused, slot = penalty(i, k, throttled, now)
  save(uk, u, now)
  save(ik, i, now)
  local lk = 0
  if locked then lk = 1 end
  return { d, throttled, refused, lk, slot }
elseif op == 'racct' then
  -- Rule 8 for a reserved attempt: {throttled, time counted at}.
  if ACCT_MAX == 0 then return { 0, NOW } end
  local k = KEYS[1]
  local e = load(k)
  local now = clock(NOW, e)
  e.l = prune(e.l, now, ACCT_WIN)
  local throttled = 0
  if count(e.l, now, ACCT_WIN) >= ACCT_MAX then throttled = 1 end
  e.l = push(e.l, now, ACCT_MAX)
  save(k, e, now)
  return { throttled, now }
elseif op == 'unacct' then
  -- Take back the account failure counted at ARGV[27]; 1 if it was there.
  local t = tonumber(ARGV[27])
  if t == nil or not is_int(t) then return redis.error_reply('PORTCULLIS bad argument 27') end
  local k = KEYS[1]
  local e, found = load(k)
  if not found then return 0 end
  local removed
  e.l, removed = remove_one(e.l, t)
  if not removed then return 0 end
  redis.call('SET', k, cmsgpack.pack(e), 'KEEPTTL')
  return 1
elseif op == 'begin' then
  -- Reserve an attempt (core begin_login_pair): the denial reply
  -- {4|5, retry}, or {0, delay, throttled, refused, slot id or 0, time}.
  local throttled = flag_arg(27)
  if throttled == nil then return redis.error_reply('PORTCULLIS bad argument 27') end
  local uk, ik = KEYS[1], KEYS[2]
  local u = load(uk)
  local i = load(ik)
  local now = clock(clock(NOW, u), i)
  local denied = login_denial(u, i, now)
  if denied then return denied end
  u.l = prune(u.l, now, FAIL_WIN)
  local k = count(u.l, now, FAIL_WIN)
  u.l = push(u.l, now, nil)
  i.l = prune(i.l, now, FAIL_WIN)
  i.l = push(i.l, now, nil)
  local d, refused, slot = penalty(i, k, throttled, now)
  save(uk, u, now)
  save(ik, i, now)
  return { 0, d, throttled, refused, slot, now }
elseif op == 'settle' then
  -- Settle the attempt reserved at ARGV[28]: ARGV[27] = 1 right password
  -- (delete the pair, take the failure back from the ip; 1 if the pair
  -- existed), 0 wrong (lock what reached max_failures; 1 if locked).
  local ok = flag_arg(27)
  local t = tonumber(ARGV[28])
  if ok == nil then return redis.error_reply('PORTCULLIS bad argument 27') end
  if t == nil or not is_int(t) then return redis.error_reply('PORTCULLIS bad argument 28') end
  local uk, ik = KEYS[1], KEYS[2]
  if ok == 1 then
    local n = redis.call('DEL', uk)
    local i, found = load(ik)
    if found then
      local removed
      i.l, removed = remove_one(i.l, t)
      if removed then redis.call('SET', ik, cmsgpack.pack(i), 'KEEPTTL') end
    end
    return n
  end
  local u, ufound = load(uk)
  local i, ifound = load(ik)
  local now = clock(clock(NOW, u), i)
  local lock_until = sat_add(now, LOCK_FOR)
  local user_locked = false
  if ufound and count(u.l, now, FAIL_WIN) >= MAX_FAIL then
    u.lk = lock_until
    u.l = {}
    user_locked = true
    save(uk, u, now)
  end
  local locked = user_locked
  if ifound and (ip_full(count(i.l, now, FAIL_WIN)) or (user_locked and LOCK_IP == 1)) then
    i.lk = lock_until
    i.l = {}
    locked = true
    save(ik, i, now)
  end
  if locked then return 1 end
  return 0
elseif op == 'acquire' then
  local k = KEYS[1]
  local e = load(k)
  local now = clock(NOW, e)
  local id = acquire(e, now)
  save(k, e, now)
  return id
elseif op == 'release' then
  local id = tonumber(ARGV[27])
  if id == nil or id < 1 then return redis.error_reply('PORTCULLIS bad argument 27') end
  local k = KEYS[1]
  local e, found = load(k)
  if not found then return 0 end
  for j, s in ipairs(e.s) do
    if s[1] == id then
      table.remove(e.s, j)
      redis.call('SET', k, cmsgpack.pack(e), 'KEEPTTL')
      return 1
    end
  end
  return 0
elseif op == 'ban' then
  local k = KEYS[1]
  local e = load(k)
  local now = clock(NOW, e)
  e.b = 1
  save(k, e, now)
  return 1
elseif op == 'lift' then
  -- Clear bans, blocks, violations, logs and locks of every key given
  -- (slots stay); returns how many held a ban, block or lock.
  local changed = 0
  for _, k in ipairs(KEYS) do
    local e, found = load(k)
    if found then
      local now = clock(NOW, e)
      if e.b == 1 or e.bu ~= nil or e.lk ~= nil then changed = changed + 1 end
      e.l = {}
      e.v = {}
      e.b = 0
      e.bu = nil
      e.bl = 0
      e.lb = nil
      e.lk = nil
      save(k, e, now)
    end
  end
  return changed
elseif op == 'merge' then
  -- Reconcile what the local fallback imposed on this key while Redis was
  -- away (host/src/fleet/reconcile.rs). Times in microseconds, 0 = none:
  --   26 banned (0/1)   27 block until   28 block level
  --   29 last block start                30 lock until
  --   31.. violation times, oldest first
  -- The longer of the two wins and nothing is shortened or lowered: a ban
  -- stays, block and lock ends only move later, the escalation kept is the
  -- one in force at `now` (core block.rs: a level counts while its last
  -- block is within violation_memory; a tie keeps the later start), and
  -- the violation logs are merged (newest VCAP kept). Returns 1 if the key
  -- changed, 0 if Redis already held at least as much.
  local banned = flag_arg(27)
  if banned == nil then return redis.error_reply('PORTCULLIS bad argument 27') end
  local m = {}
  for i = 28, 31 do
    local x = tonumber(ARGV[i])
    if x == nil or not is_int(x) then return redis.error_reply('PORTCULLIS bad argument ' .. i) end
    m[i] = x
  end
  local bu, bl, lb, lk = m[28], math.min(m[29], 255), m[30], m[31]
  local vs = {}
  for i = 32, #ARGV do
    local x = tonumber(ARGV[i])
    if x == nil or not is_int(x) then return redis.error_reply('PORTCULLIS bad argument ' .. i) end
    vs[#vs + 1] = x
  end
  local k = KEYS[1]
  local e = load(k)
  local now = clock(NOW, e)
  local changed = 0
  if banned == 1 and e.b ~= 1 then
    e.b = 1
    changed = 1
  end
  if bu > 0 and (e.bu == nil or bu > e.bu) then
    e.bu = bu
    changed = 1
  end
  if lk > 0 and (e.lk == nil or lk > e.lk) then
    e.lk = lk
    changed = 1
  end
  if lb > 0 then
    local function in_force(level, start)
      if start ~= nil and within(now, start, VMEM) then return level end
      return 0
    end
    local theirs, ours = in_force(e.bl, e.lb), in_force(bl, lb)
    if ours > theirs or (ours == theirs and (e.lb == nil or lb > e.lb)) then
      if e.bl ~= bl or e.lb ~= lb then changed = 1 end
      e.bl = bl
      e.lb = lb
    end
  end
  if #vs > 0 then
    local all, seen = {}, {}
    for _, t in ipairs(e.v) do
      if not seen[t] then seen[t] = true; all[#all + 1] = t end
    end
    local added = false
    for _, t in ipairs(vs) do
      if not seen[t] then seen[t] = true; all[#all + 1] = t; added = true end
    end
    if added then
      table.sort(all)
      local out = {}
      for i = math.max(1, #all - VCAP + 1), #all do out[#out + 1] = all[i] end
      e.v = out
      changed = 1
    end
  end
  save(k, e, now)
  return changed
elseif op == 'inspect' then
  -- {exists, banned, block left or -1, lock left or -1}
  local e, found = load(KEYS[1])
  if not found then return { 0, 0, -1, -1 } end
  local now = clock(NOW, e)
  local bl, ll = -1, -1
  if e.bu ~= nil and running(e.bu, now) then bl = until_(now, e.bu) end
  local l = lock_left(e, now)
  if l ~= nil then ll = l end
  return { 1, e.b, bl, ll }
end
return redis.error_reply('PORTCULLIS unknown op')
