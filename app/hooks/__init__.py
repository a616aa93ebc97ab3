"""Hooks for the streamer's bots and scripts: what happens as events (an event socket and
webhooks) and the broadcaster's powers over a control socket."""
