/**
 * The tab's session across page reloads, and duplicated-tab detection.
 *
 * `sessionStorage` belongs to one tab and survives a reload, so it keeps the session id,
 * the last delivered `s` and the unacknowledged sends. Duplicating a tab copies it too:
 * to tell a reload from a copy, every client instance has a tab id (stored with the
 * state) and answers "is tab T alive?" on a BroadcastChannel. A new page that finds a
 * stored state asks about its tab id: an answer means the original is still running
 * (a duplicate), so this page starts its own session; silence (the previous page of
 * this tab is gone) means a reload, and the page adopts the session.
 */
import type { Persisted } from "./session.js";

export interface Stored extends Persisted {
  tab: string;
}

/** How long a page waits for a live original to answer (only when a state was stored). */
export const CLAIM_WAIT_MS = 150;

const CHANNEL = "wscore.tabs";

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
    let live = false;
    if (stored && typeof stored.tab === "string" && typeof BroadcastChannel !== "undefined") {
      const probe = new BroadcastChannel(CHANNEL);
      const asked = stored.tab;
      live = await new Promise<boolean>((done) => {
        const timer = setTimeout(() => done(false), CLAIM_WAIT_MS);
        probe.onmessage = (ev: MessageEvent) => {
          if ((ev.data as { alive?: string } | null)?.alive === asked) {
            clearTimeout(timer);
            done(true);
          }
        };
        probe.postMessage({ ask: asked });
      });
      probe.close();
    }
    if (stored && !live) this.tab = stored.tab;
    this.listen();
    return stored && !live ? stored : null;
  }

  /** Answer for this tab id (from the first claim until `hide`). */
  listen(): void {
    if (this._channel || typeof BroadcastChannel === "undefined") return;
    const ch = (this._channel = new BroadcastChannel(CHANNEL));
    ch.onmessage = (ev: MessageEvent) => {
      if ((ev.data as { ask?: string } | null)?.ask === this.tab) ch.postMessage({ alive: this.tab });
    };
  }

  /** Stop answering (the page is going away or into the back/forward cache). */
  hide(): void {
    this._channel?.close();
    this._channel = null;
  }

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
