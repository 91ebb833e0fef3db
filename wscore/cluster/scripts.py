"""The Lua scripts of the Redis layer: every fenced write is one script.

A script runs atomically in Redis, so a check and the write it guards cannot
be separated by another node's command: the epoch test of a session write, and
the INCR + XADD + PUBLISH of a room message, each happen in one step.

Conventions shared by the session scripts (``docs/scaling.md`` has the keys):

- ``KEYS`` = generation key, session meta hash, session log list, session rooms
  hash, session inbox list; ``ARGV[1]`` = the generation this node knows,
  ``ARGV[2]`` = the caller's epoch. The preamble refuses with ``WSDATALOST`` (generation key
  absent or different: Redis lost its data), ``WSMISSING`` (no meta hash: the
  session ended or expired) or ``WSFENCED`` (the epoch is not current) before
  anything is written.
- Times are Redis's own (``TIME``), so node clocks never decide a lease.
- Every successful write refreshes the session's TTL (``ttl`` arguments are
  milliseconds, ``PEXPIRE``) on all its keys.
- Room member sets and user session sets are written by key names built from
  the prefix inside the scripts (and ``push_user`` builds each session's keys
  the same way): the layout targets one Redis (with replicas), not Redis Cluster.
- The inbox (``…:in``) holds pushes (``send_to_session``/``send_to_user``)
  not yet in the numbered log; meta fields ``ilast`` (positions assigned,
  1, 2, 3 …), ``itaken`` (the last position appended to the log: the head of
  the list is always ``itaken + 1``), ``ibytes`` and ``ilost`` (1 once a push
  was refused for a full inbox: the session can no longer be resumed intact).
  Only ``append`` with an inbox position, fenced, removes an entry, so a push
  lands in the log exactly once.

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
    "INBOX",
    "JOIN_ROOM",
    "LEAVE_ROOM",
    "PUBLISH",
    "PUSH",
    "PUSH_USER",
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


# Every session script first checks the deployment's generation key
# (KEYS[1] == ARGV[1]): Redis restarted empty or flushed is WSDATALOST, never a gap.
_GENERATION = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('WSDATALOST the deployment generation is gone or changed')
end
"""

# The preamble of every fenced session script. After it: meta, now_ms, touch(ttl).
_FENCE = _GENERATION + """
local meta, log, rooms, inbox = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
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
  redis.call('PEXPIRE', KEYS[5], ttl)
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, session_id, node, lease_ms, ttl, has_user, user, data, prefix
CREATE = Script(
    "create",
    _HELPERS
    + _GENERATION
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('WSEXISTS the session already exists')
end
redis.call('HSET', KEYS[2], 'epoch', 1, 'owner', ARGV[3], 'lease', now_ms() + tonumber(ARGV[4]),
  'last', 0, 'acked', 0, 'dropped', 0, 'bytes', 0, 'inbound', 0, 'data', ARGV[8],
  'ilast', 0, 'itaken', 0, 'ibytes', 0, 'ilost', 0)
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, node, lease_ms, ttl, prefix
# Forced claim: always succeeds on an existing session and moves the epoch on,
# so the previous owner's next write is refused. Returns the previous owner and
# whether its lease was still running (the caller may then hand over cooperatively).
CLAIM = Script(
    "claim",
    _HELPERS
    + _GENERATION
    + """
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('WSMISSING no such session')
end
local now = now_ms()
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
local m = redis.call('HMGET', KEYS[2], 'owner', 'lease', 'last', 'acked', 'dropped', 'inbound',
  'user', 'data', 'itaken', 'ilost')
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
  has_user, user, m[8], redis.call('HGETALL', KEYS[4]), tonumber(m[9]) or 0, tonumber(m[10]) or 0}
""",
)

# KEYS: gen, meta, log, rooms, inbox.
# ARGV: gen, epoch, seq, wire, max_messages, max_bytes, ttl, room, room_seq, inbox_pos
# Appends frame seq (which must be last + 1), then drops the oldest frames while
# over either bound, remembering the highest unacknowledged seq dropped. With
# inbox_pos > 0 the frame is that push of the inbox (which must be the head:
# itaken + 1, else WSINBOX): it leaves the inbox in the same step.
APPEND = Script(
    "append",
    _HELPERS
    + _FENCE
    + """
local seq = tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'last', 'acked', 'dropped', 'bytes', 'ilast', 'itaken', 'ibytes')
local last, acked, dropped, bytes = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
if seq ~= last + 1 then
  return redis.error_reply('WSSEQ append of ' .. seq .. ' but the log is at ' .. last)
end
local ipos = tonumber(ARGV[10]) or 0
local itaken, ibytes = tonumber(m[6]) or 0, tonumber(m[7]) or 0
if ipos > 0 then
  if ipos ~= itaken + 1 or ipos > (tonumber(m[5]) or 0) then
    return redis.error_reply('WSINBOX append of push ' .. ipos .. ' but the inbox is at ' .. itaken)
  end
  itaken = ipos  -- the inbox holds positions itaken + 1 .. ilast: its head is this push
  ibytes = ibytes - #redis.call('LPOP', inbox)
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
if ipos > 0 then
  redis.call('HSET', meta, 'last', seq, 'bytes', bytes, 'dropped', dropped, 'itaken', itaken,
    'ibytes', ibytes)
else
  redis.call('HSET', meta, 'last', seq, 'bytes', bytes, 'dropped', dropped)
end
if ARGV[8] ~= '' and redis.call('HEXISTS', rooms, ARGV[8]) == 1 then
  redis.call('HSET', rooms, ARGV[8], ARGV[9])  -- only a member's cursor moves
end
touch(ARGV[7])
return {n, dropped, acked}
""",
)

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, seq, ttl
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, last_seq, ttl
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
if redis.call('HGET', meta, 'ilost') == '1' then
  return {0, 'pushes to the session were refused by its full inbox'}
end
ack_through(want)
touch(ARGV[4])
return {1, redis.call('LRANGE', log, 0, -1)}
""",
)

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, s, ttl -> 1 when s must run, 0 for a duplicate
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, data_json, ttl
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, room, room_cursor, ttl, prefix, session_id
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, room, ttl, prefix, session_id -> 1 if it was a member
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, lease_ms, ttl, prefix
# -> {pushes waiting in the inbox, 1 if a push was refused for a full inbox}
RENEW = Script(
    "renew",
    _HELPERS
    + _FENCE
    + """
redis.call('HSET', meta, 'lease', now_ms() + tonumber(ARGV[3]))
touch(ARGV[4])
local m = redis.call('HMGET', meta, 'user', 'ilast', 'itaken', 'ilost')
if m[1] then
  local ukey = ARGV[5] .. ':u:' .. m[1]
  if redis.call('PTTL', ukey) < tonumber(ARGV[4]) then redis.call('PEXPIRE', ukey, ARGV[4]) end
end
return {(tonumber(m[2]) or 0) - (tonumber(m[3]) or 0), tonumber(m[4]) or 0}
""",
)

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, ttl
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, prefix, session_id -> the rooms it left
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
redis.call('DEL', meta, log, rooms, inbox)
return left
""",
)

# One push into a session's inbox (a helper of PUSH and PUSH_USER), then the nudge to
# its owner: "<prefix>:n:<owner>" gets {"k":"inbox","sid","pos","b"} (or "lost": 1),
# so a live owner appends it at once; nobody owns it: it waits for the next claim.
# -> {position or 0 when refused for a full inbox, owner}, or nil: no such session.
# The inbox lives as long as the session (its TTL is the meta hash's); a push
# does not lengthen the session's life.
_PUSH_ONE = """
local function push_one(meta, inbox, sid, body, max_n, max_bytes, prefix)
  local m = redis.call('HMGET', meta, 'owner', 'ilast', 'itaken', 'ibytes', 'ilost')
  if not m[1] then return nil end
  local ilast, itaken, ibytes = tonumber(m[2]) or 0, tonumber(m[3]) or 0, tonumber(m[4]) or 0
  local lost = m[5] == '1'
  if not lost and (ilast - itaken >= max_n or ibytes + #body > max_bytes) then
    lost = true
    redis.call('HSET', meta, 'ilost', 1)
  end
  local pos, nudge = 0, nil
  if lost then
    nudge = cjson.encode({k = 'inbox', sid = sid, lost = 1})
  else
    pos = ilast + 1
    if redis.call('RPUSH', inbox, body) == 1 then
      -- a new list: it expires with the session (then every owner write refreshes both)
      local ttl = redis.call('PTTL', meta)
      if ttl > 0 then redis.call('PEXPIRE', inbox, ttl) end
    end
    redis.call('HSET', meta, 'ilast', pos, 'ibytes', ibytes + #body)
    nudge = cjson.encode({k = 'inbox', sid = sid, pos = pos, b = body})
  end
  if m[1] ~= '' then redis.call('PUBLISH', prefix .. ':n:' .. m[1], nudge) end
  return {pos, m[1]}
end
"""

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, body, max_messages, max_bytes, prefix, session_id
# -> {position (0: refused, the inbox was full), owner ('' if none)}; WSMISSING: no such session.
PUSH = Script(
    "push",
    _PUSH_ONE
    + _GENERATION
    + """
local r = push_one(KEYS[2], KEYS[5], ARGV[6], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
if not r then return redis.error_reply('WSMISSING no such session') end
return r
""",
)

# KEYS: gen, the user's session set. ARGV: gen, body, max_messages, max_bytes, prefix
# Every session of the user gets the push; ids whose session is gone leave the set.
# -> {session id, position, …} (position 0: refused, that session's inbox was full)
PUSH_USER = Script(
    "push_user",
    _PUSH_ONE
    + _GENERATION
    + """
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local base = ARGV[5] .. ':s:{' .. sid .. '}'
  local r = push_one(base .. ':m', base .. ':in', sid, ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
    ARGV[5])
  if r then
    out[#out + 1] = sid
    out[#out + 1] = r[1]
  else
    redis.call('SREM', KEYS[2], sid)
  end
end
return out
""",
)

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen (unfenced: it writes nothing)
# -> {itaken, ilost, the inbox's pushes oldest first (positions itaken + 1 …)}
INBOX = Script(
    "inbox",
    _GENERATION
    + """
local m = redis.call('HMGET', KEYS[2], 'owner', 'itaken', 'ilost')
if not m[1] then return redis.error_reply('WSMISSING no such session') end
return {tonumber(m[2]) or 0, tonumber(m[3]) or 0, redis.call('LRANGE', KEYS[5], 0, -1)}
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
    RENEW, RELEASE, END, PUSH, PUSH_USER, INBOX, PUBLISH, ROOM_SINCE,
)
