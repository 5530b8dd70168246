"""Files written all at once and JSONL files read with clear errors: the one place for both.

Every write goes to a temporary sibling, is flushed and fsynced, then renamed over the target (and the
directory fsynced), so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from partgm.errors import PartgmError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Create or replace ``path`` all at once: ``write(f)`` fills a temporary sibling file, which is
    flushed, fsynced and renamed over ``path``. Parent directories are created."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartgmError(f"cannot create '{path.parent}': {exc.strerror or exc}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PartgmError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_jsonl(path: str | Path, what: str = "file", skip_invalid: bool = False) -> list[tuple[int, Any]]:
    """(line number, record) for each non-blank line of a JSONL file. A line that is not UTF-8 JSON is
    skipped when ``skip_invalid`` (e.g. a line torn by a crash), else a ``PartgmError`` names it."""
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"{what} '{path}' does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PartgmError(f"cannot read {what} '{path}': {exc.strerror}") from None
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if not skip_invalid:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise PartgmError(f"{path}:{n}: not valid JSON ({reason})") from None
    return out


_PID_TEMPORARY = re.compile(r"\..+\.(\d+)(?:-[0-9a-f]+)?\.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(directory: Path) -> list[Path]:
    """Delete the ``.NAME.PID[-HEX].tmp`` files and directories in ``directory`` whose writer (PID) no
    longer runs: what a SIGKILL mid-write leaves behind. Returns the removed paths."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for path in Path(directory).iterdir():
        m = _PID_TEMPORARY.fullmatch(path.name)
        if m and int(m[1]) != os.getpid() and not pid_alive(int(m[1])):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def claim_output(path: str | Path, overwrite: bool, what: str = "output") -> Path:
    """The one rule for what a command writes: ``path`` may be created, but a file (or a non-empty
    directory) already there, which this command did not create now, is replaced only when ``overwrite``
    (``--overwrite``). A run directory is never replaced by an output of another kind. Returns ``path``."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path
    if (path / "checkpoints").is_dir() and (path / "config.json").is_file():  # run.layout.is_run (a lower layer)
        raise PartgmError(f"{what} '{path}' already holds a run: it is never replaced; choose another path")
    if not overwrite:
        raise PartgmError(f"{what} '{path}' already exists: pass --overwrite to replace it, or choose another path")
    return path


def free_stem(stem: Path, suffixes: tuple[str, ...]) -> Path:
    """``stem``, or ``stem-K`` with the first K >= 2 for which no ``stem-K + suffix`` exists: a default
    output name that never replaces an earlier output."""
    out, k = Path(stem), 1
    while any(out.with_name(out.name + s).exists() for s in suffixes):
        k += 1
        out = Path(stem).with_name(f"{Path(stem).name}-{k}")
    return out


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def unit_directory(path: str | Path) -> Iterator[Path]:
    """Write a directory as a unit: the body fills a temporary sibling (yielded), which then replaces
    ``path`` in one rename (an existing ``path`` is swapped out, then deleted). On an error, or a kill,
    nothing at ``path`` changes; the temporary is removed (after a kill, by the next
    ``remove_dead_temporaries`` of the parent)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise PartgmError(f"cannot create '{path}': {exc.strerror or exc}") from None
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            if not exchange_paths(tmp, path):
                old = path.with_name(f".{path.name}.{os.getpid()}-0.tmp")
                os.replace(path, old)
                os.replace(tmp, path)
                tmp = old
        else:
            if path.is_dir():
                path.rmdir()
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise PartgmError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)  # a file that stood at ``path``
