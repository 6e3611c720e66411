"""The LangGraph run shared by the LangGraph tests, which differ only in
the instrumentation that traces it. LangGraph's prebuilt ReAct agent gets
one tool and a chat model that requests the tool once, then returns the
final text.
"""

from conftest import ANSWER, QUESTION, TOOL_NAME, lookup_order_result
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

AGENT_NAME = "order-bot"
CALL_ID = "call_order_1042"


class ScriptedChatModel(GenericFakeChatModel):
    """Replays scripted messages and ignores the tools bound to it."""

    def bind_tools(self, tools, **kwargs):
        return self


def scripted_messages():
    """Returns the model's replies: a call of the tool, then the answer."""
    return iter([
        AIMessage(content="", tool_calls=[
            {"name": TOOL_NAME, "args": {"order_id": 1042}, "id": CALL_ID, "type": "tool_call"},
        ]),
        AIMessage(content=ANSWER),
    ])


@tool
def lookup_order(order_id: int) -> str:
    """Look up the shipping status of an order."""
    return lookup_order_result(order_id)


def run_agent(model: ScriptedChatModel) -> str:
    """Runs the ReAct agent on `model` and returns its last message's text."""
    agent = create_react_agent(model, [lookup_order], name=AGENT_NAME)
    output = agent.invoke({"messages": [("user", QUESTION)]},
                          config={"configurable": {"thread_id": "ticket-1042"}})
    return output["messages"][-1].content
