"""Writing files so that readers never see part of one, and telling the user things in one line."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def note(message: str) -> None:
    """Tell the user something in one line on stderr (above any progress bar)."""
    from tqdm import tqdm

    tqdm.write(f"nelib: {message}", file=sys.stderr)


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (0644 under the usual 022). ``mkstemp``
    makes 0600 files, which the other users of a store shared by a group (NFS, a cluster) cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write, keep_previous: Path | None = None) -> None:
    """Call ``write(tmp_path)`` and rename the temporary file onto ``path`` once it is on disk whole.

    ``keep_previous``: first move the file ``path`` holds (if any) there, so that it stays until the new one
    is complete (checkpoints: a crash between the two renames leaves the previous one, never none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
