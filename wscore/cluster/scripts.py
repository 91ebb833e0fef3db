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

The session log (``…:log``) holds the unacknowledged part of the session's
numbered stream as *entries* in seq order (docs/scaling.md "Run entries"):

- a **frame** (the numbered wire text, one seq), for the session's own frames
  (replies, pushes, ``sys.*``);
- a **run** ``~<q>:<c>:<n>:<epoch>:<room>``: seqs ``q … q+n-1`` are the
  room's messages after room seq ``c``, in room order, leaving out those that
  exclude this session (their sender), as the room stream holds them while the
  room's epoch is ``epoch`` (a reset numbering is not the same room). ``n`` is empty
  while the run is *open*: it is then the log's last entry, meta ``run`` names
  its room, and it extends to whatever the room publishes next. An open run is
  closed (``n`` written) by the session's next entry or by leaving that room.

Meta ``first`` is the first seq of the first entry (``last + 1`` when the log
is empty) and ``last`` the last seq stored exactly (an open run's first seq).
The bytes bound counts the entries' bytes, so a room message in a run costs
its run entry, not its size: the room stream holds it once.

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
-- The number of seqs a log entry covers: 1 for a frame, n for a closed run, nil for the open run.
local function entry_len(e)
  if string.byte(e, 1) ~= 126 then return 1 end
  return tonumber(string.match(e, '^~%d+:%d+:(%d*):'))
end
-- Close the open run (if any) at seq upto; the room's cursor in the rooms hash moves to
-- cursor (a member's only). Returns the change of the log's bytes.
local function close_run(upto, cursor)
  local room = redis.call('HGET', KEYS[2], 'run')
  if not room or room == '' then return 0 end
  local tail = redis.call('LINDEX', KEYS[3], -1)
  local q, c, rest = string.match(tail, '^~(%d+):(%d+)::(.*)$')
  local closed = '~' .. q .. ':' .. c .. ':' .. (upto - tonumber(q) + 1) .. ':' .. rest
  redis.call('LSET', KEYS[3], -1, closed)
  redis.call('HSET', KEYS[2], 'run', '', 'last', upto)
  if redis.call('HEXISTS', KEYS[4], room) == 1 then redis.call('HSET', KEYS[4], room, cursor) end
  return #closed - #tail
end
-- Release the entries wholly <= seq (cumulative ack, capped at last unless a run is open,
-- whose extent only the room stream knows); returns the new acked.
local function ack_through(seq)
  local m = redis.call('HMGET', KEYS[2], 'last', 'acked', 'bytes', 'first', 'run')
  local last, acked, bytes, first = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
  if (not m[5] or m[5] == '') and seq > last then seq = last end
  if seq <= acked then return acked end
  local k = 0
  if seq >= first then
    for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, seq - first)) do
      local len = entry_len(e)
      if len == nil or first + len - 1 > seq then break end
      first = first + len
      bytes = bytes - #e
      k = k + 1
    end
  end
  if k > 0 then redis.call('LTRIM', KEYS[3], k, -1) end
  redis.call('HSET', KEYS[2], 'acked', seq, 'bytes', bytes, 'first', first)
  return seq
end
"""

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, session_id, node, lease_ms, ttl, has_user, user, data,
# prefix, everyone room ('' for none). With a room the session is its member from here on, at the
# room's current seq, in the same step (no window in which a broadcast could miss it); its members
# set is not written (nobody lists everyone, and it would keep every expired session's id).
# -> the session's cursor for that room (0 without one)
CREATE = Script(
    "create",
    _HELPERS
    + _GENERATION
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('WSEXISTS the session already exists')
end
redis.call('HSET', KEYS[2], 'epoch', 1, 'owner', ARGV[3], 'lease', now_ms() + tonumber(ARGV[4]),
  'last', 0, 'first', 1, 'run', '', 'acked', 0, 'dropped', 0, 'bytes', 0, 'inbound', 0, 'data', ARGV[8],
  'ilast', 0, 'itaken', 0, 'ibytes', 0, 'ilost', 0)
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], 'user', ARGV[7])
  local ukey = ARGV[9] .. ':u:' .. ARGV[7]
  redis.call('SADD', ukey, ARGV[2])
  if redis.call('PTTL', ukey) < tonumber(ARGV[5]) then redis.call('PEXPIRE', ukey, ARGV[5]) end
end
local cursor = 0
if ARGV[10] ~= '' then
  cursor = tonumber(redis.call('HGET', ARGV[9] .. ':r:' .. ARGV[10] .. ':m', 'seq')) or 0
  redis.call('HSET', KEYS[4], ARGV[10], cursor)
end
touch(ARGV[5])
return cursor
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
# ARGV: gen, epoch, seq, wire, max_messages, max_bytes, ttl, inbox_pos, run_room, run_after,
#       close_cursor, prefix
# Appends an entry at seq: frame `wire`, or with run_room a new open run of that room
# after room seq run_after (whose cursor moves there). The seq must be last + 1, or past
# the open run (closed at seq - 1 first, its room's cursor moving to close_cursor). Then
# drops the oldest entries while over either bound (never the open run), remembering the
# highest unacknowledged seq dropped. With inbox_pos > 0 the frame is that push of the
# inbox (which must be the head: itaken + 1, else WSINBOX): it leaves the inbox in the
# same step.
APPEND = Script(
    "append",
    _HELPERS
    + _FENCE
    + """
local seq = tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'last', 'acked', 'dropped', 'bytes', 'ilast', 'itaken', 'ibytes',
  'run', 'first')
local last, acked, dropped, bytes = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
local open = m[8] and m[8] ~= ''
if (open and seq <= last) or (not open and seq ~= last + 1) then
  return redis.error_reply('WSSEQ append of ' .. seq .. ' but the log is at ' .. last)
end
local ipos = tonumber(ARGV[8]) or 0
local itaken, ibytes = tonumber(m[6]) or 0, tonumber(m[7]) or 0
if ipos > 0 then
  if ipos ~= itaken + 1 or ipos > (tonumber(m[5]) or 0) then
    return redis.error_reply('WSINBOX append of push ' .. ipos .. ' but the inbox is at ' .. itaken)
  end
  itaken = ipos  -- the inbox holds positions itaken + 1 .. ilast: its head is this push
  ibytes = ibytes - #redis.call('LPOP', inbox)
end
if open then bytes = bytes + close_run(seq - 1, ARGV[11]) end
local entry = ARGV[4]
local run = ARGV[9]
if run ~= '' then
  local room_epoch = redis.call('HGET', ARGV[12] .. ':r:' .. run .. ':m', 'epoch') or ''
  entry = '~' .. seq .. ':' .. ARGV[10] .. '::' .. room_epoch .. ':' .. run
end
local n = redis.call('RPUSH', log, entry)
bytes = bytes + #entry
local max_n, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local first = tonumber(m[9])
if n == 1 then first = seq end
while n > 0 and (n > max_n or bytes > max_bytes) and not (n == 1 and run ~= '') do
  local old = redis.call('LPOP', log)
  local len = entry_len(old)
  bytes = bytes - #old
  if first + len - 1 > acked then dropped = first + len - 1 end
  first = first + len
  n = n - 1
end
redis.call('HSET', meta, 'last', seq, 'first', first, 'bytes', bytes, 'dropped', dropped, 'run', run)
if ipos > 0 then redis.call('HSET', meta, 'itaken', itaken, 'ibytes', ibytes) end
if run ~= '' and redis.call('HEXISTS', rooms, run) == 1 then
  redis.call('HSET', rooms, run, ARGV[10])  -- only a member's cursor moves
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, last_seq, ttl, prefix, session_id
# The rules of wscore.protocol.session.OutgoingStream.replay_after, in the same order, on the
# stream the entries describe: runs are read from their room's stream (numbered as they were
# sent), an open run up to the room's head. A run the room stream no longer holds (trimmed,
# or the room's numbering reset) makes the resume impossible, never a gap.
# -> {1, frames after last_seq, open run's room or '', the room seq that run reached}
#    or {0, why not}
REPLAY = Script(
    "replay",
    _HELPERS
    + _FENCE
    + """
local want = tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'last', 'dropped', 'first', 'run', 'ilost')
local last, dropped, first = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
local open = m[4] and m[4] ~= ''
local function past(upto)
  return {0, 'client claims seq ' .. want .. ' but the stream is at ' .. upto}
end
if want < 0 or (want > last and not open) then return past(last) end
if want < dropped then
  return {0, 'frames up to ' .. dropped .. ' were dropped from a full buffer'}
end
if want + 1 < first then
  return {0, 'frames after ' .. want .. ' were acknowledged and released'}
end
if m[5] == '1' then
  return {0, 'pushes to the session were refused by its full inbox'}
end
local out, s, reached = {}, first, 0
local sid = ARGV[6]
for _, e in ipairs(redis.call('LRANGE', log, 0, -1)) do
  local len = entry_len(e)
  if string.byte(e, 1) ~= 126 then
    if s > want then out[#out + 1] = e end
    s = s + 1
  elseif len ~= nil and s + len - 1 <= want then
    s = s + len  -- a closed run the client has: its messages need not be read
  else
    local q, c, n, room_epoch, room = string.match(e, '^~(%d+):(%d+):(%d*):([^:]*):(.*)$')
    local need = tonumber(n)  -- nil: the open run, to the room's head
    if tonumber(q) ~= s then return {0, 'the log is inconsistent at seq ' .. s} end
    local base = ARGV[5] .. ':r:' .. room
    local rm = redis.call('HMGET', base .. ':m', 'seq', 'epoch')
    local head = tonumber(rm[1]) or 0
    local expect, stop = tonumber(c) + 1, s + (need or 0)
    if head < expect - 1 or rm[2] ~= room_epoch then
      return {0, 'room ' .. room .. ' numbering was reset'}
    end
    while (need == nil or s < stop) and expect <= head do
      local page = redis.call('XRANGE', base .. ':x', expect .. '-0', '+', 'COUNT', 500)
      if #page == 0 then break end
      for _, x in ipairs(page) do
        if tonumber(string.match(x[1], '^(%d+)')) ~= expect then break end
        local w = x[2][2]
        local cut = string.find(w, '\\n', 1, true)
        if string.sub(w, 1, cut - 1) ~= sid then
          if s > want then out[#out + 1] = string.sub(w, cut + 1) .. ',"s":' .. s .. '}' end
          s = s + 1
        end
        expect = expect + 1
        if need ~= nil and s >= stop then break end
      end
      if tonumber(string.match(page[#page][1], '^(%d+)')) ~= expect - 1 then break end
    end
    if (need ~= nil and s < stop) or (need == nil and (expect <= head or s == tonumber(q))) then
      return {0, 'messages of room ' .. room .. ' after ' .. (expect - 1) .. ' are no longer held'}
    end
    if need == nil then reached = expect - 1 end
  end
end
if want > s - 1 then return past(s - 1) end
ack_through(want)
touch(ARGV[4])
if open then return {1, out, m[4], reached} end
return {1, out, '', 0}
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

# KEYS: gen, meta, log, rooms, inbox. ARGV: gen, epoch, room, ttl, prefix, session_id, run_last
# -> 1 if it was a member. The session's open run of that room, if any, closes at run_last
# (its last message): what the room says next is not this session's.
LEAVE_ROOM = Script(
    "leave_room",
    _HELPERS
    + _FENCE
    + """
if redis.call('HGET', meta, 'run') == ARGV[3] then
  local q = tonumber(string.match(redis.call('LINDEX', log, -1), '^~(%d+):'))
  local upto = tonumber(ARGV[7])
  if upto < q then
    return redis.error_reply('WSSEQ run of ' .. ARGV[3] .. ' from ' .. q .. ' closed at ' .. upto)
  end
  redis.call('HINCRBY', meta, 'bytes', close_run(upto, 0))
end
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
