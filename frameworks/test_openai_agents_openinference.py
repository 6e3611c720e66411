"""The OpenAI Agents SDK, traced by OpenInference's OpenAI Agents
instrumentation and exported over OTLP gRPC.

The SDK's own tracing is not OpenTelemetry: the instrumentor installs a
trace processor that turns SDK spans into OpenTelemetry spans, and as the
exclusive processor it replaces the SDK's exporter to the OpenAI platform.
A `Model` subclass scripts the conversation and opens the generation span
that a real model class opens. OpenInference names the agent in
`agent.name`, the model in `llm.model_name` and the tool in `tool.name`. It
records call ids on the model calls but not on the tool spans, so tool
steps are linked by sequence.
"""

import json

import pytest
from agents import Agent, ModelResponse, Runner, Usage, function_tool
from agents.models.interface import Model
from agents.tracing import generation_span
from conftest import ANSWER, TOOL_NAME, application_root, assert_valid_run, flush, lookup_order_result
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

MODEL_NAME = "scripted-agents-model-1"
CALL_ID = "call_order_1042"
ARGUMENTS = json.dumps({"order_id": 1042})


class ScriptedModel(Model):
    """Requests `lookup_order` once, then returns the final text, offline."""

    def __init__(self):
        self.calls = 0

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs,
                           tracing, *, previous_response_id=None, conversation_id=None, prompt=None):
        self.calls += 1
        if self.calls == 1:
            output = [ResponseFunctionToolCall(type="function_call", call_id=CALL_ID, name=TOOL_NAME,
                                               arguments=ARGUMENTS, id="fc_1", status="completed")]
            recorded = [{"role": "assistant", "content": None, "tool_calls": [
                {"id": CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": ARGUMENTS}},
            ]}]
        else:
            text = ResponseOutputText(type="output_text", text=ANSWER, annotations=[])
            output = [ResponseOutputMessage(type="message", id="msg_1", role="assistant", status="completed",
                                            content=[text])]
            recorded = [{"role": "assistant", "content": ANSWER}]
        messages = input if isinstance(input, list) else [{"role": "user", "content": input}]
        with generation_span(model=MODEL_NAME, input=messages, output=recorded, model_config={}):
            pass
        usage = Usage(requests=1, input_tokens=12, output_tokens=6, total_tokens=18)
        return ModelResponse(output=output, usage=usage, response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError("the scripted model does not stream")


@function_tool
def lookup_order(order_id: int) -> str:
    """Look up the shipping status of an order."""
    return lookup_order_result(order_id)


@pytest.fixture
def instrumented(grpc_provider):
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=grpc_provider, exclusive_processor=True)
    yield
    instrumentor.uninstrument()


def test_openai_agents_openinference_workflow_valid_and_linked(ledger, grpc_provider, instrumented):
    agent = Agent(name="order-bot", instructions="Answer questions about orders.", tools=[lookup_order],
                  model=ScriptedModel())
    with application_root(grpc_provider, "openai-agents") as trace_id:
        result = Runner.run_sync(agent, "Where is order 1042?")
    assert result.final_output == ANSWER
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent="order-bot", model_version=MODEL_NAME,
        tool_basis="sequence", inference_basis="sequence",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == "", "OpenInference records no call id on OpenAI Agents tool spans"
    assert "order-bot" in verdict["AgentNames"]
