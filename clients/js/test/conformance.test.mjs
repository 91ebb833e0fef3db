// The language-neutral client-session scenarios (tests/conformance/client_session.json, the
// same file the Python ClientSession passes), run against the built module's pure core.
//   node --test clients/js/test/     (after `node clients/js/build.mjs`)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { ClientSession, ConnectionClosed, SendBufferFull, UsageError, WsError } from "../dist/wscore.js";

const here = dirname(fileURLToPath(import.meta.url));
const file = resolve(here, "../../../tests/conformance/client_session.json");
const spec = JSON.parse(readFileSync(file, "utf8"));
const ERRORS = { SendBufferFull, UsageError, ConnectionClosed, WsError };

/** Deep equality where numbers match within 1e-9. */
function same(actual, expected, where) {
  if (typeof expected === "number" && typeof actual === "number") {
    assert.ok(Math.abs(actual - expected) <= 1e-9, `${where}: ${actual} != ${expected}`);
  } else if (expected && typeof expected === "object" && !Array.isArray(expected)) {
    assert.ok(actual && typeof actual === "object" && !Array.isArray(actual), `${where}: not an object: ${JSON.stringify(actual)}`);
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${where}: keys`);
    for (const k of Object.keys(expected)) same(actual[k], expected[k], `${where}.${k}`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual) && actual.length === expected.length, `${where}: ${JSON.stringify(actual)} != ${JSON.stringify(expected)}`);
    expected.forEach((e, i) => same(actual[i], e, `${where}[${i}]`));
  } else {
    assert.deepEqual(actual, expected, where);
  }
}

/** Only the keys the scenario gives are compared; a frame is compared as a subset of the written one. */
function matchAction(actual, expected, where) {
  assert.equal(actual.action, expected.action, `${where}: action ${JSON.stringify(actual)}`);
  for (const [k, v] of Object.entries(expected)) {
    if (k === "action") continue;
    if (k === "frame") {
      const written = JSON.parse(actual.text);
      for (const [fk, fv] of Object.entries(v)) {
        if (fv === null) assert.ok(written[fk] === undefined || written[fk] === null, `${where}: frame.${fk} should be absent, got ${JSON.stringify(written)}`);
        else same(written[fk], fv, `${where}.frame.${fk}`);
      }
    } else same(actual[k], v, `${where}.${k}`);
  }
}

function run(session, step, now) {
  switch (step.in) {
    case "connect": return session.connect(step.token ?? null);
    case "frame": return session.receive(JSON.stringify({ v: "1.0", ...step.frame }), now);
    case "closed": return session.closed(step.code ?? null, step.reason ?? "", step.httpStatus ?? null);
    case "tick": return session.tick(now);
    case "send": return session.send(step.event, step.payload);
    case "request": return session.request(step.event, step.payload);
    case "auth": return session.authenticate(step.token);
    case "abandon": return session.abandon(step.c);
    case "close": return session.close(step.code ?? 1000, step.reason ?? "");
    default: throw new Error(`unknown input kind ${step.in}`);
  }
}

test("the conformance file has the version this runner reads", () => {
  assert.equal(spec.version, 1);
  assert.ok(spec.scenarios.length > 0);
});

for (const scenario of spec.scenarios) {
  test(scenario.name, () => {
    const options = { ...spec.defaults, ...scenario.options };
    let random = null;
    let drew = false;
    const session = new ClientSession(options, () => {
      if (random === null) throw new Error("the step drew randomness but gives no \"random\"");
      drew = true;
      return random;
    }, () => options.wallMs);
    let now = 0;
    scenario.steps.forEach((step, i) => {
      const where = `${scenario.name} step ${i} (${step.in})`;
      now = step.now ?? now;
      random = step.random ?? null;
      drew = false;
      let returned;
      let raised = null;
      try {
        returned = run(session, step, now);
      } catch (e) {
        raised = e;
      }
      const actions = session.drain();
      if (step.raises) {
        assert.ok(raised instanceof ERRORS[step.raises], `${where}: expected ${step.raises}, got ${raised}`);
        assert.deepEqual(actions, [], `${where}: a refused call queues nothing`);
      } else if (raised) {
        throw raised;
      }
      if ("returns" in step) same(returned, step.returns, `${where}: returns`);
      if (step.expect) {
        assert.equal(actions.length, step.expect.length, `${where}: actions ${JSON.stringify(actions.map(({ text, ...a }) => a))}`);
        step.expect.forEach((e, j) => matchAction(actions[j], e, `${where} action ${j}`));
      }
      if (step.state) {
        const snap = session.snapshot();
        for (const [k, v] of Object.entries(step.state)) same(snap[k], v, `${where}: state.${k}`);
      }
      if ("deadline" in step) {
        const d = session.nextDeadline();
        if (step.deadline === null) assert.equal(d, null, `${where}: deadline`);
        else same(d, step.deadline, `${where}: deadline`);
      }
      if (random !== null && !drew && step.expect?.some((a) => a.action === "reconnect")) {
        assert.fail(`${where}: gave "random" for a reconnect but the session drew none`);
      }
    });
  });
}
