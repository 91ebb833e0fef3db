/**
 * One-shot wall-clock alarms. `setTimeout` may fire late (throttled background tabs) or,
 * rarely, early; an `Alarm` re-checks `Date.now()` when it fires and re-arms if early,
 * so callers reason in deadlines, never in elapsed timer counts.
 */
export const wallNow = (): number => Date.now() / 1000;

export class Alarm {
  private _id: ReturnType<typeof setTimeout> | null = null;
  private _at = 0;

  constructor(private readonly _fire: () => void) {}

  /** Fire at wall-clock second `at` (replacing any earlier setting). */
  set(at: number): void {
    this.clear();
    this._at = at;
    const run = (): void => {
      this._id = null;
      const left = this._at - wallNow();
      if (left > 0.001) this._id = setTimeout(run, left * 1000);
      else this._fire();
    };
    this._id = setTimeout(run, Math.max(0, (at - wallNow()) * 1000));
  }

  /** Fire at `at` or earlier: keeps an earlier setting (whose wake-up re-computes), so a busy stream re-arms nothing. */
  by(at: number): void {
    if (this._id === null || at < this._at) this.set(at);
  }

  get armed(): boolean {
    return this._id !== null;
  }

  clear(): void {
    if (this._id !== null) clearTimeout(this._id);
    this._id = null;
  }
}
