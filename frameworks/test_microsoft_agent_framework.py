"""Microsoft Agent Framework (`agent-framework-core`) with its built-in
OpenTelemetry tracing, exported over OTLP gRPC.

A chat client built from the framework's own layers (function invocation
and chat telemetry over `BaseChatClient`) scripts the conversation: the
first call requests the tool, and the second returns the final text. The
framework traces through the global tracer provider and follows the GenAI
conventions: `invoke_agent {name}`, then `chat {model}` and
`execute_tool {tool}` as siblings under it, with `gen_ai.tool.call.id` on
the tool span. It records the messages (`gen_ai.input.messages`,
`gen_ai.output.messages`) only with sensitive data enabled, and the test
enables it so that both links come from the call id.
"""

import asyncio

from agent_framework import Agent, BaseChatClient, ChatResponse, Content, FunctionInvocationLayer, Message, tool
from agent_framework.observability import ChatTelemetryLayer, enable_instrumentation
from conftest import ANSWER, TOOL_NAME, application_root, assert_valid_run, flush, lookup_order_result

MODEL_NAME = "scripted-maf-model-1"
CALL_ID = "call_order_1042"


class ScriptedChatClient(FunctionInvocationLayer, ChatTelemetryLayer, BaseChatClient):
    """Requests `lookup_order` once, then returns the final text, offline."""

    OTEL_PROVIDER_NAME = "scripted"

    def __init__(self):
        super().__init__()
        self.calls = 0

    async def _inner_get_response(self, *, messages, stream, options, **kwargs):
        self.calls += 1
        if self.calls == 1:
            contents = [Content.from_function_call(call_id=CALL_ID, name=TOOL_NAME, arguments={"order_id": 1042})]
        else:
            contents = [Content.from_text(ANSWER)]
        return ChatResponse(
            messages=[Message(role="assistant", contents=contents)],
            model=MODEL_NAME,
            response_id=f"scripted-response-{self.calls}",
        )


@tool
def lookup_order(order_id: int) -> str:
    """Look up the shipping status of an order."""
    return lookup_order_result(order_id)


def test_microsoft_agent_framework_workflow_valid_and_linked(ledger, grpc_provider):
    enable_instrumentation(enable_sensitive_data=True)
    agent = Agent(client=ScriptedChatClient(), tools=[lookup_order], name="order-bot")
    with application_root(grpc_provider, "microsoft-agent-framework") as trace_id:
        result = asyncio.run(agent.run("Where is order 1042?"))
    assert result.text == ANSWER
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent="order-bot", model_version=MODEL_NAME,
        tool_basis="tool_call_id", inference_basis="tool_call_id",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == CALL_ID
    assert tool_step["SpanName"] == f"execute_tool {TOOL_NAME}"
    agent_step = next(step for step in steps if step["StepKind"] == "agent")
    assert agent_step["SpanName"] == "invoke_agent order-bot"
    assert tool_step["ParentSpanId"] == agent_step["SpanId"], "tool spans are siblings of the model calls"
