"""Run the emulator over real HTTPS: in-process for tests, or in the foreground for `syncer emulator`.

A threaded werkzeug server with keep-alive (HTTP/1.1) and TLS from :mod:`tls`. ``EmulatorServer`` picks
a free port when ``config.port`` is 0, exposes everything a client needs in :attr:`info` (the keys the
issue names: ``graph_url``, ``authority``, ``tenant_id``, ``client_id``, ``client_secret``, ``ca_cert``,
plus the certificate credential), and stops cleanly, running the state's shutdown hooks (the delivery
dispatcher) first.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

from syncer.emulator.app import create_app
from syncer.emulator.config import EmulatorConfig
from syncer.emulator.identity.accounts import CONSUMER_TENANT_ID
from syncer.emulator.state import EmulatorState
from syncer.emulator.tls import write_server_files

log = logging.getLogger("syncer.emulator")


def beyond_loopback(host: str) -> bool:
    """Whether listening on *host* lets other machines connect (any address but loopback ones).

    The admin API (/_emulator) has no authentication by design and hands out the app's credentials,
    so the emulator warns when it is reachable from elsewhere. A name is resolved; one that does not
    resolve, or resolves to any non-loopback address, counts as beyond loopback.
    """
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return True
    return not found or any(not ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in found)


def _private_folder(path: Path) -> None:
    """Create *path* (and missing parents) owner-only: it holds the certificates' private keys."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    """Write *data* to *path* readable by its owner only (0600), from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as file:
        file.write(data)


class _KeepAliveHandler(WSGIRequestHandler):
    """werkzeug's request handler, but with HTTP/1.1 keep-alive and without a line per request.

    werkzeug's development server closes every connection after one response (and then waits 10 ms
    for stray input), so each Graph call would pay a TCP and TLS handshake; Graph's front ends keep
    connections alive, and clients (requests, httpx) reuse them. Responses here are always complete
    byte strings, so the handler buffers the app's output and sends it with a Content-Length.
    """

    protocol_version = "HTTP/1.1"
    #: idle keep-alive connections are closed after this many seconds
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes; with Nagle on, the client's delayed ACK would
        # stall every response ~40 ms
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.add(self.connection)

    def finish(self) -> None:
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        # Bound the body so the app cannot read into the next request, and so it can be drained.
        body_stream: Any = environ["wsgi.input"]
        if not environ.get("wsgi.input_terminated"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body_stream = LimitedStream(environ["wsgi.input"], length)
            environ["wsgi.input"] = body_stream
            environ["wsgi.input_terminated"] = True
        response: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is not None and response:
                raise exc_info[1].with_traceback(exc_info[2])
            response[:] = [status, headers]
            return chunks.append

        try:
            result = self.server.app(environ, start_response)
            try:
                for data in result:
                    chunks.append(data)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True  # dropped on purpose (reset fault) or by the client
            return
        try:
            while body_stream.read(65536):
                pass
        except (OSError, ValueError):
            self.close_connection = True
        status, headers = response
        code_text, _, reason = status.partition(" ")
        code = int(code_text)
        body = b"".join(chunks)
        self.send_response(code, reason)
        for key, value in headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        if code not in (204, 304) and not 100 <= code < 200:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and environ["REQUEST_METHOD"] != "HEAD" and code not in (204, 304):
            self.wfile.write(body)

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        # Never serve another request on a connection we dropped (the reset fault relies on it).
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None

    def log_error(self, format: str, *args: Any) -> None:
        return None


class EmulatorServer:
    """One emulator instance listening on HTTPS (use as a context manager or call start/stop)."""

    def __init__(self, config: EmulatorConfig | None = None, workdir: Path | str | None = None,
                 *, state: EmulatorState | None = None) -> None:
        self.config = config or (state.config if state else EmulatorConfig())
        self.state = state or EmulatorState.create(self.config)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="syncer-emulator-"))
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.info: dict[str, Any] = {}

    @property
    def base_url(self) -> str:
        """`https://host:port` (after start)."""
        if self.state.base_url is None:
            raise RuntimeError("the emulator is not started")
        return self.state.base_url

    def start(self) -> EmulatorServer:
        """Bind, start serving in a daemon thread, and fill :attr:`info`."""
        if self._server is not None:
            return self
        _private_folder(self.workdir)
        files = write_server_files(self.workdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
        app = create_app(self.state)
        server = make_server(self.config.host, self.config.port, app, threaded=True,
                             request_handler=_KeepAliveHandler, ssl_context=ctx)
        server.daemon_threads = True  # type: ignore[attr-defined]
        server.open_connections = set()  # type: ignore[attr-defined]
        self._server = server
        host = self.config.host
        url_host = f"[{host}]" if ":" in host else host
        base = f"https://{url_host}:{server.server_port}"
        self.state.base_url = base
        cert = self.state.client_certificate
        cert_path = self.workdir / "client-cert.pem"
        key_path = self.workdir / "client-key.pem"
        if cert is not None:
            cert_path.write_bytes(cert.cert_pem)
            _write_private(key_path, cert.key_pem)
        cfg = self.config
        self.info = {
            "graph_url": f"{base}/v1.0",
            "base_url": base,
            "authority": f"{base}/{cfg.tenant_id}",
            "tenant_id": cfg.tenant_id,
            "tenant_domain": cfg.tenant_domain,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "ca_cert": str(files.ca_cert),
            "client_cert": str(cert_path),
            "client_key": str(key_path),
            "client_cert_thumbprint": cert.thumbprint_sha1 if cert else None,
            "scope": "https://graph.microsoft.com/.default",
            "admin_url": f"{base}/_emulator",
            "personal_tenant_id": CONSUMER_TENANT_ID if cfg.personal_accounts else None,
            "sign_in_as": cfg.sign_in_as,
            "host": host,
            "port": server.server_port,
        }
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"graph-emulator-{server.server_port}", daemon=True)
        self._thread.start()
        return self

    def write_info(self, path: Path | str) -> None:
        """Write :attr:`info` as JSON (for scripts: `--info-file`), creating its folder if needed.

        Owner-only (0600, a created folder 0700): the file holds the app's client secret.
        """
        path = Path(path)
        _private_folder(path.parent)
        _write_private(path, (json.dumps(self.info, indent=2) + "\n").encode())

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI's foreground mode)."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop hooks (the delivery dispatcher), then the listener; remove a temporary workdir."""
        self.state.shutdown()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            # keep-alive connections would otherwise go on being served by a stopped emulator
            for conn in list(getattr(server, "open_connections", ())):
                try:
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(config: EmulatorConfig, *, workdir: Path | None = None, info_file: Path | None = None,
          seed_users: int = 0, echo: Any = print) -> None:
    """Foreground mode for `syncer emulator`: start, optionally seed users, print credentials, block."""
    from syncer.emulator.families.directory.users import seed_users as _seed_users

    if beyond_loopback(config.host):
        warning = (
            f"listening on {config.host}, reachable from other machines: the admin API (/_emulator) has no "
            "authentication and hands out the app's credentials; use --host 127.0.0.1 unless you mean it"
        )
        log.warning("%s", warning)
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    server = EmulatorServer(config, workdir=workdir)
    server.start()
    if seed_users:
        _seed_users(server.state, config.tenant_id, seed_users)
        # a little of every family that seeds per user from the directory: one team and chats for a few users
        from syncer.emulator.seed import seed as _seed
        _seed(server.state, {"teamsPerUser": 1, "chatsPerUser": 1, "contentUsers": min(seed_users, 5)})
    info = server.info
    if info_file is not None:
        server.write_info(info_file)
    echo(f"Graph emulator listening on {info['base_url']}")
    echo(f"  graph_url      {info['graph_url']}")
    echo(f"  authority      {info['authority']}")
    echo(f"  tenant_id      {info['tenant_id']}")
    echo(f"  client_id      {info['client_id']}")
    echo(f"  client_secret  {info['client_secret']}")
    echo(f"  client cert    {info['client_cert']} (key {info['client_key']}, thumbprint {info['client_cert_thumbprint']})")
    echo(f"  trust this CA  {info['ca_cert']}")
    echo(f"  admin API      {info['admin_url']}  (see syncer/emulator/admin.py)")
    echo(f"  delegated      device code / auth code at {info['base_url']}/{{tenant|common|organizations|consumers}}"
         f"; public client {info['client_id']}")
    if config.sign_in_as:
        echo(f"  signed in as   {config.sign_in_as} (no sign-in page; device codes approved when issued)")
    if info_file is not None:
        echo(f"  info written to {info_file}")
    echo("Press Ctrl+C to stop.")

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl+C (workdir removed, dispatcher stopped)

    signal.signal(signal.SIGTERM, _terminate)
    server.serve_forever()
