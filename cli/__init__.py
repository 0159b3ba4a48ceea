"""The `memos` command line: one module per noun (memory, cube, users), wired up in main."""
