"""Stage outputs on disk: written atomically, described by a manifest, keyed by what went in.

Every stage writes into a temporary directory beside its final one and
renames it into place only when everything is written, so a crash or a bad
input never leaves a half-written artifact behind. The manifest records

    key          hash of everything the output depends on (input artifacts,
                 config section, code): equal key, equal output, so the
                 stage can be skipped
    inputs       what went in (upstream output digests, file hashes)
    outputs      sha256 of every file written, so a deleted or altered
                 artifact is detected before it is reused
    summary      counts and figures

The temporary directory is named after the key: a run killed mid-stage and
started again with the same inputs finds it (and the training checkpoints in
it); a leftover of other inputs is removed.

An output replaced by one of another key is kept, up to ``keep`` of them per
stage, in ``versions/<stage dir>/<key>/`` beside it (``earlier_dir``): going
back to an earlier config puts that output back (``restore_earlier``)
instead of building it again.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

MANIFEST = "manifest.json"


class MissingArtifactError(FileNotFoundError):
    """An upstream artifact a stage needs is not there, or no longer what its manifest says."""


# The storage refusing a write (no permission, read-only, full, over a size or name limit): a retry
# meets the same refusal; the user has to free space or choose another run.root.
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                            errno.ENAMETOOLONG})


def storage_refused(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


class RunInUseError(RuntimeError):
    """Another process holds the run directory."""


def file_sha256(path: Path) -> str:
    st = os.stat(path)  # a file hashed once per process unless it changes
    return _sha256(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(obj) -> str:
    """A short stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_version() -> str:
    """The git commit of the checkout (with '-dirty'), else the package version; recorded, not keyed."""
    from importlib.metadata import version

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return version("stmem")


def require(*paths: Path, stage: str) -> None:
    """Fail with one clear line when an upstream artifact is missing."""
    for p in paths:
        if not Path(p).exists():
            raise MissingArtifactError(f"{p}: missing; run stage '{stage}' first")


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_manifest(stage_dir: Path) -> dict | None:
    p = Path(stage_dir) / MANIFEST
    try:
        return read_json(p) if p.is_file() else None
    except json.JSONDecodeError:
        return None


def hash_outputs(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` but the manifest, by relative path."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def altered(stage_dir: Path, manifest: dict) -> str | None:
    """Why ``stage_dir`` no longer holds what its manifest recorded; None when it does."""
    recorded = manifest.get("outputs")
    if recorded is None:
        return "its manifest records no output hashes"
    for name, sha in recorded.items():
        p = Path(stage_dir) / name
        if not p.is_file():
            return f"{p} was deleted"
        if file_sha256(p) != sha:
            return f"{p} was changed"
    return None


def earlier_dir(final_dir: Path, key: str) -> Path:
    """Where an earlier output of ``key`` is kept once another has replaced it."""
    return Path(final_dir).parent / "versions" / Path(final_dir).name / key


def restore_earlier(final_dir: Path, key: str, keep: int) -> dict | None:
    """Put the kept output of ``key`` back in place (the one there is kept in turn); its manifest.

    None, and nothing moved, when none is kept or it no longer matches its
    manifest (an altered one is removed: it can never be reused).
    """
    d = earlier_dir(final_dir, key)
    m = read_manifest(d)
    if m is None or m.get("key") != key or altered(d, m):
        shutil.rmtree(d, ignore_errors=True)
        return None
    _swap_into_place(d, Path(final_dir), keep)
    return m


def work_dir(final_dir: Path, key: str) -> Path:
    """Where the output of ``key`` is written before it is renamed to ``final_dir``."""
    return Path(final_dir).parent / f".{Path(final_dir).name}.tmp-{key[:16]}"


@contextlib.contextmanager
def stage_output(final_dir: Path, *, stage: str, key: str, inputs: dict, config_hash: str,
                 resumable: bool = False, keep: int = 0) -> Iterator[tuple[Path, dict]]:
    """Yield ``(tmp_dir, summary)``; on success move tmp_dir to ``final_dir`` with its manifest.

    The caller writes its files into ``tmp_dir`` and puts row counts and other
    figures into ``summary``. On an exception the temporary directory is
    removed, unless ``resumable`` (training: its checkpoints are kept for the
    next attempt with the same key); ``final_dir`` is left as it was. The
    output it replaces is kept (``earlier_dir``), up to ``keep`` per stage.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = work_dir(final_dir, key)
    for old in final_dir.parent.glob(f".{final_dir.name}.tmp-*"):
        if old != tmp or not resumable:  # a killed run's leftover
            shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(exist_ok=True)
    summary: dict = {}
    started = time.time()
    try:
        yield tmp, summary
        manifest = {
            "stage": stage, "key": key, "inputs": inputs, "config_hash": config_hash,
            "code_version": code_version(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - started, 3),
            "outputs": hash_outputs(tmp),
            "summary": summary,
        }
        write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, final_dir, keep)
    except BaseException:
        if not resumable:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(new: Path, final_dir: Path, keep: int = 0) -> None:
    # Two renames: the old output moves aside, the new one takes its name. A
    # reader sees either the whole old directory or the whole new one.
    old = None
    if final_dir.exists():
        old = final_dir.parent / f".{final_dir.name}.old-{os.getpid()}"
        os.rename(final_dir, old)
    os.rename(new, final_dir)
    key = (read_manifest(final_dir) or {}).get("key")
    if key:  # the output in place is not kept as well
        shutil.rmtree(earlier_dir(final_dir, key), ignore_errors=True)
    if old is None:
        return
    m = read_manifest(old)
    if keep > 0 and m is not None and m.get("key") and m["key"] != key:
        kept = earlier_dir(final_dir, m["key"])
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old, kept)
        os.utime(kept)  # when it was replaced: the oldest replaced go first
        by_age = sorted(kept.parent.iterdir(), key=lambda d: d.stat().st_mtime_ns, reverse=True)
        for d in by_age[keep:]:
            shutil.rmtree(d, ignore_errors=True)
    else:
        shutil.rmtree(old, ignore_errors=True)


_HELD: dict[Path, int] = {}  # run directories this process has locked, with the lock file's descriptor


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: float = 0, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``run_dir`` for this process; another process waits up to ``wait`` seconds, then gets ``RunInUseError``.

    An OS lock (flock): it goes with the process, so a killed run leaves no
    stale lock. Re-entrant within one process (a flow and its tasks). Two
    runs of one directory that overlap (a schedule and a manual run) take
    turns: ``on_wait`` is told who holds it, once per holder.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline, told = time.monotonic() + wait, None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 128, 0).decode(errors="replace").strip() or "another process"
            left = deadline - time.monotonic()
            if left <= 0:
                os.close(fd)
                waited = f"; waited {wait:g} s (run.lock_timeout)" if wait else ""
                raise RunInUseError(f"{run_dir}: in use by {holder}{waited}; wait for it or use another "
                                    "run.name") from None
            if on_wait is not None and holder != told:
                on_wait(f"waiting for run {run_dir} held by {holder} (for up to {left:.0f} s, run.lock_timeout)")
                told = holder
            time.sleep(min(0.5, left))  # flock has no timeout of its own: poll
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}".encode(), 0)
    _HELD[run_dir] = fd
    try:
        yield
    finally:
        del _HELD[run_dir]
        os.close(fd)
