/**
 * The Trigger.dev task that runs bgjobs schedules.
 *
 * bgjobs registers every Python job as an imperative schedule on this task, with the job id as
 * the schedule's `externalId`. When a schedule fires, this task hands the job id to Python:
 *
 * - HTTP mode (`BGJOBS_DISPATCH_URL` set): `POST <url>/<job id>` with
 *   `Authorization: Bearer <BGJOBS_SECRET or CRON_SECRET>`, `Prefer: respond-async`, an
 *   `Idempotency-Key` derived from the run, `Bgjobs-Scheduled-For: <this fire>` and, when the
 *   schedule fired before, `Bgjobs-Previous-Fire: <its previous fire>`: the app logs and
 *   counts (as a skip) a previous fire that never reached it. The app starts the job off the request and answers
 *   202 with `Location: <prefix>/runs/<run id>`; the task then waits with Trigger.dev's
 *   `wait.for` (no compute billed while waiting) and polls that URL until the job has ended.
 *   So a job may run longer than the app server's request timeout. An app that ignores
 *   `Prefer` answers 200 once the job has run, which works too.
 * - Python mode (`BGJOBS_APP` set, no URL): `python -m bgjobs exec <BGJOBS_APP> <job id>` in the
 *   task's container (see `pythonExtension` in trigger.config.ts); exit 0 ok, 1 the job failed,
 *   2 unknown job id or an app that cannot be loaded.
 *
 * At most one run of the job per fire: every attempt of one Trigger.dev run sends the same
 * `Idempotency-Key` (`bgjobs:<run id>:<scheduled time>`), so a retry after a timeout or a lost
 * answer finds the job still running (and waits for it) or finished (and reports it) instead of
 * starting it again. Only when a previous attempt's job *failed* does a retry run the job anew,
 * under the next key (`...#2`, `...#3`: attempt n uses at most n keys).
 *
 * Error policy: what a retry can fix (5xx, network errors, timeouts, a failed job) throws a plain
 * `Error`, so the project's retry settings apply; a failed job fails the run with the job's own
 * error message — for good (`AbortTaskRunError`) once the job's own `retries=N` is spent: the app
 * answers `X-BGJobs-Retries: N` for such a job, and attempt N + 1 is its last. What a retry
 * cannot fix (unknown job, wrong secret, bad configuration) throws `AbortTaskRunError`, which
 * fails the run without retrying. A job that is already running (a
 * run not started by this fire) is skipped: the run succeeds with `{ skipped: true, reason }`.
 *
 * The secret is sent only in the Authorization header, only to the configured origin: it is
 * never logged, never put in an error message, never sent to a redirect target, and never
 * sent in clear text (an `http://` URL is refused unless its host is the local machine).
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { AbortTaskRunError, logger, schedules, wait } from "@trigger.dev/sdk";

/** A value that survives `JSON.parse`/`JSON.stringify` unchanged. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** Where the dispatcher sends a job, read from the task's environment variables. */
export type DispatchSettings =
  | {
      readonly mode: "http";
      /** The app's dispatch prefix, e.g. `https://myapp.example.com/api/cron` (no trailing slash). */
      readonly url: string;
      /** `undefined` when neither BGJOBS_SECRET nor CRON_SECRET is set. */
      readonly secret: string | undefined;
      /** How long one HTTP request may take. */
      readonly timeoutMs: number;
      /** The longest wait between two polls of a job that is still running. */
      readonly pollIntervalMs: number;
      /** How long to wait for an accepted job to end, in all. */
      readonly waitTimeoutMs: number;
    }
  | {
      readonly mode: "exec";
      /** The APP argument of `python -m bgjobs exec APP JOB_ID`. */
      readonly app: string;
      readonly pythonBin: string;
      readonly timeoutMs: number;
    };

/** What a dispatch did; the task's output adds the schedule's fire time. */
export type DispatchResult =
  | {
      readonly jobId: string;
      readonly via: "http";
      readonly skipped: false;
      /** The app's answer: the run record (`run_id`, `outcome`, ...), or the job's status. */
      readonly status: JsonValue;
    }
  | { readonly jobId: string; readonly via: "exec"; readonly skipped: false; readonly exitCode: 0 }
  | { readonly jobId: string; readonly via: "http"; readonly skipped: true; readonly reason: string };

export type DispatchOutput = DispatchResult & { readonly scheduledAt: string };

/** The part of a schedule's payload the task reads. JSON payloads (a run started with the API,
 * e.g. bgjobs' `trigger_remote()`) carry the times as ISO 8601 strings, scheduled fires as Dates. */
export type DispatchPayload = {
  readonly scheduleId?: string | undefined;
  readonly externalId?: string | undefined;
  readonly timestamp?: Date | string | undefined;
  /** The schedule's previous fire; absent on its first fire and in `trigger_remote()`'s. */
  readonly lastTimestamp?: Date | string | undefined;
  readonly timezone?: string | undefined;
};

/** What the task's `run` needs from Trigger.dev; tests pass their own. */
export type DispatchContext = {
  readonly runId: string;
  /** 1 for the first attempt of the run, 2 for its first retry, ... */
  readonly attempt: number;
  /** When the run was created: the fire time when the payload has none. */
  readonly createdAt: Date;
  readonly signal: AbortSignal;
  /** Waits without holding compute (Trigger.dev's `wait.for`). */
  readonly wait: (ms: number) => Promise<void>;
  readonly env: Env;
};

type Env = Readonly<Record<string, string | undefined>>;

/** 10 minutes: long enough for most jobs, well below the project's `maxDuration`. */
export const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
/** The longest wait between two polls of a running job (the first is 2 s, then doubling). */
export const DEFAULT_POLL_INTERVAL_MS = 60 * 1000;
const FIRST_POLL_MS = 2_000;
/** How long an accepted job may run before the task gives up waiting for it (a retry resumes). */
export const DEFAULT_WAIT_TIMEOUT_MS = 24 * 60 * 60 * 1000;
/** Polls in a row that may fail (app restarting, proxy errors) before the attempt fails. */
const POLL_FAILURES_TOLERATED = 5;
/** How long a Python process gets to exit after SIGTERM before it is killed. */
const KILL_GRACE_MS = 10_000;
/** Characters of a response body or of stderr quoted in an error message. */
const QUOTE_CHARS = 2_000;
/** Run outcomes after which a retry of the fire runs the job again (under the next key). */
const RETRYABLE_OUTCOMES: ReadonlySet<string> = new Set(["failed", "abandoned", "timed_out"]);

/** Trigger.dev's wait: checkpointed, so waiting for a long job bills no compute. */
async function waitWithTrigger(ms: number): Promise<void> {
  await wait.for({ seconds: Math.max(1, Math.ceil(ms / 1000)) });
}

export const bgjobsDispatch = schedules.task({
  // Must equal TRIGGER_DEV_TASK_ID on the Python side (default "bgjobs-dispatch").
  id: "bgjobs-dispatch",
  run: async (payload, { ctx, signal }): Promise<DispatchOutput> =>
    runDispatch(payload, {
      runId: ctx.run.id,
      attempt: ctx.attempt.number,
      createdAt: ctx.run.createdAt,
      signal,
      wait: waitWithTrigger,
      env: process.env,
    }),
});

/** The task's `run`: dispatches the schedule's job and reports how it went. */
export async function runDispatch(payload: DispatchPayload, context: DispatchContext): Promise<DispatchOutput> {
  const jobId = payload.externalId;
  if (jobId === undefined || jobId === "") {
    throw new AbortTaskRunError(
      `Schedule ${payload.scheduleId ?? "(none)"} has no externalId, so it names no bgjobs job. ` +
        "bgjobs-dispatch only runs the schedules that `bgjobs sync APP` registers " +
        "(externalId = job id) and the runs bgjobs' trigger_remote() starts; delete this " +
        "schedule in the dashboard.",
    );
  }
  const settings = readDispatchSettings(context.env);
  const scheduledAt = fireTime(payload.timestamp, context.createdAt);
  logger.info(`Dispatching bgjobs job "${jobId}"`, {
    jobId,
    mode: settings.mode,
    scheduleId: payload.scheduleId ?? null,
    scheduledAt,
    timezone: payload.timezone ?? null,
    runId: context.runId,
    attempt: context.attempt,
  });
  // The app records the fire on the run, and logs and counts a previous fire that never
  // reached it (down past this task's retries).
  const fireHeaders: Record<string, string> = { "Bgjobs-Scheduled-For": scheduledAt };
  const previous = optionalFireTime(payload.lastTimestamp);
  if (previous !== undefined) {
    fireHeaders["Bgjobs-Previous-Fire"] = previous;
  }
  const result =
    settings.mode === "http"
      ? await dispatchOverHttp(jobId, settings, context, `bgjobs:${context.runId}:${scheduledAt}`, fireHeaders)
      : await dispatchWithPython(jobId, settings, context.signal);
  return { ...result, scheduledAt };
}

/** The fire time as ISO 8601: the payload's (a Date, or a string in a JSON payload), else the
 * run's creation time, which is the same for every attempt of the run. */
export function fireTime(timestamp: Date | string | undefined, fallback: Date): string {
  return optionalFireTime(timestamp) ?? fallback.toISOString();
}

/** A payload time as ISO 8601, or `undefined` when it is missing or not a time. */
function optionalFireTime(timestamp: Date | string | undefined): string | undefined {
  const parsed =
    timestamp instanceof Date ? timestamp : typeof timestamp === "string" ? new Date(timestamp) : undefined;
  return parsed !== undefined && !Number.isNaN(parsed.getTime()) ? parsed.toISOString() : undefined;
}

/**
 * Reads the dispatch settings; a missing or invalid setting is an `AbortTaskRunError` naming
 * the variable, because retrying cannot fix configuration. Blank values count as unset.
 */
export function readDispatchSettings(env: Env): DispatchSettings {
  const timeoutMs = readMilliseconds(env, "BGJOBS_DISPATCH_TIMEOUT_MS", DEFAULT_TIMEOUT_MS);
  const url = nonBlank(env["BGJOBS_DISPATCH_URL"]);
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url.trim());
    } catch {
      throw new AbortTaskRunError(
        "BGJOBS_DISPATCH_URL is not a valid URL; set it to the app's dispatch prefix, " +
          "e.g. https://myapp.example.com/api/cron",
      );
    }
    if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
      throw new AbortTaskRunError(
        `BGJOBS_DISPATCH_URL must be an http(s) URL, got the scheme "${parsed.protocol}"; ` +
          "e.g. https://myapp.example.com/api/cron",
      );
    }
    if (parsed.protocol === "http:" && !isLoopback(parsed.hostname)) {
      throw new AbortTaskRunError(
        `BGJOBS_DISPATCH_URL must use https:// (got http://${parsed.host}): the secret would ` +
          "travel in clear text. Plain http:// is accepted only for localhost / 127.0.0.1 / [::1].",
      );
    }
    if (parsed.search !== "" || parsed.hash !== "") {
      throw new AbortTaskRunError(
        "BGJOBS_DISPATCH_URL must be the app's dispatch prefix without a query or fragment, " +
          "e.g. https://myapp.example.com/api/cron",
      );
    }
    return {
      mode: "http",
      url: parsed.href.replace(/\/+$/, ""),
      secret: nonBlank(env["BGJOBS_SECRET"]) ?? nonBlank(env["CRON_SECRET"]),
      timeoutMs,
      pollIntervalMs: readMilliseconds(env, "BGJOBS_POLL_INTERVAL_MS", DEFAULT_POLL_INTERVAL_MS),
      waitTimeoutMs: readMilliseconds(env, "BGJOBS_WAIT_TIMEOUT_MS", DEFAULT_WAIT_TIMEOUT_MS),
    };
  }
  const app = nonBlank(env["BGJOBS_APP"]);
  if (app !== undefined) {
    return {
      mode: "exec",
      app: app.trim(),
      // pythonExtension sets PYTHON_BIN_PATH to its virtualenv (/opt/venv/bin/python).
      pythonBin: nonBlank(env["PYTHON_BIN_PATH"])?.trim() ?? "python3",
      timeoutMs,
    };
  }
  throw new AbortTaskRunError(
    "bgjobs-dispatch is not configured: set BGJOBS_DISPATCH_URL (HTTP mode, e.g. " +
      "https://myapp.example.com/api/cron) or BGJOBS_APP (Python mode, e.g. myapp.jobs) " +
      "in this environment's variables in the Trigger.dev dashboard.",
  );
}

function isLoopback(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return (
    host === "localhost" ||
    host.endsWith(".localhost") ||
    host === "[::1]" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

type HttpSettings = Extract<DispatchSettings, { mode: "http" }>;

/** The run record the app answered: `run_id` and `outcome` at least. */
type AppRun = JsonObject & { run_id: string; outcome: string };

function asRun(value: JsonValue | undefined): AppRun | undefined {
  if (isJsonObject(value) && typeof value["run_id"] === "string" && typeof value["outcome"] === "string") {
    return value as AppRun;
  }
  return undefined;
}

/**
 * Dispatches over HTTP (see the module doc): POST with `Prefer: respond-async`, the fire's
 * `Idempotency-Key` and `fireHeaders` (`Bgjobs-Scheduled-For`, `Bgjobs-Previous-Fire`), then
 * polls the run until it has ended. Returns the result, or throws a retryable `Error` or an
 * `AbortTaskRunError`.
 */
export async function dispatchOverHttp(
  jobId: string,
  settings: HttpSettings,
  context: DispatchContext,
  keyBase: string,
  fireHeaders: Readonly<Record<string, string>> = {},
): Promise<DispatchResult> {
  const target = `${settings.url}/${encodeURIComponent(jobId)}`;
  const headers: Record<string, string> = { Accept: "application/json" };
  if (settings.secret === undefined) {
    logger.warn(
      "Neither BGJOBS_SECRET nor CRON_SECRET is set: dispatching without a secret, which the " +
        "app accepts only when its environment is development.",
      { jobId },
    );
  } else {
    headers["Authorization"] = `Bearer ${settings.secret}`;
  }

  // Attempt n of the run may use keys 1..n: key k+1 only once key k's job has failed, so two
  // attempts never run the job at the same time, yet a failed job is run again on a retry.
  const attempts = Math.max(1, Math.floor(context.attempt));
  for (let k = 1; ; k++) {
    const key = k === 1 ? keyBase : `${keyBase}#${k}`;
    const posted = await postDispatch(
      jobId,
      target,
      { ...headers, ...fireHeaders, Prefer: "respond-async", "Idempotency-Key": key },
      settings,
      context,
    );
    if (posted.kind !== "run") {
      return posted.result;
    }
    const { run, location, replayed, retries } = posted;
    if (replayed && RETRYABLE_OUTCOMES.has(run.outcome) && k < attempts) {
      logger.info(`bgjobs job "${jobId}": an earlier attempt's run ${run.run_id} ended ${run.outcome}; running it again`, {
        jobId,
        key,
      });
      continue;
    }
    const final = run.outcome === "running" ? await pollRun(jobId, run, location, target, headers, settings, context) : run;
    return finishRun(jobId, final, context.attempt, retries);
  }
}

type Posted =
  | { readonly kind: "done"; readonly result: DispatchResult }
  | {
      readonly kind: "run";
      readonly run: AppRun;
      readonly location: string;
      readonly replayed: boolean;
      /** The job's `retries=` (`X-BGJobs-Retries`), or `undefined` when it declares none. */
      readonly retries: number | undefined;
    };

/** One dispatch POST, mapped to a run to follow, a final result, or a thrown error. */
async function postDispatch(
  jobId: string,
  target: string,
  headers: Record<string, string>,
  settings: HttpSettings,
  context: DispatchContext,
): Promise<Posted> {
  const where = describeUrl(target);
  const outcome = await requestWithTimeout("POST", target, headers, settings.timeoutMs, context.signal);
  if (outcome.kind === "timeout") {
    throw new Error(
      `bgjobs job "${jobId}": ${where} did not answer within ${settings.timeoutMs} ms ` +
        "(BGJOBS_DISPATCH_TIMEOUT_MS); a retry resumes this fire (same Idempotency-Key).",
    );
  }
  if (outcome.kind === "cancelled") {
    throw new Error(`bgjobs job "${jobId}": the run was cancelled while waiting for ${where}.`);
  }
  if (outcome.kind === "network-error") {
    throw new Error(`bgjobs job "${jobId}": POST ${where} failed: ${outcome.message}`);
  }

  const { status, body, location, replayed, retries } = outcome;
  const json = parseJson(body);
  if (status === 202 || (status >= 200 && status < 300 && asRun(isJsonObject(json) ? json["run"] : undefined))) {
    const run = status === 202 ? asRun(json) : asRun(isJsonObject(json) ? json["run"] : undefined);
    if (run === undefined) {
      throw new Error(`bgjobs job "${jobId}": ${where} answered ${status} without a run record: ${quote(body)}`);
    }
    const runUrl = location ?? `${settings.url}/runs/${encodeURIComponent(run.run_id)}`;
    return { kind: "run", run, location: runUrl, replayed, retries: parseRetries(retries) };
  }
  if (status >= 200 && status < 300) {
    // An app without run records (or an older bgjobs) answers once the job has run.
    if (isJsonObject(json) && json["status"] === "failed") {
      const error = typeof json["error"] === "string" ? json["error"] : "no error message";
      throw new Error(`bgjobs job "${jobId}" failed in the app: ${quote(error)}`);
    }
    if (json === undefined) {
      logger.warn(`bgjobs job "${jobId}" ran, but the app's answer is not JSON`, {
        jobId,
        httpStatus: status,
        body: quote(body),
      });
    }
    logger.info(`bgjobs job "${jobId}" ran`, { jobId, httpStatus: status });
    return { kind: "done", result: { jobId, via: "http", skipped: false, status: json ?? null } };
  }
  if (status === 409) {
    const reason = reasonFrom(json) ?? "the job is already running or is stopped in the app";
    logger.warn(`bgjobs job "${jobId}" skipped: ${reason}`, { jobId, httpStatus: status });
    return { kind: "done", result: { jobId, via: "http", skipped: true, reason } };
  }
  if (status === 404) {
    throw new AbortTaskRunError(
      `${where} answered 404: the app has no bgjobs job "${jobId}" (or BGJOBS_DISPATCH_URL is ` +
        "not the app's dispatch prefix, e.g. https://myapp.example.com/api/cron). " +
        "Run `bgjobs sync APP --prune` to remove schedules of jobs that no longer exist.",
    );
  }
  throwForStatus(jobId, where, status, body, location, target, settings);
}

/** Maps an error answer (not 2xx, 404 or 409) to an abort or a retryable Error. */
function throwForStatus(
  jobId: string,
  where: string,
  status: number,
  body: string,
  location: string | null,
  target: string,
  settings: HttpSettings,
): never {
  if (status === 401 || status === 403) {
    throw new AbortTaskRunError(
      settings.secret === undefined
        ? `${where} answered ${status}: the app requires a secret. Set BGJOBS_SECRET (or ` +
            "CRON_SECRET) on this task to the same value as the app's BGJOBS_SECRET."
        : `${where} answered ${status}: the app rejected the secret. BGJOBS_SECRET (or ` +
            "CRON_SECRET) on this task must equal the app's BGJOBS_SECRET (else CRON_SECRET).",
    );
  }
  if (status >= 300 && status < 400) {
    throw new AbortTaskRunError(
      `${where} answered a redirect (${status})` +
        (location === null ? "" : ` to ${describeUrl(location, target)}`) +
        "; redirects are not followed, so the secret stays with the configured host. " +
        "Set BGJOBS_DISPATCH_URL to the final URL (for example https:// instead of http://).",
    );
  }
  const answer = `${where} answered ${status}${body === "" ? "" : `: ${quote(body)}`}`;
  if (status === 408 || status === 425 || status === 429 || status >= 500) {
    throw new Error(`bgjobs job "${jobId}": ${answer}`);
  }
  if (status >= 400 && status < 500) {
    throw new AbortTaskRunError(`bgjobs job "${jobId}": ${answer}`);
  }
  throw new Error(`bgjobs job "${jobId}": unexpected answer, ${answer}`);
}

/** Waits (Trigger.dev's wait: no compute billed) and polls the run until it is no longer running. */
async function pollRun(
  jobId: string,
  run: AppRun,
  location: string,
  target: string,
  headers: Record<string, string>,
  settings: HttpSettings,
  context: DispatchContext,
): Promise<AppRun> {
  let runUrl: URL;
  try {
    runUrl = new URL(location, target);
  } catch {
    throw new AbortTaskRunError(`bgjobs job "${jobId}": the app answered an invalid Location to poll.`);
  }
  if (runUrl.origin !== new URL(target).origin) {
    // The secret goes only to the configured origin.
    throw new AbortTaskRunError(
      `bgjobs job "${jobId}": the app answered a Location on another origin ` +
        `(${describeUrl(runUrl.href)}); the secret is sent only to ${new URL(target).origin}.`,
    );
  }
  const where = describeUrl(runUrl.href);
  logger.info(`bgjobs job "${jobId}" is running in the app (run ${run.run_id}); waiting for it`, {
    jobId,
    appRunId: run.run_id,
  });
  const started = Date.now();
  let delay = Math.min(FIRST_POLL_MS, settings.pollIntervalMs);
  let failures = 0;
  for (;;) {
    if (Date.now() - started >= settings.waitTimeoutMs) {
      throw new Error(
        `bgjobs job "${jobId}": still running after ${settings.waitTimeoutMs} ms ` +
          "(BGJOBS_WAIT_TIMEOUT_MS); a retry goes on waiting for the same run.",
      );
    }
    if (context.signal.aborted) {
      throw new Error(`bgjobs job "${jobId}": the run was cancelled while waiting for the job.`);
    }
    await context.wait(delay);
    delay = Math.min(delay * 2, settings.pollIntervalMs);
    const outcome = await requestWithTimeout("GET", runUrl.href, headers, settings.timeoutMs, context.signal);
    let problem: string;
    if (outcome.kind === "response") {
      const latest = outcome.status === 200 ? asRun(parseJson(outcome.body)) : undefined;
      if (latest !== undefined) {
        failures = 0;
        if (latest.outcome !== "running") {
          return latest;
        }
        continue;
      }
      if (outcome.status === 401 || outcome.status === 403) {
        throwForStatus(jobId, where, outcome.status, outcome.body, null, runUrl.href, settings);
      }
      problem =
        outcome.status === 404
          ? `${where} answered 404: the app does not know run ${run.run_id} (several hosts ` +
            "behind BGJOBS_DISPATCH_URL? each host keeps its own runs, so polls must reach the host " +
            "that started the job)"
          : `${where} answered ${outcome.status}${outcome.body === "" ? "" : `: ${quote(outcome.body)}`}`;
    } else if (outcome.kind === "cancelled") {
      throw new Error(`bgjobs job "${jobId}": the run was cancelled while waiting for the job.`);
    } else {
      problem = outcome.kind === "timeout" ? `GET ${where} timed out` : `GET ${where} failed: ${outcome.message}`;
    }
    failures += 1;
    logger.warn(`bgjobs job "${jobId}": polling failed (${failures} in a row): ${problem}`, { jobId });
    if (failures >= POLL_FAILURES_TOLERATED) {
      throw new Error(`bgjobs job "${jobId}": ${problem}; a retry goes on waiting for the same run.`);
    }
  }
}

/** The run's end as the task's result: success, or the job's own error as the run's failure. */
function finishRun(jobId: string, run: AppRun, attempt: number, retries: number | undefined): DispatchResult {
  if (run.outcome === "completed") {
    logger.info(`bgjobs job "${jobId}" ran`, { jobId, appRunId: run.run_id, duration: run["duration"] ?? null });
    return { jobId, via: "http", skipped: false, status: run };
  }
  const error = typeof run["error"] === "string" && run["error"] !== "" ? run["error"] : `the run ended ${run.outcome}`;
  if (retries !== undefined && attempt > retries) {
    // The job's own retries= is spent: no further attempt, whatever maxAttempts allows.
    throw new AbortTaskRunError(
      `bgjobs job "${jobId}" failed in the app on attempt ${attempt}, the last its ` +
        `retries=${retries} allows: ${quote(error)}`,
    );
  }
  throw new Error(`bgjobs job "${jobId}" failed in the app: ${quote(error)}`);
}

/** `X-BGJobs-Retries` as a count, or `undefined` when absent or not a whole number. */
export function parseRetries(value: string | null): number | undefined {
  if (value === null || !/^[0-9]+$/.test(value.trim())) {
    return undefined;
  }
  return Number.parseInt(value.trim(), 10);
}

/** Runs `python -m bgjobs exec APP JOB_ID`, streaming its output into the run's logs. */
export async function dispatchWithPython(
  jobId: string,
  settings: Extract<DispatchSettings, { mode: "exec" }>,
  signal: AbortSignal,
): Promise<DispatchResult> {
  const args = ["-m", "bgjobs", "exec", settings.app, jobId];
  const command = `${settings.pythonBin} ${args.join(" ")}`;
  logger.info(`Running ${command}`, { jobId, app: settings.app });
  const outcome = await runProcess(settings.pythonBin, args, settings.timeoutMs, signal);

  if (outcome.kind === "spawn-error") {
    const message = `Cannot start ${settings.pythonBin}: ${outcome.message}.`;
    if (outcome.code === "ENOENT" || outcome.code === "EACCES") {
      throw new AbortTaskRunError(
        `${message} Python mode needs pythonExtension in trigger.config.ts (deployments) or ` +
          "python3 on PATH / PYTHON_BIN_PATH (trigger.dev dev).",
      );
    }
    throw new Error(message);
  }
  const stderr = outcome.stderrTail === "" ? "" : `\n${outcome.stderrTail}`;
  if (outcome.stoppedFor === "timeout") {
    throw new Error(
      `bgjobs job "${jobId}": \`${command}\` did not finish within ${settings.timeoutMs} ms ` +
        `(BGJOBS_DISPATCH_TIMEOUT_MS) and was stopped.${stderr}`,
    );
  }
  if (outcome.stoppedFor === "cancel") {
    throw new Error(`bgjobs job "${jobId}": the run was cancelled; \`${command}\` was stopped.`);
  }
  switch (outcome.exitCode) {
    case 0:
      logger.info(`bgjobs job "${jobId}" ran`, { jobId });
      return { jobId, via: "exec", skipped: false, exitCode: 0 };
    case 1:
      throw new Error(`bgjobs job "${jobId}" failed (\`${command}\` exited with 1).${stderr}`);
    case 2:
      throw new AbortTaskRunError(
        `\`${command}\` exited with 2: the job id is unknown or BGJOBS_APP=${settings.app} ` +
          `cannot be loaded (a module, module:attribute, or path to a .py file, installed from ` +
          `requirements.txt or copied with pythonExtension's scripts option).${stderr}`,
      );
    case null:
      throw new Error(
        `bgjobs job "${jobId}": \`${command}\` was killed by ${outcome.signal ?? "a signal"}.${stderr}`,
      );
    default:
      throw new Error(
        `bgjobs job "${jobId}": \`${command}\` exited with ${outcome.exitCode}.${stderr}`,
      );
  }
}

type RequestOutcome =
  | {
      readonly kind: "response";
      readonly status: number;
      readonly body: string;
      readonly location: string | null;
      /** The app answered a repeat of an Idempotency-Key from its record. */
      readonly replayed: boolean;
      /** `X-BGJobs-Retries`: the job's `retries=`, when it was declared with one. */
      readonly retries: string | null;
    }
  | { readonly kind: "timeout" }
  | { readonly kind: "cancelled" }
  | { readonly kind: "network-error"; readonly message: string };

/** One request; the timeout covers reading the body, and cancelling the run aborts it. */
async function requestWithTimeout(
  method: "GET" | "POST",
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<RequestOutcome> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const onRunAborted = (): void => controller.abort();
  signal.addEventListener("abort", onRunAborted, { once: true });
  if (signal.aborted) {
    controller.abort();
  }
  try {
    // "manual": a redirect must not carry the Authorization header to another URL.
    const response = await fetch(url, {
      method,
      headers,
      redirect: "manual",
      signal: controller.signal,
    });
    const body = await response.text();
    return {
      kind: "response",
      status: response.status,
      body,
      location: response.headers.get("location"),
      replayed: response.headers.get("idempotent-replayed") === "true",
      retries: response.headers.get("x-bgjobs-retries"),
    };
  } catch (error: unknown) {
    if (timedOut) {
      return { kind: "timeout" };
    }
    if (signal.aborted) {
      return { kind: "cancelled" };
    }
    return { kind: "network-error", message: describeError(error) };
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onRunAborted);
  }
}

type ProcessOutcome =
  | { readonly kind: "spawn-error"; readonly code: string | undefined; readonly message: string }
  | {
      readonly kind: "exited";
      readonly exitCode: number | null;
      readonly signal: NodeJS.Signals | null;
      /** Why the process was stopped, if it was. */
      readonly stoppedFor: "timeout" | "cancel" | undefined;
      /** The last QUOTE_CHARS characters the process wrote to stderr. */
      readonly stderrTail: string;
    };

/**
 * Runs a process to completion. On timeout or cancellation its process group gets SIGTERM
 * (Python exits), then SIGKILL after KILL_GRACE_MS; the group takes grandchildren along.
 */
function runProcess(
  command: string,
  args: readonly string[],
  timeoutMs: number,
  signal: AbortSignal,
): Promise<ProcessOutcome> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so that stop() reaches the processes it starts too.
      detached: process.platform !== "win32",
    });
    let settled = false;
    let stoppedFor: "timeout" | "cancel" | undefined;
    let stderrTail = "";
    let killTimer: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;

    const sendSignal = (name: NodeJS.Signals): void => {
      if (child.pid === undefined) {
        return;
      }
      try {
        process.kill(process.platform === "win32" ? child.pid : -child.pid, name);
      } catch {
        child.kill(name); // the group is gone, or no groups on this platform
      }
    };
    const stop = (reason: "timeout" | "cancel"): void => {
      if (stoppedFor !== undefined || settled) {
        return;
      }
      stoppedFor = reason;
      sendSignal("SIGTERM");
      killTimer = setTimeout(() => sendSignal("SIGKILL"), KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop("timeout"), timeoutMs);
    const onRunAborted = (): void => stop("cancel");
    signal.addEventListener("abort", onRunAborted, { once: true });
    if (signal.aborted) {
      onRunAborted();
    }
    const finish = (outcome: ProcessOutcome): void => {
      if (settled) {
        return;
      }
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      clearTimeout(drainTimer);
      signal.removeEventListener("abort", onRunAborted);
      resolve(outcome);
    };
    const exitedWith = (exitCode: number | null, exitSignal: NodeJS.Signals | null): ProcessOutcome => ({
      kind: "exited",
      exitCode,
      signal: exitSignal,
      stoppedFor,
      stderrTail: stderrTail.trimEnd(),
    });

    forwardLines(child.stdout, "stdout", () => undefined);
    forwardLines(child.stderr, "stderr", (line) => {
      stderrTail = `${stderrTail}${line}\n`.slice(-QUOTE_CHARS);
    });
    child.on("error", (error: NodeJS.ErrnoException) => {
      // Emitted when the process cannot be spawned, or (ignored) when a signal cannot be sent.
      if (child.pid === undefined) {
        finish({ kind: "spawn-error", code: error.code, message: error.message });
      }
    });
    child.once("exit", (exitCode, exitSignal) => {
      // "close" waits for stdout/stderr to end, which a leftover grandchild can hold open.
      drainTimer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        finish(exitedWith(exitCode, exitSignal));
      }, 2_000);
    });
    child.once("close", (exitCode, exitSignal) => {
      if (child.pid !== undefined) {
        finish(exitedWith(exitCode, exitSignal));
      }
    });
  });
}

/** Logs each line of a child's stream in the run's log, and hands it to `onLine`. */
function forwardLines(stream: Readable, name: "stdout" | "stderr", onLine: (line: string) => void): void {
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  lines.on("line", (line: string) => {
    onLine(line);
    if (line !== "") {
      logger.log(line, { stream: name });
    }
  });
}

function readMilliseconds(env: Env, name: string, fallback: number): number {
  const raw = nonBlank(env[name]);
  if (raw === undefined) {
    return fallback;
  }
  const value = Number(raw.trim());
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new AbortTaskRunError(
      `${name} must be a positive whole number of milliseconds, got ` +
        `${JSON.stringify(raw)}; e.g. 600000 for 10 minutes.`,
    );
  }
  return value;
}

/** The value, or `undefined` when it is missing or only whitespace. */
function nonBlank(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}

/** A URL for messages: no user info, no query (they may hold credentials). */
function describeUrl(url: string, base?: string): string {
  try {
    const parsed = new URL(url, base);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return "<invalid URL>";
  }
}

function parseJson(text: string): JsonValue | undefined {
  if (text.trim() === "") {
    return undefined;
  }
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return undefined;
  }
}

function isJsonObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The human-readable reason in an error body such as `{"error": "..."}`, if any. */
function reasonFrom(json: JsonValue | undefined): string | undefined {
  if (typeof json === "string" && json.trim() !== "") {
    return quote(json);
  }
  if (!isJsonObject(json)) {
    return undefined;
  }
  for (const key of ["reason", "error", "message", "detail"]) {
    const value = json[key];
    if (typeof value === "string" && value.trim() !== "") {
      return quote(value);
    }
    // bgjobs' own error shape: {"error": {"status": 409, "message": "..."}}
    if (isJsonObject(value)) {
      const nested = reasonFrom(value);
      if (nested !== undefined) {
        return nested;
      }
    }
  }
  return undefined;
}

/** Text shortened for a log line or an error message. */
function quote(text: string): string {
  const flat = text.trim();
  return flat.length <= QUOTE_CHARS ? flat : `${flat.slice(0, QUOTE_CHARS)}…`;
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) {
    return String(error);
  }
  // fetch() wraps the reason (ECONNREFUSED, ENOTFOUND, a TLS error) in `cause`.
  const cause: unknown = error.cause;
  return cause instanceof Error ? `${error.message} (${cause.message})` : error.message;
}
