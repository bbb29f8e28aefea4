"""The Lua scripts of the Redis spool: each request to the spool is one of these, one
round trip whatever its batch size, atomic on the server.

Every key of the layout starts with one prefix carrying a hash tag (``{yc}:``), so all of
them live in one hash slot: a script may touch any of them on Redis Cluster too. KEYS[1]
is always ``<prefix>seq``; a script derives the others from it. The layout (docs/redis.md):

    seq            counter: the next entry's seq (append order, across collectors)
    e              hash x<seq> -> the entry's fields (cmsgpack array), b<seq> -> its body
    all            zset seq -> seq: every waiting entry (depth, pending, the oldest)
    q:<key>        list of seqs: one ordering key's entries, its head first
    h:<kind>       zset key -> head seq: heads that may be leased now, per kind
    kinds          set of the kinds that have a heads zset
    leased         zset key -> lease expiry; lo: hash key -> owner; own:<owner>: set of keys
    retry          zset key -> retry time (a released head)
    w:<key>        set of keys whose head waits (`after`) for <key>'s earlier entries
    seen           zset messageId -> when first received (the dedup window)
    d / dm / dn    zset seq -> order of dying / hash seq -> reason fields / counter
    dr             hash reason -> dead letters of that reason
    hx / hb        hash seq -> a held entry's fields / body; hv:<visitor>: list of seqs
    hs / ht        zset seq -> seq / zset seq -> received at (held entries' age)
    vis / vist     hash visitor -> contact / zset visitor -> when identified
    lk:<visitor>   a visitor's lock (SET NX PX)
    pause          hash reason, since: Yespo refused the key, delivery paused for all
    probe          the owner that has the turn to probe while paused (SET PX)

An entry's fields: {messageId, kind, key, eventType, receivedAt, eventTime|false,
after|false, attempts}.
"""

from __future__ import annotations

# Shared by every script: the prefix and the queue's moves.
_COMMON = r"""
local P = string.sub(KEYS[1], 1, -4)
local function num(x) return string.format('%.0f', x) end
local function meta(seq)
  local m = redis.call('HGET', P..'e', 'x'..seq)
  if m then return cmsgpack.unpack(m) end
  return nil
end
-- The key's head may be leased now (unless it is under a lease or waits for a retry).
local function make_head(key)
  if redis.call('ZSCORE', P..'leased', key) or redis.call('ZSCORE', P..'retry', key) then
    return
  end
  local h = redis.call('LINDEX', P..'q:'..key, 0)
  if h then
    local m = meta(h)
    redis.call('ZADD', P..'h:'..m[2], h, key)
    redis.call('SADD', P..'kinds', m[2])
  end
end
local function enqueue(seq, packed, body, key, kind)
  redis.call('HSET', P..'e', 'x'..seq, packed, 'b'..seq, body)
  redis.call('ZADD', P..'all', seq, seq)
  if redis.call('RPUSH', P..'q:'..key, seq) == 1 then
    -- a key with nothing waiting is neither leased nor waiting for a retry: its head now
    redis.call('ZADD', P..'h:'..kind, seq, key)
    redis.call('SADD', P..'kinds', kind)
  end
end
-- Many entries at once, seqs base+1...: the same as `enqueue` for each in turn, with one
-- HSET and one ZADD for all of them (in chunks: Lua's stack bounds unpack's arguments).
-- Each command a script runs costs about a microsecond of dispatch; a batch of 100 went
-- from five commands per entry to about one.
local CHUNK = 200
local function enqueue_all(base, entries)
  for from = 1, #entries, CHUNK do
    local fields, scores = {}, {}
    for i = from, math.min(from + CHUNK - 1, #entries) do
      local seq = tostring(base + i)
      local e = entries[i]
      fields[#fields + 1] = 'x'..seq
      fields[#fields + 1] = e[5]
      fields[#fields + 1] = 'b'..seq
      fields[#fields + 1] = e[6]
      scores[#scores + 1] = seq
      scores[#scores + 1] = seq
    end
    redis.call('HSET', P..'e', unpack(fields))
    redis.call('ZADD', P..'all', unpack(scores))
  end
  local heads = {}  -- kind -> {seq, key, ...}: keys that had nothing waiting
  for i, e in ipairs(entries) do
    local seq = tostring(base + i)
    if redis.call('RPUSH', P..'q:'..e[4], seq) == 1 then
      local h = heads[e[3]]
      if not h then h = {}; heads[e[3]] = h end
      h[#h + 1] = seq
      h[#h + 1] = e[4]
    end
  end
  for kind, h in pairs(heads) do
    for from = 1, #h, 2 * CHUNK do
      redis.call('ZADD', P..'h:'..kind, unpack(h, from, math.min(from + 2 * CHUNK - 1, #h)))
    end
    redis.call('SADD', P..'kinds', kind)
  end
end
-- A batch of entries as Python sent it: ARGV[at] packs {{messageId, client, kind, key}...}
-- and the arguments after it are each entry's fields (packed, receivedAt included) and
-- body (cmsgpack has no binary type: bytes travel as arguments of their own).
local function batch(at)
  local entries = cmsgpack.unpack(ARGV[at])
  for i, e in ipairs(entries) do
    e[5] = ARGV[at - 1 + 2 * i]
    e[6] = ARGV[at + 2 * i]
  end
  return entries
end
-- seqs for n entries, taken at once: the first is the result + 1.
local function seqs(n)
  local last = redis.call('INCRBY', KEYS[1], n)
  return last - n
end
local function unlease(key)
  redis.call('ZREM', P..'leased', key)
  local owner = redis.call('HGET', P..'lo', key)
  if owner then
    redis.call('HDEL', P..'lo', key)
    redis.call('SREM', P..'own:'..owner, key)
  end
end
-- Take seq out of the waiting queue (its fields stay); its key's next entry becomes
-- the head, and the keys that waited for this key's earlier entries are looked at again.
local function remove(seq)
  local m = meta(seq)
  if not m or not redis.call('ZSCORE', P..'all', seq) then return nil end
  local key = m[3]
  local q = P..'q:'..key
  local head = redis.call('LINDEX', q, 0)
  redis.call('LREM', q, 1, seq)
  redis.call('ZREM', P..'all', seq)
  if head == seq then
    redis.call('ZREM', P..'h:'..m[2], key)
    unlease(key)
    redis.call('ZREM', P..'retry', key)
    make_head(key)
    local w = P..'w:'..key
    local waiting = redis.call('SMEMBERS', w)
    if #waiting > 0 then
      redis.call('DEL', w)
      for _, k in ipairs(waiting) do make_head(k) end
    end
  end
  return m
end
-- Claims older than the window are pruned first (ZREMRANGEBYSCORE), so a claim still
-- there is a repeat: one ZADD NX decides and claims.
local function is_dup(mid, recv, cutoff)
  return redis.call('ZADD', P..'seen', 'NX', num(recv), mid) == 0
end
-- `is_dup` for a batch, in two commands: which messageIds the window has (ZMSCORE), then
-- one ZADD for the new ones. An id twice in the batch is a repeat the second time.
local function claim_all(entries, recv)
  local dups, ids, at = {}, {}, {}
  for i, e in ipairs(entries) do
    if e[2] then ids[#ids + 1] = e[1]; at[#ids] = i end
  end
  if #ids == 0 then return dups end
  local claimed, new = {}, {}
  for from = 1, #ids, CHUNK do
    local part = {}
    for j = from, math.min(from + CHUNK - 1, #ids) do part[#part + 1] = ids[j] end
    local scores = redis.call('ZMSCORE', P..'seen', unpack(part))
    for j, score in ipairs(scores) do
      local id, i = part[j], at[from + j - 1]
      if score or claimed[id] then
        dups[i] = true
      else
        claimed[id] = true
        new[#new + 1] = num(recv)
        new[#new + 1] = id
      end
    end
  end
  for from = 1, #new, 2 * CHUNK do
    redis.call('ZADD', P..'seen', unpack(new, from, math.min(from + 2 * CHUNK - 1, #new)))
  end
  return dups
end
local function rec(out, seq)
  local got = redis.call('HMGET', P..'e', 'x'..seq, 'b'..seq)
  out[#out + 1] = seq
  out[#out + 1] = got[1]
  out[#out + 1] = got[2]
end
local function rec_held(out, seq)
  out[#out + 1] = seq
  out[#out + 1] = redis.call('HGET', P..'hx', seq)
  out[#out + 1] = redis.call('HGET', P..'hb', seq)
end
local function opt(s) if s == '' then return false end return s end
local function optnum(s) if s == '' then return false end return tonumber(s) end
"""

# ARGV: receivedAt, window ms, limit, the batch (see `batch`). Returns {depth, stored 1/0
# ...} or FULL.
APPEND = (
    _COMMON
    + r"""
local recv, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local entries = batch(4)
local depth = redis.call('ZCARD', P..'all')
if depth + #entries > limit then
  return redis.error_reply('FULL spool holds '..depth..' events, its bound is '..limit)
end
local cutoff = recv - window
redis.call('ZREMRANGEBYSCORE', P..'seen', '-inf', '('..num(cutoff))
local out = {0}
local fresh = {}
local dups = claim_all(entries, recv)
for i, e in ipairs(entries) do
  out[i + 1] = dups[i] and 0 or 1
  if not dups[i] then fresh[#fresh + 1] = e end
end
enqueue_all(seqs(#fresh), fresh)
out[1] = depth + #fresh
return out
"""
)

# ARGV: now, limit, lease ms, kind|'', owner. Returns {seq, fields, body, ...}: nothing
# while delivery is paused, but to the owner that has the turn to probe.
LEASE = (
    _COMMON
    + r"""
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local expiry = num(now + tonumber(ARGV[3]))
local owner = ARGV[5]
if redis.call('EXISTS', P..'pause') == 1 and redis.call('GET', P..'probe') ~= owner then
  return {}
end
-- Leases that ran out (their collector died or is late) and retries that are due.
for _, set in ipairs({'leased', 'retry'}) do
  local due = redis.call('ZRANGEBYSCORE', P..set, '-inf', num(now))
  for _, k in ipairs(due) do
    if set == 'leased' then unlease(k) else redis.call('ZREM', P..set, k) end
    make_head(k)
  end
end
local kinds
if ARGV[4] ~= '' then kinds = {ARGV[4]} else kinds = redis.call('SMEMBERS', P..'kinds') end
local out = {}
local taken = 0
while taken < limit do
  local best, bestkind, bestseq = nil, nil, nil
  for _, kd in ipairs(kinds) do
    local top = redis.call('ZRANGE', P..'h:'..kd, 0, 0, 'WITHSCORES')
    if top[1] and (best == nil or tonumber(top[2]) < bestseq) then
      best, bestkind, bestseq = top[1], kd, tonumber(top[2])
    end
  end
  if not best then break end
  redis.call('ZREM', P..'h:'..bestkind, best)
  local seq = redis.call('LINDEX', P..'q:'..best, 0)
  local m = meta(seq)
  local blocked = false
  if m[7] then
    local h = redis.call('LINDEX', P..'q:'..m[7], 0)
    if h and tonumber(h) < tonumber(seq) then
      blocked = true
      redis.call('SADD', P..'w:'..m[7], best)  -- looked at again when m[7]'s head goes
    end
  end
  if not blocked then
    redis.call('ZADD', P..'leased', expiry, best)
    redis.call('HSET', P..'lo', best, owner)
    redis.call('SADD', P..'own:'..owner, best)
    rec(out, seq)
    taken = taken + 1
  end
end
return out
"""
)

# ARGV: owner. Returns how many of the owner's leases were ended.
RESET = (
    _COMMON
    + r"""
local owner = ARGV[1]
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', P..'own:'..owner)) do
  if redis.call('HGET', P..'lo', k) == owner then
    unlease(k)
    make_head(k)
    n = n + 1
  end
end
redis.call('DEL', P..'own:'..owner)
return n
"""
)

# ARGV: seqs. Returns the depth.
ACK = (
    _COMMON
    + r"""
for _, seq in ipairs(ARGV) do
  if remove(seq) then
    redis.call('HDEL', P..'e', 'x'..seq, 'b'..seq)
  end
end
return redis.call('ZCARD', P..'all')
"""
)

# ARGV: not before, seqs.
RELEASE = (
    _COMMON
    + r"""
for i = 2, #ARGV do
  local seq = ARGV[i]
  local m = meta(seq)
  if m and redis.call('ZSCORE', P..'all', seq) then
    m[8] = m[8] + 1
    redis.call('HSET', P..'e', 'x'..seq, cmsgpack.pack(m))
    if redis.call('LINDEX', P..'q:'..m[3], 0) == seq then
      unlease(m[3])
      redis.call('ZREM', P..'h:'..m[2], m[3])
      redis.call('ZADD', P..'retry', ARGV[1], m[3])
    end
  end
end
return 0
"""
)

# ARGV: now, reason, status|'', detail, seqs.
DEAD_LETTER = (
    _COMMON
    + r"""
for i = 5, #ARGV do
  local seq = ARGV[i]
  if remove(seq) then
    redis.call('ZADD', P..'d', redis.call('INCR', P..'dn'), seq)
    redis.call('HSET', P..'dm', seq,
               cmsgpack.pack({ARGV[2], optnum(ARGV[3]), ARGV[4], tonumber(ARGV[1])}))
    redis.call('HINCRBY', P..'dr', ARGV[2], 1)
  end
end
return 0
"""
)

# ARGV: limit. Returns {seq, fields, body, dead fields, ...}.
DEAD_LETTERS = (
    _COMMON
    + r"""
local out = {}
for _, seq in ipairs(redis.call('ZRANGE', P..'d', 0, tonumber(ARGV[1]) - 1)) do
  rec(out, seq)
  out[#out + 1] = redis.call('HGET', P..'dm', seq)
end
return out
"""
)

# ARGV: replay 1|0, now, reason|'', all 1|0, seqs. Returns how many.
REPLAY_OR_PURGE = (
    _COMMON
    + r"""
local replay, now, reason = ARGV[1] == '1', tonumber(ARGV[2]), ARGV[3]
local wanted = nil
if ARGV[4] == '0' then
  wanted = {}
  for i = 5, #ARGV do wanted[ARGV[i]] = true end
end
local n = 0
for _, seq in ipairs(redis.call('ZRANGE', P..'d', 0, -1)) do
  local d = cmsgpack.unpack(redis.call('HGET', P..'dm', seq))
  if (wanted == nil or wanted[seq]) and (reason == '' or d[1] == reason) then
    local m = meta(seq)
    local body = redis.call('HGET', P..'e', 'b'..seq)
    redis.call('ZREM', P..'d', seq)
    redis.call('HDEL', P..'dm', seq)
    redis.call('HDEL', P..'e', 'x'..seq, 'b'..seq)
    if redis.call('HINCRBY', P..'dr', d[1], -1) <= 0 then redis.call('HDEL', P..'dr', d[1]) end
    if replay then
      m[5] = now
      m[8] = 0
      enqueue(tostring(redis.call('INCR', KEYS[1])), cmsgpack.pack(m), body, m[3], m[2])
    end
    n = n + 1
  end
end
return n
"""
)

# ARGV: after seq, limit. Returns {seq, fields, body, ...}.
PENDING = (
    _COMMON
    + r"""
local out = {}
local seqs = redis.call('ZRANGEBYSCORE', P..'all', '('..ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
for _, seq in ipairs(seqs) do rec(out, seq) end
return out
"""
)

# ARGV: now. Returns {depth, in flight, dead, oldest fields|false, held}.
STATS = (
    _COMMON
    + r"""
local oldest = redis.call('ZRANGE', P..'all', 0, 0)
local first = false
if oldest[1] then first = redis.call('HGET', P..'e', 'x'..oldest[1]) end
return {redis.call('ZCARD', P..'all'), redis.call('ZCOUNT', P..'leased', '('..ARGV[1], '+inf'),
        redis.call('ZCARD', P..'d'), first, redis.call('HLEN', P..'hx')}
"""
)

_HELD = r"""
local function drop_held(seq)
  local m = cmsgpack.unpack(redis.call('HGET', P..'hx', seq))
  redis.call('LREM', P..'hv:'..m[3], 1, seq)
  redis.call('HDEL', P..'hx', seq)
  redis.call('HDEL', P..'hb', seq)
  redis.call('ZREM', P..'hs', seq)
  redis.call('ZREM', P..'ht', seq)
end
"""

# ARGV: receivedAt, window ms, per visitor, max held, the batch as APPEND's.
# Returns {dropped, stored 1/0 ...}.
HOLD = (
    _COMMON
    + _HELD
    + r"""
local recv, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local per_visitor, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local cutoff = recv - window
redis.call('ZREMRANGEBYSCORE', P..'seen', '-inf', '('..num(cutoff))
local out = {0}
local visitors = {}
for _, e in ipairs(batch(5)) do
  local key = e[4]
  if e[2] and is_dup(e[1], recv, cutoff) then
    out[#out + 1] = 0
  else
    local seq = tostring(redis.call('INCR', KEYS[1]))
    redis.call('HSET', P..'hx', seq, e[5])
    redis.call('HSET', P..'hb', seq, e[6])
    redis.call('RPUSH', P..'hv:'..key, seq)
    redis.call('ZADD', P..'hs', seq, seq)
    redis.call('ZADD', P..'ht', num(recv), seq)
    out[#out + 1] = 1
  end
  visitors[key] = true
end
local dropped = 0
for v, _ in pairs(visitors) do
  while redis.call('LLEN', P..'hv:'..v) > per_visitor do
    drop_held(redis.call('LINDEX', P..'hv:'..v, 0))
    dropped = dropped + 1
  end
end
while redis.call('HLEN', P..'hx') > most do
  drop_held(redis.call('ZRANGE', P..'hs', 0, 0)[1])
  dropped = dropped + 1
end
out[1] = dropped
return out
"""
)

# ARGV: visitor. Returns {seq, fields, body, ...}.
HELD = (
    _COMMON
    + r"""
local out = {}
for _, seq in ipairs(redis.call('LRANGE', P..'hv:'..ARGV[1], 0, -1)) do rec_held(out, seq) end
return out
"""
)

# ARGV: now, limit, visitor, contact, released seqs (packed), the batch as APPEND's (their
# client flag unused). Returns the depth, or FULL.
IDENTIFY = (
    _COMMON
    + _HELD
    + r"""
local now, limit, visitor = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local entries = batch(6)
local depth = redis.call('ZCARD', P..'all')
if depth + #entries > limit then
  return redis.error_reply('FULL spool holds '..depth..' events, its bound is '..limit)
end
redis.call('HSET', P..'vis', visitor, ARGV[4])
redis.call('ZADD', P..'vist', num(now), visitor)
for _, seq in ipairs(cmsgpack.unpack(ARGV[5])) do
  seq = tostring(seq)
  -- of this visitor or of another name the same person was known by
  if redis.call('HEXISTS', P..'hx', seq) == 1 then drop_held(seq) end
end
enqueue_all(seqs(#entries), entries)
return redis.call('ZCARD', P..'all')
"""
)

# ARGV: visitor. Returns {contact, identified at} or {}.
CONTACT_OF = (
    _COMMON
    + r"""
local c = redis.call('HGET', P..'vis', ARGV[1])
if not c then return {} end
return {c, redis.call('ZSCORE', P..'vist', ARGV[1])}
"""
)

# ARGV: held before, visitors before, most visitors remembered. Returns how many held
# entries were deleted.
EXPIRE_HELD = (
    _COMMON
    + _HELD
    + r"""
local old = redis.call('ZRANGEBYSCORE', P..'ht', '-inf', '('..ARGV[1])
for _, seq in ipairs(old) do drop_held(seq) end
local gone = redis.call('ZRANGEBYSCORE', P..'vist', '-inf', '('..ARGV[2])
local excess = redis.call('ZCARD', P..'vist') - #gone - tonumber(ARGV[3])
if excess > 0 then
  local oldest = redis.call('ZRANGE', P..'vist', #gone, #gone + excess - 1)
  for _, v in ipairs(oldest) do gone[#gone + 1] = v end
end
for _, v in ipairs(gone) do
  redis.call('HDEL', P..'vis', v)
  redis.call('ZREM', P..'vist', v)
end
return #old
"""
)

# ARGV: most, rate per s, burst, unused. A token bucket on the server's clock (TIME), so
# that collectors' clocks do not matter. Returns {taken, ms until a token if none}.
TOKENS = (
    _COMMON
    + r"""
local most, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local got = redis.call('HMGET', P..'rate', 'tokens', 'at')
local tokens = tonumber(got[1]) or burst
local at = tonumber(got[2]) or now
tokens = math.min(burst, tokens + tonumber(ARGV[4]) + math.max(0, now - at) * rate / 1000)
local taken = math.min(most, math.floor(tokens))
tokens = tokens - taken
redis.call('HSET', P..'rate', 'tokens', string.format('%.6f', tokens), 'at', string.format('%.3f', now))
redis.call('PEXPIRE', P..'rate', 600000)
local wait = 0
if taken == 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {taken, wait}
"""
)

# ARGV: 'pause'|'look'|'resume', owner, turn ms, reason, since. 'pause' starts the pause
# unless one is on; while paused, a turn ms > 0 takes the turn to probe if nobody has it
# (or keeps the owner's) for that long. Returns {} when not paused, else {reason, since,
# 1|0: the owner has the turn}; 'resume' ends the pause and the turn.
PAUSE = (
    _COMMON
    + r"""
local op, owner, turn = ARGV[1], ARGV[2], tonumber(ARGV[3])
if op == 'resume' then
  redis.call('DEL', P..'pause', P..'probe')
  return {}
end
if op == 'pause' and redis.call('EXISTS', P..'pause') == 0 then
  redis.call('HSET', P..'pause', 'reason', ARGV[4], 'since', ARGV[5])
end
local got = redis.call('HMGET', P..'pause', 'reason', 'since')
if not got[1] then return {} end
local holder = redis.call('GET', P..'probe')
local mine = holder == owner
if turn > 0 and (mine or not holder) then
  redis.call('SET', P..'probe', owner, 'PX', turn)
  mine = true
end
return {got[1], got[2], mine and 1 or 0}
"""
)

# ARGV: now, then per cart: key, 1 (save) or 0 (forget), the cart.
SAVE_CARTS = (
    _COMMON
    + r"""
for i = 2, #ARGV, 3 do
  if ARGV[i + 1] == '1' then
    redis.call('HSET', P..'ct', ARGV[i], ARGV[i + 2])
    redis.call('ZADD', P..'cz', ARGV[1], ARGV[i])
  else
    redis.call('HDEL', P..'ct', ARGV[i])
    redis.call('ZREM', P..'cz', ARGV[i])
  end
end
return 0
"""
)

# ARGV: saved before, most carts. Returns how many were forgotten.
EXPIRE_CARTS = (
    _COMMON
    + r"""
local gone = redis.call('ZRANGEBYSCORE', P..'cz', '-inf', '('..ARGV[1])
local excess = redis.call('ZCARD', P..'cz') - #gone - tonumber(ARGV[2])
if excess > 0 then
  for _, k in ipairs(redis.call('ZRANGE', P..'cz', #gone, #gone + excess - 1)) do
    gone[#gone + 1] = k
  end
end
for _, k in ipairs(gone) do
  redis.call('HDEL', P..'ct', k)
  redis.call('ZREM', P..'cz', k)
end
return #gone
"""
)

# Rejected calls: rz (zset seq -> seq), rj (hash x<seq> -> {source, reason, detail,
# messageId|false, at}, b<seq> -> body), rr (hash reason -> count).
_REJECTED = r"""
local function drop_rejected(seq, reason)
  redis.call('ZREM', P..'rz', seq)
  redis.call('HDEL', P..'rj', 'x'..seq, 'b'..seq)
  if redis.call('HINCRBY', P..'rr', reason, -1) <= 0 then redis.call('HDEL', P..'rr', reason) end
end
local function each_rejected(reason, fn)
  for _, seq in ipairs(redis.call('ZRANGE', P..'rz', 0, -1)) do
    local got = redis.call('HMGET', P..'rj', 'x'..seq, 'b'..seq)
    local r = cmsgpack.unpack(got[1])
    if reason == '' or r[2] == reason then
      if fn(seq, r, got) then return end
    end
  end
end
"""

# ARGV: keep, the calls' fields (packed), then each call's body.
KEEP_REJECTED = (
    _COMMON
    + _REJECTED
    + r"""
for i, r in ipairs(cmsgpack.unpack(ARGV[2])) do
  local seq = tostring(redis.call('INCR', P..'rseq'))
  redis.call('HSET', P..'rj', 'x'..seq, cmsgpack.pack(r), 'b'..seq, ARGV[2 + i])
  redis.call('ZADD', P..'rz', seq, seq)
  redis.call('HINCRBY', P..'rr', r[2], 1)
end
local excess = redis.call('ZCARD', P..'rz') - tonumber(ARGV[1])
if excess > 0 then
  for _, seq in ipairs(redis.call('ZRANGE', P..'rz', 0, excess - 1)) do
    drop_rejected(seq, cmsgpack.unpack(redis.call('HGET', P..'rj', 'x'..seq))[2])
  end
end
return 0
"""
)

# ARGV: limit, reason|''. Returns {seq, fields, body, ...}, oldest first.
REJECTED = (
    _COMMON
    + _REJECTED
    + r"""
local out, limit = {}, tonumber(ARGV[1])
if limit <= 0 then return out end
each_rejected(ARGV[2], function(seq, _, got)
  out[#out + 1] = seq
  out[#out + 1] = got[1]
  out[#out + 1] = got[2]
  return #out >= 3 * limit
end)
return out
"""
)

# ARGV: reason|''. Returns how many were deleted.
PURGE_REJECTED = (
    _COMMON
    + _REJECTED
    + r"""
local n = 0
each_rejected(ARGV[1], function(seq, r)
  drop_rejected(seq, r[2])
  n = n + 1
  return false
end)
return n
"""
)

# KEYS[1]: the lock; ARGV: the holder's token. Deletes the lock only if still its own.
UNLOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
