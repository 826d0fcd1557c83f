"""Upstream MCP servers, the ones a person already runs, governed behind the gateway (issue 22, under way).

    registry.py   mcp_servers.yaml: the servers, how to reach them, their timeouts and tool policy

The program that holds their sessions and publishes their tools as `mcp.<name>.*` comes next.
"""
