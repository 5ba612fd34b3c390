"""A local stand-in for the Hugging Face Hub's file endpoints and a plain https host (127.0.0.1 only).

What `huggingface_hub.hf_hub_download` calls, as the Hub answers it:
- `HEAD /{owner}/{repo}/resolve/{revision}/{file}`: LFS files answer 302 with `Location` (an absolute CDN URL),
  `X-Repo-Commit`, `X-Linked-Etag` (the quoted sha256 of the file) and `X-Linked-Size`; small (git) files
  answer 200 with `ETag` (a git sha1), `X-Repo-Commit` and `Content-Length`.
- errors carry `X-Error-Code`: `RepoNotFound` (404), `EntryNotFound` (404, with `X-Repo-Commit`),
  `RevisionNotFound` (404), `GatedRepo` (401 without an `Authorization` header).
- `GET /cdn/{sha256}` serves the bytes (with `Range` -> 206).
Plain URLs: `GET /files/{name}`, with `Range`; `interrupt_once` names files whose first GET sends half of
the body and then drops the connection.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self):
        self.repos: dict[str, dict[str, tuple[bytes, bool]]] = {}  # repo -> file -> (bytes, lfs)
        self.gated: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.interrupt_once: set[str] = set()
        self.log: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self._blobs: dict[str, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _error(self, code, error_code, commit=None):
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", error_code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _bytes(self, data: bytes, head: bool, extra: dict | None = None, name: str | None = None):
                rng = self.headers.get("Range")
                start = 0
                if rng and rng.startswith("bytes=") and not head:
                    start = int(rng[6:].split("-")[0] or 0)
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                if name is not None and name in server.interrupt_once and start == 0:
                    server.interrupt_once.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-body
                    return
                self.wfile.write(body)

            def _serve(self, head: bool):
                server.log.append((self.command, self.path, dict(self.headers)))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[0] == "cdn" and len(parts) == 2 and parts[1] in server._blobs:
                    return self._bytes(server._blobs[parts[1]], head)
                if parts[0] == "files" and len(parts) == 2 and parts[1] in server.files:
                    return self._bytes(server.files[parts[1]], head, name=parts[1])
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, rev, fname = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                    if repo not in server.repos:
                        return self._error(404, "RepoNotFound")
                    if repo in server.gated and not self.headers.get("Authorization"):
                        return self._error(401, "GatedRepo")
                    if rev not in ("main", COMMIT):
                        return self._error(404, "RevisionNotFound")
                    if fname not in server.repos[repo]:
                        return self._error(404, "EntryNotFound", COMMIT)
                    data, lfs = server.repos[repo][fname]
                    if lfs:
                        sha = hashlib.sha256(data).hexdigest()
                        self.send_response(302)
                        # the CDN is another host (the client stops at a redirect leaving the Hub)
                        self.send_header("Location", f"{server.cdn_url}/cdn/{sha}")
                        self.send_header("X-Repo-Commit", COMMIT)
                        self.send_header("X-Linked-Etag", f'"{sha}"')
                        self.send_header("X-Linked-Size", str(len(data)))
                        self.send_header("ETag", f'"{sha}"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    git_sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    return self._bytes(data, head, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_sha}"'})
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.cdn_url = f"http://localhost:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, repo: str, fname: str, data: bytes, *, lfs: bool = True) -> str:
        self.repos.setdefault(repo, {})[fname] = (data, lfs)
        sha = hashlib.sha256(data).hexdigest()
        self._blobs[sha] = data
        return sha

    def requests(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.log if method is None or m == method]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
