"""The lock directory: created private, refused when others could tamper with it, and
lock files that are never followed through symbolic links."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support_mp import child_env, kill_group, read_line, wait_for

from bgjobs import UnsafeLockDirError
from bgjobs._local.hostlock import RECORD_STEP, LockDirectory, lock_file_name
from bgjobs.local import LocalJobManager

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX lock directories")

NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_lock_dir_is_created_private_with_its_parents(tmp_path: Path) -> None:
    lock_dir = tmp_path / "instance" / "bgjobs"
    manager = LocalJobManager(env={}, lock_dir=lock_dir)
    try:
        manager.schedule_job("sync", "Sync", lambda: None, 3600)
        assert manager.lock_dir == str(lock_dir)
        assert _mode(lock_dir) == 0o700
        files = sorted(os.listdir(lock_dir))
        locks = [name for name in files if not name.startswith("state.db")]
        assert locks == ["job-sync.lock", "schedule-sync.lock"]
        assert "state.db" in files  # the state store lives beside the locks
        for name in files:
            info = os.lstat(lock_dir / name)
            assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
            assert info.st_uid == os.geteuid()
    finally:
        manager.shutdown(timeout=5)


def test_lock_dir_comes_from_the_environment_and_an_empty_value_means_none(
    tmp_path: Path,
) -> None:
    from_env = LocalJobManager(env={"BGJOBS_LOCK_DIR": str(tmp_path / "locks")})
    assert from_env.lock_dir == str(tmp_path / "locks")
    assert (tmp_path / "locks").is_dir()
    assert LocalJobManager(env={"BGJOBS_LOCK_DIR": "  "}).lock_dir is None
    assert LocalJobManager(env={}).lock_dir is None
    explicit = LocalJobManager(
        env={"BGJOBS_LOCK_DIR": str(tmp_path / "ignored")}, lock_dir=tmp_path
    )
    assert explicit.lock_dir == str(tmp_path)


def test_existing_private_directory_is_accepted(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)  # readable by others is fine; writable is not
    assert LockDirectory(tmp_path).path == str(tmp_path)


def test_symlink_to_a_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "locks"
    link.symlink_to(real)
    with pytest.raises(UnsafeLockDirError) as info:
        LocalJobManager(env={}, lock_dir=link)
    message = str(info.value)
    assert str(link) in message and "symbolic link" in message
    assert isinstance(info.value, PermissionError)


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o702])
def test_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    with pytest.raises(UnsafeLockDirError) as info:
        LocalJobManager(env={}, lock_dir=shared)
    message = str(info.value)
    assert str(shared) in message and "writable" in message and f"{mode & 0o7777:04o}" in message
    assert not os.listdir(shared), "nothing may be created in a refused directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UnsafeLockDirError) as info:
        LocalJobManager(env={}, lock_dir=theirs)
    assert str(theirs) in str(info.value) and f"uid {NOBODY}" in str(info.value)


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o770])
def test_a_shared_directory_gets_a_private_subdirectory_advised_never_a_chmod(
    tmp_path: Path, mode: int
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, mode)
    with pytest.raises(UnsafeLockDirError) as info:
        LocalJobManager(env={}, lock_dir=shared)
    message = str(info.value)
    assert "chmod" not in message  # "chmod 700 /tmp" would break every other user of /tmp
    assert f"private subdirectory instead, e.g. '{shared}{os.sep}bgjobs-" in message
    advised = message.split("e.g. '")[1].split("'")[0]
    assert LockDirectory(advised).path == advised  # and the advice works
    assert _mode(Path(advised)) == 0o700


def _lock_dir_error_as_nobody(path: Path) -> str:
    """The error ``LockDirectory(path)`` raises in a child running as user nobody."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                LockDirectory(path)
                answer = "no error"
            except Exception as exc:
                answer = f"{type(exc).__name__}: {exc}"
            os.write(write_end, answer.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+, on purpose
@pytest.mark.parametrize("inside", ["state", "a/b", ""], ids=["child", "grandchild", "itself"])
def test_a_directory_this_user_cannot_enter_is_named_with_its_owner(inside: str) -> None:
    import tempfile

    # Not in tmp_path: pytest's base directory is private, so nobody stops there already.
    with tempfile.TemporaryDirectory() as open_dir:
        os.chmod(open_dir, 0o755)
        roots = Path(open_dir) / "roots"
        roots.mkdir(mode=0o700)  # root's, as root made it: nobody may not enter
        target = roots / inside if inside else roots
        answer = _lock_dir_error_as_nobody(target)
    assert answer.startswith("PermissionError: "), answer
    assert f"state/lock directory '{target}'" in answer
    where = "it" if not inside else f"'{roots}'"
    assert f"{where} belongs to root (uid 0) with mode 0700" in answer
    assert f"runs as nobody (uid {NOBODY})" in answer


@pytest.mark.skipif(os.geteuid() == 0, reason="root may enter any directory")
def test_a_directory_this_user_cannot_enter_is_named_with_its_mode(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0)
    try:
        with pytest.raises(PermissionError) as info:
            LockDirectory(closed / "state")
    finally:
        os.chmod(closed, 0o700)
    message = str(info.value)
    assert f"'{closed}' belongs to" in message and "mode 0000" in message


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "locks"
    not_a_dir.write_text("")
    with pytest.raises(UnsafeLockDirError, match="not a directory"):
        LocalJobManager(env={}, lock_dir=not_a_dir)


@pytest.mark.parametrize("kind", ["schedule", "job"])
def test_lock_file_that_is_a_symlink_is_not_followed(tmp_path: Path, kind: str) -> None:
    lock_dir = tmp_path / "locks"
    manager = LocalJobManager(env={}, lock_dir=lock_dir)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim_mode = _mode(victim)
    missing = tmp_path / "would-be-created"
    (lock_dir / f"{kind}-sync.lock").symlink_to(victim)
    (lock_dir / f"{kind}-other.lock").symlink_to(missing)
    try:
        for job_id in ("sync", "other"):
            with pytest.raises(UnsafeLockDirError) as info:
                manager.schedule_job(job_id, "Sync", lambda: None, 3600)
            assert f"{kind}-{job_id}.lock" in str(info.value)
            assert "symbolic link" in str(info.value)
            assert manager.get_job_status(job_id) is None, "a refused job is not scheduled"
        assert victim.read_text() == "precious\n" and _mode(victim) == victim_mode
        assert not missing.exists(), "O_CREAT must not create a link's target"
    finally:
        manager.shutdown(timeout=5)


def test_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    manager = LocalJobManager(env={}, lock_dir=lock_dir)
    os.mkfifo(lock_dir / "schedule-sync.lock", 0o600)
    try:
        with pytest.raises(UnsafeLockDirError, match="not a regular file"):
            manager.schedule_job("sync", "Sync", lambda: None, 3600)
    finally:
        manager.shutdown(timeout=5)


def test_lock_file_names_are_plain_and_distinct() -> None:
    ids = ["sync", "Sync", "SYNC", "a_b", "a b", "a:b", "rapport-été", "x" * 300, ".hidden", ".."]
    names = [lock_file_name("job", job_id) for job_id in ids]
    assert names[0] == "job-sync.lock"
    assert len(set(names)) == len(ids)
    assert len({name.lower() for name in names}) == len(ids), "case-insensitive filesystems"
    for name in names:
        assert "/" not in name and not name.startswith(".") and len(name) <= 255
        assert name.isascii()


def test_unusual_job_ids_get_working_lock_files(tmp_path: Path) -> None:
    manager = LocalJobManager(env={}, lock_dir=tmp_path / "locks")
    try:
        for job_id in ("Rapport-été", "a:b", "x" * 200):
            manager.schedule_job(job_id, "Odd", lambda: None, 3600)
            assert manager.trigger_job(job_id) is True
        locks = [n for n in os.listdir(tmp_path / "locks") if not n.startswith("state.db")]
        assert len(locks) == 6
    finally:
        manager.shutdown(timeout=5)


def test_without_flock_bgjobs_imports_and_a_lock_dir_is_a_clear_error(tmp_path: Path) -> None:
    # Windows has no fcntl: simulate it. Plain local scheduling still works there.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["fcntl"] = None  # import fcntl now raises ImportError
        from bgjobs.local import LocalJobManager
        manager = LocalJobManager(env={})
        manager.schedule_job("x", "X", lambda: None, 3600)
        print(manager.trigger_job("x"))
        try:
            LocalJobManager(env={}, lock_dir=sys.argv[1])
        except NotImplementedError as exc:
            print("refused:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "locks")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("refused:") and "fcntl.flock" in lines[1]
    assert not (tmp_path / "locks").exists()


def test_a_forked_child_never_keeps_its_parents_lock(tmp_path: Path) -> None:
    # A child shares its parent's open file descriptions: had it kept the inherited
    # descriptor, the lock would outlive the parent for as long as the child lives.
    code = textwrap.dedent(
        """
        import os, sys, time
        from bgjobs._local.hostlock import LockDirectory
        lock = LockDirectory(sys.argv[1]).lock("x.lock")
        assert lock.try_acquire()
        fd = lock._fd
        if os.fork() == 0:
            try:
                os.fstat(fd)
                print("child kept the descriptor", flush=True)
            except OSError:
                print("child closed it", lock.held, flush=True)
            time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "locks")],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert {read_line(proc, 20), read_line(proc, 20)} == {"child closed it False", "ready"}
        mine = LockDirectory(tmp_path / "locks").lock("x.lock")
        assert not mine.try_acquire()  # the parent holds it
        os.kill(proc.pid, signal.SIGKILL)  # the parent dies; its child lives on
        assert wait_for(mine.try_acquire, 5)
        mine.release()
    finally:
        kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _hard_descriptor_limit() -> float:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return float("inf") if hard == resource.RLIM_INFINITY else hard


def test_a_shorter_record_replaces_a_longer_one_with_one_write(tmp_path: Path) -> None:
    directory = LockDirectory(tmp_path / "locks")
    lock = directory.lock("schedule-a.lock")
    lock.write(b'{"next": 1800000000.123456}\n')
    lock.write(b'{"next": 18}\n')  # padded, not truncated: readers strip
    assert lock.read().strip() == b'{"next": 18}'
    lock.release()  # another holder may write next: the length is not assumed any more
    other = directory.lock("schedule-a.lock")
    other.write(b"{}\n")
    assert other.read().strip() == b"{}"
    # The file's length moves in steps, so a record a little longer needs no truncate.
    assert os.path.getsize(other.path) == RECORD_STEP
    other.write(b"x" * (RECORD_STEP - 1))
    assert os.path.getsize(other.path) == RECORD_STEP
    other.write(b"y" * (RECORD_STEP + 1))
    assert os.path.getsize(other.path) == 2 * RECORD_STEP
    assert other.read().strip() == b"y" * (RECORD_STEP + 1)
    other.release()
    # A new holder's first record covers all of a longer file: never a truncate, no leftovers.
    with open(other.path, "wb") as f:
        f.write(b"z" * 600)
    third = directory.lock("schedule-a.lock")
    third.write(b"{}\n")
    assert third.read(4096).strip() == b"{}" and os.path.getsize(third.path) == 600
    third.release()
    # A holder learns the length from a read that got all of the file (a new leader reads
    # the record before it writes), never from a partial one.
    with open(third.path, "wb") as f:
        f.write(b"w" * 300)
    fourth = directory.lock("schedule-a.lock")
    assert fourth.try_acquire()
    assert fourth.read().strip() == b"w" * 300
    assert fourth.read(10) == b"w" * 10
    fourth.write(b"{}\n")
    assert fourth.read(4096).strip() == b"{}" and os.path.getsize(fourth.path) == 300
    fourth.release()


@pytest.mark.skipif(
    not hasattr(os, "sysconf") or _hard_descriptor_limit() < 2048,
    reason="needs a hard limit on open files of at least 2048",
)
def test_running_out_of_descriptors_raises_the_soft_limit_and_logs_it(tmp_path: Path) -> None:
    """Lock files cost one or two descriptors per job: 300 jobs under a soft limit of 128
    still get scheduled; the limit is raised (towards the hard one) and said once."""
    code = textwrap.dedent(
        f"""
        import logging, resource, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
        from bgjobs.local import LocalJobManager
        m = LocalJobManager(env={{}}, state_dir={str(tmp_path / "state")!r})
        for i in range(300):
            m.schedule_job(f"job-{{i}}", "J", lambda: None, 3600)
        print("scheduled", len(m.get_all_job_statuses()))
        print("soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        m.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "scheduled 300" in lines
    soft = int(next(line for line in lines if line.startswith("soft ")).split()[1])
    assert soft >= 512
    raised = [line for line in lines if "raised its soft limit on open files" in line]
    assert len(raised) == 1 and "from 128 to 1024" in raised[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_past_the_first_jobs_a_run_lock_is_open_only_while_it_runs(tmp_path: Path) -> None:
    """One descriptor per job (its schedule lock) plus a bounded number of run locks kept
    open between runs: 10,000 jobs fit under a limit of 20,000."""
    code = textwrap.dedent(
        f"""
        import os
        from bgjobs._local import leadership
        leadership.KEPT_OPEN_RUN_LOCKS = 10
        from bgjobs.local import LocalJobManager
        m = LocalJobManager(env={{}}, state_dir={str(tmp_path / "state")!r})
        before = len(os.listdir("/proc/self/fd"))
        for i in range(100):
            m.schedule_job(f"job-{{i}}", "J", lambda: None, 3600)
            assert m.trigger_job(f"job-{{i}}")
        print(len(os.listdir("/proc/self/fd")) - before)
        m.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert 100 + 10 <= int(done.stdout.split()[-1]) <= 100 + 10 + 5
