// Dead-link detection from receive events with wall-clock deadlines (liveness.ts, pure):
// a timer throttled to once a minute (hidden tab) delays the verdict, it never fakes one.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Liveness } from "../dist/wscore.js";

test("silence first gets a probe, then the verdict after the grace", () => {
  const l = new Liveness(20, 20, 0);
  assert.deepEqual(l.check(10), { probe: false, dead: false, wakeAt: 20 });
  assert.deepEqual(l.check(20), { probe: true, dead: false, wakeAt: 40 });
  assert.deepEqual(l.check(39), { probe: false, dead: false, wakeAt: 40 });
  assert.equal(l.check(40).dead, true);
});

test("a receive re-arms it: the probe's answer keeps the link", () => {
  const l = new Liveness(20, 20, 0);
  assert.equal(l.check(20).probe, true);
  l.received(20.05); // sys.pong
  assert.deepEqual(l.check(30), { probe: false, dead: false, wakeAt: 40.05 });
});

test("a timer that fired a minute late probes instead of declaring a live link dead", () => {
  const l = new Liveness(20, 20, 0);
  // The tab was hidden: the wake-up due at 20 runs at 80, long past probeAfter + grace.
  const late = l.check(80);
  assert.deepEqual(late, { probe: true, dead: false, wakeAt: 100 });
  l.received(80.02); // the live server answers the probe
  assert.equal(l.check(100).dead, false);
});

test("a dead link is still detected, one grace after the probe actually went out", () => {
  const l = new Liveness(20, 20, 0);
  assert.equal(l.check(80).probe, true); // throttled wake-up
  assert.equal(l.check(95).dead, false);
  assert.equal(l.check(160).dead, true); // the next (throttled) wake-up: the probe went unanswered
});

test("force probes at once (the tab became visible, the network came back)", () => {
  const l = new Liveness(20, 20, 0);
  assert.deepEqual(l.check(1, true), { probe: true, dead: false, wakeAt: 21 });
  assert.equal(l.check(21).dead, true);
});
