"""A framework workflow without the application's root attributes is
rejected, with reasons that name the attributes to add and the span to add
them to.

The agent is pydantic-ai's, exported over OTLP gRPC; what the framework
records is complete, and only the application's part is missing.
"""

from conftest import application_root, flush
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings
from test_pydantic_ai import build_agent

ROOT_ATTRIBUTES = [
    "agent_ledger.origin.type",
    "agent_ledger.origin.source",
    "agent_ledger.task.spec",
    "agent_ledger.credential.id",
    "agent_ledger.credential.scopes",
]


def run_agent(provider, **root_attributes) -> str:
    """Runs the agent under a plain application span and returns the trace id."""
    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))
    tracer = provider.get_tracer("framework-tests")
    try:
        with tracer.start_as_current_span("handle ticket", attributes=root_attributes) as span:
            build_agent().run_sync("Where is order 1042?")
    finally:
        Agent.instrument_all(False)
    flush(provider)
    return format(span.get_span_context().trace_id, "032x")


def test_workflow_without_root_attributes_rejected(ledger, grpc_provider):
    trace_id = run_agent(grpc_provider)

    verdict = ledger.verdict(trace_id)
    assert verdict["Status"] == "rejected"
    assert len(verdict["Reasons"]) == 1, verdict["Reasons"]
    reason = verdict["Reasons"][0]
    assert reason.startswith("no span carries agent_ledger.origin.type"), reason
    assert "set it on the span that wraps the agent task" in reason, reason
    for attribute in ROOT_ATTRIBUTES:
        assert attribute in reason, f"{attribute} missing from: {reason}"
    assert verdict["AgentName"] == "order-bot", "the framework's own facts are still read"

    quarantined = ledger.rejected(trace_id)
    names = sorted(row["SpanName"] for row in quarantined)
    assert names == ["chat test", "chat test", "execute_tool lookup_order", "handle ticket",
                     "invoke_agent order-bot"], names
    assert {row["Reason"] for row in quarantined} == {"no_workflow_root"}
    assert all(row["Detail"] == reason for row in quarantined)
    assert ledger.steps(trace_id) == [], "nothing of a rejected workflow is stored as a step"


def test_root_missing_credential_and_task_rejected(ledger, grpc_provider):
    trace_id = run_agent(grpc_provider, **{
        "agent_ledger.origin.type": "user_request",
        "agent_ledger.origin.source": "support-portal",
    })

    verdict = ledger.verdict(trace_id)
    assert verdict["Status"] == "rejected"
    assert sorted(verdict["Reasons"]) == [
        "missing agent_ledger.credential.id on root span",
        "missing agent_ledger.credential.scopes on root span",
        "missing agent_ledger.task.spec on root span",
    ]
    assert {row["Reason"] for row in ledger.rejected(trace_id)} == {"policy_rejected"}


def test_application_root_completes_same_agent(ledger, grpc_provider):
    """The same agent under the application's root span is valid."""
    Agent.instrument_all(InstrumentationSettings(tracer_provider=grpc_provider))
    try:
        with application_root(grpc_provider, "pydantic-ai over gRPC") as trace_id:
            build_agent().run_sync("Where is order 1042?")
    finally:
        Agent.instrument_all(False)
    flush(grpc_provider)
    assert ledger.verdict(trace_id)["Status"] == "valid"
