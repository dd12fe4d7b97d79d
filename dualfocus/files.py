"""How the eval commands read and write files: JSON lines (one loop, `read_json_lines`), one JSON line per record, whole files atomically (a temporary
file beside the target, fsynced, moved into place) with the umask's mode, a full disk as one clear
error, and an exclusive lock that says who holds it.

    write_atomic("scores.json", json.dumps(payload))          # never a truncated file
    write_lines_atomic("merge.jsonl", records)
    with FileLock("answers/8_0.jsonl"): ...                  # a second holder gets FileBusyError
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class EvalRunError(Exception):
    """A cause that stops a whole command (not one question): the CLI prints it as one line."""


def one_line(error: BaseException, limit: int = 400) -> str:
    """An exception's message on one line (transformers' errors span several), at most `limit` chars."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DiskFullError(EvalRunError):
    """No space left while writing an output."""


class FileBusyError(EvalRunError):
    """Another process holds the lock of a file this one wants to write."""


def disk_full(path: str, error: OSError) -> DiskFullError:
    """The one message for ENOSPC / EDQUOT while writing `path`."""
    return DiskFullError(f"no space left on the device writing {path} ({os.strerror(error.errno)}); "
                         "free some space, then rerun the same command (what was written before is kept)")


def is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def dumps_line(record: Mapping) -> str:
    """One JSON line. Non-ASCII text stays readable; a string that UTF-8 cannot encode (half an emoji
    pair, e.g. '\\ud83d' read from a question file) is written escaped, so the line reads back equal."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True)
    return line + "\n"


def read_json_lines(lines: Iterable[str], fail: Callable[[int, json.JSONDecodeError], Exception]) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank JSON line; a line that is not JSON raises `fail(lineno, error)`:
    the one JSONL loop, each caller naming its file and what to do in its own words."""
    values = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                values.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise fail(lineno, e) from e
    return values


def umask_mode(base: int = 0o666) -> int:
    """The mode `open()` would give a new file: `base` less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def write_atomic(path: str, text: str, make_folder: bool = True) -> None:
    """Write `text` to `path` all or nothing; the file's mode follows the umask (not mkstemp's 0600).
    `make_folder` False: a missing folder is a FileNotFoundError (the user named a wrong one)."""
    write_chunks_atomic(path, [text], make_folder=make_folder)


def write_lines_atomic(path: str, records: Iterable[Mapping]) -> None:
    """Records as jsonl, all or nothing (see `dumps_line`)."""
    write_chunks_atomic(path, (dumps_line(r) for r in records))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Bytes (an xlsx built in memory), all or nothing."""
    write_chunks_atomic(path, [data], binary=True)


def temp_prefix(path: str) -> str:
    """The name start of `path`'s temporary files (".tmp-8_0.jsonl-"): each target's own, so the holder
    of its lock can remove what a killed writer left without touching another file's."""
    return f".tmp-{os.path.basename(path)}-"


def remove_stale_temps(path: str) -> list[str]:
    """Delete the temporary files a killed atomic write of `path` left behind; call it holding the
    lock of `path`. Returns their paths."""
    folder = os.path.dirname(os.path.abspath(path))
    stale = [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(temp_prefix(path))]
    for name in stale:
        _unlink_quietly(name)
    return stale


def write_chunks_atomic(path: str, chunks: Iterable[str | bytes], binary: bool = False,
                        make_folder: bool = True) -> None:
    """The one atomic writer: a temporary file beside `path`, fsynced, moved into place."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if make_folder:
            os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=os.path.splitext(path)[1], dir=folder)
    except OSError as e:
        raise (disk_full(path, e) if is_disk_full(e) else e) from e
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise (disk_full(path, e) if is_disk_full(e) else e) from e
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def lock_path(path: str) -> str:
    """The lock file beside `path`: answers/8_0.jsonl -> answers/.8_0.jsonl.lock (never a shard name)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.lock")


class FileLock:
    """An exclusive, non-blocking `flock` on `path`'s lock file, naming the holder (pid@host) in it.

    The lock is on a separate file because the guarded file itself may be replaced atomically. The
    kernel releases it when the process ends, however it ends (a SIGKILL leaves no stale lock).
    """

    def __init__(self, path: str):
        import fcntl

        self.path = lock_path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, umask_mode())
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 200).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(self._fd)
            raise FileBusyError(f"{path} is being written by {holder} (lock {self.path}); wait for that "
                                "run to end or stop it, or give another answers file") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
