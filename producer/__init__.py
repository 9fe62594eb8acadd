"""exectrack producer: the event contract and the tools services use to emit events."""
