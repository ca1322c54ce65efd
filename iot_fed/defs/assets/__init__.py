"""Asset definitions, one module per group."""
