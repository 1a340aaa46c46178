"""A folder's listing changes when a file is created, removed or renamed anywhere in it (one stat per directory to
tell), not when a file is rewritten in place; a listing taken right after a change is not trusted."""

from __future__ import annotations

import os
import time

from toolchain.scoring.listings import listing_unchanged, take_listing

AN_HOUR_AGO = time.time() - 3600


def _settled(*dirs) -> None:
    """Directory times an hour back, as for a folder nobody touched lately (recent ones are not trusted)."""
    for d in dirs:
        os.utime(d, (AN_HOUR_AGO, AN_HOUR_AGO))


def test_a_listing_sees_new_removed_and_renamed_files_at_any_depth(tmp_path):
    folder = tmp_path / "day1"
    (folder / "site-a").mkdir(parents=True)
    (folder / ".partial").mkdir()
    (folder / "a.wav").write_bytes(b"a")
    (folder / "site-a" / "b.wav").write_bytes(b"b")
    _settled(folder, folder / "site-a", folder / ".partial")
    listing = take_listing(folder)
    assert set(listing) == {"", "site-a"}  # Hidden folders are not scored, so not listed.
    assert listing_unchanged(folder, listing)

    (folder / "a.wav").write_bytes(b"rewritten in place")
    (folder / ".partial" / "c.wav").write_bytes(b"c")
    assert listing_unchanged(folder, listing)  # Neither is a change of the listing.

    (folder / ".partial" / "c.wav").rename(folder / "site-a" / "c.wav")  # Published into a subfolder.
    assert not listing_unchanged(folder, listing)
    _settled(folder / "site-a", folder / ".partial")
    listing = take_listing(folder)
    (folder / "site-a" / "new-site").mkdir()
    assert not listing_unchanged(folder, listing)
    _settled(folder / "site-a", folder / "site-a" / "new-site")
    listing = take_listing(folder)
    assert set(listing) == {"", "site-a", "site-a/new-site"}
    (folder / "a.wav").unlink()
    assert not listing_unchanged(folder, listing)


def test_a_listing_taken_right_after_a_change_is_not_trusted(tmp_path):
    folder = tmp_path / "day1"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"a")
    assert take_listing(folder) is None  # A file created in the same clock tick would leave the time unchanged.
    _settled(folder)
    assert take_listing(folder) == {"": folder.stat().st_mtime_ns}
    assert not listing_unchanged(tmp_path / "gone", {"": 1})
