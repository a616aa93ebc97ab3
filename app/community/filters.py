"""Word filters: censor, block or ban on plain words or regular expressions.

Patterns come from the broadcaster, but a careless one can still hang the server (catastrophic
backtracking), so a pattern is checked when it is added: bounded length, it must compile, and
constructs that can backtrack exponentially (a repeat or alternatives inside a repeat,
back-references) are
refused with a message saying why. Messages are short (chat.max_length), which bounds the rest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

try:  # Python 3.11+
    import re._constants as sre_constants
    import re._parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants
    import sre_parse

from app.community.store import Filter

ACTIONS = ("censor", "block", "ban")
CENSORED = "***"


class FilterError(ValueError):
    """A pattern that cannot be used; the text says why and what to do."""


_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT}
_UNSAFE = {sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS}


def _walk(parsed, inside_repeat: bool) -> None:
    for op, arg in parsed:
        if op in _UNSAFE:
            raise FilterError("back-references are not allowed in filters")
        if op in _REPEATS:
            low, high, sub = arg
            repeats = high is sre_constants.MAXREPEAT or high > 1
            if repeats and inside_repeat:
                raise FilterError("a repeated group may not contain another repeat "
                                  "(like (a+)+): it can make matching take forever")
            _walk(sub, inside_repeat or repeats)
        elif op == sre_constants.SUBPATTERN:
            _walk(arg[-1], inside_repeat)
        elif op == sre_constants.BRANCH:
            if inside_repeat:
                raise FilterError("alternatives inside a repeated group (like (a|aa)+) are "
                                  "not allowed: they can make matching take forever")
            for branch in arg[1]:
                _walk(branch, inside_repeat)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            _walk(arg[1], inside_repeat)
        elif op == sre_constants.ATOMIC_GROUP:
            _walk(arg, inside_repeat)


MAX_OPEN_REPEATS = 2


def _open_repeats(parsed, repeated_literals: set) -> int:
    """Variable-length repeats that can take each other's characters (`.*`, `\\w+`, `a*a*`).

    k of them cost about n**(k+1) steps to search an n-character message: two are cheap,
    four already take minutes on 500 characters. A repeat of one literal character that no
    other repeat uses (`f+u+c+k+`) cannot trade characters, so it is free.
    """
    count = 0
    for op, arg in parsed:
        if op in _REPEATS:
            low, high, sub = arg
            body = list(sub)
            if high != low:
                if len(body) == 1 and body[0][0] == sre_constants.LITERAL:
                    if body[0][1] in repeated_literals:
                        count += 1
                    repeated_literals.add(body[0][1])
                else:
                    count += 1
            count += _open_repeats(sub, repeated_literals)
        elif op == sre_constants.SUBPATTERN:
            count += _open_repeats(arg[-1], repeated_literals)
        elif op == sre_constants.BRANCH:
            count += max((_open_repeats(b, repeated_literals) for b in arg[1]), default=0)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            count += _open_repeats(arg[1], repeated_literals)
        elif op == sre_constants.ATOMIC_GROUP:
            count += _open_repeats(arg, repeated_literals)
    return count


def compile_pattern(pattern: str, is_regex: bool, case_sensitive: bool,
                    max_length: int) -> re.Pattern:
    """Turn a filter into a safe compiled expression, or raise FilterError."""
    if not pattern.strip():
        raise FilterError("the filter is empty: enter a word or a regular expression")
    if len(pattern) > max_length:
        raise FilterError(f"the filter is longer than {max_length} characters "
                          "(chat.filter_max_length)")
    flags = 0 if case_sensitive else re.IGNORECASE
    if not is_regex:
        # plain words match whole words only, so "ass" does not censor "class"
        return re.compile(r"(?<!\w)" + re.escape(pattern.strip()) + r"(?!\w)", flags)
    try:
        parsed = sre_parse.parse(pattern, flags)
        _walk(parsed, False)
        if _open_repeats(parsed, set()) > MAX_OPEN_REPEATS:
            raise FilterError(f"at most {MAX_OPEN_REPEATS} open-ended repeats (like .* or \\w+) "
                              "may follow each other: more can make matching take minutes")
        return re.compile(pattern, flags)
    except (re.error, OverflowError, RecursionError) as exc:
        raise FilterError(f"not a valid regular expression: {exc}") from None


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
