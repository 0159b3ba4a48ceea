"""Activation (KV cache) and parametric (LoRA) tiers: arrive with the tiers issue; plaintext lives in the catalog."""
