"""The web side: the gevent server, headers every response carries, per-client limits and the
views.
"""
