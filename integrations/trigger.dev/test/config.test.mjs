// trigger.config.ts, compiled: the machine and the retry window come from the deploying shell.
import assert from "node:assert/strict";
import { test } from "node:test";

let loads = 0;
/** The config as `trigger.dev deploy` would evaluate it with these variables set. */
async function configWith(env) {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    // A new URL each time: the module is evaluated again, reading the variables anew.
    return (await import(`../build/trigger.config.js?load=${++loads}`)).default;
  } finally {
    for (const name of Object.keys(env)) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  }
}

test("defaults: small-1x, 3 attempts, waits capped at 60 s", async () => {
  const config = await configWith({});
  assert.equal(config.machine, "small-1x");
  assert.equal(config.retries.default.maxAttempts, 3);
  assert.equal(config.retries.default.maxTimeoutInMs, 60_000);
});

test("BGJOBS_MACHINE and the retry window are configurable", async () => {
  const config = await configWith({
    BGJOBS_MACHINE: "micro",
    BGJOBS_RETRY_ATTEMPTS: "8",
    BGJOBS_RETRY_MAX_DELAY_MS: "300000",
  });
  assert.equal(config.machine, "micro");
  assert.equal(config.retries.default.maxAttempts, 8);
  assert.equal(config.retries.default.maxTimeoutInMs, 300_000);
});

test("a bad value stops the build, naming the variable", async () => {
  await assert.rejects(configWith({ BGJOBS_MACHINE: "huge" }), /BGJOBS_MACHINE="huge" is not one of micro/);
  await assert.rejects(configWith({ BGJOBS_RETRY_ATTEMPTS: "0" }), /BGJOBS_RETRY_ATTEMPTS="0"/);
});
