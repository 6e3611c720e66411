"""LangGraph's prebuilt ReAct agent, traced by OpenLLMetry's LangChain
instrumentation (`opentelemetry-instrumentation-langchain`) and exported
over OTLP gRPC.

OpenLLMetry 0.62 records the GenAI conventions beside its own
`traceloop.*` attributes: `invoke_agent` spans name the agent
(`gen_ai.agent.name`), `chat` spans carry the model and the messages with
their tool call ids (`gen_ai.input.messages`, `gen_ai.output.messages`),
and `execute_tool` spans name the tool. The tool span records no call id
attribute. Its call id is in the LangChain `ToolMessage` that it records
in `gen_ai.tool.call.result`. Each graph node and runnable is an
`execute_task` span (`traceloop.span.kind=task`), stored as `other`.

OpenLLMetry reads the model name from the chat model's serialized
constructor arguments, so the scripted model is serializable and is given
its `model_name` when it is created.
"""

import pytest
from conftest import ANSWER, TOOL_NAME, application_root, assert_valid_run, flush
from langgraph_agent import AGENT_NAME, CALL_ID, ScriptedChatModel, run_agent, scripted_messages
from opentelemetry.instrumentation.langchain import LangchainInstrumentor

MODEL_NAME = "scripted-openllmetry-model-1"


class SerializableChatModel(ScriptedChatModel):
    """Serializes its `model_name`, where OpenLLMetry reads the model."""

    model_name: str = ""

    @classmethod
    def is_lc_serializable(cls):
        return True


@pytest.fixture
def instrumented(grpc_provider):
    instrumentor = LangchainInstrumentor()
    instrumentor.instrument(tracer_provider=grpc_provider)
    yield
    instrumentor.uninstrument()


def test_langgraph_openllmetry_workflow_valid_and_linked(ledger, grpc_provider, instrumented):
    model = SerializableChatModel(model_name=MODEL_NAME, messages=scripted_messages())
    with application_root(grpc_provider, "langgraph-openllmetry") as trace_id:
        answer = run_agent(model)
    assert answer == ANSWER
    flush(grpc_provider)

    verdict, steps = assert_valid_run(
        ledger, trace_id, agent=AGENT_NAME, model_version=MODEL_NAME,
        tool_basis="tool_call_id", inference_basis="tool_call_id",
    )
    tool_step = next(step for step in steps if step["StepKind"] == "tool")
    assert tool_step["ToolCallId"] == CALL_ID
    assert tool_step["SpanName"] == f"execute_tool {TOOL_NAME}"
    agent_spans = [step["SpanName"] for step in steps if step["StepKind"] == "agent"]
    assert f"invoke_agent {AGENT_NAME}" in agent_spans, agent_spans
    tasks = [step for step in steps if step["SpanName"].startswith("execute_task ")]
    assert tasks, "OpenLLMetry records each graph node as an execute_task span"
    assert {step["StepKind"] for step in tasks} == {"other"}
