"""llmbasedos: local capabilities for LLM hosts, through one secure gateway."""

__version__ = "0.1.0"
