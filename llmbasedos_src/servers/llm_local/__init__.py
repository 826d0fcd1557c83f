"""llm-local: the embedded llama.cpp server (OpenAI-compatible) with the bundled Gemma 3 270M model."""
