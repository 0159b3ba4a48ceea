"""Tools that agents call (memos.tools): arrive with the agents issue."""
