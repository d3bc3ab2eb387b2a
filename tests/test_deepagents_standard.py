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
