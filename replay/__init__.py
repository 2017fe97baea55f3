"""mmreplay: the trace format, the simulator, analytics and the CLI (no bcc needed)."""
