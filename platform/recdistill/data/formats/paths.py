"""Which data files a path names (a file, a directory, a glob, or a list of them)."""

from __future__ import annotations

import glob
import os

from recdistill.data.rejects import DataError, missing_file_error


def check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise missing_file_error(path)


def _visible(name: str) -> bool:
    # Same rule as Ray's file listing: hidden files and `_SUCCESS`/`_metadata`-style
    # markers are not data.
    return not name.startswith((".", "_"))


def expand_paths(path: str | os.PathLike | list | tuple) -> list[str]:
    """Absolute, sorted data files of a file, a directory (recursively) or a glob, or a list of them."""
    if isinstance(path, (list, tuple)):
        out = sorted({p for item in path for p in expand_paths(item)})
        if not out:
            raise DataError(f"no files match {list(path)!r}")
        return out
    text = os.fspath(path)
    if os.path.isfile(text):
        return [os.path.abspath(text)]
    if os.path.isdir(text):
        found = []
        for root, dirs, files in os.walk(text):
            dirs[:] = [d for d in dirs if _visible(d)]
            found += [os.path.join(root, f) for f in files if _visible(f)]
        if not found:
            raise DataError(f"no files match {text!r}: the directory holds no data files "
                            f"(names starting with '.' or '_' are skipped)")
        return sorted(os.path.abspath(p) for p in found)
    if glob.has_magic(text):
        found = [p for p in glob.glob(text, recursive=True) if os.path.isfile(p) and _visible(os.path.basename(p))]
        if not found:
            raise DataError(f"no files match {text!r}")
        return sorted(os.path.abspath(p) for p in found)
    raise DataError(f"no files match {text!r}: it does not exist")
