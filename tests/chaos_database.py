"""The database side of the chaos harness: the proxy syncer reaches PostgreSQL through, and outages.

:class:`TcpProxy` takes a database away the ways one goes (cut, blackholed, slow); :class:`Database` is
the database the harness's syncer processes use, with its outage (the proxy cut on PostgreSQL, a held
write lock on SQLite); :func:`dedicated_database` gives a scenario a PostgreSQL database of its own.
Used by tests/chaos_harness.py, the chaos scenarios and the failover tests.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from syncer.database import IO_TIMEOUT_PARAM
from syncer.demo import free_port


class TcpProxy:
    """A loopback TCP forwarder to PostgreSQL with the ways a database goes away or bad:

    - ``cut()``: the host vanishes loudly: every connection reset, new ones refused;
    - ``blackhole()``: a failover behind a virtual IP, or a dropped NAT entry: the connections open
      now go silent for ever (their bytes are swallowed; no RST, no FIN) while new ones get through;
      ``blackhole(new_connections=True)``: new ones are accepted and go silent too, until ``restore()``;
    - ``slow(seconds)``: every chunk of bytes is delayed, both ways (a congested link, a far database);
    - ``restore()``: back to normal for new connections (silenced ones stay silent, as a peer that
      is gone does not come back) and no delay.

    The proxy runs in user space, so the local kernel acknowledges every byte the client sends: only
    timers in the client (not TCP's own) can notice a blackhole. The real partition is easier to see.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._silent: set[socket.socket] = set()  # connections whose bytes are swallowed
        self._silence_new = False
        self.delay = 0.0
        self._lock = threading.Lock()
        self.up = False

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        with self._lock:
            self._listener, self.up = listener, True
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """The database host vanishes: open connections are reset, new ones refused."""
        with self._lock:
            self.up = False
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            # close() alone does not stop a thread blocked in accept(): the kernel keeps the socket
            # listening until that accept returns, and it returns with the next connection, which
            # would then reach the database in the middle of the outage. shutdown() wakes it first.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for conn in conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            except OSError:
                pass

    def blackhole(self, *, new_connections: bool = False) -> None:
        """The open connections go silent for ever (see the class); new ones too if *new_connections*."""
        with self._lock:
            self._silent |= self._conns
            self._silence_new = new_connections

    def slow(self, seconds: float) -> None:
        """Every chunk forwarded *seconds* late, each way (a round trip takes 2 x *seconds* longer)."""
        self.delay = seconds

    def restore(self) -> None:
        """The database is back (same address): new connections are forwarded at full speed."""
        self.delay = 0.0
        with self._lock:
            self._silence_new = False
        if not self.up:
            self.start()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if listener is not self._listener:  # cut while this connection was being set up
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
                if self._silence_new:
                    self._silent |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source in self._silent:
                        continue  # swallowed: the other end never hears of it
                    if self.delay:
                        time.sleep(self.delay)
                    (b if source is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns -= {a, b}
                self._silent -= {a, b}
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


@dataclass
class Database:
    """The database the syncer processes use, and how to take it away for a while."""

    url: str  # what the harness itself uses (direct)
    process_url: str  # what syncer's processes use (through the proxy on PostgreSQL)
    proxy: TcpProxy | None = None

    @classmethod
    def for_url(cls, url: str, *, proxy: bool = True) -> Database:
        if url.startswith("sqlite") or not proxy:
            return cls(url, url)
        parsed = sa.make_url(url)
        proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432)).start()
        process_url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        return cls(url, process_url, proxy)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The database is unavailable to syncer's processes inside the block."""
        if self.proxy is not None:
            self.proxy.cut()
            try:
                yield
            finally:
                self.proxy.restore()
            return
        # SQLite: another process holding the write lock (WAL: readers still read, writers wait).
        path = sa.make_url(self.url).database
        assert path
        holder = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()


@contextlib.contextmanager
def dedicated_database(base_url: str, *, prefix: str = "chaos", io_timeout: float | None = None) -> Iterator[str]:
    """A PostgreSQL database of its own on *base_url*'s server (``readonly`` alters the whole database).

    *io_timeout*: syncer's client-side bound on a wait for the server (``syncer_io_timeout`` in the URL),
    standing in for ``tcp_user_timeout`` (20 s), which the harness's user-space proxy hides: the local
    kernel acknowledges every byte, so a blackholed connection is noticed only by syncer's own timer."""
    base = sa.make_url(base_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name)
    if io_timeout is not None:
        url = url.update_query_dict({IO_TIMEOUT_PARAM: f"{io_timeout:g}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
            connection.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
