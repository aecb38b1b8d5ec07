"""What the environment shares with the host, for the input and output paths of a config.

On an old-glibc host `scripts/in-env` runs commands in a private Debian userland. Only some
host directories are visible there at their own paths (every top-level one that is not OS
userland, $HOME, /tmp, the repository, the working directory); the rest of the host is
mounted read-only under another root. `scripts/in-env` says which through two variables:

- `TFXP_SHARED_PATHS`: the host directories bound read-write at the same path,
  colon-separated. Unset (a plain venv, or no environment at all) means everything is.
- `TFXP_HOST_ROOT`: where the host's `/` is, read-only. Unset means nowhere.

Both are read when a function is called, never at import.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

SHARED_PATHS_ENV = "TFXP_SHARED_PATHS"
HOST_ROOT_ENV = "TFXP_HOST_ROOT"

_REPO_ROOT = Path(__file__).resolve().parent.parent
# Symlinks followed through the host root before giving up, as the kernel's limit.
_MAX_SYMLINKS = 40


def shared_paths() -> list[Path] | None:
    """The directories shared with the host, or None when every path is.

    Returns:
      The entries of `TFXP_SHARED_PATHS` plus the repository, /tmp and $HOME (always
      shared), symlinks resolved; None when `TFXP_SHARED_PATHS` is unset.
    """
    listed = os.environ.get(SHARED_PATHS_ENV)
    if listed is None:
        return None
    paths = [p for p in listed.split(":") if p]
    paths += [str(_REPO_ROOT), "/tmp"]
    if os.environ.get("HOME"):
        paths.append(os.environ["HOME"])
    resolved: list[Path] = []
    for path in paths:
        path = Path(path).resolve()
        if path not in resolved:
            resolved.append(path)
    return resolved


def resolve_input(path: Path) -> Path:
    """The path to read an input file or directory through.

    Args:
      path: the path as the user wrote it (on the host); relative to the working directory.

    Returns:
      `path` itself when it exists here; else, when it exists on the host but is not shared
      with the environment, the same file under `TFXP_HOST_ROOT` (read-only).

    Raises:
      FileNotFoundError: when it exists neither here nor on the host; the message says
        where it was looked for.
    """
    if path.exists():
        return path
    host_root = os.environ.get(HOST_ROOT_ENV)
    if not host_root:
        raise FileNotFoundError(errno.ENOENT, f"{path} does not exist", str(path))
    on_host = _on_host(Path(host_root), Path(os.path.abspath(path)))
    if on_host.exists():
        return on_host
    raise FileNotFoundError(
        errno.ENOENT,
        f"{path} does not exist, neither in the environment nor on the host "
        f"(looked for it as {on_host}, where the environment sees the host's /)",
        str(path),
    )


def check_output_root(path: Path) -> None:
    """Refuses an output root whose files would not reach the host.

    Args:
      path: the output directory, absolute or relative to the working directory; it need
        not exist yet.

    Raises:
      ValueError: when `TFXP_SHARED_PATHS` is set and `path`, symlinks resolved, is not
        under a shared directory (see `shared_paths`).
    """
    shared = shared_paths()
    if shared is None:
        return
    resolved = path.resolve()
    if any(resolved.is_relative_to(directory) for directory in shared):
        return
    shown = str(path) if path == resolved else f"{path} ({resolved})"
    listed = ", ".join(str(directory) for directory in shared)
    raise ValueError(
        f"{shown} is outside the directories the environment shares with the host "
        f"({listed}): the outputs would land inside the environment's private filesystem; "
        "choose a directory under one of them"
    )


def _on_host(host_root: Path, path: Path) -> Path:
    """`path` (absolute) under `host_root`, its symlinks followed as the host would."""
    resolved = host_root
    pending = list(path.parts[1:])
    followed = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            resolved = resolved.parent if resolved != host_root else host_root
            continue
        candidate = resolved / part
        if not candidate.is_symlink():
            resolved = candidate
            continue
        followed += 1
        if followed > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"too many symlinks under {host_root}", str(path))
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            resolved = host_root
            pending = list(target.parts[1:]) + pending
        else:
            pending = list(target.parts) + pending
    return resolved
