"""luca-shell, the interactive MCP client for people (`luca-shell`, or `python -m llmbasedos.clients.shell`)."""
