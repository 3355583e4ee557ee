"""Talk to the policy pack the way the Pulumi engine does: start its analyzer server, call it over gRPC.

`PolicyAnalyzer` runs `policies/` as its own process (the pack's `__main__.py`, the pack folder as working
directory and first sys.path entry, PYTHONPATH ignored so nothing of the project can leak in), reads the
port the pack prints, and sends `GetAnalyzerInfo`, `Configure`, `Analyze` (each resource) and
`AnalyzeStack` (all of them) with the resources' properties as protobuf Structs, exactly the Analyzer
service `pulumi preview --policy-pack policies` uses. The plan therefore checks the pack as it will be
published, not its functions called in-process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

PACK_DIR = Path(__file__).resolve().parents[1] / "policies"
START_TIMEOUT_S = 60.0  # importing pulumi_policy on a loaded 2-core machine takes seconds


class PolicyPackError(RuntimeError):
    """The policy pack did not start or answered badly; the message carries its stderr."""


@dataclass(frozen=True)
class AnalyzedResource:
    """One resource as the engine describes it to an analyzer."""

    type: str
    name: str
    urn: str
    properties: Mapping[str, Any]
    custom_timeouts_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # create, update, delete
    parent: str = ""


@dataclass(frozen=True)
class Diagnostic:
    policy: str
    urn: str
    message: str  # the violation itself (the pack prefixes it with the policy's description)
    enforcement: str  # advisory | mandatory


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(value))
    return struct


def _options(resource: AnalyzedResource) -> analyzer_pb2.AnalyzerResourceOptions:
    create, update, delete = resource.custom_timeouts_s
    return analyzer_pb2.AnalyzerResourceOptions(
        customTimeouts=analyzer_pb2.AnalyzerResourceOptions.CustomTimeouts(create=create, update=update, delete=delete),
        parent=resource.parent,
    )


class PolicyAnalyzer:
    """The policy pack's analyzer server in a child process; use as a context manager."""

    def __init__(self, pack_dir: Path = PACK_DIR, python: str = sys.executable) -> None:
        self.pack_dir = Path(pack_dir)
        self.python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self._stderr = bytearray()
        self.info: analyzer_pb2.AnalyzerInfo | None = None

    def __enter__(self) -> PolicyAnalyzer:
        # -E: PYTHONPATH (which puts the project on sys.path in this repo's shells) is ignored, as it would be
        # wherever the published pack runs; -u: the port line arrives unbuffered.
        self._process = subprocess.Popen(
            [self.python, "-u", "-E", str(self.pack_dir)],
            cwd=self.pack_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        port = self._read_port()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            grpc.channel_ready_future(self._channel).result(timeout=START_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            self.close()
            raise PolicyPackError(f"policy pack on port {port} did not accept connections") from None
        self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        self.info = self._stub.GetAnalyzerInfo(empty_pb2.Empty())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.extend(line)

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self._process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT_S)
        line = result[0].strip() if result else b""
        if not line.isdigit():
            self.close()
            raise PolicyPackError(
                f"policy pack {self.pack_dir} did not print its port (got {line!r}); stderr:\n"
                f"{self._stderr.decode(errors='replace')[-4000:]}"
            )
        return int(line)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            for stream in (self._process.stdout, self._process.stderr):
                if stream is not None:
                    stream.close()
            self._process = None

    @property
    def stub(self) -> analyzer_pb2_grpc.AnalyzerStub:
        if self._stub is None:
            raise PolicyPackError("the policy pack is not running (use PolicyAnalyzer as a context manager)")
        return self._stub

    @property
    def policy_names(self) -> list[str]:
        return [policy.name for policy in (self.info.policies if self.info else [])]

    def configure(self, config: Mapping[str, Mapping[str, Any]]) -> None:
        """Send policy config the way `--policy-pack-config` does: every policy keeps its enforcement level."""
        assert self.info is not None
        policy_config = {
            policy.name: analyzer_pb2.PolicyConfig(
                enforcementLevel=policy.enforcementLevel, properties=_struct(config.get(policy.name, {}))
            )
            for policy in self.info.policies
        }
        unknown = sorted(set(config) - set(policy_config))
        if unknown:
            raise PolicyPackError(f"policy config names policies the pack does not have: {unknown}")
        self.stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=policy_config))

    def _diagnostics(self, response: analyzer_pb2.AnalyzeResponse, fallback_urn: str) -> list[Diagnostic]:
        found = []
        for item in response.diagnostics:
            message = item.message
            if item.description and message.startswith(item.description):
                message = message[len(item.description) :].lstrip("\n")
            level = analyzer_pb2.EnforcementLevel.Name(item.enforcementLevel).lower()
            found.append(Diagnostic(item.policyName, item.urn or fallback_urn, message, level))
        return found

    def analyze(self, resource: AnalyzedResource) -> list[Diagnostic]:
        request = analyzer_pb2.AnalyzeRequest(
            type=resource.type,
            properties=_struct(resource.properties),
            urn=resource.urn,
            name=resource.name,
            options=_options(resource),
        )
        return self._diagnostics(self.stub.Analyze(request), resource.urn)

    def analyze_stack(self, resources: Iterable[AnalyzedResource], stack_urn: str) -> list[Diagnostic]:
        request = analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r.type,
                    properties=_struct(r.properties),
                    urn=r.urn,
                    name=r.name,
                    options=_options(r),
                    parent=r.parent,
                )
                for r in resources
            ]
        )
        return self._diagnostics(self.stub.AnalyzeStack(request), stack_urn)
