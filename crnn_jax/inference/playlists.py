"""Genre playlists from predictions: one `<genre>.m3u8` per genre in a folder the user names.

    from crnn_jax.inference.playlists import Song, check_playlist_dir, write_playlists
    check_playlist_dir("~/Music/playlists", files)          # before predicting: fail early, write nothing
    write_playlists("~/Music/playlists", [Song(path, probs, seconds), ...], class_names, min_probability=0.5)

Each playlist is UTF-8 extended M3U: `#EXTM3U`, an ownership line (OWNER_LINE), then per song
`#EXTINF:<whole seconds>,<file stem>` and the song's path relative to the playlist folder, so the
library and its playlists folder can move together. Every song is in exactly one playlist: the one of
its top genre, or `unsure.m3u8` when its top probability is below min_probability. A genre with no songs
gets no file. Only the playlist folder is written; the user's audio and its folders are only read
(os.path.realpath), never written.

The folder must be new, empty, or hold only playlists this module wrote (recognised by OWNER_LINE); a
rerun replaces those (and removes the ones whose genre has no songs now) and touches nothing else.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from crnn_jax.config import ConfigError

SUFFIX = ".m3u8"
UNSURE = "unsure"  # file stem of the playlist of songs below min_probability; no genre can take it
OWNER_LINE = "# written by crnn_jax predict --playlists: replaced on each run"
_HEADER = f"#EXTM3U\n{OWNER_LINE}\n"
_TMP_PREFIX = ".crnn_jax_playlist-"  # temp files of an interrupted write: ours, removed by the next run
_TMP_SUFFIX = ".tmp"
# Not in a file name on any common file system (Windows forbids the printable ones, POSIX only "/").
_UNSAFE = set('/\\:*?"<>|') | {chr(c) for c in range(32)} | {"\x7f"}


class PlaylistError(ConfigError):
    """A playlist folder or song list that cannot be used; the message is one line."""


class Song(NamedTuple):
    """One predicted song. path: as given or found (absolute, or relative to the current directory);
    probabilities: [n_classes] genre probabilities in class order (need not sum to 1: sigmoid heads);
    seconds: song length in s, or None when unknown (written as -1, M3U's "unknown")."""

    path: str
    probabilities: Sequence[float]
    seconds: float | None


def _song_dir(path: str) -> str:
    """The real folder a song lies in (symlinked folders resolved, as the OS resolves `..`)."""
    return os.path.realpath(os.path.dirname(os.path.abspath(path)))


def _is_ours(folder: str, name: str) -> bool:
    """A regular file in the playlist folder that an earlier run wrote: a playlist starting with _HEADER,
    or a temp file an interrupted run left behind."""
    path = os.path.join(folder, name)
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
        return True
    if not name.endswith(SUFFIX):
        return False
    want = _HEADER.encode("utf-8")
    try:
        with open(path, "rb") as f:
            return f.read(len(want)) == want
    except OSError:
        return False


def check_playlist_dir(out_dir: str, song_paths: Iterable[str] = ()) -> list[str]:
    """Check that `out_dir` may take playlists, writing nothing -> the names of files in it that an
    earlier run wrote (to be replaced or removed). Raises PlaylistError (one line) when out_dir is a
    file, is the folder of one of `song_paths` (nothing is written beside the user's audio), or holds
    anything else than this module's playlists. A sub-folder of the library is fine."""
    if not out_dir:
        raise PlaylistError("--playlists needs a folder name")
    real = os.path.realpath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PlaylistError(f"--playlists {out_dir} is a file, not a folder")
    for path in song_paths:
        if _song_dir(path) == real:
            raise PlaylistError(f"--playlists {out_dir} is the folder of {path}: nothing is written beside "
                                "your audio; name a new folder, e.g. a 'playlists' sub-folder")
    if not os.path.isdir(out_dir):
        return []
    try:
        names = sorted(os.listdir(out_dir))
    except OSError as e:
        raise PlaylistError(f"--playlists {out_dir}: cannot read the folder ({e.strerror or e})") from None
    foreign = [n for n in names if not _is_ours(out_dir, n)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise PlaylistError(f"--playlists {out_dir} holds {foreign[0]!r}{more}, which this command did not "
                            "write; name a new or empty folder (nothing was written)")
    return names


def playlist_names(class_names: Sequence[str]) -> list[str]:
    """Genre names -> their playlist file names (same order): characters no file system allows become
    "_", leading dots and surrounding spaces go (no hidden files, no ".."), and names that would collide
    with unsure.m3u8 or with each other, ignoring case (macOS and Windows), get " (2)", " (3)", ..."""
    taken = {UNSURE.casefold()}
    out = []
    for genre in class_names:
        stem = "".join("_" if c in _UNSAFE else c for c in str(genre)).strip().lstrip(".").strip()
        stem = stem[:100] or "_"  # a file name is at most 255 bytes; genre names are short anyway
        name, n = stem, 1
        while name.casefold() in taken:
            n += 1
            name = f"{stem} ({n})"
        taken.add(name.casefold())
        out.append(name + SUFFIX)
    return out


def _entry(song_path: str, real_out: str) -> str:
    """The line that finds `song_path` from the playlist folder: a relative path, or the absolute path
    where none exists (Windows: another drive)."""
    target = os.path.join(_song_dir(song_path), os.path.basename(song_path))
    try:
        rel = os.path.relpath(target, real_out)
    except ValueError:
        return target
    return os.curdir + os.sep + rel if rel.startswith("#") else rel  # "#..." would read as a comment


def _extinf(seconds: float | None, path: str) -> str:
    ok = seconds is not None and math.isfinite(seconds) and seconds >= 0
    return f"#EXTINF:{round(seconds) if ok else -1},{os.path.splitext(os.path.basename(path))[0]}"


def _assign(songs: Iterable[Sequence], n_classes: int, min_probability: float | None
            ) -> dict[int, list[tuple[str, str]]]:
    """Songs -> {class index, or -1 for unsure: [(path, #EXTINF line)]}, one record per real file (the
    first one given wins when a file is given twice)."""
    out: dict[int, list[tuple[str, str]]] = {}
    seen = set()
    for song in songs:
        path, probs, seconds = song
        path = os.fspath(path)
        if "\n" in path or "\r" in path:
            raise PlaylistError(f"{path!r}: a file name with a line break cannot go in a playlist; rename it")
        probs = [float(p) for p in probs]
        if len(probs) != n_classes or not all(math.isfinite(p) for p in probs):
            raise PlaylistError(f"{path}: {len(probs)} probabilities for {n_classes} genres, or not finite")
        key = os.path.normcase(os.path.join(_song_dir(path), os.path.basename(path)))
        if key in seen:
            continue
        seen.add(key)
        top = max(range(n_classes), key=lambda i: (probs[i], -i))  # ties: the first genre
        label = -1 if min_probability is not None and probs[top] < min_probability else top
        out.setdefault(label, []).append((path, _extinf(seconds, path)))
    return out


def write_playlists(out_dir: str, songs: Iterable[Sequence], class_names: Sequence[str], *,
                    min_probability: float | None = None) -> dict[str, int]:
    """Write one `<genre>.m3u8` per genre that has songs into `out_dir` -> {playlist file name: songs}.

    songs: Song records (or (path, probabilities, seconds) triples; probabilities in class_names order,
    seconds in s). Each song goes to its top genre's playlist, or to unsure.m3u8 when its top
    probability is below `min_probability` (0..1; None: every song gets a genre). Entries are sorted by
    the path written. A genre without songs gets no playlist, and one left from an earlier run is
    removed. out_dir is created when missing; it must pass check_playlist_dir (else PlaylistError, one
    line, and nothing written). Files are written to temp files first and then renamed into place, so
    a failure leaves each playlist whole: old or new.
    """
    if min_probability is not None and not 0.0 <= min_probability <= 1.0:
        raise PlaylistError(f"--min-probability must be in [0, 1], got {min_probability}")
    if not class_names:
        raise PlaylistError("no genres to make playlists of")
    songs = list(songs)
    groups = _assign(songs, len(class_names), min_probability)  # bad records raise before any write
    old = check_playlist_dir(out_dir, [os.fspath(s[0]) for s in songs])
    names = playlist_names(class_names)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise PlaylistError(f"--playlists {out_dir}: cannot create the folder ({e.strerror or e})") from None
    real_out = os.path.realpath(out_dir)
    texts = {}
    for label, items in groups.items():
        lines = sorted((_entry(p, real_out), inf) for p, inf in items)
        texts[UNSURE + SUFFIX if label < 0 else names[label]] = (
            _HEADER + "".join(f"{inf}\n{entry}\n" for entry, inf in lines), len(lines))
    temps: dict[str, str] = {}
    try:
        for name, (text, _) in sorted(texts.items()):
            # Not tempfile.mkstemp: its 0600 would hide the playlists from a media server running as
            # another user; 0666 less the umask is what any other new file of the user gets.
            tmp = os.path.join(out_dir, _TMP_PREFIX + secrets.token_hex(8) + _TMP_SUFFIX)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            temps[name] = tmp
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for name, tmp in temps.items():
            os.replace(tmp, os.path.join(out_dir, name))
        written = {n.casefold() for n in texts}  # "Rock.m3u8" is the new "rock.m3u8" on macOS/Windows
        for name in old:  # earlier playlists of genres without songs now, and an interrupted run's temps
            if name.casefold() not in written:
                os.remove(os.path.join(out_dir, name))
    except OSError as e:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise PlaylistError(f"--playlists {out_dir}: cannot write ({e.strerror or e})") from None
    return {name: n for name, (_, n) in sorted(texts.items())}
