import { defineConfig } from "@trigger.dev/sdk";
import { pythonExtension } from "@trigger.dev/python/extension";

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
  retries: {
    enabledInDev: false,
    // Applies to errors worth retrying only: 5xx, network errors, timeouts and failed jobs.
    // An unknown job id, a bad secret or a bad app fails the run at once (AbortTaskRunError).
    default: {
      maxAttempts: 3,
      factor: 2,
      minTimeoutInMs: 5_000,
      maxTimeoutInMs: 60_000,
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
