"""Output folders: checked before any work starts, replaced only when asked, locked while swept.

Nothing here imports torch, so the command line can refuse a bad ``--out`` in milliseconds.

* :func:`check_train_out` / :func:`check_sweep_out` validate an output path before training: not
  empty, not a file, not under a file, creatable; an existing results folder is never replaced
  unless ``overwrite`` is given (``--overwrite``), and a sweep resumes only into a folder that holds
  a sweep of the same profile.
* :func:`write_folder` writes a whole results folder next to its destination and moves it into
  place, so a killed ``train`` leaves no half-written folder and ``--overwrite`` swaps atomically.
* :func:`sweep_lock` makes a second sweep of the same shard on one folder stop with a clear message
  instead of computing everything twice; :func:`clean_partial` removes the hidden temporary files
  of writers that were killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

RUNS_FILE, CURVES_FILE, META_FILE = "runs.parquet", "curves.parquet", "meta.json"
#: A sweep's per-configuration folders live in ``OUT/configs``.
CONFIGS_DIR = "configs"
#: What a sweep itself puts at the top of its folder (anything else means "not a sweep folder").
SWEEP_ENTRIES = (CONFIGS_DIR, "submitit", RUNS_FILE, CURVES_FILE, META_FILE)
#: A temporary file older than this (seconds) belongs to a writer that is gone: atomic writes
#: of tables and checkpoints take well under a second.
STALE_SECONDS = 60.0


def configuration_folders(out: str | Path) -> list[Path]:
    """The complete configuration folders of a sweep: ``OUT/configs/<name>/`` with a ``meta.json``.

    Hidden folders are skipped: ``.<name>.new-*.tmp`` is a folder still being written (or left by a
    killed writer) and may already hold its ``meta.json``; counting it would duplicate its rows.
    """
    root = Path(out) / CONFIGS_DIR
    return sorted(
        meta.parent for meta in root.glob(f"*/{META_FILE}") if not meta.parent.name.startswith(".")
    )


class FolderError(ValueError):
    """An output path that cannot be used as it is; the message says why and what to do."""


def check_out_path(out: Any, flag: str = "--out") -> Path:
    """Validate an output folder path: a non-empty path that is, or can become, a folder.

    Raises :class:`FolderError` naming ``flag`` if the path is empty, is a file, lies under a
    file, or its nearest existing parent is not writable.
    """
    if not isinstance(out, str | os.PathLike):
        raise FolderError(f"{flag} must be a folder path, got {out!r}")
    if not str(out).strip():
        raise FolderError(f"{flag} must name a folder, got an empty path")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise FolderError(f"{flag} {str(out)!r} is an existing file, not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FolderError(f"{flag} {str(out)!r} lies under {str(parent)!r}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FolderError(f"{flag} {str(out)!r}: cannot create folders in {str(parent)!r}")
    return path


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def check_train_out(out: Any, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """An output folder for one configuration's results: new or empty, or ``overwrite``."""
    path = check_out_path(out, flag)
    entries = _entries(path)
    if entries and not overwrite:
        kind = "a results folder" if META_FILE in entries else "a folder that is not empty"
        raise FolderError(
            f"{flag} {str(out)!r} is {kind} ({', '.join(entries[:4])}"
            f"{', ...' if len(entries) > 4 else ''}); choose a new folder, or pass --overwrite "
            "to replace it with the new results"
        )
    return path


def check_sweep_out(
    out: Any,
    profile: str,
    hashes: Iterable[str] = (),
    *,
    overwrite: bool = False,
    flag: str = "--out",
) -> Path:
    """An output folder for a sweep of ``profile``: new, empty, or a sweep of the same profile.

    A folder that holds configurations of another profile (other than ones this sweep shares,
    ``hashes``), collected results without a sweep's ``configs/`` (shipped results: a sweep's
    ``collect`` would replace them), or files a sweep does not write, is refused unless
    ``overwrite``, which empties it first.
    """
    path = check_out_path(out, flag)
    entries = _entries(path)
    if not entries:
        return path
    problem = _not_a_sweep_of(path, entries, profile, set(hashes))
    if problem is None:
        return path
    if not overwrite:
        raise FolderError(
            f"{flag} {str(out)!r} {problem}; choose another folder, or pass --overwrite to "
            "delete its contents and sweep from scratch"
        )
    shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _not_a_sweep_of(path: Path, entries: list[str], profile: str, hashes: set[str]) -> str | None:
    """Why ``path`` cannot be resumed as a sweep of ``profile`` (None: it can)."""
    foreign = [e for e in entries if e not in SWEEP_ENTRIES and not e.startswith(".")]
    if foreign:
        return f"holds files a sweep does not write ({', '.join(foreign[:4])})"
    if CONFIGS_DIR not in entries and META_FILE in entries:
        return (
            "holds collected results but no configs/ folder (shipped or merged results); a "
            "sweep's collect step would replace them"
        )
    for meta_file in (folder / META_FILE for folder in configuration_folders(path)):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged configuration: the sweep recomputes it
        found = meta.get("profile")
        if found and found != profile and meta.get("config_hash") not in hashes:
            return (
                f"holds results of profile {found!r} ({meta_file.parent.name}); a sweep of "
                f"profile {profile!r} there would mix them"
            )
    return None


def write_folder(
    path: str | Path, write: Callable[[Path], Any], *, overwrite: bool = False
) -> Path:
    """Write a folder with ``write(tmp_folder)`` beside ``path``, then move it into place.

    A killed writer leaves only a hidden ``.<name>.*.tmp`` sibling, never a half-written ``path``.
    With ``overwrite``, an existing ``path`` is swapped out and deleted after the new one is in
    place; without it, an existing non-empty ``path`` is refused.
    """
    path = Path(path)
    check_train_out(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.time_ns()}"
    tmp = path.parent / f".{path.name}.new-{stamp}.tmp"
    old = path.parent / f".{path.name}.old-{stamp}.tmp"
    tmp.mkdir()
    try:
        write(tmp)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (path / META_FILE).exists():  # another writer of the same folder finished first
            shutil.rmtree(old, ignore_errors=True)
            return path
        if old.exists() and not path.exists():
            old.rename(path)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


@contextlib.contextmanager
def sweep_lock(out: str | Path, shard: tuple[int, int] = (0, 1)) -> Iterator[Path]:
    """Hold ``OUT/.sweep-<i>-of-<n>.lock`` while a sweep of that shard runs (an advisory flock).

    A second sweep of the same shard on the same folder raises :class:`FolderError` at once
    (naming the process that holds it); different shards of one sweep run side by side. The lock
    goes with its process, so a sweep killed with ``kill -9`` never leaves a stale lock.
    """
    index, count = shard
    path = Path(out) / f".sweep-{index}-of-{count}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # held open (and locked) for the whole sweep
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderError(
                f"another sweep is running shard {index}/{count} in {str(out)!r} ({holder}); "
                "wait for it to finish or stop it, then re-run this command to resume"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        handle.flush()
        yield path
    finally:
        handle.close()


def clean_partial(out: str | Path, *, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove hidden temporary files and folders (``.*.tmp``) under ``out`` left by killed writers.

    Only entries older than ``older_than`` seconds go: a live writer's temporary file (another
    shard's, say) is seconds old. Returns what was removed.
    """
    now = time.time()
    removed: list[Path] = []
    root = Path(out)
    for tmp in list(root.rglob(".*.tmp")) if root.is_dir() else []:
        try:
            if now - tmp.lstat().st_mtime < older_than:
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (e.g. by its writer)
        removed.append(tmp)
    return removed
