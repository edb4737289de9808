"""``frugalvision cache``: see, verify and clear what sits in the cache folder."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, echo, secho


def register(app: typer.Typer) -> None:
    @app.command("cache")
    def cache_cmd(
        action: str = typer.Argument("info", help="info (size and entries per backbone), verify (check every shard, "
                                                  "set damaged ones aside), or clear (remove the cache folder)."),
        cache_dir: Optional[Path] = CacheDir,
        yes: bool = typer.Option(False, "--yes", "-y", help="With clear: do not ask for confirmation."),
    ):
        """What sits in the cache folder (~/.cache/frugalvision or $FRUGALVISION_CACHE), verified or cleared."""
        from ..config import cache_root
        from ..features.cache import EmbeddingCache, cache_info, clear_cache, memo_info

        root = cache_root(cache_dir)
        if action not in ("info", "verify", "clear"):
            raise typer.BadParameter(f"cache takes info, verify or clear, got {action!r}.")
        if action == "clear":
            if not root.exists():
                echo(f"Nothing to clear: {root} does not exist.")
                return
            if not yes and not typer.confirm(f"Remove {root} and everything in it (embeddings are recomputed on the "
                                             f"next run)?"):
                echo("Nothing removed.")
                return
            echo(f"Removed {root} ({clear_cache(root) / 2**20:.1f} MB).")
            return
        rows = cache_info(root)
        checked = 0
        if action == "verify":
            for r in rows:  # opening a cache verifies every shard once and sets damaged ones aside, with a warning
                checked += len(list(Path(r["folder"]).glob("shard-*.keys")))
                EmbeddingCache(root, Path(r["folder"]).name)
            rows = cache_info(root)
        memo = memo_info(root)  # reading the memo checks it against its checksum
        echo(f"Cache folder: {root}")
        if not rows:
            echo("  (no cached embeddings)")
        for r in rows:
            used = _dt.datetime.fromtimestamp(r["last_used"]).isoformat(timespec="minutes") if r["last_used"] else "-"
            echo(f"  {r['backbone']:<22} {r['embeddings']:>8} embeddings  {r['bytes'] / 2**20:8.1f} MB  last used {used}"
                 f"  ({r['weights_id']})")
            if r["damaged_set_aside"]:
                secho(f"    {r['damaged_set_aside']} damaged shard(s) set aside (*.bad-*); 'cache clear' removes them",
                      fg="yellow")
        used = _dt.datetime.fromtimestamp(memo["last_used"]).isoformat(timespec="minutes") if memo["last_used"] else "-"
        echo(f"  {'content-hash memo':<22} {memo['entries']:>8} files       {memo['bytes'] / 2**20:8.1f} MB  "
             f"last used {used}")
        if memo["damaged_set_aside"]:
            secho(f"    {memo['damaged_set_aside']} damaged memo file(s) set aside (*.bad-*); 'cache clear' removes them",
                  fg="yellow")
        if action == "verify":
            bad = sum(r["damaged_set_aside"] for r in rows)
            echo(f"Checked {checked} shard(s) and the memo against their checksums: {bad} damaged shard(s) and "
                 f"{memo['damaged_set_aside']} damaged memo(s) set aside in all; their images are embedded again on "
                 f"the next run.")
