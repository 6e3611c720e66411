"""Fixtures of the framework test suite.

Each test runs a real agent of one framework with a scripted offline model,
inside an application root span that carries the workflow's origin and
credential. The spans go over OTLP to a running agent-ledger, and the test
reads the verdict and the linked steps back from ClickHouse.

frameworks/run starts agent-ledger and passes its addresses in the
environment: AGENT_LEDGER_FRAMEWORKS_GRPC (host:port),
AGENT_LEDGER_FRAMEWORKS_HTTP (host:port), AGENT_LEDGER_FRAMEWORKS_CLICKHOUSE
(URL) and AGENT_LEDGER_FRAMEWORKS_DATABASE.

The suite never leaves the machine: every framework's own telemetry and
remote look-ups are switched off below, before any framework is imported,
and a guard fails any test during which code tried to connect to, or resolve,
an address other than loopback.
"""

import ipaddress
import json
import os
import socket
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass

# Frameworks read these when they are imported, so they are set first.
OFFLINE_ENVIRONMENT = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "OTEL_SDK_DISABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "ANONYMIZED_TELEMETRY": "false",
    "GOOGLE_CLOUD_DISABLE_GRPC_GCE_METADATA": "true",
    "NO_GCE_CHECK": "true",
}
os.environ.update(OFFLINE_ENVIRONMENT)
for name in ("OPENAI_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "AWS_ACCESS_KEY_ID", "OTEL_EXPORTER_OTLP_ENDPOINT"):
    os.environ.pop(name, None)

import pytest  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

# Seconds to wait for a verdict: the settle time (500 ms in frameworks/run),
# the batch interval and a slow CI machine, with a wide margin.
VERDICT_TIMEOUT = 60

TOOL_NAME = "lookup_order"
TOOL_RESULT = "order 1042 shipped on 2026-11-30"
QUESTION = "Where is order 1042?"
ANSWER = "Order 1042 shipped on 2026-11-30."


def lookup_order_result(order_id: int) -> str:
    """The scripted tool's result, shared by every framework's tool."""
    return TOOL_RESULT if order_id == 1042 else f"order {order_id} not found"


# Network guard ------------------------------------------------------------

BLOCKED_ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _check_address(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        BLOCKED_ATTEMPTS.append(f"connect to {address!r}")
        raise ConnectionRefusedError(f"the framework tests allow loopback only, not {address!r}")


def _guarded_connect(self, address):
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback(host if isinstance(host, str) else host.decode()):
        BLOCKED_ATTEMPTS.append(f"resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"the framework tests allow loopback only, not {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def loopback_only():
    """Fails the test if anything it ran tried to leave the machine."""
    before = len(BLOCKED_ATTEMPTS)
    yield
    attempts = BLOCKED_ATTEMPTS[before:]
    assert not attempts, f"blocked network access outside loopback: {attempts}"


# agent-ledger and ClickHouse ----------------------------------------------


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the suite with frameworks/run, which starts agent-ledger", returncode=2)
    return value


@dataclass
class Ledger:
    """The running agent-ledger and its ClickHouse database."""

    grpc_addr: str
    http_addr: str
    clickhouse_url: str
    database: str

    def query(self, sql: str) -> list[dict]:
        """Runs `sql` and returns its rows as dicts."""
        url = f"{self.clickhouse_url}/?" + urllib.parse.urlencode({"database": self.database})
        request = urllib.request.Request(url, data=f"{sql} FORMAT JSONEachRow".encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def verdict(self, trace_id: str) -> dict:
        """Waits for the newest verdict of the trace's workflow and returns it."""
        sql = (
            "SELECT WorkflowId, RootSpanId, Revision, Status, Reasons, AgentName, AgentNames, "
            "ModelNames, ModelVersions, CredentialId, CredentialScopes, OriginType, StepCount, ToolsUsed "
            f"FROM agent_workflows WHERE WorkflowId = '{trace_id}' ORDER BY Revision DESC LIMIT 1"
        )
        deadline = time.monotonic() + VERDICT_TIMEOUT
        while True:
            rows = self.query(sql)
            if rows:
                return rows[0]
            assert time.monotonic() < deadline, f"no verdict for trace {trace_id} after {VERDICT_TIMEOUT}s"
            time.sleep(0.2)

    def steps(self, trace_id: str, table: str = "agent_spans") -> list[dict]:
        """The stored steps of the trace, in step order, with their links."""
        return self.query(
            "SELECT SpanId, ParentSpanId, SpanName, StepIndex, StepKind, AgentName, ModelName, ModelVersion, "
            "ToolName, ToolCallId, CredentialId, `Links.SpanId` AS LinkSpanIds, `Links.Attributes` AS LinkAttributes "
            f"FROM {table} WHERE TraceId = '{trace_id}' ORDER BY StepIndex"
        )

    def rejected(self, trace_id: str) -> list[dict]:
        """The quarantined spans of the trace."""
        return self.query(
            f"SELECT SpanId, SpanName, Reason, Detail FROM agent_rejected_spans WHERE TraceId = '{trace_id}'"
        )


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return Ledger(
        grpc_addr=_required("AGENT_LEDGER_FRAMEWORKS_GRPC"),
        http_addr=_required("AGENT_LEDGER_FRAMEWORKS_HTTP"),
        clickhouse_url=_required("AGENT_LEDGER_FRAMEWORKS_CLICKHOUSE"),
        database=_required("AGENT_LEDGER_FRAMEWORKS_DATABASE"),
    )


# OpenTelemetry --------------------------------------------------------------


@pytest.fixture(scope="session")
def grpc_provider(ledger) -> TracerProvider:
    """The global tracer provider, exporting over OTLP gRPC.

    Strands and Google ADK take their tracer from the global provider, so it
    is set once for the whole session.
    """
    exporter = GrpcSpanExporter(endpoint=f"http://{ledger.grpc_addr}", insecure=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "framework-tests-grpc"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    yield provider
    provider.shutdown()


@pytest.fixture(scope="session")
def http_provider(ledger) -> TracerProvider:
    """A second tracer provider, exporting over OTLP/HTTP with protobuf bodies."""
    exporter = HttpSpanExporter(endpoint=f"http://{ledger.http_addr}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "framework-tests-http"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    yield provider
    provider.shutdown()


ROOT_ATTRIBUTES = {
    "agent_ledger.origin.type": "user_request",
    "agent_ledger.origin.source": "support-portal",
    "agent_ledger.origin.authorized_by": "user-100",
    "agent_ledger.credential.id": "cred-order-bot-2026-12",
    "agent_ledger.credential.issuer": "vault.internal",
    "agent_ledger.credential.scopes": ["orders:read"],
}


@contextmanager
def application_root(provider: TracerProvider, framework: str, **extra):
    """Opens the application's root span around one agent run.

    The span carries the origin, the task and the credential, which only the
    application has. Yields the trace id as 32 hex digits.
    """
    tracer = provider.get_tracer("framework-tests")
    attributes = dict(ROOT_ATTRIBUTES, **{"agent_ledger.task.spec": QUESTION}, **extra)
    with tracer.start_as_current_span(f"handle ticket ({framework})", attributes=attributes) as span:
        yield format(span.get_span_context().trace_id, "032x")


def flush(provider: TracerProvider) -> None:
    assert provider.force_flush(timeout_millis=30_000), "the OTLP exporter did not flush in 30 s"


# Assertions -----------------------------------------------------------------


def causes(step: dict) -> list[tuple[str, str]]:
    """The linker's causes of a step: (span id, basis) pairs."""
    found = []
    for span_id, attributes in zip(step["LinkSpanIds"], step["LinkAttributes"]):
        if attributes.get("agent_ledger.link.type") == "caused_by":
            found.append((span_id, attributes.get("agent_ledger.link.basis", "")))
    return found


def assert_valid_run(ledger: Ledger, trace_id: str, *, agent: str, model_version: str, tool_basis: str,
                     inference_basis: str):
    """Checks what every framework test checks, from ClickHouse.

    The workflow must be valid with the expected agent and model version,
    and the run must be inference, tool, inference in step order. The tool
    step must be caused by the inference step before it, and the second
    inference step by the tool step, each with the expected basis. Basis
    `parent` expects the step's parent instead.
    """
    verdict = ledger.verdict(trace_id)
    assert verdict["Status"] == "valid", verdict["Reasons"]
    assert verdict["Reasons"] == []
    assert verdict["AgentName"] == agent, verdict
    assert model_version in verdict["ModelVersions"], verdict
    assert verdict["CredentialId"] == ROOT_ATTRIBUTES["agent_ledger.credential.id"]
    assert verdict["ToolsUsed"] == [TOOL_NAME]

    steps = ledger.steps(trace_id)
    assert [step["StepIndex"] for step in steps] == list(range(len(steps)))
    assert steps[0]["StepKind"] == "root"
    work = [step for step in steps if step["StepKind"] in ("inference", "tool")]
    assert [step["StepKind"] for step in work] == ["inference", "tool", "inference"], [
        (step["StepKind"], step["SpanName"]) for step in steps
    ]
    first_call, tool, second_call = work
    assert tool["ToolName"] == TOOL_NAME
    assert first_call["ModelVersion"] == model_version
    assert tool["CredentialId"] == ROOT_ATTRIBUTES["agent_ledger.credential.id"]

    assert causes(tool) == [(expected_cause(tool, first_call, tool_basis), tool_basis)], (tool, steps)
    assert causes(second_call) == [(expected_cause(second_call, tool, inference_basis), inference_basis)], (
        second_call,
        steps,
    )
    return verdict, steps


def expected_cause(step: dict, cause: dict, basis: str) -> str:
    """The span id `step` should be linked to: `cause`, or its parent for basis `parent`."""
    return step["ParentSpanId"] if basis == "parent" else cause["SpanId"]
