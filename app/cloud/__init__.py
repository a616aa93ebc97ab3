"""`livestream cloud` and `estimate`: the DigitalOcean client, the droplet's user-data, the bundle
upload and receiver, and what it costs.
"""
