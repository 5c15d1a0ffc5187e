"""A delegated account's MSAL token cache on disk, shared by several syncer processes.

The worker, the receiver and the CLI may all hold a token of the same signed-in user, and the
refresh token rotates on each use
(https://learn.microsoft.com/entra/identity-platform/refresh-tokens): whoever refreshes must leave
the newest one where the others will read it. So every use of the cache is one critical section
under an exclusive ``fcntl.flock`` on ``PATH.lock``: read the file into MSAL's
``SerializableTokenCache``, let MSAL acquire (and rotate), write the file back if MSAL changed it.
Writes go to a temporary file in the same folder, then ``os.replace``, so a reader never sees half a
file and a crash leaves the old one. The file and the lock are created ``0600`` and their folder
``0700``: the cache holds refresh tokens, as sensitive as a password.

No OS keyring (msal-extensions): the worker runs on headless servers that have none, and it is not
one of syncer's dependencies. POSIX only (``fcntl``), like the rest of syncer's deployment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msal

from syncer.errors import ConfigError

_FILE_MODE = 0o600
_DIR_MODE = 0o700


class TokenCacheFile:
    """One cache file; :meth:`open` is the critical section every reader and writer goes through."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        """Whether anyone has signed in (the file exists); says nothing about the tokens' validity."""
        return self.path.is_file()

    def fingerprint(self) -> tuple[int, int, int] | None:
        """What tells one version of the file from the next (inode, mtime, size); None when it is missing.

        Every write is a new file renamed into place, so a sign-in by another process changes it.
        """
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _prepare_folder(self) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            try:
                folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the token cache folder {folder}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def open(self, cache: msal.SerializableTokenCache) -> Iterator[msal.SerializableTokenCache]:
        """Lock, load the file into *cache* (replacing its state), yield it, and persist it if MSAL changed it."""
        self._prepare_folder()
        try:
            lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"cannot open the token cache lock {self.lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            cache.deserialize(self._read())
            cache.has_state_changed = False
            try:
                yield cache
            finally:
                # Even when the caller failed after MSAL rotated the refresh token: the newest one must be kept.
                if cache.has_state_changed:
                    self._write(cache.serialize())
                    cache.has_state_changed = False
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the token cache {self.path}: {exc.strerror}") from exc

    def _write(self, text: str) -> None:
        fd, temp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            # mkstemp already creates 0600; said again in case a umask or an old file widened it.
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise ConfigError(f"cannot write the token cache {self.path}: {exc.strerror}") from exc
