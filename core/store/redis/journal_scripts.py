"""The Redis journal's Lua scripts: each runs as one atomic step on the Redis server.

``$received`` and ``$failed`` are replaced by the ``AlertState`` values. The key layout is
in ``core.store.redis.journal``.
"""

from __future__ import annotations

from string import Template

from core.store.states import AlertState


def _script(text: str) -> str:
    return Template(text).substitute(received=AlertState.RECEIVED, failed=AlertState.FAILED)


# ARGV: prefix, explicit id, body hash, arrival ms, dedup window ms, retention s, lane, owner,
# replay key ('' none), replay expiry ms ('' for ever), then field/value pairs. Returns {alert
# id, 0 new / 1 duplicate / 2 replayed, arrival number (0 unless new), a duplicate's state and
# HTTP status, 1 when an earlier alert of the lane owned by another worker holds it}.
ADMIT = _script("""
local p, explicit, bh, ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local window, retention, lane, owner = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local rkey, rexpiry = ARGV[9], ARGV[10]
if rkey ~= '' and redis.call('EXISTS', p..':r:'..rkey) == 1 then return {'', 2, 0, '', '', 0} end
local function remember()
  if rkey == '' then return end
  if rexpiry == '' then redis.call('SET', p..':r:'..rkey, '1')
  else redis.call('SET', p..':r:'..rkey, '1', 'PXAT', rexpiry) end
end
local function duplicate(existing)
  local key = p..':a:'..existing
  redis.call('HINCRBY', key, 'duplicates', 1)
  remember()
  local seen = redis.call('HMGET', key, 'state', 'http_status')
  return {existing, 1, 0, seen[1] or '', seen[2] or '', 0}
end
local id
if explicit ~= '' then
  if redis.call('EXISTS', p..':a:'..explicit) == 1 then return duplicate(explicit) end
  id = explicit
else
  -- value "<alert_id> <arrival ms>": a resend is a duplicate within the window of arrival
  local seen = redis.call('GET', p..':b:'..bh)
  if seen then
    local sep = string.find(seen, ' ', 1, true)
    local existing, at = string.sub(seen, 1, sep - 1), tonumber(string.sub(seen, sep + 1))
    if tonumber(ms) - at <= window and redis.call('EXISTS', p..':a:'..existing) == 1 then
      return duplicate(existing)
    end
  end
  id = string.sub(bh, 1, 20)..'-'..ms
end
local seq = redis.call('INCR', p..':seq')
local key = p..':a:'..id
redis.call('HSET', key, 'alert_id', id, 'seq', seq, 'state', '$received', 'lane', lane, 'duplicates', 0,
           'explicit_id', explicit ~= '' and 1 or 0, unpack(ARGV, 11))
redis.call('EXPIRE', key, retention)
if explicit == '' and window > 0 then redis.call('SET', p..':b:'..bh, id..' '..ms, 'PX', window + 60000) end
local behind = 0
for _, other in ipairs(redis.call('ZRANGEBYSCORE', p..':l:'..lane, '-inf', '('..seq)) do
  if redis.call('HGET', p..':a:'..other, 'owner') ~= owner then behind = 1 break end
end
redis.call('ZADD', p..':u', seq, id)
redis.call('ZADD', p..':l:'..lane, seq, id)
redis.call('ZADD', p..':recent', ms, id)
redis.call('ZREMRANGEBYRANK', p..':recent', 0, -100001)
redis.call('HINCRBY', p..':stats', '$received', 1)
remember()
return {id, 0, seq, '', '', behind}
""")

# ARGV: prefix, key, expiry ms ('' for ever). 1 when the key was not remembered (it is now), else 0.
REMEMBER = """
local key = ARGV[1]..':r:'..ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
if ARGV[3] == '' then redis.call('SET', key, '1') else redis.call('SET', key, '1', 'PXAT', ARGV[3]) end
return 1
"""

# ARGV: prefix, lane, seq, owner ('' any). 1 when an alert before seq of another owner holds the lane.
EARLIER = """
local p, lane, owner = ARGV[1], ARGV[2], ARGV[4]
for _, other in ipairs(redis.call('ZRANGEBYSCORE', p..':l:'..lane, '-inf', '('..ARGV[3])) do
  if owner == '' or redis.call('HGET', p..':a:'..other, 'owner') ~= owner then return 1 end
end
return 0
"""

# Moves alert ``id`` to ``state`` with the field/value pairs ARGV[from..]; ``finished`` '1': it no
# longer holds its lane. 0 when the alert is unknown.
_SET_STATE_FUNCTION = """
local function set_state(p, id, state, finished, from)
  local key = p..':a:'..id
  local seen = redis.call('HMGET', key, 'state', 'lane')
  if not seen[1] and redis.call('EXISTS', key) == 0 then return 0 end
  local old = seen[1] or ''
  redis.call('HSET', key, 'state', state, unpack(ARGV, from))  -- the pairs never name 'state'
  if old ~= state then
    if old ~= '' then redis.call('HINCRBY', p..':stats', old, -1) end
    redis.call('HINCRBY', p..':stats', state, 1)
  end
  if finished == '1' then
    redis.call('ZREM', p..':u', id)
    redis.call('ZREM', p..':l:'..(seen[2] or ''), id)
  end
  return 1
end
"""

# ARGV: prefix, alert id, state, finished (1: it no longer holds its lane), then field/value pairs.
SET_STATE = (
    _SET_STATE_FUNCTION
    + """
return set_state(ARGV[1], ARGV[2], ARGV[3], ARGV[4], 5)
"""
)

# ARGV: prefix, alert id, retention s, state ('' to keep it), finished, number of attempts n,
# n attempts (JSON objects without their number, which is given here), then field/value pairs.
RECORD = (
    _SET_STATE_FUNCTION
    + """
local p, id, retention, state, finished, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('EXISTS', p..':a:'..id) == 0 then return 0 end
if n > 0 then
  local orders = p..':o:'..id
  for i = 7, 6 + n do
    local number = redis.call('HINCRBY', p..':a:'..id, 'attempts', 1)
    redis.call('HSET', orders, tostring(number), '{"attempt":'..number..','..string.sub(ARGV[i], 2))
  end
  redis.call('EXPIRE', orders, retention)
end
if state == '' then return 1 end
return set_state(p, id, state, finished, 7 + n)
"""
)

# ARGV: prefix, alert id, owner, now. A failed alert answered 5xx back to received: 1, else 0.
REOPEN = _script("""
local p, id, owner, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..':a:'..id
if redis.call('HGET', key, 'state') ~= '$failed' or (tonumber(redis.call('HGET', key, 'http_status')) or 0) < 500 then
  return 0
end
redis.call('HSET', key, 'state', '$received', 'owner', owner, 'updated_at', now, 'error_code', '', 'error_message', '',
           'http_status', '')
redis.call('HINCRBY', p..':stats', '$failed', -1)
redis.call('HINCRBY', p..':stats', '$received', 1)
local seq = redis.call('HGET', key, 'seq')
redis.call('ZADD', p..':u', seq, id)
redis.call('ZADD', p..':l:'..redis.call('HGET', key, 'lane'), seq, id)
return 1
""")

# ARGV: prefix, worker. The unfinished alerts (oldest 500) whose owner has no live heartbeat.
CLAIM = _script("""
local p, worker = ARGV[1], ARGV[2]
local claimed = {}
for _, id in ipairs(redis.call('ZRANGE', p..':u', 0, 499)) do
  local key = p..':a:'..id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', p..':u', id)
  else
    local owner = redis.call('HGET', key, 'owner')
    if (not owner) or owner == '' or redis.call('EXISTS', p..':w:'..owner) == 0 then
      redis.call('HSET', key, 'owner', worker)
      table.insert(claimed, id)
    end
  end
end
return claimed
""")
