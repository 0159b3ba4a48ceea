"""Tools that agents call (memos.tools): the memory tools, run through a user's Session (memos.tools.memory)."""

from memos.tools.memory import FORGET, INSERT, MEMORY_TOOLS, SEARCH, UPDATE, MemoryTool, MemoryTools, ToolResult

__all__ = ["FORGET", "INSERT", "MEMORY_TOOLS", "SEARCH", "UPDATE", "MemoryTool", "MemoryTools", "ToolResult"]
