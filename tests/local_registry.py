"""A real OCI registry on 127.0.0.1 for tests: Debian's ``docker-registry`` (the CNCF
distribution server) on a free port with its own config and storage directory, and ``skopeo``
to push OCI layouts into it. Both come from ``scripts/setup-system.sh``."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REGISTRY_BIN = "docker-registry"
SKOPEO_BIN = "skopeo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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

    def push(self, layout: Path | str, layout_tag: str, repo_tag: str, *, all_platforms: bool = False) -> None:
        """Copies ``layout:layout_tag`` to ``<registry>/repo_tag`` with digests preserved."""
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
