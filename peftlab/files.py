"""Saving an adapter's files as one: weights and config written so that a reader never takes a mix of an
old save and a new one, and checked on load.

`write_together(path, files)` writes each file in full to a temporary name in `path`, then replaces the
manifest (`peftlab_manifest.json`: every file's SHA-256), then renames each file into place. Until the
manifest is replaced the old files are untouched; after it, a file that is not yet (or no longer) the
one the manifest names is caught by `check_together`, which `lora.load` and `prompt/prefix/ptuning.load`
call before reading. A failure removes the temporary files; a killed save leaves them behind, and the next
save into that folder removes them. Folders without a manifest (written by PEFT itself) load unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

MANIFEST = "peftlab_manifest.json"
TMP_SUFFIX = ".peftlab-tmp"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_together(path: str | Path, files: Mapping[str, bytes]) -> Path:
    """Write `files` (name -> contents) into directory `path` as one save (see the module docstring).

    >>> import tempfile
    >>> d = write_together(tempfile.mkdtemp(), {"a.json": b"{}", "a.bin": b"xyz"})
    >>> sorted(p.name for p in d.iterdir())
    ['a.bin', 'a.json', 'peftlab_manifest.json']
    >>> check_together(d, ["a.json", "a.bin"])
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob(f".*{TMP_SUFFIX}"):  # left by a save that was killed
        stale.unlink()
    manifest = json.dumps({"sha256": {n: sha256_bytes(b) for n, b in files.items()}}, indent=2).encode()
    pending: dict[str, Path] = {}
    try:
        for name, data in {**files, MANIFEST: manifest}.items():
            tmp = path / f".{name}.{os.getpid()}{TMP_SUFFIX}"
            tmp.write_bytes(data)
            pending[name] = tmp
        for name in (MANIFEST, *files):  # the manifest first: from then on, a mix is detectable
            os.replace(pending[name], path / name)
            del pending[name]
    finally:
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
    return path


def check_together(path: str | Path, names: Iterable[str]) -> None:
    """Refuse files of `path` that differ from the manifest written with them: an interrupted save, or a
    file changed afterwards. No manifest (a folder written by PEFT, say): nothing to check."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return
    try:
        expected = json.loads((path / MANIFEST).read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path / MANIFEST} is corrupt: {type(e).__name__}: {e}") from e
    for name in names:
        if name in expected and sha256_bytes((path / name).read_bytes()) != expected[name]:
            raise ValueError(f"{path / name} is not the file saved with the rest of this adapter (its SHA-256 "
                             f"differs from {MANIFEST}): the save was interrupted or the file was changed "
                             f"since; save the adapter again")
