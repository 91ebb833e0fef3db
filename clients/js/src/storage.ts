/**
 * The tab's session across page reloads, and duplicated-tab detection.
 *
 * `sessionStorage` belongs to one tab and survives a reload, so it keeps the session id,
 * the last delivered `s` and the unacknowledged sends. Duplicating a tab copies it too:
 * to tell a reload from a copy, every client instance has a tab id (stored with the
 * state), holds a Web Lock named after it and answers "is tab T alive?" on a
 * BroadcastChannel. A new page that finds a stored state checks its tab id (see
 * `alive`): a live original means a duplicate, so this page starts its own session;
 * a gone one means a reload, and the page adopts the session.
 */
import type { Persisted } from "./session.js";

export interface Stored extends Persisted {
  tab: string;
}

/** How long a page without Web Locks waits for a live original to answer (only when a state was stored). */
export const CLAIM_WAIT_MS = 150;

const CHANNEL = "wscore.tabs";
const LOCK = "wscore.tab.";
const locks = (): LockManager | undefined => (typeof navigator === "undefined" ? undefined : navigator.locks);

/**
 * Is the page that stored `tab` still running (so this page is its duplicate)?
 * Every page holds a Web Lock named after its tab id (secure contexts) until `pagehide`:
 * a free lock means its holder is gone — a reload, decided at once. A held one is a
 * live original (it answers on the channel) or a predecessor still being torn down
 * (it releases the lock): either ends the wait; if neither does, the tab counts as
 * live, since taking a running tab's session over would break it. Without locks the
 * channel alone decides within CLAIM_WAIT_MS.
 */
async function alive(tab: string): Promise<boolean> {
  const lm = locks();
  if (lm && (await lm.request(LOCK + tab, { ifAvailable: true }, (l) => l !== null))) return false;
  if (typeof BroadcastChannel === "undefined") return lm !== undefined;
  const probe = new BroadcastChannel(CHANNEL);
  const stop = new AbortController();
  const live = await new Promise<boolean>((done) => {
    setTimeout(() => done(lm !== undefined), lm ? 1000 : CLAIM_WAIT_MS);
    probe.onmessage = (ev: MessageEvent) => {
      if ((ev.data as { alive?: string } | null)?.alive === tab) done(true);
    };
    probe.postMessage({ ask: tab });
    lm?.request(LOCK + tab, { signal: stop.signal }, () => done(false)).catch(() => {});
  });
  stop.abort();
  probe.close();
  return live;
}

export function randomId(): string {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export class TabStore {
  tab = randomId();
  private _channel: BroadcastChannel | null = null;

  constructor(private readonly _key: string) {}

  private get _storage(): Storage | null {
    try {
      return typeof sessionStorage === "undefined" ? null : sessionStorage;
    } catch {
      return null; // storage disabled (privacy settings, sandboxed frame)
    }
  }

  /** The state a previous page of this tab left, or null (none, unreadable, or it belongs to a live duplicate). */
  async claim(): Promise<Persisted | null> {
    let stored: Stored | null = null;
    try {
      const raw = this._storage?.getItem(this._key);
      stored = raw ? (JSON.parse(raw) as Stored) : null;
    } catch {
      stored = null;
    }
    const live = stored !== null && typeof stored.tab === "string" && (await alive(stored.tab));
    if (stored && !live) this.tab = stored.tab;
    this.listen();
    return stored && !live ? stored : null;
  }

  /** Hold this tab id's lock and answer for it (from the first claim until `hide`). */
  listen(): void {
    const lm = locks();
    if (lm && !this._release) {
      lm.request(LOCK + this.tab, () => new Promise<void>((r) => (this._release = r))).catch(() => {});
    }
    if (this._channel || typeof BroadcastChannel === "undefined") return;
    const ch = (this._channel = new BroadcastChannel(CHANNEL));
    ch.onmessage = (ev: MessageEvent) => {
      if ((ev.data as { ask?: string } | null)?.ask === this.tab) ch.postMessage({ alive: this.tab });
    };
  }

  /** Release the lock and stop answering (the page is going away or into the back/forward cache). */
  hide(): void {
    this._release?.();
    this._release = null;
    this._channel?.close();
    this._channel = null;
  }

  private _release: (() => void) | null = null;

  save(p: Persisted): void {
    try {
      this._storage?.setItem(this._key, JSON.stringify({ ...p, tab: this.tab } satisfies Stored));
    } catch {
      // Quota exceeded: keep nothing rather than a session without its unacknowledged
      // sends (a reload then starts a new session instead of resuming one with a hole).
      this.clear();
    }
  }

  clear(): void {
    try {
      this._storage?.removeItem(this._key);
    } catch {
      /* storage disabled */
    }
  }
}
