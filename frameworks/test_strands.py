"""Strands Agents with its built-in OpenTelemetry tracing, exported over
OTLP gRPC.

A `Model` subclass scripts the conversation: the first call requests the
tool, and the second returns the final text. Strands nests `chat` and `execute_tool` under
`execute_event_loop_cycle` spans, reports `gen_ai.system=strands-agents`
and one model name (`gen_ai.request.model`), and keeps the messages in span
events: `gen_ai.choice` for the output, `gen_ai.tool.message` for tool
results.
"""

import json

from conftest import ANSWER, TOOL_NAME, application_root, assert_valid_run, flush, lookup_order_result
from strands import Agent, tool
from strands.models.model import Model

MODEL_ID = "scripted-strands-model-1"
CALL_ID = "tooluse_order_1042"


class ScriptedModel(Model):
    """Requests `lookup_order` once, then returns the final text, offline."""

    def __init__(self):
        self.config = {"model_id": MODEL_ID}
        self.calls = 0

    def update_config(self, **model_config):
        self.config.update(model_config)

    def get_config(self):
        return self.config

    async def structured_output(self, output_model, prompt, system_prompt=None, **kwargs):
        raise NotImplementedError("the scripted model has no structured output")
        yield  # pragma: no cover

    async def stream(self, messages, tool_specs=None, system_prompt=None, **kwargs):
        self.calls += 1
        yield {"messageStart": {"role": "assistant"}}
        if self.calls == 1:
            yield {"contentBlockStart": {"start": {"toolUse": {"toolUseId": CALL_ID, "name": TOOL_NAME}}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps({"order_id": 1042})}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
        else:
            yield {"contentBlockDelta": {"delta": {"text": ANSWER}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}
        usage = {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18}
        yield {"metadata": {"usage": usage, "metrics": {"latencyMs": 1}}}


@tool
def lookup_order(order_id: int) -> str:
    """Look up the shipping status of an order."""
    return lookup_order_result(order_id)


def test_strands_workflow_valid_and_linked(ledger, grpc_provider):
    agent = Agent(model=ScriptedModel(), tools=[lookup_order], name="order-bot", callback_handler=None)
    with application_root(grpc_provider, "strands") as trace_id:
        result = agent("Where is order 1042?")
    assert ANSWER in str(result)
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent="order-bot", model_version=MODEL_ID,
        tool_basis="tool_call_id", inference_basis="tool_call_id",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == CALL_ID
    cycles = [step for step in steps if step["SpanName"] == "execute_event_loop_cycle"]
    assert [step["StepKind"] for step in cycles] == ["other", "other"]
    assert tool_step["ParentSpanId"] == cycles[0]["SpanId"]
