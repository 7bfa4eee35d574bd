"""How a worker process consumes: its processes, its fetchers, the stream of held messages, the gate."""
