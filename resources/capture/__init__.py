"""Capture inbox: the durable queue live producers (hooks) write to, and its drain into memory."""
