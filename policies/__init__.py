"""Memory policies such as Mem-α and MEM1 (memos.policies): arrive with the policies issue."""
