/**
 * `WsClient`: the browser shell around the pure `ClientSession` (SPEC §9).
 *
 * It owns the WebSocket (link.ts), the wall-clock alarms (timers.ts), the request
 * promises (push.ts), the tab's stored session (storage.ts) and the page-lifecycle
 * events; every protocol decision is the session core's (session.ts). Callbacks run
 * synchronously in arrival order; one that throws is reported and the client carries on.
 */
import { ConnectionClosed, RequestTimeout, SessionLost, WsError } from "./errors.js";
import { Liveness } from "./liveness.js";
import { Link } from "./link.js";
import { Pushes } from "./push.js";
import { type Action, ClientSession, backoffDelay, tokenRefreshAt } from "./session.js";
import { TabStore, randomId } from "./storage.js";
import { Alarm, wallNow } from "./timers.js";

/** Milliseconds everywhere, as is usual in JavaScript. */
export interface WsClientOptions {
  token?: string | null;
  /** Returns a fresh token; called for every connection attempt (except a first one when `token` is given) and before expiry. */
  tokenProvider?: (() => string | Promise<string>) | null;
  requestTimeout?: number;
  connectTimeout?: number;
  openTimeout?: number;
  closeTimeout?: number;
  backoffBase?: number;
  backoffCap?: number;
  reconnect?: boolean;
  maxReconnectAttempts?: number | null;
  maxUnackedFrames?: number;
  maxUnackedBytes?: number;
  ackEveryFrames?: number;
  ackDelay?: number;
  /** Silence before a `sys.ping` probe (default: the server's heartbeat). */
  probeAfter?: number | null;
  /** Silence after which the link is dropped (default: max(2h, h + 1 s)). */
  deadLinkTimeout?: number | null;
  tokenRefreshMargin?: number;
  tokenRefreshTimeout?: number;
  /** Keep the session in sessionStorage so a reload resumes it: true (default), false, or the storage key. */
  persist?: boolean | string;
}

export interface SessionInfo {
  sessionId: string;
  resumed: boolean;
  /** The last `s` the server had sent in this session. */
  lastSeq: number;
  /** Numbered frames the server replays after this resume (sent while we were away). */
  missed: number;
  heartbeat: number;
  expiresAt: number | null;
}

export interface Disconnect {
  code: number | null;
  reason: string;
  /** true: the server closed; false: we did; null: the network failed. */
  byPeer: boolean | null;
}

export interface Meta {
  event: string;
  /** The frame's number in the session's stream (undefined for unnumbered frames). */
  s: number | undefined;
  /** True when the frame came from a resume's replay: it was sent while this client was away. */
  replayed: boolean;
}

export type Listener = (payload: any, meta: Meta) => void;
type Hook<T> = (arg: T) => void;
type Wait = { resolve: (i: SessionInfo) => void; reject: (e: Error) => void };

const DEFAULTS = {
  requestTimeout: 30000,
  connectTimeout: 30000,
  openTimeout: 10000,
  closeTimeout: 2000,
  backoffBase: 250,
  backoffCap: 15000,
  reconnect: true,
  maxReconnectAttempts: null as number | null,
  maxUnackedFrames: 1000,
  maxUnackedBytes: 1 << 20,
  ackEveryFrames: 64,
  ackDelay: 200,
  probeAfter: null as number | null,
  deadLinkTimeout: null as number | null,
  tokenRefreshMargin: 30000,
  tokenRefreshTimeout: 10000,
};

/** Close code of a page that goes into the back/forward cache: detaches the session (SPEC §7), unlike 1000. */
const CLOSE_PAGEHIDE = 3001;

/** A token from the provider; throws for anything that is not a non-empty string. */
const fresh = async (provider: () => string | Promise<string>): Promise<string> => {
  const token = await provider();
  if (typeof token !== "string" || !token) throw new TypeError("tokenProvider returned no token");
  return token;
};

const report = (e: unknown): void => {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (g.reportError) g.reportError(e);
  else console.error(e);
};

export class WsClient {
  readonly url: string;
  private _cfg: typeof DEFAULTS;
  private _core: ClientSession;
  private _link: Link | null = null;
  private _live: Liveness | null = null;
  private _alarm = new Alarm(() => this._wake(false));
  private _retry = new Alarm(() => void this._attempt());
  private _openBy = 0;
  private _pushes = new Pushes();
  private _store: TabStore | null;
  private _listeners = new Map<string, Set<Listener>>();
  private _hooks = {
    connect: new Set<Hook<SessionInfo>>(),
    resume: new Set<Hook<SessionInfo>>(),
    disconnect: new Set<Hook<Disconnect>>(),
    sessionLost: new Set<Hook<WsError>>(),
  };
  private _info: SessionInfo | null = null;
  private _replayTo = 0;
  private _started = false;
  private _suspended = false;
  private _waiters: Wait[] = [];
  private _closers: (() => void)[] = [];
  private _error: Error | null = null;
  private _token: string | null;
  private _provider: (() => string | Promise<string>) | null;
  private _refreshAt: number | null = null;
  private _refreshing = false;
  private _refreshFailures = 0;
  private _unlisten: (() => void) | null = null;

  constructor(url: string, options: WsClientOptions = {}) {
    const u = new URL(url, typeof location === "undefined" ? undefined : location.href);
    if (u.protocol === "http:" || u.protocol === "https:") u.protocol = u.protocol === "http:" ? "ws:" : "wss:";
    if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a WebSocket URL: ${url}`);
    this.url = u.href;
    const { token = null, tokenProvider = null, persist = true, ...rest } = options;
    if (tokenProvider !== null && typeof tokenProvider !== "function") throw new TypeError("tokenProvider must be a function");
    this._token = token;
    this._provider = tokenProvider;
    const cfg = (this._cfg = { ...DEFAULTS });
    for (const [k, v] of Object.entries(rest)) if (v !== undefined && k in DEFAULTS) (cfg as Record<string, unknown>)[k] = v;
    this._core = new ClientSession(
      {
        maxUnackedFrames: cfg.maxUnackedFrames,
        maxUnackedBytes: cfg.maxUnackedBytes,
        ackEveryFrames: cfg.ackEveryFrames,
        ackDelay: cfg.ackDelay / 1000,
        backoffBase: cfg.backoffBase / 1000,
        backoffCap: cfg.backoffCap / 1000,
        reconnect: cfg.reconnect,
        maxReconnectAttempts: cfg.maxReconnectAttempts,
        tokenProvider: tokenProvider !== null,
        tokenInQuery: true, // a browser WebSocket cannot set Authorization
        clientTag: randomId(),
      },
      Math.random,
      Date.now,
    );
    this._store = persist === false ? null : new TabStore(typeof persist === "string" ? persist : `wscore:${this.url}`);
  }

  /** The current session's id (a secret: never log or share it); null before the first. */
  get sessionId(): string | null {
    return this._core.sessionId;
  }

  get connected(): boolean {
    return this._core.phase === "open";
  }

  get closed(): boolean {
    return this._core.phase === "closed";
  }

  /** Frames sent but not yet acknowledged by the server (they are re-sent after a resume). */
  get unacked(): number {
    return this._core.unackedFrames;
  }

  // -- registration ----------------------------------------------------------------------------
  /** Call `cb(payload, meta)` for every `event` the server sends; returns a function that removes it. */
  on(event: string, cb: Listener): () => void {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(cb);
    return () => this.off(event, cb);
  }

  /** Remove `cb` from `event` (all of the event's callbacks when `cb` is omitted). */
  off(event: string, cb?: Listener): void {
    if (cb) this._listeners.get(event)?.delete(cb);
    else this._listeners.delete(event);
  }

  /** After every `sys.connected` (new or resumed session). */
  onConnect(fn: Hook<SessionInfo>): () => void {
    return this._hook("connect", fn);
  }

  /** After `onConnect` when a reconnect resumed the session. */
  onResume(fn: Hook<SessionInfo>): () => void {
    return this._hook("resume", fn);
  }

  /** Whenever an open link ends. */
  onDisconnect(fn: Hook<Disconnect>): () => void {
    return this._hook("disconnect", fn);
  }

  /** The server could not resume the session (1006): pending requests failed, unacknowledged sends were dropped; `onConnect` follows. */
  onSessionLost(fn: Hook<WsError>): () => void {
    return this._hook("sessionLost", fn);
  }

  private _hook<K extends keyof WsClient["_hooks"]>(name: K, fn: WsClient["_hooks"][K] extends Set<infer F> ? F : never): () => void {
    const set = this._hooks[name] as Set<typeof fn>;
    set.add(fn);
    return () => set.delete(fn);
  }

  // -- lifecycle -------------------------------------------------------------------------------
  /**
   * Start (once) and resolve with the session when it is open. Rejects with a `WsError`
   * or `ConnectionClosed` if the client stops for good, or a `TimeoutError` after
   * `connectTimeout` (the client keeps reconnecting; call `connect()` again to wait again).
   */
  connect(): Promise<SessionInfo> {
    if (this._error) return Promise.reject(this._error);
    if (this._info && this.connected) return Promise.resolve(this._info);
    const p = new Promise<SessionInfo>((resolve, reject) => {
      const w: Wait = { resolve, reject };
      this._waiters.push(w);
      setTimeout(() => {
        const i = this._waiters.indexOf(w);
        if (i < 0) return;
        this._waiters.splice(i, 1);
        reject(new RequestTimeout(`no session within ${this._cfg.connectTimeout} ms`));
      }, this._cfg.connectTimeout);
    });
    if (!this._started) {
      this._started = true;
      void this._start();
    }
    return p;
  }

  /** Close for good: sends 1000, which ends the session on the server (SPEC §7); pending requests reject with ConnectionClosed. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const p = new Promise<void>((resolve) => this._closers.push(resolve));
    this._core.close(1000);
    this._run();
    return p;
  }

  private async _start(): Promise<void> {
    const restored = this._store ? await this._store.claim() : null;
    if (this.closed) return;
    if (restored) this._core.restore(restored);
    this._listenPage();
    await this._attempt();
  }

  private async _attempt(): Promise<void> {
    this._retry.clear();
    const phase = this._core.phase;
    if ((phase !== "idle" && phase !== "waiting") || this._suspended) return;
    if (wallNow() < this._offlineUntil) return this._retry.set(this._offlineUntil);
    let token = this._token;
    if (this._provider && !(token !== null && this._core.attempts === 0)) {
      try {
        token = await fresh(this._provider);
      } catch (e) {
        report(e);
        if (this._core.phase !== phase) return;
        this._core.connect(null);
        this._core.drain(); // no connection is opened for this attempt: it failed
        this._core.closed(null, "tokenProvider failed");
        return this._run();
      }
      if (this._core.phase !== phase || this._suspended) return;
    }
    this._core.connect(token);
    this._run();
  }

  /**
   * Cut the link as a network fault would (for demos and tests): the socket is dropped
   * without a 1000 close, so the server only detaches the session, and reconnect
   * attempts are held for `offlineMs`; the client then resumes as after any outage.
   * Returns false when no link was open.
   */
  dropConnection(offlineMs = 0): boolean {
    if (!this.connected) return false;
    this._offlineUntil = wallNow() + offlineMs / 1000;
    this._drop("dropConnection()");
    return true;
  }

  private _offlineUntil = 0;

  // -- sending ---------------------------------------------------------------------------------
  /** Queue `event` for the server: run exactly once while the session lives; throws SendBufferFull when the buffer is full. */
  send(event: string, payload?: unknown): void {
    if (this._error) throw this._error;
    this._core.send(event, payload);
    this._run();
  }

  /** Send `event` and resolve with its reply; rejects with WsError (the server's code), TimeoutError, ConnectionClosed or SendBufferFull. */
  request<T = any>(event: string, payload?: unknown, options: { timeout?: number } = {}): Promise<T> {
    if (this._error) return Promise.reject(this._error);
    let c: number;
    try {
      c = this._core.request(event, payload);
    } catch (e) {
      return Promise.reject(e);
    }
    const p = this._pushes.add(c, event, options.timeout ?? this._cfg.requestTimeout, (x) => this._core.abandon(x));
    this._run();
    return p as Promise<T>;
  }

  // -- the core's actions ----------------------------------------------------------------------
  private _run(): void {
    for (let acts = this._core.drain(); acts.length; acts = this._core.drain()) {
      for (const a of acts) this._perform(a);
    }
  }

  private _perform(a: Action): void {
    switch (a.action) {
      case "open": {
        const u = new URL(this.url);
        for (const [k, v] of Object.entries(a.query)) u.searchParams.set(k, v);
        let link: Link;
        try {
          link = new Link(
            u.href,
            (text) => this._onText(link, text),
            (code, reason) => this._onEnd(link, code, reason),
          );
        } catch (e) {
          report(e); // e.g. SecurityError: ws:// from an https:// page; a failed attempt
          return this._core.closed(null, String(e));
        }
        this._link = link;
        this._live = null;
        this._openBy = wallNow() + this._cfg.openTimeout / 1000;
        this._alarm.set(this._openBy);
        return;
      }
      case "send":
        return this._link?.send(a.text);
      case "deliver":
        return this._dispatch(a.event, a.payload, a.s);
      case "resolve":
        return this._pushes.settle(a.c, a.payload, null);
      case "reject":
        return this._pushes.settle(
          a.c,
          null,
          a.kind === "error" ? new WsError(a.code ?? 1011, a.message, a.details) : a.kind === "sessionLost" ? new SessionLost(a.message) : new ConnectionClosed(a.code, a.message),
        );
      case "opened":
        return this._opened(a);
      case "sessionLost":
        return this._emitHook("sessionLost", new SessionLost(a.message));
      case "disconnected":
        this._info = null;
        this._refreshAt = null;
        return this._emitHook("disconnect", { code: a.code, reason: a.reason, byPeer: a.byPeer });
      case "reconnect":
        return this._retry.set(wallNow() + a.delay);
      case "abort":
        return this._drop(a.reason);
      case "sendClose": {
        const link = this._link;
        if (!link) return;
        link.close(a.code, a.reason);
        setTimeout(() => {
          if (this._link === link) this._drop("no close handshake in time");
        }, this._cfg.closeTimeout);
        return;
      }
      case "terminal":
        return this._finish(a.kind === "error" ? new WsError(a.code ?? 1011, a.message) : new ConnectionClosed(a.code, a.message));
    }
  }

  private _opened(a: Extract<Action, { action: "opened" }>): void {
    const now = wallNow();
    const cfg = this._cfg;
    const h = a.heartbeat ?? 20;
    const dead = cfg.deadLinkTimeout !== null ? cfg.deadLinkTimeout / 1000 : Math.max(2 * h, h + 1);
    const probe = Math.min(cfg.probeAfter !== null ? cfg.probeAfter / 1000 : h, dead * 0.75);
    this._live = new Liveness(probe, dead - probe, now);
    const resumed = a.outcome === "resumed";
    const missed = resumed ? Math.max(0, a.lastSeq - (this._core.snapshot().delivered as number)) : 0;
    this._replayTo = resumed ? a.lastSeq : 0;
    const info: SessionInfo = { sessionId: a.sessionId, resumed, lastSeq: a.lastSeq, missed, heartbeat: h, expiresAt: a.expiresAt };
    this._info = info;
    this._setExpiry(a.expiresAt, now);
    this._save();
    this._emitHook("connect", info);
    if (resumed) this._emitHook("resume", info);
    for (const w of this._waiters.splice(0)) w.resolve(info);
    this._rearm();
  }

  private _dispatch(event: string, payload: unknown, s: number | undefined): void {
    const set = this._listeners.get(event);
    if (!set) {
      if (event === "sys.error") console.warn("wscore: server error", payload);
      return;
    }
    const meta: Meta = { event, s, replayed: s !== undefined && s <= this._replayTo };
    for (const cb of [...set]) {
      try {
        cb(payload, meta);
      } catch (e) {
        report(e);
      }
    }
  }

  private _emitHook<K extends keyof WsClient["_hooks"]>(name: K, arg: Parameters<WsClient["_hooks"][K] extends Set<infer F> ? (F extends (a: infer A) => void ? (a: A) => void : never) : never>[0]): void {
    for (const fn of [...this._hooks[name]] as ((a: typeof arg) => void)[]) {
      try {
        fn(arg);
      } catch (e) {
        report(e);
      }
    }
  }

  // -- the link --------------------------------------------------------------------------------
  private _onText(link: Link, text: string): void {
    if (link !== this._link) return;
    const now = wallNow();
    this._live?.received(now);
    this._core.receive(text, now);
    this._core.tick(now);
    this._run();
    if (this._link === link) this._rearm();
  }

  private _onEnd(link: Link, code: number | null, reason: string): void {
    if (link !== this._link) return;
    this._link = null;
    this._live = null;
    this._alarm.clear();
    this._core.closed(code, reason);
    this._run();
  }

  /** Give up on the current link (dead, stale, or the server broke the protocol) and let the core decide what follows. */
  private _drop(why: string): void {
    const link = this._link;
    if (!link) return;
    this._link = null;
    this._live = null;
    this._alarm.clear();
    link.abandon();
    this._core.closed(null, why);
    this._run();
  }

  /** Deadlines of the current link: open timeout, liveness probe/verdict, delayed ack, token refresh. */
  private _wake(force: boolean): void {
    const link = this._link;
    if (!link) return;
    const now = wallNow();
    if (this._core.phase === "connecting") {
      if (now >= this._openBy) return this._drop("no sys.connected within openTimeout");
      return this._rearm();
    }
    const live = this._live;
    if (live) {
      const v = live.check(now, force);
      if (v.dead) return this._drop("no frame from the server in time");
      if (v.probe) link.send('{"v":"1.0","e":"sys.ping"}');
    }
    this._core.tick(now);
    this._run();
    if (this._refreshAt !== null && now >= this._refreshAt && !this._refreshing) void this._refresh();
    if (this._link === link) this._rearm();
  }

  private _rearm(): void {
    let at = this._core.phase === "connecting" ? this._openBy : (this._live?.next() ?? Infinity);
    const ack = this._core.nextDeadline();
    if (ack !== null) at = Math.min(at, ack);
    if (this._refreshAt !== null && !this._refreshing) at = Math.min(at, this._refreshAt);
    if (at !== Infinity) this._alarm.by(at);
  }

  // -- token refresh ---------------------------------------------------------------------------
  private _setExpiry(expiresAt: number | null, now: number): void {
    this._refreshAt = this._provider && expiresAt !== null ? tokenRefreshAt(expiresAt, now, this._cfg.tokenRefreshMargin / 1000) : null;
  }

  private async _refresh(): Promise<void> {
    const provider = this._provider;
    const link = this._link;
    if (!provider || !link) return;
    this._refreshing = true;
    try {
      const token = await fresh(provider);
      if (this._link !== link || !this.connected) return;
      const c = this._core.authenticate(token);
      const p = this._pushes.add(c, "sys.auth", this._cfg.tokenRefreshTimeout, (x) => this._core.abandon(x));
      this._run();
      const reply = (await p) as { expiresAt?: unknown } | null;
      const exp = typeof reply?.expiresAt === "number" ? reply.expiresAt : null;
      this._refreshFailures = 0;
      if (this._link === link) this._setExpiry(exp, wallNow());
    } catch (e) {
      if (e instanceof WsError && e.code === 1004) return; // refused: the server closes with 4004 (terminal)
      if (e instanceof ConnectionClosed || this._link !== link) return; // the next connection authenticates anew
      report(e);
      const delay = backoffDelay(this._refreshFailures++, this._cfg.backoffBase / 1000, this._cfg.backoffCap / 1000, Math.random());
      this._refreshAt = wallNow() + delay;
    } finally {
      this._refreshing = false;
      if (this._link === link) this._rearm();
    }
  }

  // -- the page --------------------------------------------------------------------------------
  private _save(): void {
    if (this._store && this._core.sessionId !== null && !this.closed) this._store.save(this._core.persist());
  }

  private _listenPage(): void {
    if (typeof window === "undefined" || typeof document === "undefined") return;
    const nudge = (force: boolean): void => {
      if (this._core.phase === "waiting") void this._attempt();
      else this._wake(force);
    };
    const handlers: [EventTarget, string, (e: Event) => void][] = [
      [window, "online", () => nudge(true)],
      [
        document,
        "visibilitychange",
        () => {
          if (document.visibilityState === "visible") nudge(false);
          else this._save();
        },
      ],
      [
        window,
        "pagehide",
        (e) => {
          this._save();
          this._store?.hide();
          if (!(e as PageTransitionEvent).persisted) return; // unloading: the browser closes with 1001
          this._suspended = true; // into the back/forward cache: detach (not end) the session
          this._retry.clear();
          const link = this._link;
          if (link) {
            this._link = null;
            this._live = null;
            this._alarm.clear();
            link.abandon(CLOSE_PAGEHIDE, "pagehide");
            this._core.closed(null, "pagehide");
            this._run();
          }
        },
      ],
      [
        window,
        "pageshow",
        (e) => {
          if (!(e as PageTransitionEvent).persisted) return;
          this._suspended = false;
          this._store?.listen();
          void this._attempt();
        },
      ],
    ];
    for (const [t, n, f] of handlers) t.addEventListener(n, f);
    this._unlisten = () => {
      for (const [t, n, f] of handlers) t.removeEventListener(n, f);
    };
  }

  private _finish(error: Error): void {
    this._error = error;
    this._retry.clear();
    this._alarm.clear();
    const link = this._link;
    this._link = null;
    link?.abandon(this._closers.length ? 1000 : undefined); // close() before sys.connected still ends the session
    this._unlisten?.();
    this._store?.hide();
    this._store?.clear();
    for (const w of this._waiters.splice(0)) w.reject(error);
    for (const r of this._closers.splice(0)) r();
  }
}
