"""Files that must survive a kill: written under a temporary name, then renamed into place."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Optional


@contextmanager
def replacing(path: Path, mode: str = "w", newline: Optional[str] = None) -> Iterator[IO]:
    """An open file under a temporary name beside `path` that replaces `path` when the block ends, and is
    removed when the block raises: a reader sees the old file or the whole new one, never a part, and an
    interrupted writer leaves no file of that name.

    The file gets the permissions any new file gets under the umask (mkstemp's own
    are owner-only), so teammates can read a run folder as they read the rest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never a part."""
    with replacing(path) as f:
        f.write(text)


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def append_line(path: Path, data: Any) -> None:
    """Append one JSON object as a line; a kill can at worst leave a last partial line."""
    with open(path, "a") as f:
        f.write(json.dumps(data) + "\n")
        f.flush()
        os.fsync(f.fileno())
