"""One trainer per run directory, and the temporary files that killed processes leave behind.

``RUN/.lock`` is held with ``flock`` by the training process (rank 0) for the whole run: the kernel
releases it when that process exits or is killed, so a lock file left by a dead process (a "stale"
lock) never blocks the next run. The file records the holder's PID and host for the error message.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
from pathlib import Path

from partgm.errors import PartgmError
from partgm.run.layout import LOCK

LOCK_FILE = LOCK
# atomic_write's ".NAME.PID.tmp" files, unit_directory's ".NAME.PID[-0].tmp" dirs and save_checkpoint's
# ".tmp-step_X-PID" / ".trash-step_X-PID" dirs
_TEMPORARY = re.compile(r"\..+\.\d+(?:-0)?\.tmp|\.tmp-step_\d{8}-\d+|\.trash-step_\d{8}-\d+")


class RunLock:
    """An exclusive lock on a run directory (created if needed); ``release`` or process exit frees it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held until release)
        except (FileExistsError, NotADirectoryError):
            raise PartgmError(f"run directory '{self.run_dir}' is a file, not a directory") from None
        except OSError as exc:
            raise PartgmError(f"run directory '{self.run_dir}' is not writable: {exc.strerror}") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise PartgmError(
                f"run directory '{self.run_dir}' is in use by another trainer ({holder}): wait for it to "
                "finish, or pick another --run-dir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files and directories of interrupted atomic writes and checkpoint saves in
    ``directory`` (not recursive). Only call it while holding the run's lock: no other writer is live."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for path in Path(directory).iterdir():
        if _TEMPORARY.fullmatch(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed

