"""The HTTP side of the metrics exporter (xllm_tui/metrics.py): GET /metrics on a TCP port or a unix socket.
Apart so that http.server (with email, http.client, mimetypes...) is loaded only by a supervisor that serves them."""

from __future__ import annotations

import http.server
import socketserver

from xllm_tui.metrics import CONTENT_TYPE


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "xllm-tui-metrics"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics here")
            return
        body = self.server.exporter.text.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: the supervisor's log is for events
        pass

    def address_string(self) -> str:  # a unix socket's peer has no host
        return "local"


class TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) client address
