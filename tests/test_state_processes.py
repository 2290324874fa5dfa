"""The state store across real processes: one truth, each fire once, nothing lost.

Real gunicorn (sync workers, a unix socket, a new connection per request so requests land
on different workers), plain scripts on one state directory, a real ``state.db``. Every
wait is bounded and polls for a line, a file or an answer; the only timed waits are the
windows in which nothing may happen (a paused job's silence).

How "each fire once" is checked: every scheduled run is recorded with its due time
(``scheduled_for``) and every run of the job function appends ``<pid> <time>`` to a file.
The file's lines and the recorded runs are paired one to one (same pid, in order), no due
time appears twice, and no run starts earlier than half an interval after the previous
one — unless that one itself ran late (a busy machine delays a tick, never the grid).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from support_mp import (
    APPS,
    Line,
    child_env,
    gunicorn,
    kill_group,
    python_script,
    read_line,
    read_lines,
    wait_for,
)

from bgjobs import JobNotFoundError, LocalJobManager
from bgjobs.config import default_state_dir
from bgjobs.registry import JobDefinition
from bgjobs.store import open_store
from bgjobs.types import JobRun

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes"),
]

TICK = 0.5  # the gunicorn app's ticker interval (seconds)
PREFIX = "/api/cron"


# -- HTTP over gunicorn's unix socket ----------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Dict[str, str]  # lower-cased names
    body: Any

    @property
    def pid(self) -> int:
        """The gunicorn worker that answered."""
        return int(self.headers["x-worker-pid"])


def request(sock: Path, method: str, path: str, headers: Optional[Dict[str, str]] = None) -> Answer:
    """One request on a new connection (so the next may land on another worker)."""
    conn = _UnixConnection(str(sock), timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        names = {k.lower(): v for k, v in response.getheaders()}
        body = json.loads(raw) if raw and "json" in names.get("content-type", "") else raw
        return Answer(response.status, names, body)
    finally:
        conn.close()


def job_in(answer: Answer, job_id: str) -> Dict[str, Any]:
    """``job_id``'s entry in a ``/status`` answer."""
    (job,) = [j for j in answer.body["jobs"] if j["id"] == job_id]
    return dict(job)


def app_env(out: Path, **extra: str) -> Dict[str, str]:
    """tests/apps/stateapp.py's environment: its output directory and nothing of bgjobs'
    (child_env drops BGJOBS_*; XDG_STATE_HOME is this test's, from conftest)."""
    return {"STATEAPP_DIR": str(out), "STATEAPP_TICK": str(TICK), **extra}


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- checking fires -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fire:
    """One recorded scheduled run and the line its job function wrote."""

    pid: int
    due: float
    started: float
    line: Line


def pair_runs_with_lines(runs: Sequence[Dict[str, Any]], lines: Sequence[Line]) -> List[Fire]:
    """Pair finished scheduled runs (``JobRun.to_dict()``s) with the job's lines, one to one.

    Runs follow one another (no overlap), so the k-th finished run wrote the k-th line;
    a run still going (the newest) may or may not have written its line yet, and its start
    may not be on record yet (scheduled runs are recorded behind, within 0.1 s).
    """
    finished = sorted(
        (r for r in runs if r["outcome"] != "running"), key=lambda r: parse_time(r["started"])
    )
    assert all(r["trigger"] == "schedule" and r["scheduled_for"] for r in finished), finished
    ordered = sorted(lines, key=lambda line: line.time)
    assert len(finished) <= len(ordered) <= len(runs) + 1, (finished, ordered)
    fires = []
    for run, line in zip(finished, ordered):
        assert run["pid"] == line.pid, (run, line)
        started = parse_time(run["started"])
        assert started - 0.05 <= line.time <= started + 2.0, (run, line)
        fires.append(Fire(line.pid, parse_time(run["scheduled_for"]), started, line))
    return fires


def assert_each_fire_once(fires: Sequence[Fire], interval: float) -> None:
    """No due time twice; due times on one grid; no run early; no two runs too close."""
    dues = [f.due for f in fires]
    assert len(set(dues)) == len(dues), dues
    for a, b in zip(fires, fires[1:]):
        steps = (b.due - a.due) / interval
        assert steps > 0.9 and abs(steps - round(steps)) < 0.05, (a, b)
    for f in fires:
        assert f.line.time >= f.due - 0.05, f  # never early (ms rounding of the due time)
    for a, b in zip(fires, fires[1:]):
        lateness = a.line.time - a.due
        assert b.line.time - a.line.time >= interval / 2 - lateness, (a, b)


# -- 1. gunicorn with no configuration ------------------------------------------------------------


def test_gunicorn_workers_share_one_truth_and_run_each_fire_once_without_configuration(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ticks = out / "ticks.txt"
    with gunicorn(tmp_path, "stateapp:app", env=app_env(out), workers=4) as server:
        sock = tmp_path / "gunicorn.sock"
        assert wait_for(lambda: len(read_lines(ticks)) >= 1, 20), server.log_text()
        window_start = read_lines(ticks)[0].time
        window_end = window_start + 6.0

        # The state directory is the per-user, per-app default, under this test's
        # XDG_STATE_HOME, named for the file that declares the registry.
        state_dir = Path(default_state_dir(str(APPS / "stateapp.py")))
        assert state_dir.parent == Path(os.environ["XDG_STATE_HOME"]) / "bgjobs"
        assert (state_dir / "state.db").is_file()

        # A job that fails every run, dispatched in whichever workers take the requests.
        errors = []
        for _ in range(4):
            answer = request(sock, "POST", f"{PREFIX}/always-fails")
            assert answer.status == 200, answer
            assert answer.body["status"] == "failed"
            errors.append(answer.body["run"]["error"])
        assert len(set(errors)) == 4  # each run's error names it

        answers = [request(sock, "GET", f"{PREFIX}/status") for _ in range(50)]
        assert {a.status for a in answers} == {200}
        views = {
            (j["status"], j["runs"], j["failures"], j["last_error"], j["error"])
            for j in (job_in(a, "always-fails") for a in answers)
        }
        assert views == {("failed", 4, 4, errors[-1], errors[-1])}
        answered_by = Counter(a.pid for a in answers)
        assert len(answered_by) >= 2, answered_by
        assert set(answered_by) <= set(server.booted_workers())

        # The ticker: wait out the window, then read the runs (another worker's view).
        assert wait_for(lambda: read_lines(ticks)[-1].time >= window_end, 30), server.log_text()
        runs = request(sock, "GET", f"{PREFIX}/ticker/runs?limit=100").body["runs"]
        lines = read_lines(ticks)
    fires = pair_runs_with_lines(runs, lines)
    assert_each_fire_once(fires, TICK)
    in_window = [f for f in fires if f.line.time < window_end]
    # At most one run per fire in 6 s, and most fires ran even on a loaded machine.
    assert 6 <= len(in_window) <= 6.0 / TICK + 1, in_window
    print(f"status answered by {dict(answered_by)}; {len(in_window)} fires in 6 s")


# -- 2. many processes racing for one fire ------------------------------------------------------


def test_processes_racing_for_the_same_fire_run_it_once(tmp_path: Path) -> None:
    state_dir, out = tmp_path / "state", tmp_path / "race.txt"
    due = round(time.time(), 3)
    command = [sys.executable, str(APPS / "state_proc.py"), "race", str(state_dir), str(out)]
    racers: List[subprocess.Popen[str]] = []
    try:
        for _ in range(6):
            racers.append(
                subprocess.Popen(
                    [*command, repr(due)],
                    env=child_env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    start_new_session=True,
                )
            )
        for racer in racers:
            assert read_line(racer, 30) == "ready"
        for racer in racers:  # all at once: each is blocked reading this line
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        results = [read_line(racer, 30) for racer in racers]
    finally:
        for racer in racers:
            kill_group(racer)
            for pipe in (racer.stdin, racer.stdout):
                if pipe is not None:
                    pipe.close()
    assert sorted(results) == ["ran False"] * 5 + ["ran True"], results
    assert len(read_lines(out)) == 1

    with LocalJobManager(env={}, state_dir=state_dir) as reader:
        reader.add_job(JobDefinition("race", "Race", lambda: None, interval=3600), scheduled=False)
        runs = reader.get_job_runs("race", limit=100)
    assert [(r.outcome, r.trigger) for r in runs] == [("completed", "schedule")]
    assert runs[0].scheduled_for is not None and runs[0].scheduled_for.timestamp() == due
    assert runs[0].pid == read_lines(out)[0].pid


def _exit_code(pid: int, timeout: float) -> int:
    """Reap forked child ``pid``; SIGKILL it (and fail) if it has not exited in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} hung for {timeout}s")


def test_processes_opening_a_new_state_db_together_all_get_a_working_store(
    tmp_path: Path,
) -> None:
    """gunicorn workers open a new state.db at the same moment. SQLite answers all but one
    of the processes switching the file to WAL "database is locked" at once, without its
    busy handler; none of them may come up degraded (memory only) for that."""
    codes: List[int] = []
    for trial in range(40):
        directory = tmp_path / f"state-{trial}"
        directory.mkdir()
        go_r, go_w = os.pipe()
        children = []
        for _ in range(6):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 2
                try:
                    os.close(go_w)
                    os.read(go_r, 1)  # all start together
                    code = 0 if open_store(directory).degraded is None else 1
                finally:
                    os._exit(code)
            children.append(pid)
        os.close(go_r)
        os.write(go_w, b"go" * 3)
        os.close(go_w)
        codes.extend(_exit_code(pid, 30) for pid in children)
    assert Counter(codes) == {0: len(codes)}, Counter(codes)


# -- 3. SIGKILL during a run --------------------------------------------------------------------


def test_a_run_killed_midway_is_abandoned_and_another_process_takes_over(tmp_path: Path) -> None:
    interval, sleep = 2.0, 1.5
    state_dir, out = tmp_path / "state", tmp_path / "slow.txt"
    args = ("serve", str(state_dir), str(out), str(interval), str(sleep))
    with (
        python_script("state_proc.py", *args, log=tmp_path / "a.log") as a,
        python_script("state_proc.py", *args, log=tmp_path / "b.log") as b,
    ):
        assert read_line(a, 30) == "ready"
        assert read_line(b, 30) == "ready"
        assert wait_for(lambda: any(line.event == "start" for line in read_lines(out)), 20)
        victim = read_lines(out)[0].pid
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        (dead,) = [p for p in (a, b) if p.pid == victim]
        dead.wait(timeout=10)  # reaped: no zombie that still looks alive
        assert [line.event for line in read_lines(out)] == ["start"]  # killed mid-run
        survivor = b.pid if victim == a.pid else a.pid

        with LocalJobManager(env={}, state_dir=state_dir) as reader:
            reader.add_job(
                JobDefinition("slow", "Slow", lambda: None, interval=interval), scheduled=False
            )

            def runs() -> List[JobRun]:
                return reader.get_job_runs("slow", limit=100)

            # get_job_runs reaps nothing: the survivor's election thread marked it. A start
            # still queued in the victim (written behind) died with it: the survivor then
            # records the fire its schedule record names, so there is a run either way.
            assert wait_for(lambda: bool(runs()) and runs()[-1].outcome == "abandoned", 10), runs()
            killed_run = runs()[-1]
            assert killed_run.pid == victim and killed_run.finished is not None
            assert killed_run.error and "died" in killed_run.error

            def survivor_runs() -> List[Line]:
                return [ln for ln in read_lines(out) if ln.pid == survivor and ln.event == "end"]

            assert wait_for(lambda: len(survivor_runs()) >= 2, 20), (read_lines(out), runs())
            takeover = min(ln.time for ln in read_lines(out) if ln.pid == survivor) - killed_at
            assert takeover < 5.0, takeover
            recorded = runs()
            status = reader.get_job_status("slow")
        lines = read_lines(out)
    starts = [ln for ln in lines if ln.event == "start"]
    assert {ln.pid for ln in starts} == {victim, survivor}
    fires = pair_runs_with_lines([r.to_dict() for r in recorded], starts)
    assert_each_fire_once(fires, interval)
    outcomes = [r.outcome for r in sorted(recorded, key=lambda r: r.started)]
    assert outcomes[0] == "abandoned" and set(outcomes[1:]) <= {"completed", "running"}
    assert status is not None and status.failures == 1 and status.last_error == killed_run.error
    print(f"took over {takeover:.2f}s after the kill; {len(fires)} fires")


# -- 4. one Idempotency-Key from two workers at once --------------------------------------------


def test_one_idempotency_key_from_two_workers_at_once_runs_the_job_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    keyed = out / "keyed.txt"
    with gunicorn(tmp_path, "stateapp:app", env=app_env(out), workers=4):
        sock = tmp_path / "gunicorn.sock"
        two_workers = False
        for attempt in range(5):  # until the two requests meet two workers at once
            key = f"deploy-{attempt}"
            before = len(read_lines(keyed))
            answers: List[Answer] = []
            barrier = threading.Barrier(2)

            def send(
                key: str = key,
                barrier: threading.Barrier = barrier,
                answers: List[Answer] = answers,
            ) -> None:
                barrier.wait(10)
                answers.append(request(sock, "POST", f"{PREFIX}/keyed", {"Idempotency-Key": key}))

            threads = [threading.Thread(target=send) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert len(answers) == 2, answers
            assert [a.status for a in answers] == [200, 200], answers
            (run_id,) = {a.body["run"]["run_id"] for a in answers}
            replayed = [a.headers.get("idempotent-replayed") for a in answers]
            # The request that claimed the key ran the job; the other answers its run.
            assert sorted(map(str, replayed)) == ["None", "true"], answers

            def done(run_id: str = run_id) -> bool:
                return bool(
                    request(sock, "GET", f"{PREFIX}/runs/{run_id}").body["outcome"] != "running"
                )

            assert wait_for(done, 20)
            assert len(read_lines(keyed)) == before + 1
            again = request(sock, "POST", f"{PREFIX}/keyed", {"Idempotency-Key": key})
            assert again.headers.get("idempotent-replayed") == "true"
            assert again.body["run"]["run_id"] == run_id
            assert again.body["run"]["outcome"] == "completed"
            assert len(read_lines(keyed)) == before + 1
            if len({a.pid for a in answers}) == 2:
                two_workers = True
                break
        assert two_workers, "the two requests never met two workers at once"


# -- 5. respond-async under a short worker timeout ----------------------------------------------


def test_respond_async_outlives_the_worker_timeout_and_any_worker_reports_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = app_env(out, STATEAPP_SLOW="5", GUNICORN_CMD_ARGS="--timeout 2")
    with gunicorn(tmp_path, "stateapp:app", env=env, workers=4) as server:
        sock = tmp_path / "gunicorn.sock"
        sent = time.monotonic()
        answer = request(sock, "POST", f"{PREFIX}/slow", {"Prefer": "respond-async"})
        assert time.monotonic() - sent < 5.0  # answered before the job could finish
        assert answer.status == 202, answer
        assert answer.headers["preference-applied"] == "respond-async"
        location = answer.headers["location"]
        run_id = answer.body["run_id"]
        assert location == f"{PREFIX}/runs/{run_id}"
        assert answer.body["outcome"] == "running" and answer.body["pid"] == answer.pid

        polled_by: Counter[int] = Counter()

        def completed() -> bool:
            poll = request(sock, "GET", location)
            polled_by[poll.pid] += 1
            return bool(poll.body["outcome"] == "completed")

        assert wait_for(completed, 30, interval=0.2), server.log_text()
        finals = [request(sock, "GET", location) for _ in range(12)]
        assert {f.body["outcome"] for f in finals} == {"completed"}
        assert len({f.pid for f in finals} | set(polled_by)) >= 2
        assert finals[0].body["duration"] >= 5.0
        assert [line.pid for line in read_lines(out / "slow.txt")] == [answer.pid]
        log = server.log_text()
        assert "WORKER TIMEOUT" not in log, log
        assert len(server.booted_workers()) == 4, log  # no worker was killed and replaced

        # The control: the same job run on the request's thread is killed by that timeout.
        try:
            blocking: Optional[Answer] = request(sock, "POST", f"{PREFIX}/slow")
        except (http.client.HTTPException, OSError):
            blocking = None  # the worker died with the connection open
        assert blocking is None or blocking.status >= 500, blocking
        assert wait_for(lambda: "WORKER TIMEOUT" in server.log_text(), 20), server.log_text()
        assert len(read_lines(out / "slow.txt")) == 1


# -- 6. pause in one process, everywhere, across a restart --------------------------------------


def quiet(path: Path, start: float, seconds: float) -> List[Line]:
    """Lines of ``path`` written in ``[start, start + seconds]``, once that window is over."""
    end = start + seconds
    assert wait_for(lambda: time.time() > end, seconds + 5)
    return [line for line in read_lines(path) if start <= line.time <= end]


def test_pause_is_seen_by_every_process_survives_a_restart_and_resume_brings_runs_back(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ticks = out / "ticks.txt"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with gunicorn(first, "stateapp:app", env=app_env(out), workers=2) as server:
        sock = first / "gunicorn.sock"
        assert wait_for(lambda: len(read_lines(ticks)) >= 2, 20), server.log_text()
        paused = request(sock, "POST", f"{PREFIX}/ticker/pause")
        paused_at = time.time()
        assert paused.status == 200 and paused.body["status"] == "paused", paused
        seen: List[Answer] = []

        def another_worker_answered() -> bool:
            seen.append(request(sock, "GET", f"{PREFIX}/status"))
            return seen[-1].pid != paused.pid

        assert wait_for(another_worker_answered, 20)
        assert {job_in(a, "ticker")["status"] for a in seen} == {"paused"}
        # A fire claimed just before the pause may still write; then silence.
        assert quiet(ticks, paused_at + 1.0, 3 * TICK) == []

    with gunicorn(second, "stateapp:app", env=app_env(out), workers=2) as server:
        sock = second / "gunicorn.sock"
        booted = time.time()
        statuses = [request(sock, "GET", f"{PREFIX}/status") for _ in range(6)]
        assert {job_in(a, "ticker")["status"] for a in statuses} == {"paused"}
        assert quiet(ticks, booted, 4 * TICK) == []

        resumed = request(sock, "POST", f"{PREFIX}/ticker/resume")
        resumed_at = time.time()
        assert resumed.status == 200 and resumed.body["status"] != "paused", resumed
        assert wait_for(
            lambda: len([ln for ln in read_lines(ticks) if ln.time > resumed_at]) >= 2, 20
        ), server.log_text()
        after = request(sock, "GET", f"{PREFIX}/status")
        assert job_in(after, "ticker")["status"] != "paused"


# -- 7. thread stress with the store on ---------------------------------------------------------


THREADS = 20
# Bounded work, paced so scheduled ticks interleave for about 2 s: every job stays under
# the 100 runs the store keeps, so its whole history can be counted.
OPS_PER_THREAD = 30
PACE = 0.1  # at most this long between two operations of a thread
JOBS = [f"job-{i}" for i in range(8)]


class Ledger:
    """What the job functions actually did, counted under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def job(self, job_id: str) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                self.runs[job_id] += 1
                fail = self.runs[job_id] % 3 == 0
                if fail:
                    self.failures[job_id] += 1
            time.sleep(random.choice((0, 0, 0.001, 0.005)))  # sometimes long enough to collide
            if fail:
                raise ValueError(f"{job_id} failed on purpose")

        return run


@pytest.fixture
def quiet_bgjobs_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="bgjobs")  # hundreds of expected failures and skips


@pytest.mark.usefixtures("quiet_bgjobs_logs")
def test_threads_hammering_a_manager_with_a_store_lose_no_run(
    tmp_path: Path, thread_errors: List[BaseException]
) -> None:
    ledger = Ledger()
    manager = LocalJobManager(env={}, state_dir=tmp_path / "state")
    try:
        for i, job_id in enumerate(JOBS):
            manager.schedule_job(job_id, job_id, ledger.job(job_id), 0.1 + 0.02 * i)
        done: Counter[Tuple[str, str, object]] = Counter()  # (operation, job id, result) -> count
        done_lock = threading.Lock()
        errors: List[BaseException] = []
        start = threading.Barrier(THREADS)

        def hammer(seed: int) -> None:
            rng = random.Random(seed)
            mine: Counter[Tuple[str, str, object]] = Counter()
            try:
                start.wait(30)
                for _ in range(OPS_PER_THREAD):
                    time.sleep(rng.random() * PACE)
                    job_id = rng.choice(JOBS)
                    op = rng.choice(("trigger", "trigger", "dispatch", "dispatch", "statuses"))
                    op = op if rng.random() > 0.2 else rng.choice(("pause", "resume"))
                    if op == "trigger":
                        mine["trigger", job_id, manager.trigger_job(job_id)] += 1
                    elif op == "dispatch":
                        mine["dispatch", job_id, manager.dispatch(job_id).outcome] += 1
                    elif op == "statuses":
                        assert len(manager.get_all_job_statuses()) == len(JOBS)
                    elif op == "pause":
                        manager.pause_job(job_id)
                    else:
                        manager.resume_job(job_id)
            except BaseException as exc:
                errors.append(exc)
            with done_lock:
                done.update(mine)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        manager.stop_all_jobs(wait=True, timeout=30)

        assert manager.store is not None
        assert manager.store.degraded is None and manager.store.dropped_writes == 0
        metrics = manager.get_job_metrics()
        statuses = {s.id: s for s in manager.get_all_job_statuses()}
        for job_id in JOBS:
            runs = manager.get_job_runs(job_id, limit=1000)
            by_trigger = Counter(r.trigger for r in runs)
            by_outcome = Counter(r.outcome for r in runs)
            status = statuses[job_id]
            assert len(runs) == status.runs == ledger.runs[job_id], job_id
            assert by_outcome["failed"] == status.failures == ledger.failures[job_id], job_id
            assert by_outcome["completed"] + by_outcome["failed"] == len(runs), by_outcome
            assert by_trigger["manual"] == done["trigger", job_id, True], job_id
            assert by_trigger["http"] == done["dispatch", job_id, "ran"], job_id
            assert by_trigger["manual"] + by_trigger["http"] + by_trigger["schedule"] == len(runs)
            busy = done["trigger", job_id, False] + done["dispatch", job_id, "busy"]
            assert status.skips >= busy, job_id
            assert len({r.run_id for r in runs}) == len(runs)
        total = sum(ledger.runs.values())
        scheduled = sum(
            1
            for job_id in JOBS
            for r in manager.get_job_runs(job_id, limit=1000)
            if r.trigger == "schedule"
        )
        assert scheduled > 0 and total > scheduled
        assert metrics.total_executions == total == sum(s.runs for s in statuses.values())
        assert metrics.successful_jobs + metrics.failed_jobs == metrics.total_executions
        assert metrics.failed_jobs == sum(ledger.failures.values())
        assert metrics.skipped_executions == sum(s.skips for s in statuses.values())
        with pytest.raises(JobNotFoundError):
            manager.get_job_runs("no-such-job")
        print(f"{total} runs ({scheduled} scheduled), {metrics.skipped_executions} skips")
    finally:
        manager.close()
