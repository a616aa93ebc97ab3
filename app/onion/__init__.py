"""Publishing the site as a Tor v3 onion service: the tor process or control port, keys and client
authorization.
"""
