"""The `infopt` command: the composition root that wires the core, the pipeline, the gateway and infra."""
