/**
 * One WebSocket connection attempt. Reports text frames and its end exactly once, and
 * can be abandoned (a dead or stale link): its handlers detach at once, so nothing it
 * says later reaches the client, and it is closed with a code other than 1000 — a close
 * frame that a healed partition delivers late must only detach the session (SPEC §7).
 */
export const CLOSE_ABANDONED = 3002;

export class Link {
  private _ws: WebSocket;
  private _done = false;

  constructor(
    url: string,
    onText: (text: string) => void,
    onEnd: (code: number | null, reason: string) => void,
  ) {
    const ws = (this._ws = new WebSocket(url));
    ws.onmessage = (ev: MessageEvent) => {
      if (!this._done && typeof ev.data === "string") onText(ev.data);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this._done) return;
      this._done = true;
      // 1005 (no status) and 1006 (abnormal: RST, EOF, refused upgrade) mean no close frame.
      onEnd(ev.code === 1006 || ev.code === 1005 ? null : ev.code, ev.reason);
    };
  }

  get buffered(): number {
    return this._ws.bufferedAmount;
  }

  send(text: string): void {
    if (!this._done && this._ws.readyState === 1) this._ws.send(text);
  }

  /** Start the close handshake with `code`; the end is still reported when it completes. */
  close(code: number, reason = ""): void {
    try {
      this._ws.close(code, reason);
    } catch {
      this._ws.close();
    }
  }

  /** Forget this link now (no more callbacks) and close it without ending the session. */
  abandon(code = CLOSE_ABANDONED, reason = "abandoned"): void {
    this._done = true;
    this.close(code, reason);
  }
}
