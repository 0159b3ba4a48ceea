"""Built-in plugins (memos.plugins): G-Memory (gmemory) and the LangGraph store adapter (langgraph_store).

They load through the same `memos.plugins` entry points a third-party package uses.
"""
