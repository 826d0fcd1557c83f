"""Backend daemons, one package each, all built on MCPServer."""
