"""The Redis journal's Lua scripts: each runs as one atomic step on the Redis server.

``$received`` and ``$failed`` are replaced by the ``AlertState`` values. The key layout is
in ``core.store.redis.journal``.
"""

from __future__ import annotations

from string import Template

from core.store.states import AlertState


def _script(text: str) -> str:
    return Template(text).substitute(received=AlertState.RECEIVED, failed=AlertState.FAILED)


# ARGV: prefix, explicit id, body hash, arrival ms, dedup window ms, retention s, lane, then
# field/value pairs. Returns {alert id, duplicate (0/1), arrival number (0 for a duplicate)}.
ADMIT = _script("""
local p, explicit, bh, ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local window, retention, lane = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local id
if explicit ~= '' then
  if redis.call('EXISTS', p..':a:'..explicit) == 1 then
    redis.call('HINCRBY', p..':a:'..explicit, 'duplicates', 1)
    return {explicit, 1, 0}
  end
  id = explicit
else
  -- value "<alert_id> <arrival ms>": a resend is a duplicate within the window of arrival
  local seen = redis.call('GET', p..':b:'..bh)
  if seen then
    local sep = string.find(seen, ' ', 1, true)
    local existing, at = string.sub(seen, 1, sep - 1), tonumber(string.sub(seen, sep + 1))
    if tonumber(ms) - at <= window and redis.call('EXISTS', p..':a:'..existing) == 1 then
      redis.call('HINCRBY', p..':a:'..existing, 'duplicates', 1)
      return {existing, 1, 0}
    end
  end
  id = string.sub(bh, 1, 20)..'-'..ms
end
local seq = redis.call('INCR', p..':seq')
local key = p..':a:'..id
redis.call('HSET', key, 'alert_id', id, 'seq', seq, 'state', '$received', 'lane', lane, 'duplicates', 0,
           'explicit_id', explicit ~= '' and 1 or 0)
for i = 8, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', key, retention)
if explicit == '' and window > 0 then redis.call('SET', p..':b:'..bh, id..' '..ms, 'PX', window + 60000) end
redis.call('ZADD', p..':u', seq, id)
redis.call('ZADD', p..':l:'..lane, seq, id)
redis.call('ZADD', p..':recent', ms, id)
redis.call('ZREMRANGEBYRANK', p..':recent', 0, -100001)
redis.call('HINCRBY', p..':stats', '$received', 1)
return {id, 0, seq}
""")

# ARGV: prefix, alert id, state, finished (1: it no longer holds its lane), then field/value pairs.
SET_STATE = _script("""
local p, id, state, finished = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..':a:'..id
if redis.call('EXISTS', key) == 0 then return 0 end
local old = redis.call('HGET', key, 'state')
for i = 5, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', key, 'state', state)
if old ~= state then
  redis.call('HINCRBY', p..':stats', old, -1)
  redis.call('HINCRBY', p..':stats', state, 1)
end
if finished == '1' then
  redis.call('ZREM', p..':u', id)
  redis.call('ZREM', p..':l:'..redis.call('HGET', key, 'lane'), id)
end
return 1
""")

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
