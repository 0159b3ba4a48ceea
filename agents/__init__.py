"""LangGraph agents and workflows (memos.agents).

- memory_agent: `MemoryAgent`, a StateGraph recall -> respond -> memorize with threads in SQLite
- tool_agent: `ToolAgent`, a model that calls the memory tools (memos.tools) until it answers
- team / pipeline: `Supervisor` and `Pipeline` teams, each agent with its own namespace plus the team's,
  and the `TeamMemory` hooks G-Memory (memos.plugins.gmemory) implements

Import the module you need: each loads LangGraph only when it is used.
"""
