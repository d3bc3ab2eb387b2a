"""A real OCI registry on 127.0.0.1 for tests: Debian's ``docker-registry`` (the CNCF
distribution server) on a free port with its own config and storage directory, and ``skopeo``
to push OCI layouts into it. Both come from ``scripts/setup-system.sh``."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from boxlite._ports import free_port

REGISTRY_BIN = "docker-registry"
SKOPEO_BIN = "skopeo"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LocalRegistry:
    """One ``docker-registry`` process; stop it with :meth:`stop` (the fixtures do)."""

    def __init__(self, workdir: Path, *, auth: dict[str, Any] | None = None) -> None:
        for tool in (REGISTRY_BIN, SKOPEO_BIN):
            if shutil.which(tool) is None:
                raise RuntimeError(f"`{tool}` is not installed: run scripts/setup-system.sh")
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "boxlite-test"},
        }
        if auth is not None:
            config["auth"] = auth
        # JSON is YAML: no YAML library needed.
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(json.dumps(config))
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.log = (workdir / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self.config_path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.workdir / 'registry.log').read_text()}")
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # 401 with auth configured: it is up
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start within 20 s")

    def push(
        self,
        layout: Path | str,
        layout_tag: str,
        repo_tag: str,
        *,
        all_platforms: bool = False,
        creds: str | None = None,
    ) -> None:
        """Copies ``layout:layout_tag`` to ``<registry>/repo_tag`` with digests preserved
        (``creds``: ``user:password`` for a registry with auth)."""
        cmd = [
            SKOPEO_BIN,
            "--policy",
            str(self.policy),
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]
        if all_platforms:
            cmd.append("--all")
        if creds:
            cmd.append(f"--dest-creds={creds}")
        cmd += [f"oci:{layout}:{layout_tag}", f"docker://{self.host}/{repo_tag}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)

    def blob_data(self, digest: str) -> Path:
        """Where the registry stores a blob (to corrupt it in a test)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def layout_manifest(layout: Path | str, tag: str = "latest") -> tuple[str, dict[str, Any]]:
    """The digest and parsed manifest tagged ``tag`` in an OCI layout."""
    root = Path(layout)
    index = json.loads((root / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest = entry["digest"]
            manifest = json.loads((root / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes())
            return digest, manifest
    raise KeyError(f"no manifest tagged {tag} in {root}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A small bearer-token server for the registry's ``token`` auth (the Docker token
    protocol): it checks HTTP basic credentials and grants pull and push as an RS256 JWT signed
    by a self-signed certificate the registry trusts (``openssl`` signs; no extra packages)."""

    service = "boxlite-test-registry"
    issuer = "boxlite-test-issuer"

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=boxlite-test-token"),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        self._expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.issued = 0
        self.refused = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                if self.headers.get("Authorization") != server._expected:
                    server.refused += 1
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                access = []
                for scope in query.get("scope", []):
                    kind, name, _actions = scope.split(":", 2)
                    access.append({"type": kind, "name": name, "actions": ["pull", "push"]})
                server.issued += 1
                self._reply(200, {"token": server.sign(access), "expires_in": 300})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": "agent",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"boxlite-{now}-{self.issued}",
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def registry_auth(self) -> dict[str, Any]:
        """The ``auth`` section of a registry config that trusts this server."""
        return {
            "token": {
                "realm": self.url,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert),
            }
        }

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FlakyProxy:
    """An HTTP proxy in front of a registry that answers the first request for each blob with
    ``503 Service Unavailable`` (a transient failure a client must retry), then forwards.
    ``authorizations`` records the ``Authorization`` header (or ``None``) of every request;
    with ``basic_challenge`` its ``/v2/`` asks for HTTP basic auth (and serves anyone anyway)."""

    def __init__(self, upstream: str, *, basic_challenge: bool = False) -> None:
        self.upstream = upstream
        self.failed: list[str] = []
        self.authorizations: list[str | None] = []
        seen: set[str] = set()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.authorizations.append(self.headers.get("Authorization"))
                if basic_challenge and self.path == "/v2/":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "/blobs/" in self.path and self.path not in seen:
                    seen.add(self.path)
                    proxy.failed.append(self.path)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = urllib.request.Request(proxy.upstream + self.path, headers=dict(self.headers))
                try:
                    response = urllib.request.urlopen(request, timeout=30)
                except urllib.error.HTTPError as e:
                    response = e
                body = response.read()
                self.send_response(response.status)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
