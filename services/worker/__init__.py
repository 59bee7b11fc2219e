"""The stream worker: faust agents that feed the projector runtime."""
