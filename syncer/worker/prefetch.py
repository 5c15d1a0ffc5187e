"""Fetch the next pages on a thread while the caller writes the current one.

A sync pass is two waits in a row per page: Graph's answer, then the database's commit. Running
them side by side nearly halves a large enumeration. This module is the generic half of that (a
bounded queue fed by one thread, errors handed over in order); what a pass does with
:meth:`Prefetcher.ready` (commit when the next page is not here yet) is :mod:`syncer.worker.sync`'s.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")

_END = object()


class Prefetcher(Generic[T]):
    """Iterate *pages()* on a thread, at most *depth* items ahead of the caller.

    With *last* (does this item end the iteration?), the first item is fetched on the caller's thread
    and the thread is started only when more follow: most scopes of a tenant (a mailbox's folders, its
    calendar) fit in one page, and a thread per such pass was pure cost (its start waits for the new
    thread to get the GIL among dozens of busy passes). The fetch of the second page still overlaps
    the writing of the first.
    """

    def __init__(self, pages: Callable[[], Iterable[T]], *, depth: int = 2, last: Callable[[T], bool] | None = None) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pages = pages
        self._last = last
        self._thread: threading.Thread | None = None
        if last is None:
            self._start(pages())

    def _start(self, pages: Iterable[T]) -> None:
        self._thread = threading.Thread(target=self._run, args=(pages,), name="syncer-prefetch", daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, pages: Iterable[T]) -> None:
        try:
            for page in pages:
                if not self._put(page):
                    return
        except BaseException as error:
            self._put(error)
            return
        self._put(_END)

    def __iter__(self) -> Iterator[T]:
        if self._last is not None and self._thread is None:
            iterator = iter(self._pages())
            try:
                first = next(iterator)  # an error here reaches the caller as the first page's
            except StopIteration:
                return
            if self._last(first):
                yield first
                yield from iterator  # nothing, normally: the end is read on this thread too
                return
            self._start(iterator)  # the same iterator, carried on by the thread
            yield first
        while True:
            value = self._queue.get()
            if value is _END:
                return
            if isinstance(value, BaseException):
                raise value
            yield value

    def ready(self) -> bool:
        """Whether the next page (or the end, or an error) is already waiting (no thread: nothing to wait for)."""
        return self._thread is None or not self._queue.empty()

    def close(self) -> None:
        """Stop fetching (the thread ends after its current request)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
