"""The agent server: YAML workflows run for the client that starts them, bounded in runs, depth and templates."""
