"""Atomic file writes: a reader never sees a half-written file.

Everything is written to a temporary file in the target's folder, flushed,
fsynced, then moved over the target with ``os.replace`` (atomic on POSIX and
Windows when both are on the same filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = ["csv_text", "csv_rows_text", "write_csv", "read_csv", "escape_cell", "unescape_cell", "raw_csv", "safe_name",
           "path_inside", "arrays_digest", "set_aside", "atomic_writer", "write_bytes", "write_text", "write_json", "json_text", "read_json", "refuse_overwrite", "run_folder", "record_run_files", "RUN_RECORD", "restore_on_error",
           "remove_stale_temporaries"]


#: Cells starting with one of these run as formulas when a spreadsheet opens the CSV (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# A plain number ("-0.25", "+3", "1e-5") is not a formula: it stays a number for the spreadsheet.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _needs_quote(v: str) -> bool:
    # Quoting is decided on the text after any leading quotes, so that a raw value which itself starts with "'="
    # gets one more quote and every value round-trips exactly through unescape_cell.
    rest = v.lstrip("'")
    return rest.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(rest)


def escape_cell(v):
    """A cell value as written to a CSV: a text starting with ``=``, ``+``, ``-``, ``@``, tab or CR (after any
    leading ``'``) gets a leading ``'`` so a spreadsheet shows it as text; plain numbers and non-text pass as is."""
    return "'" + v if isinstance(v, str) and _needs_quote(v) else v


_escape_cell = escape_cell  # the name collect used before


def unescape_cell(v):
    """The raw value of a cell :func:`escape_cell` wrote: the ``'`` it added removed (exact inverse)."""
    return v[1:] if isinstance(v, str) and v.startswith("'") and _needs_quote(v[1:]) else v


def raw_csv() -> bool:
    """``FRUGALVISION_RAW_CSV=1``: write cells exactly as they are (for tools that do not expect the quote)."""
    return os.environ.get("FRUGALVISION_RAW_CSV") == "1"


def csv_text(df, **kw) -> str:
    """``df`` as CSV text that a spreadsheet shows as text: a text cell (or column name) starting with ``=``, ``+``,
    ``-``, ``@``, tab or CR gets a leading ``'`` (numbers, and text that is a plain number, are left alone).
    :func:`read_csv` undoes it; so does removing the first character of such a cell.
    ``FRUGALVISION_RAW_CSV=1`` writes cells as they are."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    out = df.copy()
    text_cols = [c for c in out.columns if is_object_dtype(out[c]) or is_string_dtype(out[c])]
    kw.setdefault("lineterminator", _line_end([str(c) for c in out.columns],
                                              *(out[c].tolist() for c in text_cols)))
    if raw_csv():
        return out.to_csv(index=False, **kw)
    for c in text_cols:
        out[c] = out[c].map(escape_cell)
    out.columns = [escape_cell(str(c)) for c in out.columns]
    return out.to_csv(index=False, **kw)


def _line_end(*cells) -> str:
    # Python's csv writer quotes a field holding a character of the line terminator, and only those: with "\n" a
    # bare CR inside a cell would be written unquoted and read back as a line break, so a file holding one ends
    # its lines with CRLF (RFC 4180), which quotes it.
    return "\r\n" if any(isinstance(v, str) and "\r" in v for col in cells for v in col) else "\n"


def csv_rows_text(columns, rows, *, header: bool = True) -> str:
    """Rows (dicts) as CSV text with the same escaping as :func:`csv_text`: for files appended row by row."""
    import csv
    import io

    buf = io.StringIO()
    end = _line_end(columns, *(r.values() for r in rows))
    w = csv.DictWriter(buf, columns, restval="", extrasaction="ignore", lineterminator=end)
    if header:
        w.writerow({c: c if raw_csv() else escape_cell(str(c)) for c in columns})
    w.writerows(rows if raw_csv() else [{k: escape_cell(v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


def write_csv(path, df, *, exclusive: bool = False, **kw) -> Path:
    """Write ``df`` to ``path`` atomically as spreadsheet-safe CSV (:func:`csv_text`): the one way a CSV is
    written."""
    return write_text(path, csv_text(df, **kw), exclusive=exclusive)


def read_csv(path, **kw):
    """A CSV as text columns (``dtype=str``, empty cells stay empty), cells escaped by :func:`csv_text` restored."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False, **kw)
    df.columns = [unescape_cell(str(c)) for c in df.columns]
    for c in df.columns:
        df[c] = df[c].map(unescape_cell)
    return df


def safe_name(text, *, max_len: int = 80) -> str:
    """``text`` (a label, a column or a file name from data) as one safe file-name part: letters, digits, '-', '_'
    and '.', nothing that could climb out of a folder ('..' becomes '__'), never empty."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))[:max_len]
    out = out.replace("..", "__").strip(".")
    return out or "_"


def path_inside(folder, name: str) -> Path:
    """``folder / name`` after checking it stays inside ``folder`` (symlinks resolved); DataError otherwise.

    Every path a run builds from data goes through here, so no label or column name can write elsewhere.
    """
    from .exceptions import DataError

    base = Path(folder).resolve()
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise DataError(f"Refusing to write {name!r}: it would land outside {folder} ({target}).")
    return Path(folder) / name


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", *, exclusive: bool = False) -> Iterator[Any]:
    """Open a temporary file that replaces ``path`` only if the block succeeds.

    ``exclusive``: never replace an existing ``path`` (FileExistsError instead), even one another process created
    while this one was writing: the check and the move are one step (a hard link), so two runs aimed at one file
    cannot both report success.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name lets remove_stale_temporaries tell a killed writer's leftovers from live ones.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide reports from colleagues
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"'{path}' was created by another run meanwhile; it was not overwritten "
                                      f"(--overwrite replaces it).") from None
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            # write() and fsync() on a full disk say "No space left on device" without a path: name the target.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


@contextlib.contextmanager
def restore_on_error(paths):
    """Write several files as one step: if the block raises, each of ``paths`` is put back as it was before it
    (the previous file restored, or a new one removed), so a full disk halfway through leaves the previous run
    whole. The previous files are kept as hard links (no disk space needed; where links are not possible the new
    file is left in place)."""
    paths = [Path(p) for p in paths]
    kept: dict = {}
    for p in paths:
        if p.exists():
            b = p.with_name(f".{p.name}.{os.getpid()}-prev.tmp")  # a killed run's links are stale temporaries
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(b)
                os.link(p, b)
                kept[p] = b
            except OSError:
                kept[p] = None
    try:
        yield
    except BaseException:
        for p in paths:
            with contextlib.suppress(OSError):
                if p not in kept:
                    p.unlink(missing_ok=True)
                elif kept[p] is not None:
                    os.replace(kept[p], p)
        raise
    finally:
        for b in kept.values():
            if b is not None:
                with contextlib.suppress(OSError):
                    os.unlink(b)


def write_bytes(path, data: bytes) -> Path:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path, text: str, *, exclusive: bool = False) -> Path:
    with atomic_writer(path, "w", exclusive=exclusive) as fh:
        fh.write(text)
    return Path(path)


def _default(o):
    # numpy scalars and arrays appear in metrics; paths in configs.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def json_text(obj: Any) -> str:
    """``obj`` as the JSON text :func:`write_json` writes."""
    return json.dumps(obj, indent=2, default=_default, allow_nan=True) + "\n"


def write_json(path, obj: Any) -> Path:
    return write_text(path, json_text(obj))


def read_json(path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def refuse_overwrite(path, overwrite: bool, what: str = "file") -> None:
    """Raise unless ``path`` is free or the caller explicitly allowed overwriting."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"{what.capitalize()} '{p}' already exists and frugalvision never overwrites your files "
            f"without asking. Choose another path, or pass overwrite=True (--overwrite on the command line)."
        )


def arrays_digest(arrays: dict) -> str:
    """XXH3-128 over named arrays (names sorted; dtype, shape and bytes of each): a checksum to store beside them,
    e.g. in a safetensors file's metadata, and compare on read."""
    import numpy as np
    import xxhash

    h = xxhash.xxh3_128()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def set_aside(path, problem: str, then: str) -> Path | None:
    """Move a damaged file aside (``<name>.bad-<time>``: kept for inspection, never read again) and say so in one
    warning naming it: "<path> is damaged (<problem>): moved aside to ...; <then>." Returns the new path."""
    import time
    import warnings

    from .exceptions import DataWarning

    path = Path(path)
    target = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, target)
        moved = f"moved aside to {target.name}"
    except OSError as exc:
        moved, target = f"could not be moved aside ({exc.strerror or exc})", None
    warnings.warn(f"{path} is damaged ({problem}): {moved}; {then}.", DataWarning, stacklevel=3)
    return target


def remove_stale_temporaries(folder) -> int:
    """Delete the temporary files of writers that were killed (their pid is gone); returns how many."""
    import re

    removed = 0
    for p in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else ():
        m = re.search(r"\.(\d+)-[^.]*\.tmp$", p.name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


#: Hidden file in a run folder naming the files a run is about to write, with the XXH3-128 of their bytes: what
#: lets the next run tell its own leftovers (an interrupted save) from files the user made.
RUN_RECORD = ".frugalvision-run.json"


def file_digest(path) -> str:
    """XXH3-128 of a file's bytes."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_run_files(folder, contents: dict) -> Path:
    """Before a run writes ``contents`` (name -> text or bytes) into ``folder``, record each name with the digest of
    what will be written (atomically, merged with earlier records): a later run then knows these files are its
    own, even if this one is killed between them."""
    import xxhash

    folder = Path(folder)
    record = _run_record(folder)
    for name, data in contents.items():
        record[name] = xxhash.xxh3_128(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()
    return write_json(folder / RUN_RECORD, {"files": record})


def _run_record(folder: Path) -> dict:
    try:
        doc = read_json(folder / RUN_RECORD)
        files = doc.get("files", {}) if isinstance(doc, dict) else {}
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError):
        return {}


def _own_leftover(folder: Path, name: str, record: dict) -> bool:
    try:
        return name in record and file_digest(folder / name) == record[name]
    except OSError:
        return False


@contextlib.contextmanager
def run_folder(folder, files, *, overwrite: bool = False, finished: str | None = None):
    """Hold ``folder`` for one run: an exclusive lock (released even if the process is killed) and, unless
    ``overwrite``, a refusal before any work if one of ``files`` is already there.

    ``finished``: the file whose presence means a complete run (written last). Without it, files a run recorded
    with :func:`record_run_files` and still holding the recorded bytes are an interrupted run's leftovers: they are
    replaced (and named in one warning) instead of blocking the rerun. A file that is not recorded or was changed
    since is the user's and is never replaced without ``overwrite``.
    """
    import warnings

    from .exceptions import DataError, DataWarning

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"'{folder}' is a file; --out takes a folder for the run's files.")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".frugalvision.lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory locks; runs are not guarded there
            pass
        except BlockingIOError:
            raise DataError(f"Another frugalvision run is writing to '{folder}' right now. Wait for it to finish, "
                            f"or choose another --out folder.") from None
        remove_stale_temporaries(folder)  # a killed run's half-written files: their writer is gone
        if not overwrite:
            if finished is not None:
                refuse_overwrite(folder / finished, overwrite, "finished run's file")
            record = _run_record(folder) if finished is not None else {}
            leftovers = []
            for name in files:
                if finished is not None and name != finished and (folder / name).exists() \
                        and _own_leftover(folder, name, record):
                    leftovers.append(name)
                    continue
                refuse_overwrite(folder / name, overwrite, "run file")
            if leftovers:
                warnings.warn(f"'{folder}' holds {', '.join(leftovers)} of an interrupted run (no {finished}): "
                              f"they are replaced by this run.", DataWarning, stacklevel=3)
        yield folder
    finally:
        os.close(fd)  # closing releases the lock
