/**
 * The Trigger.dev task that runs bgjobs schedules.
 *
 * bgjobs registers every Python job as an imperative schedule on this task, with the job id as
 * the schedule's `externalId`. When a schedule fires, this task hands the job id to Python:
 *
 * - HTTP mode (`BGJOBS_DISPATCH_URL` set): `POST <url>/<job id>` with
 *   `Authorization: Bearer <BGJOBS_SECRET or CRON_SECRET>`; the app runs the job and answers
 *   200 with its status JSON, 404 for an unknown id, 409 when it is already running or stopped.
 * - Python mode (`BGJOBS_APP` set, no URL): `python -m bgjobs exec <BGJOBS_APP> <job id>` in the
 *   task's container (see `pythonExtension` in trigger.config.ts); exit 0 ok, 1 the job failed,
 *   2 unknown job id or an app that cannot be loaded.
 *
 * Error policy: what a retry can fix (5xx, network errors, timeouts, a failed job) throws a plain
 * `Error`, so the project's retry settings apply; what it cannot (unknown job, wrong secret, bad
 * configuration) throws `AbortTaskRunError`, which fails the run without retrying. A job that is
 * already running is skipped: the run succeeds with `{ skipped: true, reason }`.
 *
 * The secret is sent only in the Authorization header: it is never logged, never put in an
 * error message, and never sent to a redirect target.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { AbortTaskRunError, logger, schedules } from "@trigger.dev/sdk";

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
      readonly timeoutMs: number;
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
  | { readonly jobId: string; readonly via: "http"; readonly skipped: false; readonly status: JsonValue }
  | { readonly jobId: string; readonly via: "exec"; readonly skipped: false; readonly exitCode: 0 }
  | { readonly jobId: string; readonly via: "http"; readonly skipped: true; readonly reason: string };

export type DispatchOutput = DispatchResult & { readonly scheduledAt: string };

type Env = Readonly<Record<string, string | undefined>>;

/** 10 minutes: long enough for most jobs, well below the project's `maxDuration`. */
export const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
/** How long a Python process gets to exit after SIGTERM before it is killed. */
const KILL_GRACE_MS = 10_000;
/** Characters of a response body or of stderr quoted in an error message. */
const QUOTE_CHARS = 2_000;

export const bgjobsDispatch = schedules.task({
  // Must equal TRIGGER_DEV_TASK_ID on the Python side (default "bgjobs-dispatch").
  id: "bgjobs-dispatch",
  run: async (payload, { ctx, signal }): Promise<DispatchOutput> => {
    const jobId = payload.externalId;
    if (jobId === undefined || jobId === "") {
      throw new AbortTaskRunError(
        `Schedule ${payload.scheduleId} has no externalId, so it names no bgjobs job. ` +
          "bgjobs-dispatch only runs the schedules that `bgjobs sync APP` registers " +
          "(externalId = job id); delete this schedule in the dashboard.",
      );
    }
    const settings = readDispatchSettings(process.env);
    const scheduledAt = payload.timestamp.toISOString();
    logger.info(`Dispatching bgjobs job "${jobId}"`, {
      jobId,
      mode: settings.mode,
      scheduleId: payload.scheduleId,
      scheduledAt,
      timezone: payload.timezone,
      runId: ctx.run.id,
      attempt: ctx.attempt.number,
    });
    const result =
      settings.mode === "http"
        ? await dispatchOverHttp(jobId, settings, signal)
        : await dispatchWithPython(jobId, settings, signal);
    return { ...result, scheduledAt };
  },
});

/**
 * Reads the dispatch settings; a missing or invalid setting is an `AbortTaskRunError` naming
 * the variable, because retrying cannot fix configuration. Blank values count as unset.
 */
export function readDispatchSettings(env: Env): DispatchSettings {
  const timeoutMs = readTimeout(env);
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

/** `POST <url>/<job id>` and maps the answer to a result, a retryable Error or an abort. */
export async function dispatchOverHttp(
  jobId: string,
  settings: Extract<DispatchSettings, { mode: "http" }>,
  signal: AbortSignal,
): Promise<DispatchResult> {
  const target = `${settings.url}/${encodeURIComponent(jobId)}`;
  const where = describeUrl(target);
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

  const outcome = await postWithTimeout(target, headers, settings.timeoutMs, signal);
  if (outcome.kind === "timeout") {
    throw new Error(
      `bgjobs job "${jobId}": ${where} did not answer within ${settings.timeoutMs} ms ` +
        "(BGJOBS_DISPATCH_TIMEOUT_MS); the job may still be running in the app.",
    );
  }
  if (outcome.kind === "cancelled") {
    throw new Error(`bgjobs job "${jobId}": the run was cancelled while waiting for ${where}.`);
  }
  if (outcome.kind === "network-error") {
    throw new Error(`bgjobs job "${jobId}": POST ${where} failed: ${outcome.message}`);
  }

  const { status, body, location } = outcome;
  const json = parseJson(body);
  if (status >= 200 && status < 300) {
    if (isJsonObject(json) && json["status"] === "failed") {
      // The app records the failure and answers 200; fail the run too, as exec mode does.
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
    return { jobId, via: "http", skipped: false, status: json ?? null };
  }
  if (status === 409) {
    const reason = reasonFrom(json) ?? "the job is already running or is stopped in the app";
    logger.warn(`bgjobs job "${jobId}" skipped: ${reason}`, { jobId, httpStatus: status });
    return { jobId, via: "http", skipped: true, reason };
  }
  if (status === 404) {
    throw new AbortTaskRunError(
      `${where} answered 404: the app has no bgjobs job "${jobId}" (or BGJOBS_DISPATCH_URL is ` +
        "not the app's dispatch prefix, e.g. https://myapp.example.com/api/cron). " +
        "Run `bgjobs sync APP --prune` to remove schedules of jobs that no longer exist.",
    );
  }
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

type PostOutcome =
  | { readonly kind: "response"; readonly status: number; readonly body: string; readonly location: string | null }
  | { readonly kind: "timeout" }
  | { readonly kind: "cancelled" }
  | { readonly kind: "network-error"; readonly message: string };

/** One POST; the timeout covers reading the body, and cancelling the run aborts the request. */
async function postWithTimeout(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<PostOutcome> {
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
      method: "POST",
      headers,
      redirect: "manual",
      signal: controller.signal,
    });
    const body = await response.text();
    return { kind: "response", status: response.status, body, location: response.headers.get("location") };
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

function readTimeout(env: Env): number {
  const raw = nonBlank(env["BGJOBS_DISPATCH_TIMEOUT_MS"]);
  if (raw === undefined) {
    return DEFAULT_TIMEOUT_MS;
  }
  const value = Number(raw.trim());
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new AbortTaskRunError(
      `BGJOBS_DISPATCH_TIMEOUT_MS must be a positive whole number of milliseconds, got ` +
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
