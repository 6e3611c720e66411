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
from conftest import ANSWER, TOOL_NAME, application_root, assert_valid_run, flush, lookup_order_result
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent
from openinference.instrumentation.langchain import LangChainInstrumentor

MODEL_NAME = "scripted-langchain-model-1"
CALL_ID = "call_order_1042"


class ScriptedChatModel(GenericFakeChatModel):
    """Replays scripted messages; binding tools changes nothing."""

    def bind_tools(self, tools, **kwargs):
        return self

    def _get_ls_params(self, stop=None, **kwargs):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = MODEL_NAME
        params["ls_provider"] = "scripted"
        return params


@tool
def lookup_order(order_id: int) -> str:
    """Look up the shipping status of an order."""
    return lookup_order_result(order_id)


@pytest.fixture
def instrumented(grpc_provider):
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=grpc_provider)
    yield
    instrumentor.uninstrument()


def test_langgraph_openinference_workflow_valid_and_linked(ledger, grpc_provider, instrumented):
    model = ScriptedChatModel(messages=iter([
        AIMessage(content="", tool_calls=[
            {"name": TOOL_NAME, "args": {"order_id": 1042}, "id": CALL_ID, "type": "tool_call"},
        ]),
        AIMessage(content=ANSWER),
    ]))
    agent = create_react_agent(model, [lookup_order], name="order-bot")
    with application_root(grpc_provider, "langgraph", **{"gen_ai.agent.name": "order-bot"}) as trace_id:
        output = agent.invoke({"messages": [("user", "Where is order 1042?")]},
                              config={"configurable": {"thread_id": "ticket-1042"}})
    assert output["messages"][-1].content == ANSWER
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent="order-bot", model_version=MODEL_NAME,
        tool_basis="tool_call_id", inference_basis="tool_call_id",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == CALL_ID
    agent_nodes = [step for step in steps if step["StepKind"] == "agent"]
    assert [step["SpanName"] for step in agent_nodes] == ["agent", "agent"], "one AGENT span per agent node run"
