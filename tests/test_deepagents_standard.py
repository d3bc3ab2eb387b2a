"""The Deep Agents backend against ``langchain-tests``' ``SandboxIntegrationTests``: the
standard contract every Deep Agents sandbox is held to (execute, read/write/edit, ls, glob,
grep, upload/download, large and binary payloads, error codes), on one real box."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

if sys.version_info < (3, 11):  # pragma: no cover - deepagents needs Python 3.11
    pytest.skip("deepagents (the optional extra) requires Python 3.11 or newer", allow_module_level=True)

from boxlite_langchain.deep_agents import BoxLiteSandbox
from deepagents.backends.protocol import SandboxBackendProtocol
from langchain_tests.integration_tests import SandboxIntegrationTests

# The suite's own class-scoped fixtures are instance methods, which pytest 9 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Class-scoped fixtures defined as instance methods")


class TestBoxLiteSandboxStandard(SandboxIntegrationTests):
    @pytest.fixture(scope="class")
    def sandbox(self, python_image: str) -> Iterator[SandboxBackendProtocol]:
        backend = BoxLiteSandbox(image=python_image, memory_mib=512)
        try:
            yield backend
        finally:
            backend.close()

    def test_glob_keeps_absolute_paths_when_asked(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        """``relative_glob_paths=False``: Deep Agents' own absolute paths (its permission rules
        filter glob results by them), directories included."""
        assert isinstance(sandbox_backend, BoxLiteSandbox)
        absolute = BoxLiteSandbox(sandbox_backend.sandbox, relative_glob_paths=False)
        made = sandbox_backend.execute(f"mkdir -p {sandbox_test_root}/d && touch {sandbox_test_root}/a.py")
        assert made.exit_code == 0, made.output
        result = absolute.glob("*", path=sandbox_test_root)
        assert result.error is None and result.matches is not None
        assert sorted((m["path"], m.get("is_dir")) for m in result.matches) == [
            (f"{sandbox_test_root}/a.py", False),
            (f"{sandbox_test_root}/d", True),
        ]
