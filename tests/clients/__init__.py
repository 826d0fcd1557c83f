"""Tests of the clients: luca-shell and the mcp-stdio bridge."""
