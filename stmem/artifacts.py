"""Stage outputs on disk: written atomically, described by a manifest.

Every stage writes into a fresh temporary directory beside its final one and
renames it into place only when everything is written, so a crash or a bad
input never leaves a half-written artifact behind. The manifest records what
went in (file hashes, config hash, code version) and what came out (counts).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

MANIFEST = "manifest.json"


class MissingArtifactError(FileNotFoundError):
    """An upstream artifact a stage needs is not there."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_version() -> str:
    """The git commit of the checkout (with '-dirty'), else the package version."""
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


@contextlib.contextmanager
def stage_output(final_dir: Path, *, stage: str, inputs: list[Path], config_hash: str) -> Iterator[tuple[Path, dict]]:
    """Yield ``(tmp_dir, summary)``; on success move tmp_dir to ``final_dir``.

    The caller writes its files into ``tmp_dir`` and puts row counts and other
    figures into ``summary``; they land in ``manifest.json``. On any exception
    the temporary directory is removed and ``final_dir`` is left as it was.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.parent / f".{final_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    summary: dict = {}
    started = time.time()
    try:
        yield tmp, summary
        manifest = {
            "stage": stage,
            "inputs": {str(p): file_sha256(Path(p)) for p in inputs if Path(p).is_file()},
            "config_hash": config_hash,
            "code_version": code_version(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - started, 3),
            "summary": summary,
        }
        write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, final_dir: Path) -> None:
    # Two renames: the old output moves aside, the new one takes its name. A
    # reader sees either the whole old directory or the whole new one.
    old = None
    if final_dir.exists():
        old = final_dir.parent / f".{final_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final_dir, old)
    os.rename(tmp, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
