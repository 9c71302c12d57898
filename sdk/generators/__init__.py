"""Generator backends: transformers, vLLM, OpenAI-compatible servers and a scripted test double."""
