"""On-disk embedding cache: append-only ``.npy`` shards, memory-mapped on read.

Layout, one folder per extractor id::

    <root>/<extractor_id>/meta.json
    <root>/<extractor_id>/shard-<uuid>.npy     float32, rows = embeddings
    <root>/<extractor_id>/shard-<uuid>.keys    one key per line, same order

    <root>/<extractor_id>/shard-<uuid>.xxh     XXH3-128 of the .npy file's bytes

A key is ``<content hash>:<view>``: the same picture under another name is a hit,
an edited picture is a miss. A shard counts only once its ``.keys`` file exists, and
every file is written atomically (``.npy`` and its checksum first), so a process killed mid-run
loses at most the shard it was filling. A shard is verified against its checksum (and for finite values) the
first time a process reads it; a damaged one (a bad disk, an interrupted copy, a flipped bit) is named in one
warning, moved aside (``.bad``) and its rows are computed again, so a run never uses wrong embeddings.

    <root>/hashes-xxh3_128.json                content hash per (path, size, mtime, ctime, inode), with an
                                               XXH3-128 of its entries; a memo that does not match is set aside
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from .._io import atomic_writer, read_json, set_aside, write_json, write_text
from ..exceptions import DataWarning

__all__ = ["EmbeddingCache", "HashMemo", "content_hash", "verify_shard", "cache_info", "clear_cache", "memo_info"]


#: Names the content-hash function; part of the memo file name, so a change never mixes hashes.
HASH_NAME = "xxh3_128"


def content_hash(path, chunk: int = 1 << 20) -> str:
    """XXH3-128 of a file's bytes (hex).

    A cache key, not a security boundary: 128 bits make accidental collisions negligible, and
    it runs at memory speed (0.012 ms for a 180 KB photo vs 0.21-0.24 ms for BLAKE2b-128; ~1 %
    of the CPU time per 1080p JPEG in a cold extraction).
    """
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class EmbeddingCache:
    """Embeddings for one extractor, keyed by content hash and view."""

    def __init__(self, root, extractor_id: str, meta: dict | None = None):
        self.dir = Path(root) / "embeddings" / extractor_id
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if meta is not None and not meta_path.exists():
            write_json(meta_path, meta)
        self._index: dict[str, tuple[str, int]] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self.refresh()

    @property
    def meta(self) -> dict:
        p = self.dir / "meta.json"
        return read_json(p) if p.exists() else {}

    def refresh(self) -> None:
        """Re-read the shard list (other processes may have added shards)."""
        for keys_file in sorted(self.dir.glob("shard-*.keys")):
            shard = keys_file.stem
            if shard in self._arrays or not (self.dir / f"{shard}.npy").exists():
                continue
            keys = keys_file.read_text(encoding="utf-8").split()
            npy = self.dir / f"{shard}.npy"
            stamp = (str(npy), npy.stat().st_mtime_ns, npy.stat().st_size)
            problem = "" if stamp in _VERIFIED else verify_shard(npy, len(keys))
            if not problem:
                _VERIFIED.add(stamp)
            if problem:
                _quarantine(self.dir, shard, problem)
                continue
            arr = np.load(self.dir / f"{shard}.npy", mmap_mode="r")
            self._arrays[shard] = arr
            for row, key in enumerate(keys):
                self._index[key] = (shard, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, keys) -> np.ndarray:
        """Stack the embeddings for ``keys`` (all must be present)."""
        where = [self._index[k] for k in keys]
        rows = [self._arrays[s][r] for s, r in where]
        if not rows:
            dim = next(iter(self._arrays.values())).shape[1] if self._arrays else 0
            return np.zeros((0, dim), dtype=np.float32)
        out = np.stack(rows).astype(np.float32, copy=False)
        for shard in {s for s, _ in where}:
            _drop_pages(self._arrays[shard])
        return out

    def missing(self, keys) -> list[str]:
        return [k for k in keys if k not in self._index]

    def add(self, keys: list[str], embeddings: np.ndarray) -> None:
        """Write one shard atomically and index it."""
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings.")
        if not keys:
            return
        shard = f"shard-{uuid.uuid4().hex[:16]}"
        import io

        import xxhash

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(embeddings, dtype=np.float32))
        data = buf.getvalue()
        with atomic_writer(self.dir / f"{shard}.npy", "wb") as fh:
            fh.write(data)
        write_text(self.dir / f"{shard}.xxh", xxhash.xxh3_128_hexdigest(data) + "\n")
        write_text(self.dir / f"{shard}.keys", "\n".join(keys) + "\n")
        # Index this shard only (what this process just wrote and checked): re-reading the folder here would make
        # every writer read every other writer's shards, which for Ray actors sharing one cache is O(actors x
        # cache size). Other processes' shards are picked up by refresh().
        npy = self.dir / f"{shard}.npy"
        _VERIFIED.add((str(npy), npy.stat().st_mtime_ns, npy.stat().st_size))
        self._arrays[shard] = np.load(npy, mmap_mode="r")
        for row, key in enumerate(keys):
            self._index[key] = (shard, row)


def _drop_pages(arr) -> None:
    """Unmap the resident pages of a memory-mapped shard whose rows were just copied out. They stay in the page
    cache, but counted in this process they made every embedding resident twice: measured while fine-tuning 2 stages
    on 700 images, the file-backed resident memory grew by 0.68 GB next to the copies of the activations."""
    import mmap

    m = getattr(arr, "_mmap", None)
    if m is not None and hasattr(mmap, "MADV_DONTNEED"):
        try:
            m.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # a closed map, or a platform that refuses: only memory is at stake
            pass


#: Shards (path, mtime, size) this process has verified: each is read and checked once per process.
_VERIFIED: set = set()


def verify_shard(npy: Path, n_keys: int | None = None) -> str:
    """Why the shard ``npy`` cannot be trusted, or '' when it can: its bytes against its checksum file (shards
    written before checksums existed are read, not hash-checked), its shape against its keys, finite values."""
    import xxhash

    try:
        data = Path(npy).read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    sums = Path(npy).with_suffix(".xxh")
    if sums.exists():
        want = sums.read_text(encoding="utf-8").strip()
        if xxhash.xxh3_128_hexdigest(data) != want:
            return "its bytes do not match its checksum (damaged or truncated)"
    try:
        import io

        arr = np.load(io.BytesIO(data))
    except (ValueError, OSError, EOFError) as exc:
        return f"not a readable array ({exc})"
    if n_keys is not None and (arr.ndim != 2 or arr.shape[0] != n_keys):
        return f"{arr.shape[0] if arr.ndim else 0} rows for {n_keys} keys"
    if not np.isfinite(arr).all():
        return "it holds NaN or infinite values"
    return ""


def _quarantine(folder: Path, shard: str, problem: str) -> None:
    """Move a damaged shard aside (never delete what might be inspected) and say so in one line."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for ext in (".npy", ".keys", ".xxh"):
        p = folder / f"{shard}{ext}"
        if p.exists():
            target = p.with_name(f"{p.name}.bad-{stamp}")
            try:
                os.replace(p, target)
                moved.append(target.name)
            except OSError:
                pass
    warnings.warn(f"Embedding cache shard {folder / shard}.npy is damaged ({problem}): moved aside "
                  f"({', '.join(moved) or 'could not move it'}); its images will be embedded again.", DataWarning,
                  stacklevel=3)


def cache_info(root) -> list[dict]:
    """Per extractor folder: backbone, weights, number of cached embeddings, bytes on disk, last use."""
    out = []
    base = Path(root) / "embeddings"
    for d in sorted(p for p in base.glob("*") if p.is_dir()) if base.exists() else []:
        files = [f for f in d.iterdir() if f.is_file()]
        meta = read_json(d / "meta.json") if (d / "meta.json").exists() else {}
        n = sum(len(k.read_text(encoding="utf-8").split()) for k in d.glob("shard-*.keys"))
        out.append({"folder": str(d), "backbone": meta.get("backbone", "?"), "weights_id": meta.get("weights_id", "?"),
                    "embeddings": n, "bytes": sum(f.stat().st_size for f in files),
                    "last_used": max((f.stat().st_mtime for f in files), default=None),
                    "damaged_set_aside": len([f for f in files if ".npy.bad-" in f.name])})
    return out


def memo_info(root) -> dict:
    """The content-hash memo: path, entries, bytes, last use, damaged copies set aside (verifies it on the way)."""
    path = Path(root) / f"hashes-{HASH_NAME}.json"
    memo = HashMemo(root) if path.exists() else None
    return {"path": str(path), "entries": len(memo) if memo is not None else 0,
            "bytes": path.stat().st_size if path.exists() else 0,
            "last_used": path.stat().st_mtime if path.exists() else None,
            "damaged_set_aside": len(list(Path(root).glob(f"{path.name}.bad-*"))) if Path(root).exists() else 0}


def clear_cache(root) -> int:
    """Remove frugalvision's cache folder ``root`` (embeddings, exported graphs, hash memo); bytes freed."""
    import shutil

    root = Path(root)
    if not root.exists():
        return 0
    freed = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    shutil.rmtree(root)
    return freed


class HashMemo:
    """Remembers content hashes by (path, size, mtime, ctime, inode), so unchanged files are not re-read.

    Only a speed-up: a file whose size, modification time, ctime or inode changed is hashed again. The memo file
    carries an XXH3-128 checksum of its entries; a memo that does not match it (a bad disk, an interrupted copy, an
    edit) or is not what this class writes is named in one warning, moved aside (``.bad-*``) and rebuilt, so a
    damaged memo can never give a file another file's hash.
    """

    def __init__(self, root):
        self.path = Path(root) / f"hashes-{HASH_NAME}.json"
        self._memo, problem = _read_memo(self.path)
        if problem:
            set_aside(self.path, problem, "it is rebuilt: its files will be hashed again (content-hash memo)")
        self._dirty = False

    def hash(self, path: str) -> str:
        st = os.stat(path)
        # ctime and inode too: a file replaced by another of the same size and mtime (a copy with -p, an editor)
        # changes them, so the memo never answers with the old file's hash.
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self._memo.get(path)
        if hit and hit[:-1] == stamp:
            return hit[-1]
        h = content_hash(path)
        self._memo[path] = [*stamp, h]
        self._dirty = True
        return h

    def __len__(self) -> int:
        return len(self._memo)

    def save(self) -> None:
        if self._dirty:
            write_json(self.path, {"format": _MEMO_FORMAT, "xxh3_128": _memo_digest(self._memo),
                                   "entries": self._memo})
            self._dirty = False


_MEMO_FORMAT = 2


def _memo_digest(entries: dict) -> str:
    import json

    import xxhash

    return xxhash.xxh3_128_hexdigest(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode())


def _read_memo(path: Path) -> tuple[dict, str]:
    """(entries, '') of a memo file, or ({}, why it cannot be trusted). A missing file is an empty memo."""
    if not path.exists():
        return {}, ""
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        return {}, f"not readable JSON: {exc}"
    if isinstance(doc, dict) and "entries" in doc:
        entries = doc.get("entries")
        if not isinstance(entries, dict) or doc.get("xxh3_128") != _memo_digest(entries):
            return {}, "its entries do not match its checksum"
    elif isinstance(doc, dict):  # written before the memo had a checksum: checked for shape only
        entries = doc
    else:
        return {}, "not a memo"
    ok = all(isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) for x in v[:4])
             and isinstance(v[4], str) and len(v[4]) == 32 for v in entries.values())
    return (entries, "") if ok else ({}, "an entry is not (size, mtime, ctime, inode, hash)")
