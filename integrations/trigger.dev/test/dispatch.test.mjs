// The compiled dispatcher task's run() against a real bgjobs app (gunicorn on 127.0.0.1),
// under Node's own test runner. `tox -e node` runs it:
//   npm ci && npx tsc -p tsconfig.build.json && node --test test/
// BGJOBS_TEST_PYTHON names the Python with bgjobs and gunicorn installed (default python3).
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { AbortTaskRunError } from "@trigger.dev/sdk";
import { readDispatchSettings, runDispatch } from "../build/src/trigger/bgjobs-dispatch.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.BGJOBS_TEST_PYTHON || "python3";
const SECRET = "node-test-secret-0123456789";
const GUNICORN_TIMEOUT_S = 2;
const SLOW_S = 6;  // well past the 2 s timeout, so the synchronous control is killed even under load

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** gunicorn serving test/dispatchapp.py on 127.0.0.1:port, 2 sync workers, 2 s timeout. */
async function startApp(port, dir) {
  const conf = join(dir, "gunicorn_conf.py");
  writeFileSync(
    conf,
    [
      `bind = "127.0.0.1:${port}"`,
      "workers = 2",
      'worker_class = "sync"',
      `timeout = ${GUNICORN_TIMEOUT_S}`,
      "graceful_timeout = 1",
      `pythonpath = ${JSON.stringify(HERE)}`,
      "control_socket_disable = True",
      "",
    ].join("\n"),
  );
  const env = {
    ...process.env,
    DISPATCHAPP_DIR: dir,
    DISPATCHAPP_SLOW: String(SLOW_S),
    BGJOBS_ENV: "production",
    BGJOBS_SECRET: SECRET,
    BGJOBS_STATE_DIR: join(dir, "state"),
    TRIGGER_DEV_ENABLED: "1",
    TRIGGER_DEV_API_KEY: "tr_prod_nodeTestKeyNeverSent",
    TRIGGER_DEV_API_URL: "http://127.0.0.1:9",
    TRIGGER_DEV_ENVIRONMENT: "production",
    TRIGGER_DEV_MAX_ATTEMPTS: "1",
  };
  const proc = spawn(PYTHON, ["-m", "gunicorn", "-c", conf, "dispatchapp:app"], {
    env,
    cwd: dir,
    detached: true,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  proc.stderr.on("data", (chunk) => {
    log += chunk.toString();
  });
  const app = {
    proc,
    url: `http://127.0.0.1:${port}/api/cron`,
    log: () => log,
    stop: () => {
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {
        // already gone
      }
    },
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(`${app.url}/status`, { headers: { Authorization: `Bearer ${SECRET}` } });
      if (response.status === 200) {
        return app;
      }
    } catch {
      // not listening yet
    }
    if (proc.exitCode !== null || Date.now() > deadline) {
      app.stop();
      throw new Error(`gunicorn did not come up:\n${log}`);
    }
    await sleep(100);
  }
}

let runCounter = 0;
/** What Trigger.dev hands run(): a fresh run (or the given one), and a fast, recorded wait. */
function context(app, { runId, attempt = 1, env = {} } = {}) {
  const waits = [];
  return {
    waits,
    runId: runId ?? `run_nodetest${process.pid}x${++runCounter}`,
    attempt,
    createdAt: new Date("2026-12-02T12:00:00.000Z"),
    signal: new AbortController().signal,
    wait: async (ms) => {
      waits.push(ms);
      await sleep(Math.min(ms, 50));
    },
    env: {
      BGJOBS_DISPATCH_URL: app.url,
      BGJOBS_SECRET: SECRET,
      BGJOBS_POLL_INTERVAL_MS: "200",
      BGJOBS_DISPATCH_TIMEOUT_MS: "10000",
      ...env,
    },
  };
}

function fire(jobId, timestamp = new Date("2026-12-02T12:00:00.000Z")) {
  return { scheduleId: "sched_nodetest", type: "IMPERATIVE", timestamp, externalId: jobId, timezone: "UTC", upcoming: [] };
}

function runsOf(dir, job) {
  const path = join(dir, "runs.txt");
  if (!existsSync(path)) {
    return 0;
  }
  return readFileSync(path, "utf8").split("\n").filter((line) => line.split(" ")[0] === job).length;
}

describe("bgjobs-dispatch run() against a real bgjobs app", { timeout: 120_000 }, () => {
  let dir;
  let app;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bgjobs-node-"));
    app = await startApp(await freePort(), dir);
  });

  after(() => {
    app?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("success: the job runs once and the run's output is its record", async () => {
    const ctx = context(app);
    const output = await runDispatch(fire("ok"), ctx);
    assert.equal(output.jobId, "ok");
    assert.equal(output.skipped, false);
    assert.equal(output.scheduledAt, "2026-12-02T12:00:00.000Z");
    assert.equal(output.status.outcome, "completed");
    assert.equal(output.status.job_id, "ok");
    assert.equal(runsOf(dir, "ok"), 1);
  });

  test("job failure: the run fails, retryably, with the job's own error message", async () => {
    const error = await runDispatch(fire("fails"), context(app)).then(
      () => assert.fail("the run should fail"),
      (e) => e,
    );
    assert.ok(!(error instanceof AbortTaskRunError), "a failed job must be retried");
    assert.match(error.message, /bgjobs job "fails" failed in the app: .*disk full on \/var\/data/);
  });

  test("a retry of a failed job runs it again, under the next key", async () => {
    const runId = `run_flaky${process.pid}`;
    await assert.rejects(runDispatch(fire("flaky"), context(app, { runId, attempt: 1 })), /flaky: first run fails/);
    const output = await runDispatch(fire("flaky"), context(app, { runId, attempt: 2 }));
    assert.equal(output.status.outcome, "completed");
    assert.equal(runsOf(dir, "flaky"), 2);
  });

  test("unknown job: aborted, not retried", async () => {
    await assert.rejects(runDispatch(fire("no-such-job"), context(app)), (error) => {
      assert.ok(error instanceof AbortTaskRunError);
      assert.match(error.message, /answered 404: the app has no bgjobs job "no-such-job"/);
      return true;
    });
  });

  test("wrong secret: aborted, not retried, and the secret is in no message", async () => {
    const wrong = "wrong-secret-abcdef";
    await assert.rejects(runDispatch(fire("ok"), context(app, { env: { BGJOBS_SECRET: wrong } })), (error) => {
      assert.ok(error instanceof AbortTaskRunError);
      assert.match(error.message, /answered 401: the app rejected the secret/);
      assert.ok(!error.message.includes(wrong));
      return true;
    });
  });

  test("long job (longer than gunicorn's timeout): 202, then waits and polls until it ends", async () => {
    // Control: dispatched synchronously, the job dies with the worker at the 2 s timeout.
    const sync = await fetch(`${app.url}/slow`, { method: "POST", headers: { Authorization: `Bearer ${SECRET}` } }).then(
      (response) => response.status,
      () => "connection lost",
    );
    assert.notEqual(sync, 200);
    const before = runsOf(dir, "slow");
    const ctx = context(app);
    const started = Date.now();
    const output = await runDispatch(fire("slow"), ctx);
    assert.equal(output.status.outcome, "completed");
    assert.ok(output.status.duration >= SLOW_S - 0.5, `duration ${output.status.duration}`);
    assert.ok(Date.now() - started >= (SLOW_S - 0.5) * 1000);
    assert.equal(runsOf(dir, "slow"), before + 1);
    assert.ok(ctx.waits.length >= 2, `waited ${ctx.waits.length} times`);
    assert.ok(ctx.waits.every((ms) => ms <= 200), "waits are capped by BGJOBS_POLL_INTERVAL_MS");
  });

  test("two attempts of one fire at once run the job once; a later retry answers its record", async () => {
    const runId = `run_twice${process.pid}`;
    const [first, second] = await Promise.all([
      runDispatch(fire("counted"), context(app, { runId, attempt: 1 })),
      runDispatch(fire("counted"), context(app, { runId, attempt: 2 })),
    ]);
    assert.equal(first.status.outcome, "completed");
    assert.equal(second.status.run_id, first.status.run_id);
    assert.equal(runsOf(dir, "counted"), 1);
    const third = await runDispatch(fire("counted"), context(app, { runId, attempt: 3 }));
    assert.equal(third.status.run_id, first.status.run_id);
    assert.equal(runsOf(dir, "counted"), 1);
    // Another fire of the same schedule is another run.
    await runDispatch(fire("counted", new Date("2026-12-02T12:05:00.000Z")), context(app));
    assert.equal(runsOf(dir, "counted"), 2);
  });

  test("trigger_remote()'s payload (plain JSON, times as strings) runs the job", async () => {
    const payload = await new Promise((resolve, reject) => {
      execFile(PYTHON, [join(HERE, "remote_payload.py"), "ok"], { timeout: 60_000 }, (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
      );
    });
    assert.equal(typeof payload.timestamp, "string");
    const before = runsOf(dir, "ok");
    const output = await runDispatch(payload, context(app));
    assert.equal(output.scheduledAt, payload.timestamp);
    assert.equal(output.status.outcome, "completed");
    assert.equal(runsOf(dir, "ok"), before + 1);
  });

  test("a fire that never reached the app is counted as a skip when the next one arrives", async () => {
    const at = (hour) => new Date(`2026-12-03T${hour}:00:00.000Z`);
    const first = await runDispatch({ ...fire("daily", at("09")), lastTimestamp: undefined }, context(app));
    assert.equal(first.status.scheduled_for, "2026-12-03T09:00:00+00:00");
    // The 10:00 fire never arrives; the 11:00 one names it as the schedule's previous fire.
    await runDispatch({ ...fire("daily", at("11")), lastTimestamp: at("10") }, context(app));
    const status = await fetch(`${app.url}/status`, { headers: { Authorization: `Bearer ${SECRET}` } });
    const daily = (await status.json()).jobs.find((job) => job.id === "daily");
    assert.equal(daily.skips, 1);
    assert.equal(daily.runs, 2);
  });

  test("a payload without a timestamp falls back to the run's creation time", async () => {
    const output = await runDispatch({ externalId: "ok" }, context(app));
    assert.equal(output.scheduledAt, "2026-12-02T12:00:00.000Z");
  });
});

describe("bgjobs-dispatch run() while the app is down", { timeout: 60_000 }, () => {
  test("app down: a retryable error; app up again: the retry succeeds", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bgjobs-node-down-"));
    const port = await freePort();
    const down = { url: `http://127.0.0.1:${port}/api/cron` };
    const runId = `run_down${process.pid}`;
    let app;
    try {
      await assert.rejects(runDispatch(fire("ok"), context(down, { runId, attempt: 1 })), (error) => {
        assert.ok(!(error instanceof AbortTaskRunError), "an app that is down must be retried");
        assert.match(error.message, /POST http:\/\/127\.0\.0\.1:\d+\/api\/cron\/ok failed/);
        return true;
      });
      app = await startApp(port, dir);
      const output = await runDispatch(fire("ok"), context(app, { runId, attempt: 2 }));
      assert.equal(output.status.outcome, "completed");
      assert.equal(runsOf(dir, "ok"), 1);
    } finally {
      app?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("bgjobs-dispatch's request headers", () => {
  test("every dispatch names its fire, and the schedule's previous fire when there is one", async () => {
    const seen = [];
    const server = createHttpServer((request, response) => {
      seen.push(request.headers);
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ id: "ok", status: "completed" }));
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const app = { url: `http://127.0.0.1:${server.address().port}/api/cron` };
    try {
      const payload = { ...fire("ok"), lastTimestamp: new Date("2026-12-02T11:00:00.000Z") };
      await runDispatch(payload, context(app));
      // trigger_remote()'s JSON payload: times as strings, no previous fire.
      await runDispatch({ externalId: "ok", timestamp: "2026-12-02T12:30:00.000Z" }, context(app));
    } finally {
      server.close();
    }
    assert.equal(seen.length, 2);
    assert.equal(seen[0]["bgjobs-scheduled-for"], "2026-12-02T12:00:00.000Z");
    assert.equal(seen[0]["bgjobs-previous-fire"], "2026-12-02T11:00:00.000Z");
    assert.equal(seen[1]["bgjobs-scheduled-for"], "2026-12-02T12:30:00.000Z");
    assert.equal(seen[1]["bgjobs-previous-fire"], undefined);
  });
});

describe("readDispatchSettings", () => {
  test("refuses http:// except for the local machine (the secret would travel in clear)", () => {
    assert.throws(
      () => readDispatchSettings({ BGJOBS_DISPATCH_URL: "http://myapp.example.com/api/cron" }),
      (error) => error instanceof AbortTaskRunError && /must use https:\/\//.test(error.message),
    );
    for (const url of ["http://localhost:8000/api/cron", "http://127.0.0.1/api/cron", "http://[::1]:80/x"]) {
      assert.equal(readDispatchSettings({ BGJOBS_DISPATCH_URL: url }).mode, "http");
    }
    assert.equal(readDispatchSettings({ BGJOBS_DISPATCH_URL: "https://myapp.example.com/api/cron/" }).url,
      "https://myapp.example.com/api/cron");
  });
});
