"""The agent factory: capability search, compiled immutable agents, governed runs."""
