"""The agent side: chat rendering, tool-call protocol, context engineering, the interactive CLI."""
