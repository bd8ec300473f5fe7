"""alejax: JAX-native RL post-training for agent LLMs."""

__version__ = "0.1.0"
