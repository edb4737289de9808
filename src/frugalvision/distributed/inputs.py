"""The input list of a batch job, fixed once on disk so that shard k always means the same images.

Inputs are image files and folders, a manifest (CSV or Parquet with a ``path`` column), or an
object-store prefix that pyarrow's filesystems understand (``s3://bucket/posts/``, ``gs://…``; the
same layer Ray's readers use). The sorted list is written to ``_inputs.parquet`` in the output
folder with one row group per shard: a worker reads only its row group, and a re-run reads the same
list back, so finished shards are recognised by their output file alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..data.discover import IMAGE_SUFFIXES, list_image_files
from ..exceptions import DataError

__all__ = ["list_inputs", "write_inputs", "read_shard_paths", "is_uri", "INPUTS_FILE"]

INPUTS_FILE = "_inputs.parquet"


def is_uri(p) -> bool:
    return "://" in str(p) and not str(p).startswith("file://")


def _manifest(path: Path) -> list[str]:
    import pandas as pd

    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    if "path" not in df.columns:
        raise DataError(f"Manifest '{path}' has no 'path' column (columns: {', '.join(map(str, df.columns))}).")
    base = path.parent
    return [p if is_uri(p) or Path(p).is_absolute() else str((base / p).resolve()) for p in df["path"].astype(str)]


def _uri_listing(uri: str) -> list[str]:
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File:
        return [uri]
    if info.type == fs.FileType.NotFound:
        raise DataError(f"'{uri}' does not exist (or is not readable with the credentials of this machine).")
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    return [f"{scheme}://{f.path}" for f in found
            if f.type == fs.FileType.File and Path(f.path).suffix.lower() in IMAGE_SUFFIXES]


def list_inputs(sources) -> list[str]:
    """Sorted, de-duplicated image locations from files, folders, manifests and object-store URIs."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    out: list[str] = []
    local = []
    for s in sources:
        if is_uri(s):
            out.extend(_uri_listing(str(s)))
        elif Path(s).suffix.lower() in (".csv", ".parquet") and Path(s).is_file():
            out.extend(_manifest(Path(s)))
        else:
            local.append(s)
    if local:
        out.extend(list_image_files(local))
    if not out:
        raise DataError("No images found in the inputs given.")
    return sorted(set(out))


def fingerprint(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


def write_inputs(out: Path, paths: list[str], shard_size: int) -> None:
    """Write the list with one row group per shard (atomically: a partial file is never read back)."""
    from .._io import atomic_writer

    with atomic_writer(out / INPUTS_FILE) as fh:
        pq.write_table(pa.table({"path": paths}), fh, row_group_size=shard_size)


def read_shard_paths(out: str, shard: int) -> list[str]:
    return pq.ParquetFile(Path(out) / INPUTS_FILE).read_row_group(shard, columns=["path"]).column("path").to_pylist()
