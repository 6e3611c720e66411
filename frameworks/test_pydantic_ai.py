"""pydantic-ai (`pydantic-ai-slim`) with its built-in GenAI instrumentation,
exported over OTLP/HTTP.

`TestModel` is pydantic-ai's own offline model: it calls every tool once,
then returns the tool results as its output. The spans are `invoke_agent`, then
`chat` and `execute_tool` siblings under it, with `gen_ai.tool.call.id` and
the messages in `gen_ai.input.messages` / `gen_ai.output.messages`.
"""

from conftest import TOOL_NAME, application_root, assert_valid_run, flush, lookup_order_result
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel


def build_agent() -> Agent:
    agent = Agent(TestModel(call_tools=[TOOL_NAME]), name="order-bot")

    @agent.tool_plain
    def lookup_order(order_id: int) -> str:
        """Look up the shipping status of an order."""
        return lookup_order_result(order_id)

    return agent


def test_pydantic_ai_workflow_valid_and_linked(ledger, http_provider):
    Agent.instrument_all(InstrumentationSettings(tracer_provider=http_provider))
    try:
        with application_root(http_provider, "pydantic-ai") as trace_id:
            result = build_agent().run_sync("Where is order 1042?")
    finally:
        Agent.instrument_all(False)
    assert TOOL_NAME in result.output
    flush(http_provider)

    # TestModel records one model name, `test`, as request and response model.
    verdict, steps = assert_valid_run(
        ledger, trace_id, agent="order-bot", model_version="test",
        tool_basis="tool_call_id", inference_basis="tool_call_id",
    )
    tool = next(step for step in steps if step["StepKind"] == "tool")
    assert tool["ToolCallId"] != ""
    agent_step = next(step for step in steps if step["StepKind"] == "agent")
    assert agent_step["SpanName"] == "invoke_agent order-bot"
    assert tool["ParentSpanId"] == agent_step["SpanId"], "pydantic-ai records tools as siblings of model calls"
