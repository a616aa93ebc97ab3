"""Running things: child processes and the signals that stop them."""
