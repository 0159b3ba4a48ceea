"""An example memos plugin: the `keep-questions` policy, the `charfreq` embedder and `memos example-hello`."""
