/**
 * The client's protocol logic, sans I/O (SPEC §3 "Resume"): inputs in, actions out.
 *
 * `ClientSession` opens no socket, arms no timer and reads no clock: every input
 * carries `now` (seconds, any monotonic origin) and randomness comes from the
 * injected `random()`. The shell (client.ts) feeds it what happened and performs
 * the actions it queues (`drain()`); the conformance runner (test/) feeds it the
 * language-neutral scenarios the Python `ClientSession` passes too. Rules:
 *
 * - Outgoing frames are numbered s = 1, 2, … on `send`/`request` (also offline) and
 *   kept, bounded by count and UTF-8 bytes, until a server `sys.ack` covers them;
 *   written at once when open, else on the next `sys.connected` (all after a new
 *   session, those above the server's ack after a resume).
 * - Incoming numbered frames: duplicates (s ≤ delivered) are dropped, a gap aborts the
 *   link (the resume then replays what is missing), the rest is delivered in order.
 * - Acks are batched: `tick` sends `sys.ack` after `ackEveryFrames` frames or
 *   `ackDelay` s after the first unacknowledged one; a resume's `last_seq` acks implicitly.
 * - A resume refused (1006, or another session id) loses the session: pending
 *   requests fail, the buffer is dropped, numbering restarts at 1.
 * - Reconnect with full-jitter backoff; close codes 4000, 1009, 4003, 4004 and 4005
 *   (without a token provider) and HTTP 4xx (not 408/429) are terminal; 1012 reconnects at once.
 */
import { ConnectionClosed, SendBufferFull, SessionLost, UsageError, WsError } from "./errors.js";

export interface SessionOptions {
  maxUnackedFrames: number;
  /** Bytes of the UTF-8 wire text of the numbered frames kept. */
  maxUnackedBytes: number;
  ackEveryFrames: number;
  /** Seconds. */
  ackDelay: number;
  /** Seconds. */
  backoffBase: number;
  /** Seconds. */
  backoffCap: number;
  reconnect: boolean;
  maxReconnectAttempts: number | null;
  tokenProvider: boolean;
  tokenInQuery: boolean;
  /** The `client=` URL parameter (random per client instance); null: not sent. */
  clientTag: string | null;
}

export type Phase = "idle" | "connecting" | "open" | "waiting" | "closing" | "closed";
export type Outcome = "new" | "resumed" | "lost";
export type Frame = Record<string, unknown>;
export type RejectKind = "error" | "sessionLost" | "closed";

export type Action =
  | { action: "open"; query: Record<string, string> }
  | { action: "send"; frame: Frame; text: string }
  | { action: "deliver"; event: string; payload: unknown; s?: number }
  | { action: "resolve"; c: number | string; payload: unknown }
  | { action: "reject"; c: number | string; kind: RejectKind; code: number | null; message: string; details?: Record<string, unknown> }
  | { action: "opened"; outcome: Outcome; sessionId: string; lastSeq: number; heartbeat: number | null; expiresAt: number | null }
  | { action: "sessionLost"; code: number; message: string }
  | { action: "disconnected"; code: number | null; byPeer: boolean | null; reason: string }
  | { action: "reconnect"; delay: number }
  | { action: "abort"; reason: "gap" | "numberedBeforeConnected" | "secondConnected" | "badConnected" }
  | { action: "sendClose"; code: number; reason: string }
  | { action: "terminal"; kind: "closed" | "error"; code: number | null; message: string };

/** What survives a page reload (storage.ts keeps it in sessionStorage). */
export interface Persisted {
  sessionId: string | null;
  delivered: number;
  lastOutSeq: number;
  serverAcked: number;
  unacked: [number, string][];
  nextCid: number;
}

interface ServerError {
  code: number;
  message: string;
  details: Record<string, unknown>;
}

const TERMINAL_CLOSES = [4000, 1009, 4003, 4004];
const isInt = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x);

const utf8 = new TextEncoder();
/** Bytes of `s` encoded as UTF-8 (what the bound on kept frames counts). */
export const utf8Length = (s: string): number => utf8.encode(s).length;

/** Full jitter: a delay in [0, min(cap, base·2ⁿ)) for the attempt after n failures. */
export function backoffDelay(n: number, base: number, cap: number, random: number): number {
  return random * Math.min(cap, base * 2 ** Math.min(n, 64));
}

/**
 * When to refresh a token expiring at `expiresAt` (wall-clock seconds, like `now`):
 * `margin` s early, but never more than half of the remaining life; at once if expired.
 * Compute it once per expiry (re-deriving it later would keep halving the remainder).
 */
export function tokenRefreshAt(expiresAt: number, now: number, margin: number): number {
  const remaining = expiresAt - now;
  return remaining <= 0 ? now : expiresAt - Math.min(margin, remaining / 2);
}

export class ClientSession {
  phase: Phase = "idle";
  sessionId: string | null = null;
  private _delivered = 0;
  private _ackedToServer = 0;
  private _lastOutSeq = 0;
  private _serverAcked = 0;
  private _unackedBytes = 0;
  private _failures = 0;
  private _duplicates = 0;
  private _gaps = 0;
  private _unmatchedReplies = 0;
  attempts = 0;
  /** The `sessionId` of the open link's `sys.connected`; heartbeat and expiry it announced. */
  private _unacked: [number, string][] = [];
  private _written = 0; // highest s written on the current link
  private _ackStart: number | null = null;
  private _pending = new Set<number | string>();
  private _auth = new Set<number | string>(); // sys.auth requests: failed when their link ends
  private _nextCid = 1;
  private _preError: ServerError | null = null;
  private _out: Action[] = [];

  constructor(
    readonly options: SessionOptions,
    /** Returns a value in [0, 1): the jitter source. */
    private readonly _random: () => number,
    /** Wall clock in ms for the informational `t` field; none: frames carry no `t`. */
    private readonly _wallMs: (() => number) | null = null,
  ) {}

  /** The actions queued since the last call, in order. */
  drain(): Action[] {
    const out = this._out;
    this._out = [];
    return out;
  }

  get unackedFrames(): number {
    return this._unacked.length;
  }

  // -- inputs ----------------------------------------------------------------------------------
  /** The shell is about to open a connection attempt with `token`. */
  connect(token: string | null): void {
    if (this.phase === "closed") throw new UsageError("the client session is closed");
    this.phase = "connecting";
    this._preError = null;
    this._aborted = false;
    this.attempts++;
    const q: Record<string, string> = {};
    const o = this.options;
    if (o.tokenInQuery && token !== null) q.token = token;
    if (this.sessionId !== null) {
      q.session = this.sessionId;
      q.last_seq = String(this._delivered);
    }
    if (o.clientTag !== null) {
      q.client = o.clientTag;
      q.attempt = String(this.attempts);
    }
    this._emit({ action: "open", query: q });
  }

  /** A text frame arrived on the current link. */
  receive(text: string, now: number): void {
    let env: unknown;
    try {
      env = JSON.parse(text);
    } catch {
      return; // not JSON: the server broke the protocol; nothing to deliver
    }
    if (!env || typeof env !== "object" || Array.isArray(env)) return;
    const f = env as Frame;
    const e = f.e;
    if (typeof e !== "string" || !e || this.phase === "closed") return;
    const s = f.s;
    if (this._aborted) return; // the link is being dropped: nothing more is read from it
    if (s === undefined || s === null) return this._unnumbered(e, f.p, f.c as number | string | undefined | null);
    if (!isInt(s)) return;
    if (this.phase !== "open" && this.phase !== "closing") return this._emit({ action: "abort", reason: "numberedBeforeConnected" });
    if (s <= this._delivered) {
      this._duplicates++;
      return;
    }
    if (s > this._delivered + 1) {
      this._gaps++;
      return this._emit({ action: "abort", reason: "gap" });
    }
    this._delivered = s;
    if (this._ackStart === null) this._ackStart = now;
    const c = f.c as number | string | undefined | null;
    const hasC = c !== undefined && c !== null;
    if (e === "ack" && hasC) return this._settle(c, { action: "resolve", c, payload: f.p });
    if (e === "sys.error" && hasC) {
      const err = decodeError(f.p);
      return this._settle(c, { action: "reject", c, kind: "error", ...err });
    }
    this._emit({ action: "deliver", event: e, payload: f.p, s });
  }

  /** The connection (or attempt) ended: `code` from its close frame (null: none), or the upgrade was refused. */
  closed(code: number | null, reason = "", httpStatus: number | null = null): void {
    const phase = this.phase;
    if (phase === "closed" || phase === "idle" || phase === "waiting") return;
    const o = this.options;
    if (phase === "open" || phase === "closing") {
      this._emit({ action: "disconnected", code, byPeer: phase === "closing" ? false : code === null ? null : true, reason });
    }
    this._written = 0;
    if (phase === "closing") return this._terminate(null, this._closeCode, "closed by the client");
    const pre = this._preError;
    if (httpStatus !== null && httpStatus >= 400 && httpStatus < 500 && httpStatus !== 408 && httpStatus !== 429) {
      return this._terminate(null, null, `upgrade refused: HTTP ${httpStatus}`);
    }
    if (code !== null && (TERMINAL_CLOSES.includes(code) || (code === 4005 && !o.tokenProvider))) {
      return this._terminate(pre, code, reason || `closed by the server (${code})`);
    }
    if (!o.reconnect) return this._terminate(null, code, reason || "connection lost");
    // A sys.auth belongs to its link (a terminal end above rejects it with the end's error).
    for (const c of this._auth) this._settle(c, { action: "reject", c, kind: "closed", code, message: "the connection ended" });
    this._auth.clear();
    let delay: number;
    if (code === 1012) {
      this._failures = 0;
      delay = this._random() * Math.min(o.backoffBase, 1.0);
    } else {
      if (phase === "connecting") {
        this._failures++;
        const max = o.maxReconnectAttempts;
        if (max !== null && this._failures >= max) return this._terminate(null, null, `gave up after ${this._failures} failed attempt(s)`);
      }
      delay = backoffDelay(this._failures, o.backoffBase, o.backoffCap, this._random());
    }
    this.phase = "waiting";
    this._emit({ action: "reconnect", delay });
  }

  /** A timer fired or a batch of frames was read: send the acknowledgement if it is due. */
  tick(now: number): void {
    if (this.phase !== "open" || this._delivered <= this._ackedToServer) return;
    const start = this._ackStart;
    if (this._delivered - this._ackedToServer >= this.options.ackEveryFrames || (start !== null && now >= start + this.options.ackDelay)) {
      this._ackedToServer = this._delivered;
      this._ackStart = null;
      this._control({ e: "sys.ack", p: { s: this._delivered } });
    }
  }

  /** When `tick` has work next (the delayed ack); null: nothing pending. */
  nextDeadline(): number | null {
    return this.phase === "open" && this._delivered > this._ackedToServer && this._ackStart !== null ? this._ackStart + this.options.ackDelay : null;
  }

  /** User `send()`: number and keep the frame; throws SendBufferFull (nothing queued) when a bound would be exceeded. */
  send(event: string, payload: unknown): void {
    this._enqueue(event, payload, null);
  }

  /** User `request()`: like send with a new correlation id, which it returns. */
  request(event: string, payload: unknown): number {
    const c = this._nextCid;
    this._enqueue(event, payload, c);
    this._nextCid++;
    this._pending.add(c);
    return c;
  }

  /** Re-authenticate the open link: an unnumbered `sys.auth`; returns its correlation id (answered by resolve/reject). */
  authenticate(token: string): number {
    this._checkUsable();
    if (this.phase !== "open") throw new ConnectionClosed(null, "not connected: the next connection authenticates anew");
    const c = this._nextCid++;
    this._pending.add(c);
    this._auth.add(c);
    this._control({ e: "sys.auth", p: { token }, c });
    return c;
  }

  /** The user stopped waiting for request `c`: a later reply is unmatched. */
  abandon(c: number | string): void {
    this._pending.delete(c);
    this._auth.delete(c);
  }

  /** User `close()`: an open link gets a close frame; otherwise the client stops at once. */
  close(code = 1000, reason = ""): void {
    if (this.phase === "closed" || this.phase === "closing") return;
    this._closeCode = code;
    if (this.phase === "open") {
      this.phase = "closing";
      return this._emit({ action: "sendClose", code, reason });
    }
    this._terminate(null, code, reason || "closed by the client");
  }

  private _closeCode = 1000;

  // -- persistence (page reload) --------------------------------------------------------------
  persist(): Persisted {
    return {
      sessionId: this.sessionId,
      delivered: this._delivered,
      lastOutSeq: this._lastOutSeq,
      serverAcked: this._serverAcked,
      unacked: this._unacked.slice(),
      nextCid: this._nextCid,
    };
  }

  /** Adopt what a previous page of this tab left (before the first `connect`). */
  restore(p: Persisted): void {
    this.sessionId = p.sessionId;
    this._delivered = this._ackedToServer = p.delivered;
    this._lastOutSeq = p.lastOutSeq;
    this._serverAcked = p.serverAcked;
    this._unacked = p.unacked.slice();
    this._unackedBytes = this._unacked.reduce((n, [, w]) => n + utf8Length(w), 0);
    this._nextCid = p.nextCid;
  }

  snapshot(): Record<string, unknown> {
    return {
      phase: this.phase,
      sessionId: this.sessionId,
      delivered: this._delivered,
      ackedToServer: this._ackedToServer,
      lastOutSeq: this._lastOutSeq,
      serverAcked: this._serverAcked,
      unackedFrames: this._unacked.length,
      unackedBytes: this._unackedBytes,
      pending: [...this._pending].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      failures: this._failures,
      duplicates: this._duplicates,
      gaps: this._gaps,
      unmatchedReplies: this._unmatchedReplies,
    };
  }

  // -- internals -------------------------------------------------------------------------------
  private _aborted = false;

  private _emit(a: Action): void {
    if (a.action === "abort") this._aborted = true;
    this._out.push(a);
  }

  private _stamp(f: Frame): Frame {
    const frame: Frame = { v: "1.0", ...f };
    if (this._wallMs) frame.t = this._wallMs();
    return frame;
  }

  /** An unnumbered frame (never buffered): written now if a link is open. */
  private _control(f: Frame): void {
    const frame = this._stamp(f);
    this._emit({ action: "send", frame, text: JSON.stringify(frame) });
  }

  /** Throws what ended the client (after the end, or ConnectionClosed while closing). */
  private _checkUsable(): void {
    if (this._ended) throw this._ended;
    if (this.phase === "closing") throw new ConnectionClosed(this._closeCode, "the client is closing");
  }

  private _ended: Error | null = null;

  private _enqueue(event: string, payload: unknown, c: number | null): void {
    this._checkUsable();
    if (typeof event !== "string" || !event) throw new UsageError("event must be a non-empty string");
    if (event.startsWith("sys.")) throw new UsageError(`${event}: the sys.* namespace is reserved for the protocol`);
    const s = this._lastOutSeq + 1;
    const frame = this._stamp({ e: event, p: payload === undefined ? null : payload });
    if (c !== null) frame.c = c;
    frame.s = s;
    const text = JSON.stringify(frame); // throws TypeError on a cycle or a BigInt: nothing queued
    const size = utf8Length(text);
    const o = this.options;
    if (this._unacked.length >= o.maxUnackedFrames) {
      throw new SendBufferFull(`send buffer full: ${o.maxUnackedFrames} frames unacknowledged (maxUnackedFrames)`);
    }
    if (this._unackedBytes + size > o.maxUnackedBytes) {
      throw new SendBufferFull(`send buffer full: ${this._unackedBytes} + ${size} bytes > maxUnackedBytes`);
    }
    this._lastOutSeq = s;
    this._unacked.push([s, text]);
    this._unackedBytes += size;
    if (this.phase === "open") {
      this._written = s;
      this._emit({ action: "send", frame, text });
    }
  }

  private _writeFrom(after: number): void {
    for (const [s, text] of this._unacked) {
      if (s > after) this._emit({ action: "send", frame: JSON.parse(text) as Frame, text });
    }
    this._written = this._lastOutSeq;
  }

  private _settle(c: number | string, a: Action): void {
    if (!this._pending.delete(c)) {
      this._unmatchedReplies++;
      return;
    }
    this._auth.delete(c);
    this._emit(a);
  }

  private _unnumbered(e: string, p: unknown, c: number | string | undefined | null): void {
    if (e === "sys.connected") return this._connected(p);
    if (e === "sys.ack") {
      const s = (p as Frame | null)?.s;
      if (isInt(s)) this._onServerAck(s);
      return;
    }
    if (e === "sys.pong") return;
    if (e === "sys.error") {
      const err = decodeError(p);
      if (this.phase !== "open" && this.phase !== "closing") {
        this._preError = err; // 1003/1004 precede a terminal close; 1006 precedes sys.connected
        return;
      }
      if (err.code === 1005 || err.code === 1004) this._preError = err; // the close 4005/4004 follows
      if (c !== undefined && c !== null) return this._settle(c, { action: "reject", c, kind: "error", ...err });
    } else if (this.phase !== "open" && this.phase !== "closing") return;
    this._emit({ action: "deliver", event: e, payload: p });
  }

  private _onServerAck(seq: number): void {
    seq = Math.min(seq, this._lastOutSeq); // a confused server cannot make us forget frames it never saw
    if (seq <= this._serverAcked) return;
    this._serverAcked = seq;
    while (this._unacked.length && this._unacked[0]![0] <= seq) {
      this._unackedBytes -= utf8Length(this._unacked.shift()![1]);
    }
  }

  private _connected(p: unknown): void {
    if (this.phase === "open" || this.phase === "closing") return this._emit({ action: "abort", reason: "secondConnected" });
    if (this.phase !== "connecting") return;
    const o = (p && typeof p === "object" ? p : {}) as Frame;
    const id = o.sessionId;
    const lastSeq = o.lastSeq ?? 0;
    const hb = o.heartbeat ?? null;
    if (typeof id !== "string" || !id || !isInt(lastSeq) || (hb !== null && !(typeof hb === "number" && hb > 0))) {
      return this._emit({ action: "abort", reason: "badConnected" });
    }
    const exp = typeof o.expiresAt === "number" && Number.isFinite(o.expiresAt) ? o.expiresAt : null;
    const asked = this.sessionId;
    let outcome: Outcome;
    let resendAfter = 0;
    if (asked === null) outcome = "new";
    else if (o.resumed === true && id === asked) {
      outcome = "resumed";
      this._ackedToServer = this._delivered; // last_seq in the URL acknowledged it
      this._ackStart = null;
      resendAfter = this._serverAcked;
    } else {
      outcome = "lost";
      const pre = this._preError;
      const err = pre && pre.code === 1006 ? pre : new SessionLost();
      for (const c of this._pending) this._emit({ action: "reject", c, kind: "sessionLost", code: 1006, message: err.message });
      this._emit({ action: "sessionLost", code: 1006, message: err.message });
      this._pending.clear();
      this._auth.clear();
      this._unacked = [];
      this._unackedBytes = this._lastOutSeq = this._serverAcked = this._delivered = this._ackedToServer = 0;
      this._ackStart = null;
    }
    this.sessionId = id;
    this.phase = "open";
    this._failures = 0;
    this._preError = null;
    this._emit({ action: "opened", outcome, sessionId: id, lastSeq, heartbeat: hb as number | null, expiresAt: exp });
    this._writeFrom(resendAfter);
  }

  private _terminate(error: ServerError | null, code: number | null, message: string): void {
    this.phase = "closed";
    this._ended = error ? new WsError(error.code, error.message, error.details) : new ConnectionClosed(code, message);
    for (const c of this._pending) {
      this._emit(error ? { action: "reject", c, kind: "error", ...error } : { action: "reject", c, kind: "closed", code, message });
    }
    this._pending.clear();
    this._auth.clear();
    this._emit(error ? { action: "terminal", kind: "error", code: error.code, message: error.message } : { action: "terminal", kind: "closed", code, message });
  }
}

function decodeError(p: unknown): ServerError {
  const o = (p && typeof p === "object" ? p : {}) as Frame;
  const code = isInt(o.code) ? o.code : 1011;
  return {
    code,
    message: typeof o.message === "string" ? o.message : `error ${code}`,
    details: o.details && typeof o.details === "object" ? (o.details as Record<string, unknown>) : {},
  };
}
