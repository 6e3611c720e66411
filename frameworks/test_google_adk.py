"""Google ADK with its built-in OpenTelemetry tracing, exported over OTLP
gRPC.

A `BaseLlm` subclass scripts the conversation and `InMemoryRunner` runs the
agent with no network. ADK opens `invoke_workflow`, then `invoke_agent`,
with `generate_content {model}` and `execute_tool {tool}` under it, records
`gen_ai.tool.call.id` on the tool span and one model name
(`gen_ai.request.model`). It keeps no messages on its spans, so no model
call names the tool call id. Its `generate_content` span stays open until
the tool it requested has run, so the sequence rule (a model call that ended
before the tool started) finds none either. The tool step and the next model
call are therefore caused by their parent, the `invoke_agent` span.
"""

import asyncio

from conftest import ANSWER, TOOL_NAME, application_root, assert_valid_run, flush, lookup_order_result
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import InMemoryRunner
from google.genai import types

MODEL_NAME = "scripted-gemini-1"
CALL_ID = "adk-call-1042"


class ScriptedLlm(BaseLlm):
    """Requests `lookup_order` once, then returns the final text, offline."""

    calls: int = 0

    async def generate_content_async(self, llm_request, stream=False):
        self.calls += 1
        if self.calls == 1:
            call = types.FunctionCall(id=CALL_ID, name=TOOL_NAME, args={"order_id": 1042})
            part = types.Part(function_call=call)
        else:
            part = types.Part(text=ANSWER)
        yield LlmResponse(content=types.Content(role="model", parts=[part]))


def lookup_order(order_id: int) -> str:
    """Look up the shipping status of an order."""
    return lookup_order_result(order_id)


async def run_agent(runner: InMemoryRunner) -> str:
    session = await runner.session_service.create_session(app_name="orders", user_id="user-100")
    message = types.Content(role="user", parts=[types.Part(text="Where is order 1042?")])
    answer = ""
    async for event in runner.run_async(user_id="user-100", session_id=session.id, new_message=message):
        if event.content and event.content.parts and event.content.parts[0].text:
            answer = event.content.parts[0].text
    return answer


def test_google_adk_workflow_valid_and_linked(ledger, grpc_provider):
    agent = LlmAgent(name="order_bot", model=ScriptedLlm(model=MODEL_NAME),
                     instruction="Answer questions about orders.", tools=[lookup_order])
    runner = InMemoryRunner(agent=agent, app_name="orders")
    with application_root(grpc_provider, "google-adk") as trace_id:
        answer = asyncio.run(run_agent(runner))
    assert answer == ANSWER
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent="order_bot", model_version=MODEL_NAME,
        tool_basis="parent", inference_basis="parent",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == CALL_ID
    first_call = next(step for step in steps if step["StepKind"] == "inference")
    assert tool_step["ParentSpanId"] == first_call["ParentSpanId"], "tool and model call are siblings"
    kinds = {step["SpanName"]: step["StepKind"] for step in steps}
    assert kinds["invoke_workflow order_bot"] == "agent"
    assert kinds["invoke_agent order_bot"] == "agent"
