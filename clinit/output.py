"""Process output to log files: cltab `:::logdir:PATH` (one `PATH/TAG.log` per entry).

Without `logdir` a child inherits the daemon's stdout and stderr (or the
`log` file).  With it, the child writes into a pipe, and one thread here
(a selector over every pipe) appends what comes out to `PATH/TAG.log`.
The daemon, not the child, holds the file open, so after logrotate
renamed it, `reopen()` (the daemon calls it on SIGHUP) closes every file
and opens a fresh one at its name: an already-running process's next
output goes there.  Actors never wait on any of this: `pipe_for` only
makes a pipe and hands its read end to the thread; files are opened,
written and reopened by the thread alone.

Safety, as for the status file: the folder is made 0750 if missing and
refused if anyone but the daemon's user or root owns it or may write to
it (`paths.secure_folder`), so nobody else can plant anything in it; a
log file is opened with O_NOFOLLOW and O_NONBLOCK, and used only if it is
a regular file with a single link (a symlink, FIFO, device or hard link
planted at `TAG.log` is refused, and logged, once per file and reopen).
Output that cannot be written is read and dropped, so a child never
blocks on a full pipe because its log is broken.

Each running process holds one pipe (one fd in the daemon) and each tag
in use one open file: for thousands of entries, raise the daemon's
open-file limit.  A pipe is closed when every process that holds its
write end (the child and whatever it started) has ended.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import stat
import threading

from .paths import UnsafeFolder, secure_folder

__all__ = ["pipe_for", "reopen", "flush", "log_path", "FOLDER_MODE", "FILE_MODE"]

log = logging.getLogger("clinit.output")

FOLDER_MODE = 0o750
FILE_MODE = 0o640
_CHUNK = 65536
_FLUSH_CHUNKS = 64  # per pipe, at most, in a flush
_OPEN_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
               | os.O_CLOEXEC | os.O_NOCTTY)


def log_path(logdir: str, tag: str) -> str:
    """Where the output of entry `tag` goes (tags never contain '/')."""
    return os.path.join(logdir, f"{tag}.log")


def pipe_for(logdir: str, tag: str) -> int:
    """A pipe whose output goes to `logdir/TAG.log`; returns its write end.

    The caller makes it the child's stdout and stderr (posix_spawn DUP2)
    and closes it once the child is spawned.  Raises OSError when the
    folder cannot be trusted (the text says why) or no pipe can be made.
    """
    try:
        secure_folder(logdir, FOLDER_MODE, "log folder")
    except UnsafeFolder as err:
        raise OSError(errno.EPERM, str(err)) from None
    read_fd, write_fd = os.pipe()  # both close-on-exec: no other child inherits them
    _copier().add(read_fd, log_path(logdir, tag))
    return write_fd


def reopen() -> None:
    """Close every log file and open a fresh one at its name (after logrotate).

    Returns at once; the copier thread does it before it copies more output.
    """
    copier = _state["copier"]
    if copier is not None:
        copier.request_reopen()


def flush(timeout: float) -> bool:
    """Copy what the pipes hold now to the files; wait at most `timeout` s
    (the daemon calls it at exit, once every child is reaped).  True when done."""
    copier = _state["copier"]
    return copier is None or copier.flush(timeout)


_state = {"copier": None}
_state_lock = threading.Lock()


def _copier() -> "_Copier":
    with _state_lock:
        if _state["copier"] is None:
            _state["copier"] = _Copier()
        return _state["copier"]


class _LogFile:
    __slots__ = ("path", "fd", "users", "error")

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        self.users = 0
        self.error: str | None = None  # the last error logged for it

    def open(self) -> None:
        self.close()
        try:
            fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
        except OSError as err:
            self._failed(f"cannot open it: {err.strerror or err}"
                         + (" (a symlink planted there?)" if err.errno == errno.ELOOP else ""))
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
                f"a file with {st.st_nlink} hard links"
            self._failed(f"{what}: refusing to write to it")
            return
        os.set_blocking(fd, True)
        self.fd = fd
        if self.error is not None:
            log.warning("process output to %s written again", self.path)
        self.error = None

    def _failed(self, text: str) -> None:
        if text != self.error:
            log.error("process output to %s is dropped: %s", self.path, text)
        self.error = text

    def write(self, data: bytes) -> None:
        if self.fd is None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as err:  # disk full, I/O error: drop this chunk, say so once
            self._failed(f"cannot write: {err.strerror or err}")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Copier:
    """The thread that copies every pipe to its log file."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._new: list[tuple[int, str]] = []  # pipes handed over, not yet watched
        self._reopen = False
        self._flushes = 0  # flushes asked for
        self._flushed = 0  # flushes done
        # the thread's own:
        self._files: dict[str, _LogFile] = {}
        self._pipes: dict[int, _LogFile] = {}  # read end -> its file
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        threading.Thread(target=self._run, name="clinit-output", daemon=True).start()

    # -- from any thread -------------------------------------------------------

    def add(self, read_fd: int, path: str) -> None:
        with self._lock:
            self._new.append((read_fd, path))
        self._wake()

    def request_reopen(self) -> None:
        with self._lock:
            self._reopen = True
        self._wake()

    def flush(self, timeout: float) -> bool:
        with self._lock:
            self._flushes += 1
            ticket = self._flushes
        self._wake()
        with self._lock:
            return self._done.wait_for(lambda: self._flushed >= ticket, timeout)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already awake with bytes to spare

    # -- the thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                try:
                    if key.fd == self._wake_r:
                        self._take_requests()
                    elif key.fd in self._pipes:  # (not closed earlier in this round)
                        self._copy(key.fd)
                except Exception:  # noqa: BLE001 - a bug here must not stop every child's output
                    log.exception("output copier failed on fd %d; carrying on", key.fd)

    def _take_requests(self) -> None:
        try:
            os.read(self._wake_r, _CHUNK)
        except BlockingIOError:
            pass
        with self._lock:
            new, self._new = self._new, []
            reopen, self._reopen = self._reopen, False
            flushes = self._flushes
        if reopen:
            for file in self._files.values():
                file.open()
        for read_fd, path in new:
            file = self._files.get(path)
            if file is None:
                file = self._files[path] = _LogFile(path)
                file.open()
            file.users += 1
            self._pipes[read_fd] = file
            os.set_blocking(read_fd, False)
            self._selector.register(read_fd, selectors.EVENT_READ)
        if flushes > self._flushed:
            for read_fd in list(self._pipes):
                for _ in range(_FLUSH_CHUNKS):  # bounded: a writer may still be going
                    if not self._copy(read_fd):
                        break
            with self._lock:
                self._flushed = flushes
                self._done.notify_all()

    def _copy(self, read_fd: int) -> bool:
        """Copy one chunk; False once nothing more is there for now."""
        file = self._pipes[read_fd]
        try:
            data = os.read(read_fd, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            file.write(data)
            return True
        # every writer has gone: this pipe is done
        self._selector.unregister(read_fd)
        os.close(read_fd)
        del self._pipes[read_fd]
        file.users -= 1
        if file.users == 0:
            file.close()
            del self._files[file.path]
        return False
