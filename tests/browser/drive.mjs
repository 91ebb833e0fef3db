// Drives headless Chromium (Debian's /usr/bin/chromium, via playwright-core) through one
// browser scenario against a running wscore server and sandbox proxy, started by pytest
// (tests/browser/test_browser.py). Usage: node drive.mjs SCENARIO '{"http":…,"ws":…,"proxyWs":…,"control":…}'
// Prints "RESULT <json>" for pytest to check; exits 1 with a one-line error on failure.
// It only waits on conditions (page.waitForFunction), never for a fixed time.
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const { chromium } = createRequire(join(repo, "clients/js/package.json"))("playwright-core");

export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const WAIT = { timeout: 30000, polling: 50 };

export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "wscore-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.WSCORE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A test page of the server (mounted by the fixture) that imports the served client by its absolute URL. */
export async function openPage(context, cfg, init = null) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  if (init) await page.addInitScript(init.fn, init.arg);
  await page.goto(`${cfg.http}/t.html`);
  await page.waitForFunction(() => window.W !== undefined, null, WAIT);
  return page;
}

/** In the page: a WsClient that records what it receives and its hooks; connect, join `room` unless resumed. */
async function setup(page, ws, room, options = {}) {
  return page.evaluate(async ({ ws, room, options }) => {
    const c = new window.W.WsClient(ws, { backoffBase: 50, backoffCap: 500, openTimeout: 1500, ...options });
    const log = (window.log = { got: [], replayed: 0, hooks: [] });
    c.on("chat.new_message", (p, meta) => {
      log.got.push(p.text);
      if (meta.replayed) log.replayed++;
    });
    c.onConnect((i) => log.hooks.push(["connect", i.resumed]));
    c.onResume((i) => log.hooks.push(["resume", i.missed]));
    c.onDisconnect((d) => log.hooks.push(["disconnect", d.code]));
    c.onSessionLost((e) => log.hooks.push(["sessionLost", e.code]));
    window.c = c;
    const info = await c.connect();
    if (!info.resumed) await c.request("room.join", { roomId: room });
    return info;
  }, { ws, room, options });
}

const says = (page, room, texts) =>
  page.evaluate(({ room, texts }) => {
    for (const text of texts) window.c.send("chat.message", { roomId: room, text });
  }, { room, texts });

const gotAtLeast = (page, n) => page.waitForFunction((n) => window.log.got.length >= n, n, WAIT);
const range = (prefix, a, b) => Array.from({ length: b - a }, (_, i) => `${prefix}${a + i}`);
const log = (page) => page.evaluate(() => ({ ...window.log, sessionId: window.c.sessionId, connected: window.c.connected }));

async function control(cfg, action, body = {}) {
  const r = await fetch(`${cfg.control}/actions/${action}`, { method: "POST", body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`proxy control ${action}: HTTP ${r.status}`);
  return r.json();
}

const scenarios = {
  /** Two pages chat; the proxy resets, then blackholes B's link; a request is made during the outage. */
  async chat(context, cfg) {
    const a = await openPage(context, cfg);
    const b = await openPage(context, cfg);
    const infoA = await setup(a, cfg.ws, "r1");
    const infoB = await setup(b, cfg.proxyWs, "r1");
    await says(a, "r1", range("m", 0, 30));
    await gotAtLeast(b, 30);
    await control(cfg, "cut");
    await says(a, "r1", range("m", 30, 60));
    await gotAtLeast(b, 60);
    await control(cfg, "blackhole", { seconds: 3 });
    await b.evaluate(() => {
      window.reply = null;
      window.c.request("echo", { during: "outage" }, { timeout: 20000 }).then((r) => (window.reply = r), (e) => (window.reply = { error: String(e) }));
    });
    await says(a, "r1", range("m", 60, 90));
    await gotAtLeast(b, 90);
    await b.waitForFunction(() => window.reply !== null, null, WAIT);
    const reply = await b.evaluate(() => window.reply);
    return { infoA, infoB, a: await log(a), b: await log(b), reply };
  },

  /** A reload resumes the tab's session: missed frames replayed once, an unacknowledged send re-sent once. */
  async reload(context, cfg) {
    const a = await openPage(context, cfg);
    const b = await openPage(context, cfg);
    await setup(a, cfg.ws, "r2");
    const before = await setup(b, cfg.proxyWs, "r2");
    await says(a, "r2", range("m", 0, 10));
    await gotAtLeast(b, 10);
    await control(cfg, "blackhole", { seconds: 2 });
    await says(b, "r2", ["b-unacked"]); // held by the blackhole: not acknowledged before the reload
    await says(a, "r2", range("m", 10, 20)); // B misses these while it reloads
    await b.reload();
    await b.waitForFunction(() => window.W !== undefined, null, WAIT);
    const after = await setup(b, cfg.proxyWs, "r2");
    await gotAtLeast(b, 10);
    await a.waitForFunction(() => window.log.got.includes("b-unacked"), null, WAIT);
    await says(b, "r2", ["b-after"]);
    await a.waitForFunction(() => window.log.got.includes("b-after"), null, WAIT);
    return { before, after, a: await log(a), b: await log(b) };
  },

  /** A duplicated tab (sessionStorage copied) opens its own session; the original keeps its own. */
  async duplicate(context, cfg) {
    const a = await openPage(context, cfg);
    const b = await openPage(context, cfg);
    await setup(a, cfg.ws, "r3");
    const original = await setup(b, cfg.proxyWs, "r3");
    const storage = await b.evaluate(() => JSON.stringify(Object.entries(sessionStorage)));
    // What "Duplicate tab" does: a new tab whose sessionStorage is a copy of the original's.
    const copy = await openPage(context, cfg, {
      fn: (entries) => {
        if (!sessionStorage.length) for (const [k, v] of JSON.parse(entries)) sessionStorage.setItem(k, v);
      },
      arg: storage,
    });
    const copied = await copy.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith("wscore:")).length);
    const dup = await setup(copy, cfg.proxyWs, "r3");
    await says(a, "r3", ["d1", "d2"]);
    await gotAtLeast(b, 2);
    await gotAtLeast(copy, 2);
    await says(b, "r3", ["from-original"]);
    await says(copy, "r3", ["from-copy"]);
    await a.waitForFunction(() => window.log.got.length >= 2, null, WAIT);
    return { original, dup, copied, a: await log(a), b: await log(b), copy: await log(copy) };
  },

  /** Back/forward cache: pagehide(persisted) detaches the session (close 3001), pageshow(persisted) resumes it. */
  async bfcache(context, cfg) {
    const a = await openPage(context, cfg);
    const b = await openPage(context, cfg);
    await setup(a, cfg.ws, "r5");
    const before = await setup(b, cfg.proxyWs, "r5");
    const lifecycle = (type) => b.evaluate((type) => window.dispatchEvent(new PageTransitionEvent(type, { persisted: true })), type);
    await lifecycle("pagehide");
    await b.waitForFunction(() => window.log.hooks.some((h) => h[0] === "disconnect"), null, WAIT);
    const hidden = await b.evaluate(() => window.c.connected);
    await says(a, "r5", range("m", 0, 5)); // sent while B sits in the cache
    await lifecycle("pageshow");
    await gotAtLeast(b, 5);
    return { before, hidden, b: await log(b) };
  },

  /**
   * `online` and `visibilitychange` → visible: with a 10-minute backoff and a 60 s probe
   * interval, only these handlers can bring the client back in time — they reconnect a
   * client waiting in its backoff at once; `online` also probes a silent link at once.
   */
  async online(context, cfg) {
    const b = await openPage(context, cfg);
    await b.evaluate(() => (Math.random = () => 0.999)); // every backoff draw near its 600 s ceiling
    const before = await setup(b, cfg.proxyWs, "r6", { backoffBase: 600000, backoffCap: 600000, probeAfter: 60000, deadLinkTimeout: 61000, openTimeout: 5000 });
    const hooks = (kind, n) => b.waitForFunction(({ kind, n }) => window.log.hooks.filter((h) => h[0] === kind).length >= n, { kind, n }, WAIT);
    const online = () => b.evaluate(() => window.dispatchEvent(new Event("online")));
    await control(cfg, "cut"); // the link is reset: the client now sleeps ~599 s in its backoff
    await hooks("disconnect", 1);
    await online();
    await hooks("resume", 1);
    await control(cfg, "blackhole", { seconds: 3 }); // a silent link; the next probe would be due in 60 s
    await online();
    await hooks("disconnect", 2); // probed at once, declared dead after the 1 s grace
    await online(); // the network is back (the attempt waits out the blackhole in the proxy)
    await hooks("resume", 2);
    await control(cfg, "cut"); // asleep in the backoff again …
    await hooks("disconnect", 3);
    await b.evaluate(() => document.dispatchEvent(new Event("visibilitychange"))); // … until the tab is visible (it is)
    await hooks("resume", 3);
    return { before, b: await log(b) };
  },

  /** The demo page (examples/chat): join, chat, who is here, "drop my connection", the replay count. */
  async demo(context, cfg) {
    const join = async (name) => {
      const page = await context.newPage();
      page.on("pageerror", (e) => console.error("page error:", e.message));
      await page.setViewportSize({ width: 820, height: 560 });
      await page.goto(`${cfg.http}/`);
      await page.fill("#name", name);
      await page.fill("#room", "lobby");
      await page.click("#join button");
      await page.waitForFunction(() => document.querySelector("#status").dataset.state === "connected", null, WAIT);
      return page;
    };
    const say = async (page, text) => {
      await page.fill("#text", text);
      await page.click("#send button");
    };
    const texts = (page) => page.$$eval("#log li:not(.note)", (lis) => lis.map((li) => li.textContent));
    const alice = await join("Alice");
    const bob = await join("Bob");
    await alice.waitForFunction(() => document.querySelectorAll("#members li").length === 2, null, WAIT);
    await say(alice, "hello Bob");
    await say(bob, "hi Alice");
    await bob.waitForFunction(() => document.querySelectorAll("#log li").length === 2, null, WAIT);
    await bob.click("#drop"); // Bob is offline for 3 s …
    await bob.waitForFunction(() => document.querySelector("#status").dataset.state === "reconnecting", null, WAIT);
    await alice.evaluate(() => {
      // … while Alice keeps writing (typed in one go: well inside Bob's 3 s outage)
      for (let i = 1; i <= 5; i++) {
        document.querySelector("#text").value = `while you were away ${i}`;
        document.querySelector("#send").requestSubmit();
      }
    });
    await alice.waitForFunction(() => document.querySelectorAll("#log li.pending").length === 0, null, WAIT);
    await bob.waitForFunction(() => document.querySelector("#replayed").textContent.startsWith("5 "), null, WAIT);
    await say(bob, "back, and I missed nothing");
    await alice.waitForFunction(() => document.querySelectorAll("#log li").length === 8, null, WAIT);
    if (cfg.screenshot) await bob.screenshot({ path: cfg.screenshot });
    return {
      bob: await texts(bob),
      alice: await texts(alice),
      members: await bob.$$eval("#members li", (lis) => lis.map((li) => li.textContent)),
      state: await bob.$eval("#state", (e) => e.textContent),
      replayedNote: await bob.$eval("#replayed", (e) => e.textContent),
      replayedLines: await bob.$$eval("#log li.replayed", (lis) => lis.length),
    };
  },

  /** tokenProvider: short-lived tokens are refreshed in-band (sys.auth) before they expire; the link never drops. */
  async refresh(context, cfg) {
    const b = await openPage(context, cfg);
    const info = await b.evaluate(async (ws) => {
      window.tokens = 0;
      const c = new window.W.WsClient(ws, { tokenProvider: async () => `alice:${++window.tokens}` });
      window.hooks = [];
      c.onDisconnect((d) => window.hooks.push(["disconnect", d.code]));
      c.on("sys.error", (p) => window.hooks.push(["error", p.code]));
      window.c = c;
      return c.connect();
    }, cfg.proxyWs);
    await b.waitForFunction(() => window.tokens >= 5, null, WAIT); // 1 handshake + 4 refreshes
    const reply = await b.evaluate(() => window.c.request("echo", "still here"));
    return { info, reply, tokens: await b.evaluate(() => window.tokens), hooks: await b.evaluate(() => window.hooks) };
  },

  /** The browser and the Python WsClient (driven by pytest) in one room. */
  async interop(context, cfg) {
    const b = await openPage(context, cfg);
    await setup(b, cfg.proxyWs, "r4");
    await says(b, "r4", ["js-ready"]);
    await gotAtLeast(b, 20); // py-0 … py-19 from the Python client
    await says(b, "r4", range("js-", 0, 20));
    await b.waitForFunction(() => window.log.got.includes("py-done"), null, WAIT);
    return { b: await log(b) };
  },
};

/** The floor: the same stream on a bare WebSocket, each frame JSON-parsed and counted (no client). */
async function rawFlood({ n, ws }) {
  const sock = new WebSocket(ws);
  let ticks = 0;
  let wake = null;
  sock.onmessage = (ev) => {
    const f = JSON.parse(ev.data);
    if (f.e === "tick") ticks++;
    else if (f.e === "ack" && wake) wake();
  };
  await new Promise((r) => (sock.onopen = r));
  const start = performance.now();
  for (let sent = 0, c = 1; sent < n; sent += 200, c++) {
    const done = new Promise((r) => (wake = r));
    sock.send(JSON.stringify({ v: "1.0", e: "burst", p: Math.min(200, n - sent), c }));
    await done;
  }
  while (ticks < n) await new Promise((r) => setTimeout(r, 1));
  const wall = performance.now() - start;
  sock.close(1000);
  return wall;
}

/**
 * Benchmark mode (benchmarks/bench_browser.py): one page, commands on stdin, answers on stdout.
 *   "resume N"  -> wait for the N-th resume; print "RESUMED <epoch ms>" (when onResume ran)
 *   "cpu N"     -> receive N server events (bursts of 200); print "CPU <json>" (CDP Performance metrics)
 *   "cpu-raw N" -> the same on a bare WebSocket (JSON.parse per frame): the browser's own floor
 *   "quit"
 */
async function bench(context, cfg) {
  const page = await openPage(context, cfg);
  await page.evaluate(async ({ ws, backoffBase }) => {
    const c = new window.W.WsClient(ws, { backoffBase, openTimeout: 5000, persist: false });
    window.c = c;
    window.resumedAt = [];
    window.ticks = 0;
    c.onResume(() => window.resumedAt.push(performance.timeOrigin + performance.now()));
    c.on("tick", () => window.ticks++);
    await c.connect();
  }, { ws: cfg.proxyWs, backoffBase: cfg.backoffBase ?? 250 });
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const metrics = async () => Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]));
  console.log("READY");
  const rl = (await import("node:readline")).createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, arg] = line.trim().split(/\s+/);
    const n = Number(arg);
    if (cmd === "resume") {
      await page.waitForFunction((n) => window.resumedAt.length >= n, n, { timeout: 30000, polling: 5 });
      console.log("RESUMED " + (await page.evaluate((n) => window.resumedAt[n - 1], n)));
    } else if (cmd === "cpu" || cmd === "cpu-raw") {
      const before = await metrics();
      const wall = await page.evaluate(cmd === "cpu-raw" ? rawFlood : async ({ n }) => {
        const start = performance.now();
        window.ticks = 0;
        for (let sent = 0; sent < n; sent += 200) await window.c.request("burst", Math.min(200, n - sent), { timeout: 60000 });
        while (window.ticks < n) await new Promise((r) => setTimeout(r, 1));
        return performance.now() - start;
      }, { n, ws: cfg.proxyWs });
      const after = await metrics();
      const d = (k) => after[k] - before[k];
      console.log("CPU " + JSON.stringify({ n, wallMs: wall, taskS: d("TaskDuration"), scriptS: d("ScriptDuration") }));
    } else if (cmd === "quit") break;
  }
  rl.close();
  return {};
}

async function main() {
  const [name, raw] = process.argv.slice(2);
  const scenario = name === "bench" ? bench : scenarios[name];
  if (!scenario) throw new Error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(", ")}`);
  const browser = await launch();
  try {
    const result = await scenario(browser.context, JSON.parse(raw));
    console.log("RESULT " + JSON.stringify(result));
  } finally {
    await browser.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e) => {
    console.error(`drive.mjs: ${e && e.message ? e.message.split("\n")[0] : e}`);
    process.exit(1);
  });
}
