"""A small imitation of the Hugging Face Hub on 127.0.0.1, to test fineweb.py's hub path offline.

It serves one dataset repository through the endpoints that huggingface_hub and datasets call (their
requests were logged against it): repo info by revision, tree listings in pages, paths-info, and
resolve, which answers a git file itself and redirects an LFS file to a second server (another
origin, as the Hub's CDN is) that serves byte ranges and counts the bytes it sent. Errors carry the
Hub's X-Error-Code and X-Error-Message headers. Point the libraries at it with
HF_ENDPOINT=imitation.endpoint, set before huggingface_hub is imported.
"""

import hashlib
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE_SIZE = 2  # tree entries per page: small, so that the clients have to follow the pages
COMMIT_DATE = "2024-07-01T00:00:00.000Z"


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes
    lfs: bool  # stored in LFS (served from the other host) rather than in git

    @property
    def git_sha(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def entry(self) -> dict:
        """The file as tree listings and paths-info describe it."""
        entry = {"type": "file", "oid": self.git_sha, "size": len(self.data), "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return entry


class HubImitation:
    """The Hub (API and resolve) on one port, its LFS host on another. go_away_at names a file: the
    first request for it takes both servers away, as a lost connection would, and every request
    after it fails."""

    def __init__(
        self,
        repo_id: str,
        files: dict[str, bytes],
        lfs_suffixes: tuple[str, ...] = (".parquet", ".bin"),
    ):
        self.repo_id = repo_id
        self.files = {
            path: RepoFile(path, data, path.endswith(lfs_suffixes)) for path, data in files.items()
        }
        self.sha = hashlib.sha1(
            json.dumps(sorted((p, f.git_sha) for p, f in self.files.items())).encode()
        ).hexdigest()
        self.by_sha256 = {f.sha256: f for f in self.files.values() if f.lfs}
        self.requests: list[str] = []  # "METHOD path" of every request, both hosts
        self.lfs_ranges: list[
            tuple[str, int, int]
        ] = []  # (file path, first byte, bytes sent) from the LFS host
        self.delay = 0.0  # seconds the LFS host waits before each answer: a slow link
        self.go_away_at: str | None = None
        self.gone = False
        self.lock = threading.Lock()
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
        self.lfs = ThreadingHTTPServer(("127.0.0.1", 0), LfsHandler)
        for server in (self.hub, self.lfs):
            server.daemon_threads = True
            server.imitation = self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_port}"

    @property
    def lfs_bytes(self) -> int:
        return sum(sent for _, _, sent in self.lfs_ranges)

    def __enter__(self) -> "HubImitation":
        for server in (self.hub, self.lfs):
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.gone = True
        for server in (self.hub, self.lfs):
            server.shutdown()
            server.server_close()

    def log(self, method: str, path: str) -> bool:
        """Record a request; False when the server is away (or goes away now, at go_away_at)."""
        with self.lock:
            self.requests.append(f"{method} {path}")
            target = self.files.get(self.go_away_at or "")
            if target and (
                target.path in urllib.parse.unquote(path) or self.lfs_file(path) is target
            ):
                self.gone = True
                # in the background: shutdown() waits for the servers' loops,
                # and this request holds the lock
                threading.Thread(target=self.__exit__, daemon=True).start()
            return not self.gone

    def lfs_file(self, path: str) -> RepoFile | None:
        return self.by_sha256.get(urllib.parse.urlsplit(path).path.strip("/"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect

    def log_message(self, *args) -> None:  # the imitation keeps its own log
        pass

    @property
    def imitation(self) -> HubImitation:
        return self.server.imitation

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ConnectionError:  # the client hung up: the test's business, not the server's
            self.close_connection = True

    def answer(
        self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False
    ) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def answer_json(self, value, headers: dict | None = None) -> None:
        self.answer(
            200, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Error-Code": code,
            "X-Error-Message": message,
        }
        self.answer(status, b"" if head else body, headers, head)

    def serve(self, method: str) -> None:
        if not self.imitation.log(method, self.path):
            # no answer: the connection drops, as with a server that went away
            self.close_connection = True
            return
        self.route(method)

    def do_GET(self) -> None:
        self.serve("GET")

    def do_HEAD(self) -> None:
        self.serve("HEAD")

    def do_POST(self) -> None:
        self.serve("POST")


REPO = r"/(?P<repo>[^/]+/[^/]+)"
REVISION = r"(?P<revision>[^/]+)"
HUB_ROUTES = {
    "info": re.compile(rf"/api/datasets{REPO}(?:/revision/{REVISION})?"),
    "tree": re.compile(rf"/api/datasets{REPO}/tree/{REVISION}(?:/(?P<path>.*))?"),
    "paths_info": re.compile(rf"/api/datasets{REPO}/paths-info/{REVISION}"),
    "resolve": re.compile(rf"/datasets{REPO}/resolve/{REVISION}/(?P<path>.+)"),
}


class HubHandler(Handler):
    def route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        routes = [
            (name, match)
            for name, pattern in HUB_ROUTES.items()
            if (match := pattern.fullmatch(url.path))
        ]
        if (
            not routes
        ):  # e.g. huggingface_hub asks for /api/agent-harnesses, which only the real Hub knows
            return self.error(404, "EntryNotFound", f"no route {url.path}", method == "HEAD")
        name, match = routes[0]
        parts = {key: urllib.parse.unquote(value or "") for key, value in match.groupdict().items()}
        if parts["repo"] != self.imitation.repo_id:
            return self.error(401, "RepoNotFound", "Repository not found", method == "HEAD")
        if parts["revision"] not in ("", "main", self.imitation.sha):
            return self.error(
                404, "RevisionNotFound", f"Invalid rev id: {parts['revision']}", method == "HEAD"
            )
        getattr(self, name)(method, parts, urllib.parse.parse_qs(url.query))

    def info(self, method: str, parts: dict, query: dict) -> None:
        siblings = [{"rfilename": path} for path in sorted(self.imitation.files)]
        repo_id, sha = self.imitation.repo_id, self.imitation.sha
        info = {
            "_id": sha[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "private": False,
        }
        info.update(
            lastModified=COMMIT_DATE,
            createdAt=COMMIT_DATE,
            gated=False,
            disabled=False,
            downloads=0,
        )
        self.answer_json({**info, "likes": 0, "tags": [], "siblings": siblings})

    def tree(self, method: str, parts: dict, query: dict) -> None:
        """A folder's entries (all below it with recursive=true), PAGE_SIZE at a time, the next page
        in a Link header as the Hub does."""
        folder, recursive = (
            parts["path"].strip("/"),
            query.get("recursive", ["false"])[0].lower() == "true",
        )
        prefix = f"{folder}/" if folder else ""
        below = [path[len(prefix) :] for path in self.imitation.files if path.startswith(prefix)]
        if not below:
            return self.error(404, "EntryNotFound", f"{folder} does not exist on main")
        entries: dict[str, dict] = {}
        for rest in below:
            names = rest.split("/")
            for depth in range(1, len(names) if recursive else 1):
                directory = prefix + "/".join(names[:depth])
                entries[directory] = {
                    "type": "directory",
                    "oid": hashlib.sha1(directory.encode()).hexdigest(),
                }
                entries[directory].update(size=0, path=directory)
            if recursive or len(names) == 1:
                entries[prefix + rest] = self.imitation.files[prefix + rest].entry()
            else:
                directory = prefix + names[0]
                entries[directory] = {
                    "type": "directory",
                    "oid": hashlib.sha1(directory.encode()).hexdigest(),
                }
                entries[directory].update(size=0, path=directory)
        listing = [entries[path] for path in sorted(entries)]
        start = int(query.get("cursor", ["0"])[0])
        headers = {}
        if start + PAGE_SIZE < len(listing):
            query = {
                **{key: values[0] for key, values in query.items()},
                "cursor": str(start + PAGE_SIZE),
            }
            next_page = f"{urllib.parse.urlsplit(self.path).path}?{urllib.parse.urlencode(query)}"
            headers["Link"] = f'<{self.imitation.endpoint}{next_page}>; rel="next"'
        self.answer_json(listing[start : start + PAGE_SIZE], headers)

    def paths_info(self, method: str, parts: dict, query: dict) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = urllib.parse.parse_qs(body).get("paths", [])
        files, entries = self.imitation.files, []
        for path in (p.strip("/") for p in paths):
            if path in files:
                entries.append(files[path].entry())
            elif any(name.startswith(f"{path}/") for name in files):
                entries.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(path.encode()).hexdigest(),
                        "path": path,
                    }
                )
        self.answer_json(entries)

    def resolve(self, method: str, parts: dict, query: dict) -> None:
        """A git file is answered here; an LFS file redirects to the LFS host."""
        head = method == "HEAD"
        if (file := self.imitation.files.get(parts["path"])) is None:
            return self.error(404, "EntryNotFound", f"{parts['path']} does not exist on main", head)
        headers = {"X-Repo-Commit": self.imitation.sha, "Accept-Ranges": "bytes"}
        if not file.lfs:
            headers["ETag"] = f'"{file.git_sha}"'
            return send_range(self, file.data, headers, head)
        lfs = f"http://127.0.0.1:{self.imitation.lfs.server_port}"
        headers.update({"ETag": f'"{file.sha256}"', "X-Linked-Etag": f'"{file.sha256}"'})
        headers.update(
            {"X-Linked-Size": str(len(file.data)), "Location": f"{lfs}/{file.sha256}?download=true"}
        )
        self.answer(302, b"", headers, head)


class LfsHandler(Handler):
    def route(self, method: str) -> None:
        if (file := self.imitation.lfs_file(self.path)) is None:
            return self.answer(404, b"NoSuchKey", head=method == "HEAD")
        time.sleep(self.imitation.delay)
        first, sent = send_range(self, file.data, {"ETag": f'"{file.sha256}"'}, method == "HEAD")
        with self.imitation.lock:
            self.imitation.lfs_ranges.append((file.path, first, sent))


def send_range(handler: Handler, data: bytes, headers: dict, head: bool) -> tuple[int, int]:
    """The bytes a Range header asks for (206), or all of them; returns (first byte, bytes sent)."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    asked = re.fullmatch(r"bytes=(\d*)-(\d*)", handler.headers.get("Range", "").strip())
    if not asked:
        handler.answer(200, data, headers, head)
        return 0, 0 if head else len(data)
    start, end = asked.groups()
    first = len(data) - int(end) if not start else int(start)  # "bytes=-n": the last n
    last = len(data) - 1 if not start or not end else min(int(end), len(data) - 1)
    if first >= len(data) or first > last:
        handler.answer(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}, head)
        return first, 0
    headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
    handler.answer(206, data[first : last + 1], headers, head)
    return first, 0 if head else last + 1 - first
