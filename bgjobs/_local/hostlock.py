"""Host-wide advisory locks: a private lock directory whose files are locked with ``flock``.

Every process on a host that opens the same :class:`LockDirectory` can take the same
:class:`HostLock` — at most one of them holds it at a time. The lock is the kernel's:
it is dropped when the holder unlocks, closes the file, or dies in any way (``SIGKILL``
included), so there is no stale lock file to detect or clean up.

Why ``flock`` and not ``fcntl``/``lockf`` record locks: ``flock`` locks belong to an *open
file description*, so two :class:`HostLock` objects for one file exclude each other even
inside one process (two managers, two threads), and closing some other descriptor of the
file leaves the lock alone. Record locks belong to the *process*: a second open in the same
process would silently share the lock, and closing any descriptor of the file — reading it,
say — would drop it. ``flock`` is not meant for network filesystems: keep the directory local.

Safety (shared ``/tmp``-style directories are a classic attack path): the directory is
created ``0700`` and refused, with :class:`~bgjobs.errors.UnsafeLockDirError`, unless it is a
real directory (not a symbolic link) owned by this process's user and writable by no one
else. It is then held open, and lock files are opened relative to it (``dir_fd``) with
``O_NOFOLLOW | O_CLOEXEC | O_CREAT | O_RDWR`` and mode ``0600``, so a renamed directory or a
planted symbolic link cannot redirect them.

Fork: a child inherits every open lock file *sharing the parent's open file description*;
unlocking that copy would release the parent's lock. So the child closes its inherited
copies without unlocking them and re-opens files on demand. The registry lock below is held
across ``fork()``, so a child never inherits a descriptor that is half opened or half locked.

Windows has no ``flock``: this module imports there, but :class:`LockDirectory` raises
:class:`NotImplementedError`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import threading
import weakref
from typing import Optional, Union

from ..errors import UnsafeLockDirError
from .quickcalls import flock_now, pwrite_now

try:
    from fcntl import LOCK_EX, LOCK_NB, LOCK_UN

    HAVE_FLOCK = True
except ImportError:  # Windows
    HAVE_FLOCK = False

__all__ = ["HAVE_FLOCK", "HostLock", "LockDirectory", "lock_file_name", "reinit_after_fork"]

PathArg = Union[str, "os.PathLike[str]"]
"""A filesystem path as ``str`` or path-like object."""

_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO planted in place of a lock file must not hang.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_LOCK_FILE_FLAGS = os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK
# What open() reports for a symbolic link under O_NOFOLLOW: ELOOP (Linux, macOS), EMLINK
# (FreeBSD).
_SYMLINK_ERRNOS = {errno.ELOOP, errno.EMLINK}

logger = logging.getLogger("bgjobs.local")

# Guards the opening and closing of every HostLock's descriptor, and _live_locks. Held
# across fork() (see _before_fork), so a child never inherits a descriptor mid-open that
# nothing tracks (its copy would keep the lock alive after the parent closed its own).
# Locking, unlocking and writing an open descriptor only take the lock's own guard, so
# workers running different jobs never queue on one lock. Only short system calls happen
# under either, never a blocking lock wait or user code. Reentrant, so a signal handler
# that forks on a thread holding it cannot deadlock that thread.
_fd_lock = threading.RLock()
_live_locks: weakref.WeakSet[HostLock] = weakref.WeakSet()

_SAFE_KEY = re.compile(r"[a-z0-9_.-]{1,80}\Z")


def lock_file_name(kind: str, key: str) -> str:
    """A file name for ``key`` (a job id) that is safe and distinct on every filesystem.

    Simple lower-case keys are kept as they are (``job-repository-sync.lock``); anything
    else — upper case (case-insensitive filesystems would merge ``Sync`` and ``sync``),
    other characters, great length — is cleaned and suffixed with a hash of the key.
    """
    if _SAFE_KEY.match(key):
        return f"{kind}-{key}.lock"
    import hashlib  # costly to import; only ids that need hashing pay for it

    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    cleaned = re.sub(r"[^a-z0-9_.-]+", "_", key.lower())[:60]
    return f"{kind}-{cleaned}-{digest}.lock"


def _describe_mode(mode: int) -> str:
    who = [
        name for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if mode & bit
    ]
    return f"it is writable by {' and '.join(who)} (mode {stat.S_IMODE(mode):04o})"


def _user_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` where the name cannot be looked up."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _private_subdir(path: str) -> str:
    """A subdirectory of ``path`` to suggest instead of it: bgjobs creates it 0700 and
    refuses it if someone else made it first."""
    try:
        import getpass

        user = getpass.getuser()
    except Exception:  # no login name in this environment
        user = str(os.geteuid())
    return os.path.join(path, f"bgjobs-{user}")


def _permission_denied(path: str, exc: OSError) -> PermissionError:
    """``exc`` with the directory in the way named, with its owner and mode."""
    blocker = path
    while True:  # the deepest existing directory this process can look at
        try:
            info = os.stat(blocker)
            break
        except OSError:
            parent = os.path.dirname(blocker)
            if parent == blocker:
                return exc if isinstance(exc, PermissionError) else PermissionError(str(exc))
            blocker = parent
    where = "it" if blocker == path else repr(blocker)
    return PermissionError(
        exc.errno,
        f"cannot use the state/lock directory {path!r}: permission denied on "
        f"{exc.filename!r}; {where} belongs to {_user_name(info.st_uid)} with mode "
        f"{stat.S_IMODE(info.st_mode):04o}, and this process runs as "
        f"{_user_name(os.geteuid())}; choose a directory this user may create (e.g. under "
        "its home, or leave BGJOBS_STATE_DIR unset for the per-user default)",
    )


def _open_private_dir(path: str) -> int:
    """Create ``path`` (mode 0700) if needed, check it, and return a descriptor for it."""
    try:
        return _open_and_check(path)
    except PermissionError as exc:
        if isinstance(exc, UnsafeLockDirError):
            raise
        raise _permission_denied(path, exc) from exc


def _open_and_check(path: str) -> int:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fix = "use a directory of your own (created by bgjobs, or `mkdir -m 700 DIR`)"
    if os.path.islink(path):
        raise UnsafeLockDirError(
            f"unsafe lock directory {path!r}: it is a symbolic link (to {os.readlink(path)!r}), "
            f"which someone else could point elsewhere; {fix}"
        )
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _SYMLINK_ERRNOS or exc.errno == errno.ENOTDIR:
            raise UnsafeLockDirError(
                f"unsafe lock directory {path!r}: it is not a directory (or was replaced by "
                f"a symbolic link while being opened); {fix}"
            ) from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "it is not a directory"
    elif info.st_uid != os.geteuid():
        problem = (
            f"it is owned by {_user_name(info.st_uid)}, not by {_user_name(os.geteuid())} "
            "who runs this process, so that user could tamper with the locks"
        )
        if os.access(path, os.W_OK | os.X_OK):  # a hint only: a subdirectory would work
            fix = (
                f"point the state directory at a private subdirectory instead, e.g. "
                f"{_private_subdir(path)!r} (bgjobs creates it with mode 0700)"
            )
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Never advise a chmod: the directory is shared (/tmp is the classic case), and
        # taking it private would break everyone else who uses it.
        problem = f"{_describe_mode(info.st_mode)}, so other users could plant or remove lock files"
        fix = (
            f"point the state directory at a private subdirectory instead, e.g. "
            f"{_private_subdir(path)!r} (bgjobs creates it with mode 0700, and refuses it if "
            "someone else made it first)"
        )
    if problem is not None:
        os.close(fd)
        raise UnsafeLockDirError(f"unsafe lock directory {path!r}: {problem}; {fix}")
    return fd


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class LockDirectory:
    """A lock directory, created ``0700``, checked and held open for the object's life.

    Raises :class:`~bgjobs.errors.UnsafeLockDirError` for a symbolic link, a path that is not
    a directory, a directory owned by another user or writable by group or others;
    :class:`NotImplementedError` on platforms without ``flock`` (Windows).
    """

    def __init__(self, path: PathArg) -> None:
        if not HAVE_FLOCK:
            raise NotImplementedError(
                "a bgjobs lock directory (BGJOBS_LOCK_DIR / lock_dir=) needs POSIX advisory "
                "file locks (fcntl.flock), which this platform lacks; unset it and run the "
                "jobs in one process, or use Trigger.dev"
            )
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        with _fd_lock:  # a fork must not copy this descriptor before it is tracked
            self._fd = _open_private_dir(self.path)
            # Closes the directory when this object is collected (no lock taken: GC may
            # run it anywhere, and the descriptor is private to this object by then).
            self._finalizer = weakref.finalize(self, _close_quietly, self._fd)

    def lock(self, name: str) -> HostLock:
        """The :class:`HostLock` for file ``name`` in this directory (not opened yet)."""
        if not name or "/" in name or "\0" in name or name.startswith(".") or len(name) > 255:
            raise ValueError(f"not a plain lock file name: {name!r}")
        return HostLock(self, name)

    def _open(self, name: str) -> int:
        """Open (creating it ``0600``) lock file ``name``, never following a link. Caller
        holds ``_fd_lock``."""
        path = os.path.join(self.path, name)
        try:
            fd = _open_retrying(name, path, self._fd)
        except OSError as exc:
            if exc.errno in _SYMLINK_ERRNOS:
                raise UnsafeLockDirError(
                    f"unsafe lock file {path!r}: it is a symbolic link, and bgjobs never "
                    "follows links in its lock directory; remove it"
                ) from None
            raise
        info = os.fstat(fd)
        what = None
        if not stat.S_ISREG(info.st_mode):
            what = "not a regular file"
        elif info.st_uid != os.geteuid():
            what = f"owned by uid {info.st_uid}, not {os.geteuid()}"
        elif info.st_nlink > 1:
            # Another name for the same file (a hard link from elsewhere) would let whoever
            # owns that name hold or read our lock.
            what = f"a file with {info.st_nlink} hard links (another name points at it)"
        if what is not None:
            os.close(fd)
            raise UnsafeLockDirError(f"unsafe lock file {path!r}: it is {what}; remove it")
        return fd

    def __repr__(self) -> str:
        return f"LockDirectory({self.path!r})"


RECORD_STEP = 256
"""A lock file's record is padded to a multiple of this many bytes (see HostLock.write): a
schedule record (pid, manager, job id, schedule, next and last fire) fits the first step
unless its job id or cron expression is long, so only a new leader's first write truncates."""


class HostLock:
    """An exclusive lock on one file of a :class:`LockDirectory`, shared by the whole host.

    :meth:`try_acquire` never blocks. While this object holds the lock, no other
    :class:`HostLock` for the same file — in this process or any other — can take it; the
    kernel drops it if the process dies. The file can also carry a small record
    (:meth:`write` / :meth:`read`), e.g. who holds the lock. Descriptor bookkeeping is
    thread-safe; callers serialize acquire and release of one lock among their threads.
    """

    def __init__(self, directory: LockDirectory, name: str) -> None:
        self.directory = directory
        self.name = name
        self._fd = -1  # -1: not open
        self._held = False
        self._guard = threading.Lock()  # this lock's descriptor and held flag
        self._size: Optional[int] = None  # the file's length since this object last wrote it
        with _fd_lock:
            _live_locks.add(self)

    @property
    def path(self) -> str:
        return os.path.join(self.directory.path, self.name)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (a forked child never inherits it)."""
        return self._held

    def _ensure_open(self) -> int:
        """Caller holds ``_guard``."""
        if self._fd < 0:
            with _fd_lock:
                self._fd = self.directory._open(self.name)
        return self._fd

    def open(self) -> None:
        """Open the file now (creating it), so problems surface early; idempotent."""
        with self._guard:
            self._ensure_open()

    def try_acquire(self) -> bool:
        """Take the lock if no one on the host holds it; ``True`` if held now."""
        with self._guard:
            if self._held:
                return True
            fd = self._ensure_open()
            try:
                flock_now(fd, LOCK_EX | LOCK_NB)
            except BlockingIOError:  # EWOULDBLOCK: someone else holds it
                return False
            self._held = True
            return True

    def release(self, *, close: bool = True) -> None:
        """Drop the lock if held; with ``close``, also close the file (re-opened on demand)."""
        with self._guard:
            if self._fd < 0:
                self._held = False
                return
            try:
                if self._held:
                    flock_now(self._fd, LOCK_UN)
            finally:
                self._held = False
                self._size = None  # another holder may write it now
                if close:
                    with _fd_lock:
                        fd, self._fd = self._fd, -1
                        os.close(fd)

    def read(self, size: int = 4096) -> bytes:
        """The file's first ``size`` bytes (whoever wrote them)."""
        with self._guard:
            data = os.pread(self._ensure_open(), size, 0)
            if self._held and len(data) < size:
                self._size = len(data)  # all of it, and only we write it: no fstat to come
            return data

    def write(self, data: bytes) -> None:
        """Replace the file's contents with ``data``, padded with trailing spaces (readers
        strip them) to the file's length: one ``pwrite`` per record, never a truncate (a
        second, GIL-releasing system call that cost every fire). The file only grows, in
        steps of :data:`RECORD_STEP` bytes, when a record outgrows it."""
        with self._guard:
            fd = self._ensure_open()
            size = self._size
            if size is None:  # cover whatever another holder left, never truncate
                size = os.fstat(fd).st_size
            if len(data) > size:  # grows the file (a write past its end extends it)
                size = -(-len(data) // RECORD_STEP) * RECORD_STEP
            pwrite_now(fd, data.ljust(size), 0)
            self._size = size

    def _forget_inherited(self) -> None:
        """In a forked child: close the inherited copy *without* unlocking (that would free
        the parent's lock: the copy shares its open file description)."""
        if self._fd >= 0:
            _close_quietly(self._fd)
        self._fd = -1
        self._held = False
        self._size = None
        self._guard = threading.Lock()  # a thread that no longer exists may have held it

    def __del__(self) -> None:
        # No lock here: the object is unreachable, so no other thread can be using it,
        # and GC may run this while this very thread holds _fd_lock.
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            self._fd = -1
            _close_quietly(fd)

    def __repr__(self) -> str:
        return f"<HostLock {self.path!r} {'held' if self._held else 'free'}>"


def _open_retrying(name: str, path: str, dir_fd: int) -> int:
    """Open a lock file; when the process is out of descriptors (``EMFILE``: a lock file
    per job adds up for thousands of jobs), raise its soft limit towards the hard one and
    try again."""
    while True:
        try:
            if os.open in os.supports_dir_fd:
                return os.open(name, _LOCK_FILE_FLAGS, 0o600, dir_fd=dir_fd)
            return os.open(path, _LOCK_FILE_FLAGS, 0o600)  # pragma: no cover - no openat()
        except OSError as exc:
            if exc.errno != errno.EMFILE or not raise_descriptor_limit():
                raise


def raise_descriptor_limit() -> bool:
    """Double this process's soft limit on open files (``RLIMIT_NOFILE``), up to its hard
    limit; ``False`` if it cannot grow. Logged once per raise at INFO."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or (hard != unlimited and soft >= hard):
        return False
    wanted = max(soft * 2, 1024)
    new = wanted if hard == unlimited else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return False
    logger.info(
        "bgjobs: the process ran out of file descriptors for its lock files (one or two per "
        "job); raised its soft limit on open files from %d to %d (hard limit %s)",
        soft,
        new,
        "unlimited" if hard == unlimited else hard,
    )
    return True


def _before_fork() -> None:
    _fd_lock.acquire()


def _after_fork_in_parent() -> None:
    _fd_lock.release()


_reset_in_pid = os.getpid()  # the process whose descriptors _live_locks describes


def reinit_after_fork() -> None:
    """In a forked child: forget every inherited lock (closing, never unlocking, its
    descriptor) and free the descriptor guard. Once per process, whoever calls first:
    this module's own fork hook, or a manager re-arming its schedules that needs its
    lock files usable before that hook's turn."""
    global _fd_lock, _reset_in_pid
    if _reset_in_pid == os.getpid():
        return
    _reset_in_pid = os.getpid()
    for lock in list(_live_locks):
        lock._forget_inherited()
    _fd_lock = threading.RLock()


# Descriptor bookkeeping, not managers: these hooks guard every HostLock, whether or not
# a manager owns it. Managers react to fork through the execution core's hook.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=reinit_after_fork,
    )
