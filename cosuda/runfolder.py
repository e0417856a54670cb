"""A run folder that cannot be silently corrupted: one writer, whole files, disk errors in one line.

A run folder (config.json, metrics.json, scalars.jsonl, checkpoints/) is written by one process
at a time, holding `locked(RUN_DIR)`; every file in it is written through `write_atomically`, so
a reader, a resume or a second look after a crash finds the old file or the new one, never half
of one; and a write that fails -- a full disk, a quota, a read-only mount -- stops the run with a
`RunError` of one line that names the file and says what is still good. The training engine
(`cosuda.train`) uses these; its command line prints a `RunError` as `error: ...` and exits 1.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there are not locked
    fcntl = None

LOCK_NAME = ".lock"
MB = 1024 * 1024


class RunError(RuntimeError):
    """A run that stopped for a reason the user can act on (a full disk, an unreadable file, a run
    folder in use), in one line: what failed, the file, and what is safe to resume from."""


@contextmanager
def locked(run_dir: str | Path) -> Iterator[Path]:
    """Hold RUN_DIR/.lock, an exclusive `flock`, while the body writes the run folder.

    Guarantees: while it is held no other process that asks for it (another training, resume
    or rank 0 of another torchrun) gets it; the second one raises RunError at once, naming the
    folder and the holder's PID (written into the lock file). The lock belongs to the open file,
    so the kernel drops it when the holder ends, however it ends (SIGKILL, out of memory, power
    cut of a local disk): there is never a stale lock to delete by hand. Once it is held, the
    temporary files that killed writers left behind (`*.tmp`, see `write_atomically`) are
    removed: no one else can be writing them. The folder is created if needed.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    # The file is never deleted: a process that opened it just before the deletion would lock
    # the old inode while the next one locks a new file, and both would write.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise RunError(f"{run_dir} is in use by another training (PID {holder}): wait for it to end, "
                               "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for folder in (run_dir, run_dir / "checkpoints"):
            for stale in folder.glob("*.tmp"):
                stale.unlink(missing_ok=True)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def temporary_path(path: Path) -> Path:
    """`NAME.<pid>.tmp` beside `path`: two processes never share one, and it never matches
    `iter_*.pt` (a resume never picks it)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def payload_bytes(obj: Any) -> int:
    """The bytes of the arrays in `obj` (tensors, NumPy arrays, in nested dicts and lists): about
    what `torch.save` writes for a checkpoint."""
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    nbytes = getattr(obj, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, int) else 0


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _tail(last_good: Callable[[], Path | None] | None) -> str:
    if last_good is None:
        return ""
    good = last_good()
    return f"; the last good checkpoint is {good}" if good else "; no checkpoint has been written yet"


def no_space(path: Path, needed: int, last_good: Callable[[], Path | None] | None = None) -> RunError:
    """The one line of a full disk: the file, what it needs, what is free, what is still good."""
    return RunError(f"no space left on device while writing {path} ({needed / MB:.1f} MB needed, "
                    f"{free_bytes(path.parent) / MB:.1f} MB free){_tail(last_good)}")


def _disk_full(e: BaseException) -> bool:
    # torch.save reports a short write as "[enforce fail at inline_container.cc] unexpected pos"
    # or "PytorchStreamWriter failed writing file", never as ENOSPC
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    return isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "failed writing file" in str(e))


def write_error(e: BaseException, path: Path, needed: int,
                last_good: Callable[[], Path | None] | None = None) -> RunError | None:
    """`e`, raised while writing `path`, as a one-line RunError; None if it is no write error."""
    if _disk_full(e):
        return no_space(path, needed, last_good)
    if isinstance(e, OSError):
        return RunError(f"cannot write {path} ({e.strerror or e}){_tail(last_good)}")
    return None


def write_atomically(path: Path, write: Callable[[Path], None], needed: int = 0,
                     last_good: Callable[[], Path | None] | None = None) -> None:
    """Write `path` whole or not at all: `write(tmp)` fills a per-process temporary file
    (`temporary_path`), which then replaces `path` in one rename.

    Guarantees: a kill leaves the old file or the new one (and at worst a `*.tmp` that the next
    `locked` removes); on any failure of this process -- an exception, Ctrl-C -- the temporary
    file is removed before the error goes on. Before writing, the `needed` bytes are checked
    against the free space; a full disk then, or met while writing (ENOSPC, or torch.save's
    short-write RuntimeError), and any other OSError raise a one-line RunError naming `path`,
    ending with the last good checkpoint when `last_good` is given.
    """
    path = Path(path)
    if needed and free_bytes(path.parent) < needed:
        raise no_space(path, needed, last_good)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        error = write_error(e, path, needed, last_good)  # after the unlink: the free space it reports is real
        if error is not None:
            raise error from None
        raise


def append_line(path: Path, line: str, last_good: Callable[[], Path | None] | None = None) -> None:
    """Append `line` (and a newline) to `path`; a failed write is a one-line RunError. A line cut
    short by it is dropped when the run resumes (`cosuda.train._truncate_scalars`)."""
    data = line + "\n"
    try:
        with open(path, "a") as f:
            f.write(data)
    except OSError as e:
        raise write_error(e, Path(path), len(data.encode()), last_good) from None
