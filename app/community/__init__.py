"""Everything beside the video: the store, viewer identities, chat rules, captchas, word filters,
presence and the push hub.
"""
