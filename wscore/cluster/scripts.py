"""The Lua scripts of the Redis layer: every fenced write is one script.

A script runs atomically in Redis, so a check and the write it guards cannot
be separated by another node's command: the epoch test of a session write, and
the INCR + XADD + PUBLISH of a room message, each happen in one step.

Conventions shared by the session scripts (``docs/scaling.md`` has the keys):

- ``KEYS`` = generation key, session meta hash, session log list, session rooms
  hash; ``ARGV[1]`` = the generation this node knows, ``ARGV[2]`` = the
  caller's epoch. The preamble refuses with ``WSDATALOST`` (generation key
  absent or different: Redis lost its data), ``WSMISSING`` (no meta hash: the
  session ended or expired) or ``WSFENCED`` (the epoch is not current) before
  anything is written.
- Times are Redis's own (``TIME``), so node clocks never decide a lease.
- Every successful write refreshes the session's TTL (``ttl`` arguments are
  milliseconds, ``PEXPIRE``) on all its keys.
- Room member sets and user session sets are written by key names built from
  the prefix inside the scripts: the layout targets one Redis (with replicas),
  not Redis Cluster.

Errors are ``WS<NAME> message`` replies; :func:`refusal` splits them.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = [
    "ACK",
    "ACCEPT_INBOUND",
    "ALL_SCRIPTS",
    "APPEND",
    "CLAIM",
    "CREATE",
    "END",
    "JOIN_ROOM",
    "LEAVE_ROOM",
    "PUBLISH",
    "RELEASE",
    "RENEW",
    "REPLAY",
    "ROOM_SINCE",
    "SET_DATA",
    "Script",
    "refusal",
]


@attrs.frozen
class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by)."""

    name: str
    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


def refusal(message: str) -> tuple[str, str]:
    """Split a script's error reply ``"WSFENCED epoch 3 …"`` into ``("WSFENCED", "epoch 3 …")``."""
    code, _, rest = message.partition(" ")
    return code, rest


# The preamble of every fenced session script. After it: meta, now_ms, touch(ttl).
_FENCE = """
local meta, log, rooms = KEYS[2], KEYS[3], KEYS[4]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('WSDATALOST the deployment generation is gone or changed')
end
local current = redis.call('HGET', meta, 'epoch')
if not current then
  return redis.error_reply('WSMISSING no such session')
end
if tonumber(current) ~= tonumber(ARGV[2]) then
  return redis.error_reply('WSFENCED epoch ' .. ARGV[2] .. ' is not current (' .. current .. ')')
end
"""

_HELPERS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function touch(ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
-- Release frames <= seq (cumulative ack, capped at last); returns the new acked.
local function ack_through(seq)
  local m = redis.call('HMGET', KEYS[2], 'last', 'acked', 'bytes')
  local last, acked, bytes = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
  if seq > last then seq = last end
  if seq <= acked then return acked end
  local n = redis.call('LLEN', KEYS[3])
  local first = last - n + 1
  local k = math.min(seq - first + 1, n)
  if k > 0 then
    local gone = redis.call('LPOP', KEYS[3], k)
    for _, w in ipairs(gone) do bytes = bytes - #w end
  end
  redis.call('HSET', KEYS[2], 'acked', seq, 'bytes', bytes)
  return seq
end
"""

# KEYS: gen, meta, log, rooms. ARGV: gen, session_id, node, lease_ms, ttl, has_user, user, data, prefix
CREATE = Script(
    "create",
    _HELPERS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('WSDATALOST the deployment generation is gone or changed')
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('WSEXISTS the session already exists')
end
redis.call('HSET', KEYS[2], 'epoch', 1, 'owner', ARGV[3], 'lease', now_ms() + tonumber(ARGV[4]),
  'last', 0, 'acked', 0, 'dropped', 0, 'bytes', 0, 'inbound', 0, 'data', ARGV[8])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], 'user', ARGV[7])
  local ukey = ARGV[9] .. ':u:' .. ARGV[7]
  redis.call('SADD', ukey, ARGV[2])
  if redis.call('PTTL', ukey) < tonumber(ARGV[5]) then redis.call('PEXPIRE', ukey, ARGV[5]) end
end
touch(ARGV[5])
return 1
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, node, lease_ms, ttl, prefix
# Forced claim: always succeeds on an existing session and moves the epoch on,
# so the previous owner's next write is refused. Returns the previous owner and
# whether its lease was still running (the caller may then hand over cooperatively).
CLAIM = Script(
    "claim",
    _HELPERS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('WSDATALOST the deployment generation is gone or changed')
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('WSMISSING no such session')
end
local now = now_ms()
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
local m = redis.call('HMGET', KEYS[2], 'owner', 'lease', 'last', 'acked', 'dropped', 'inbound',
  'user', 'data')
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'lease', now + tonumber(ARGV[3]))
touch(ARGV[4])
local has_user = 0
local user = ''
if m[7] then
  has_user = 1
  user = m[7]
  local ukey = ARGV[5] .. ':u:' .. user
  if redis.call('PTTL', ukey) < tonumber(ARGV[4]) then redis.call('PEXPIRE', ukey, ARGV[4]) end
end
local lease_live = 0
if m[1] ~= '' and tonumber(m[2]) > now then lease_live = 1 end
return {epoch, m[1], lease_live, tonumber(m[3]), tonumber(m[4]), tonumber(m[5]), tonumber(m[6]),
  has_user, user, m[8], redis.call('HGETALL', KEYS[4])}
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, seq, wire, max_messages, max_bytes, ttl, room, room_seq
# Appends frame seq (which must be last + 1), then drops the oldest frames while
# over either bound, remembering the highest unacknowledged seq dropped.
APPEND = Script(
    "append",
    _HELPERS
    + _FENCE
    + """
local seq = tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'last', 'acked', 'dropped', 'bytes')
local last, acked, dropped, bytes = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
if seq ~= last + 1 then
  return redis.error_reply('WSSEQ append of ' .. seq .. ' but the log is at ' .. last)
end
local n = redis.call('RPUSH', log, ARGV[4])
bytes = bytes + #ARGV[4]
local max_n, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local first = seq - n + 1
while n > 0 and (n > max_n or bytes > max_bytes) do
  local old = redis.call('LPOP', log)
  bytes = bytes - #old
  if first > acked then dropped = first end
  first = first + 1
  n = n - 1
end
redis.call('HSET', meta, 'last', seq, 'bytes', bytes, 'dropped', dropped)
if ARGV[8] ~= '' and redis.call('HEXISTS', rooms, ARGV[8]) == 1 then
  redis.call('HSET', rooms, ARGV[8], ARGV[9])  -- only a member's cursor moves
end
touch(ARGV[7])
return {n, dropped, acked}
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, seq, ttl
ACK = Script(
    "ack",
    _HELPERS
    + _FENCE
    + """
local acked = ack_through(tonumber(ARGV[3]))
touch(ARGV[4])
return acked
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, last_seq, ttl
# The rules of wscore.protocol.session.OutgoingStream.replay_after, in the same order.
REPLAY = Script(
    "replay",
    _HELPERS
    + _FENCE
    + """
local want = tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'last', 'dropped')
local last, dropped = tonumber(m[1]), tonumber(m[2])
if want > last or want < 0 then
  return {0, 'client claims seq ' .. want .. ' but the stream is at ' .. last}
end
if want < dropped then
  return {0, 'frames up to ' .. dropped .. ' were dropped from a full buffer'}
end
local first = last - redis.call('LLEN', log) + 1
if want + 1 < first then
  return {0, 'frames after ' .. want .. ' were acknowledged and released'}
end
ack_through(want)
touch(ARGV[4])
return {1, redis.call('LRANGE', log, 0, -1)}
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, s, ttl -> 1 when s must run, 0 for a duplicate
ACCEPT_INBOUND = Script(
    "accept_inbound",
    _HELPERS
    + _FENCE
    + """
local s = tonumber(ARGV[3])
touch(ARGV[4])
if s <= tonumber(redis.call('HGET', meta, 'inbound')) then return 0 end
redis.call('HSET', meta, 'inbound', s)
return 1
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, data_json, ttl
SET_DATA = Script(
    "set_data",
    _HELPERS
    + _FENCE
    + """
redis.call('HSET', meta, 'data', ARGV[3])
touch(ARGV[4])
return 1
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, room, room_cursor, ttl, prefix, session_id
# -> 1 if newly joined, 0 if already a member (its cursor is kept)
JOIN_ROOM = Script(
    "join_room",
    _HELPERS
    + _FENCE
    + """
local added = redis.call('HSETNX', rooms, ARGV[3], ARGV[4])
redis.call('SADD', ARGV[6] .. ':r:' .. ARGV[3] .. ':members', ARGV[7])
touch(ARGV[5])
return added
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, room, ttl, prefix, session_id -> 1 if it was a member
LEAVE_ROOM = Script(
    "leave_room",
    _HELPERS
    + _FENCE
    + """
local removed = redis.call('HDEL', rooms, ARGV[3])
redis.call('SREM', ARGV[5] .. ':r:' .. ARGV[3] .. ':members', ARGV[6])
touch(ARGV[4])
return removed
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, lease_ms, ttl, prefix
RENEW = Script(
    "renew",
    _HELPERS
    + _FENCE
    + """
redis.call('HSET', meta, 'lease', now_ms() + tonumber(ARGV[3]))
touch(ARGV[4])
local user = redis.call('HGET', meta, 'user')
if user then
  local ukey = ARGV[5] .. ':u:' .. user
  if redis.call('PTTL', ukey) < tonumber(ARGV[4]) then redis.call('PEXPIRE', ukey, ARGV[4]) end
end
return 1
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, ttl
# Cooperative detach: the session stays (its TTL runs), nobody owns it.
RELEASE = Script(
    "release",
    _HELPERS
    + _FENCE
    + """
redis.call('HSET', meta, 'owner', '', 'lease', 0)
touch(ARGV[3])
return 1
""",
)

# KEYS: gen, meta, log, rooms. ARGV: gen, epoch, prefix, session_id -> the rooms it left
END = Script(
    "end",
    _HELPERS
    + _FENCE
    + """
local left = redis.call('HKEYS', rooms)
for _, room in ipairs(left) do
  redis.call('SREM', ARGV[3] .. ':r:' .. room .. ':members', ARGV[4])
end
local user = redis.call('HGET', meta, 'user')
if user then redis.call('SREM', ARGV[3] .. ':u:' .. user, ARGV[4]) end
redis.call('DEL', meta, log, rooms)
return left
""",
)

# KEYS: room meta hash, room stream. ARGV: channel, wire, maxlen, trim ('~' or '='), room_ttl
# One step: the room's next seq, the stream entry <seq>-0 and the PUBLISH of "seq:epoch:wire".
PUBLISH = Script(
    "publish",
    """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], ARGV[3], seq .. '-0', 'w', ARGV[2])
redis.call('PUBLISH', ARGV[1], seq .. ':' .. epoch .. ':' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {seq, epoch}
""",
)

# KEYS: room meta hash, room stream. ARGV: after, count
# -> {current seq, epoch, entries after `after` (at most count)}
ROOM_SINCE = Script(
    "room_since",
    """
local m = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
local seq = tonumber(m[1]) or 0
local epoch = m[2] or ''
local after = tonumber(ARGV[1])
local entries = {}
if seq > after then
  entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+', 'COUNT', ARGV[2])
end
return {seq, epoch, entries}
""",
)

ALL_SCRIPTS: tuple[Script, ...] = (
    CREATE, CLAIM, APPEND, ACK, REPLAY, ACCEPT_INBOUND, SET_DATA, JOIN_ROOM, LEAVE_ROOM,
    RENEW, RELEASE, END, PUBLISH, ROOM_SINCE,
)
