"""LangGraph's prebuilt ReAct agent, traced by OpenInference's LangChain
instrumentation and exported over OTLP gRPC.

OpenInference records no `gen_ai.*` attributes: it marks spans with
`openinference.span.kind` (AGENT for the agent node, LLM, TOOL, CHAIN),
names the model in `llm.model_name` and the tool in `tool.name`, and keeps
the messages flattened (`llm.output_messages.0.message.tool_calls.0.
tool_call.id`). The TOOL span has no call id attribute; the call id is in
the `ToolMessage` it records in `output.value`. LangGraph names no agent in
its spans, so the application names it on its root span.
"""

import pytest
from conftest import ANSWER, application_root, assert_valid_run, flush
from langgraph_agent import AGENT_NAME, CALL_ID, ScriptedChatModel, run_agent, scripted_messages
from openinference.instrumentation.langchain import LangChainInstrumentor

MODEL_NAME = "scripted-langchain-model-1"


class OpenInferenceChatModel(ScriptedChatModel):
    """Names its model and provider where OpenInference reads them."""

    def _get_ls_params(self, stop=None, **kwargs):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = MODEL_NAME
        params["ls_provider"] = "scripted"
        return params


@pytest.fixture
def instrumented(grpc_provider):
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=grpc_provider)
    yield
    instrumentor.uninstrument()


def test_langgraph_openinference_workflow_valid_and_linked(ledger, grpc_provider, instrumented):
    model = OpenInferenceChatModel(messages=scripted_messages())
    with application_root(grpc_provider, "langgraph", **{"gen_ai.agent.name": AGENT_NAME}) as trace_id:
        answer = run_agent(model)
    assert answer == ANSWER
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent=AGENT_NAME, model_version=MODEL_NAME,
        tool_basis="tool_call_id", inference_basis="tool_call_id",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == CALL_ID
    agent_nodes = [step for step in steps if step["StepKind"] == "agent"]
    assert [step["SpanName"] for step in agent_nodes] == ["agent", "agent"], "one AGENT span per agent node run"
