import { defineConfig } from "@trigger.dev/sdk";
import { pythonExtension } from "@trigger.dev/python/extension";

// Read when the project is built (`trigger.dev deploy`), from the deploying shell's environment.
const MACHINES = ["micro", "small-1x", "small-2x", "medium-1x", "medium-2x", "large-1x", "large-2x"] as const;
type Machine = (typeof MACHINES)[number];

/** BGJOBS_MACHINE: the machine the dispatcher runs on (default small-1x; HTTP mode needs little). */
function machine(): Machine {
  const raw = process.env["BGJOBS_MACHINE"]?.trim() || "small-1x";
  const found = MACHINES.find((name) => name === raw);
  if (found === undefined) {
    throw new Error(`BGJOBS_MACHINE=${JSON.stringify(raw)} is not one of ${MACHINES.join(", ")}`);
  }
  return found;
}

/** A positive whole number from the environment, or the default; anything else stops the build. */
function whole(name: string, fallback: number): number {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === "") {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`${name}=${JSON.stringify(raw)} must be a positive whole number`);
  }
  return value;
}

/**
 * Trigger.dev project for the bgjobs dispatcher (see README.md).
 *
 * bgjobs registers each Python job as an imperative schedule on the `bgjobs-dispatch` task in
 * ./src/trigger; this file only configures how that task is built and run.
 */
export default defineConfig({
  // Your project ref ("proj_..."), from the Trigger.dev dashboard's project settings.
  project: process.env.TRIGGER_PROJECT_REF ?? "proj_replace_me",
  dirs: ["./src/trigger"],
  runtime: "node",
  logLevel: "info",
  // Compute seconds a run may take. Keep BGJOBS_DISPATCH_TIMEOUT_MS (default 10 min) below it.
  maxDuration: 3600,
  machine: machine(),
  retries: {
    enabledInDev: false,
    // Applies to errors worth retrying only: 5xx, network errors, timeouts and failed jobs.
    // An unknown job id, a bad secret or a bad app fails the run at once (AbortTaskRunError).
    // The retry window — how long the app may be down before a fire is lost — is about
    // minTimeout * (factor^(attempts-1) - 1) / (factor - 1), capped per wait by maxTimeout:
    // 5 s + 10 s = 15 s by default. Widen it with BGJOBS_RETRY_ATTEMPTS and
    // BGJOBS_RETRY_MAX_DELAY_MS (e.g. 8 attempts, 300000: about 16 minutes).
    default: {
      maxAttempts: whole("BGJOBS_RETRY_ATTEMPTS", 3),
      factor: 2,
      minTimeoutInMs: 5_000,
      maxTimeoutInMs: whole("BGJOBS_RETRY_MAX_DELAY_MS", 60_000),
      randomize: true,
    },
  },
  build: {
    extensions: [
      // Python mode (BGJOBS_APP): installs python3 into the image, creates /opt/venv,
      // `pip install -r requirements.txt`, and sets PYTHON_BIN_PATH for the task.
      // HTTP mode (BGJOBS_DISPATCH_URL) does not need it; remove it for a smaller image.
      pythonExtension({
        requirementsFile: "./requirements.txt",
        // Source copied into the image's working directory, where the task runs
        // `python -m bgjobs`, so it is importable (leading "../" segments are dropped).
        // bgjobs itself, until it is on PyPI (requirements.txt lists its dependencies);
        // add your app's source when it is not pip-installable, e.g. "../myapp/**/*.py".
        scripts: ["../../bgjobs/**/*.py", "../../bgjobs/py.typed"],
      }),
    ],
  },
});
