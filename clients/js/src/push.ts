/**
 * Promises of requests in flight, keyed by correlation id. The session core decides
 * when one settles (resolve/reject actions); this module only holds the callbacks and
 * the per-request timeout.
 */
import { RequestTimeout } from "./errors.js";

interface Waiter {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | null;
}

export class Pushes {
  private _waiters = new Map<number | string, Waiter>();

  /** A promise for request `c`; after `timeoutMs` it rejects with RequestTimeout and `onTimeout(c)` runs. */
  add(c: number | string, what: string, timeoutMs: number, onTimeout: (c: number | string) => void): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0 && Number.isFinite(timeoutMs)
          ? setTimeout(() => {
              this._waiters.delete(c);
              onTimeout(c);
              reject(new RequestTimeout(`no reply to ${what} within ${timeoutMs} ms`));
            }, timeoutMs)
          : null;
      this._waiters.set(c, { resolve, reject, timer });
    });
  }

  settle(c: number | string, value: unknown, error: Error | null): void {
    const w = this._waiters.get(c);
    if (!w) return;
    this._waiters.delete(c);
    if (w.timer !== null) clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve(value);
  }
}
