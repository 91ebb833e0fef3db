/**
 * Dead-link detection, sans I/O, robust to throttled timers (hidden tabs).
 *
 * Browsers hide the server's RFC 6455 pings from scripts, so liveness is judged from
 * received frames: after `probeAfter` s of silence the client sends `sys.ping`; the link
 * is dead only when `grace` s have passed since that probe *actually went out* with
 * nothing received. A timer that Chrome throttled to once a minute therefore delays the
 * verdict but never fakes one (the failure SignalR and Phoenix had: a late heartbeat
 * timer compared against the last receive declared live links dead). Every receive
 * re-arms it; all times are wall-clock seconds passed in.
 */
export interface LivenessVerdict {
  probe: boolean;
  dead: boolean;
  /** When to call `check` again. */
  wakeAt: number;
}

export class Liveness {
  private _lastRx: number;
  private _probeAt: number | null = null;

  constructor(
    readonly probeAfter: number,
    readonly grace: number,
    now: number,
  ) {
    this._lastRx = now;
  }

  received(now: number): void {
    this._lastRx = now;
    this._probeAt = null;
  }

  /** When `check` has something to decide next. */
  next(): number {
    return this._probeAt === null ? this._lastRx + this.probeAfter : this._probeAt + this.grace;
  }

  /** Probe now if silent long enough (`force`: whatever the silence, e.g. the tab became visible or the network came back). */
  check(now: number, force = false): LivenessVerdict {
    if (this._probeAt === null) {
      if (!force && now - this._lastRx < this.probeAfter) return { probe: false, dead: false, wakeAt: this._lastRx + this.probeAfter };
      this._probeAt = now;
      return { probe: true, dead: false, wakeAt: now + this.grace };
    }
    if (now - this._probeAt >= this.grace) return { probe: false, dead: true, wakeAt: now };
    return { probe: false, dead: false, wakeAt: this._probeAt + this.grace };
  }
}
