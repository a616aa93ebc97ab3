"""Word filters: censor, block or ban on plain words or regular expressions.

Regular expressions come from the broadcaster, and with a backtracking engine a careless one
(`a*\\w*\\w*!`) can take seconds on one chat message, on the event loop every viewer shares.
So they run on RE2 (google-re2), which matches in time linear in the message whatever the
pattern, and refuses constructs it cannot do in linear time (back-references, lookaround) with
an error we pass on. Its program size is capped too. Plain words are escaped literals, which
no engine can make slow, so they use `re` for its Unicode word boundaries. In RE2 `\\w` and
`\\b` are ASCII only: write `\\pL` for any letter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import re2

from app.community.store import Filter

ACTIONS = ("censor", "block", "ban")
CENSORED = "***"
MAX_PROGRAM_BYTES = 1 << 20  # RE2's memory for one compiled filter


class FilterError(ValueError):
    """A pattern that cannot be used; the text says why and what to do."""


class Pattern(Protocol):
    def search(self, text: str): ...
    def sub(self, replacement: str, text: str) -> str: ...


def compile_pattern(pattern: str, is_regex: bool, case_sensitive: bool,
                    max_length: int) -> Pattern:
    """Turn a filter into a compiled expression that matches in linear time, or raise
    FilterError."""
    if not pattern.strip():
        raise FilterError("the filter is empty: enter a word or a regular expression")
    if len(pattern) > max_length:
        raise FilterError(f"the filter is longer than {max_length} characters "
                          "(chat.filter_max_length)")
    if not is_regex:
        # plain words match whole words only, so "ass" does not censor "class"
        flags = 0 if case_sensitive else re.IGNORECASE
        return re.compile(r"(?<!\w)" + re.escape(pattern.strip()) + r"(?!\w)", flags)
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise FilterError(f"not a usable regular expression: {reason} (filters use RE2 "
                          "syntax: no back-references or lookaround)") from None


@dataclass(frozen=True)
class Verdict:
    text: str
    action: str | None  # None, "block" or "ban"; censoring is already applied to text


class WordFilters:
    """The compiled filters, rebuilt whenever the list in the store changes."""

    def __init__(self, filters: list[Filter], max_length: int):
        self.source = filters
        self._compiled = []
        for f in filters:
            try:
                self._compiled.append((f, compile_pattern(f.pattern, f.is_regex,
                                                          f.case_sensitive, max_length)))
            except FilterError:
                continue  # rules tightened since it was stored: skip rather than fail

    def apply(self, text: str) -> Verdict:
        action = None
        for f, pattern in self._compiled:
            if not pattern.search(text):
                continue
            if f.action == "censor":
                text = pattern.sub(CENSORED, text)
            elif f.action == "ban":
                action = "ban"
            elif action is None:
                action = "block"
        return Verdict(text, action)
