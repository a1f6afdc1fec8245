"""The composition root: CLI, embedded broker, demo. The only package that wires the others."""
