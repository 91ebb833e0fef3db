/**
 * wscore's browser client: `import { WsClient } from "http://host:port/wscore.js"`.
 * Sessions outlive connections: numbered frames arrive once and in order across
 * reconnects and page reloads, sends run exactly once. See docs/browser.md.
 */
export { WsClient } from "./client.js";
export type { Disconnect, Listener, Meta, SessionInfo, WsClientOptions } from "./client.js";
export { ConnectionClosed, RequestTimeout, SendBufferFull, SessionLost, UsageError, WsError } from "./errors.js";
export { ClientSession, backoffDelay, tokenRefreshAt, utf8Length } from "./session.js";
export type { Action, Outcome, Persisted, Phase, SessionOptions } from "./session.js";
export { Liveness } from "./liveness.js";
