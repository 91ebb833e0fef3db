/** Errors the client raises. Every one is an `Error`; `instanceof` tells them apart. */

/** An error the server answered with (SPEC §3): `.code` is the protocol error code, e.g. 1009. */
export class WsError extends Error {
  override name = "WsError";
  constructor(
    readonly code: number,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** The session was lost (the server could not resume it): code 1006, SPEC §3. */
export class SessionLost extends WsError {
  override name = "SessionLost";
  constructor(message = "the server did not resume the session") {
    super(1006, message);
  }
}

/** The connection ended for good (`close()`, a terminal close code); `.code` is the close code or null. */
export class ConnectionClosed extends Error {
  override name = "ConnectionClosed";
  constructor(
    readonly code: number | null,
    readonly reason = "",
  ) {
    super(code === null ? reason || "connection closed" : `connection closed (${code}${reason ? ": " + reason : ""})`);
  }
}

/** `send`/`request` refused: the offline/unacknowledged buffer is full (by frames or by bytes); nothing was queued. */
export class SendBufferFull extends Error {
  override name = "SendBufferFull";
}

/** A `request()` got no reply within its timeout (its frame stays queued and may still run). */
export class RequestTimeout extends Error {
  override name = "TimeoutError";
}

/** The call cannot be made like this (a reserved `sys.*` event, an empty event name, a client that cannot connect again). */
export class UsageError extends Error {
  override name = "UsageError";
}
