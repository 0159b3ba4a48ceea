"""LangGraph agents and workflows (memos.agents): arrive with the agents issue."""
