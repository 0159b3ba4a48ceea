"""Built-in plugins such as G-Memory (memos.plugins): arrive with the plugins issue."""
