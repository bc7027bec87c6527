"""`Messages`: an ordered, read-only snapshot of messages with queries, and
the failure report every message assertion shares (what was expected, what
arrived, the closest candidate and why it differs).

Test side; pure (it reads messages, never the store).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

from . import _match
from ._message import Message, summary_or_raw
from ._text import plural, shorten, shown_argument

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._match import Criteria

_LISTED = 20
_T = TypeVar("_T")


class _Checking(threading.local):
    """Whether this thread is running a wait's condition (`_mailbox._NotYet`),
    which may fail thousands of times before it holds: an error raised
    there only says "not yet", and its full text would be built for
    nothing."""

    active = False


CHECKING = _Checking()


class Messages(Sequence[Message]):
    """An ordered, read-only snapshot of messages, with queries."""

    def __init__(
        self,
        items: Sequence[Message],
        source: Sequence[Message] | None = None,
        *,
        scope: str = "in this test",
        narrowed: str = "",
        why_none: Callable[[], list[str]] | None = None,
    ) -> None:
        self._items = tuple(items)
        # Everything the query started from, so that a failure after
        # filter() can still list what arrived, not just what was left.
        self._source = self._items if source is None else tuple(source)
        # Where they came from, as failure reports say it ("since clear()").
        self._scope = scope
        # How they were narrowed from the source (".filter(to='ann@...')",
        # "[2:]"), which a failure report names: "" when not at all.
        self._narrowed = narrowed
        # The mailbox's hints for a report where nothing arrived (whether
        # any client connected): assert_sent gave them, messages.one() not.
        self._why_none = why_none

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> Messages: ...
    def __getitem__(self, index: int | slice) -> Message | Messages:
        __tracebackhide__ = True
        if isinstance(index, slice):
            step = f":{index.step}" if index.step is not None else ""
            start = "" if index.start is None else index.start
            stop = "" if index.stop is None else index.stop
            try:
                items = self._items[index]
            except TypeError:
                raise TypeError(
                    f"messages[...] takes positions in a slice, got "
                    f"{shown_argument(index)}; to find mail by its fields, use "
                    "filter(...) or one(...) (messages.filter(to=...))"
                ) from None
            return Messages(
                items,
                self._source,
                scope=self._scope,
                narrowed=f"{self._narrowed}[{start}:{stop}{step}]",
                why_none=self._why_none,
            )
        try:
            return self._items[index]
        except IndexError:
            # `messages[0]` is how most tests read their mail: say what
            # there is, not "tuple index out of range". (Still an
            # IndexError: `wait_until` takes it as "not yet".)
            raise IndexError(self._out_of_range(index)) from None
        except TypeError:
            # "tuple indices must be integers or slices" named the list's
            # type, not the call: messages["ann@example.com"] looks up mail.
            raise TypeError(
                f"messages[...] takes a position or a slice, got "
                f"{shown_argument(index)}; to find mail by its fields, use "
                "filter(...) or one(...) (messages.filter(to=...))"
            ) from None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Messages):
            return self._items == other._items
        if isinstance(other, (list, tuple)):
            return list(self._items) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def filter(self, **criteria: Unpack[Criteria]) -> Messages:
        """The messages matching every criterion, in order."""
        __tracebackhide__ = True
        _match.check_names(criteria)
        return Messages(
            _match.select(self._items, criteria),
            self._source,
            scope=self._scope,
            narrowed=f"{self._narrowed}.filter({_match.describe(criteria)})",
            why_none=self._why_none,
        )

    def one(self, **criteria: Unpack[Criteria]) -> Message:
        """The only message matching ``criteria``; fails unless exactly one does."""
        __tracebackhide__ = True
        found = self.filter(**criteria)
        if len(found) != 1:
            raise AssertionError(
                failure_report(
                    "exactly 1 message",
                    criteria,
                    found,
                    self._source,
                    scope=self._scope,
                    among=(self._narrowed, self._items) if self._narrowed else None,
                    if_none=self._hints_if_none(),
                )
            )
        return found[0]

    def _hints_if_none(self) -> list[str]:
        """The mailbox's hints for a report on no mail at all; none inside a
        wait's condition (the report only says "not yet" there)."""
        if self._why_none is None or self._source or CHECKING.active:
            return []
        try:
            return self._why_none()
        except Exception:  # a hint is a nicety: the report stands without
            return []

    def first(self) -> Message:
        __tracebackhide__ = True
        if not self._items:
            raise AssertionError(self._none_left("first"))
        return self._items[0]

    def last(self) -> Message:
        __tracebackhide__ = True
        if not self._items:
            raise AssertionError(self._none_left("last"))
        return self._items[-1]

    def _out_of_range(self, index: object) -> str:
        if CHECKING.active:  # not yet, inside a wait: no report to build
            return f"no message [{index!r}] yet ({plural(len(self._items), 'message')})"
        if not self._source:
            return "\n".join(
                [
                    f"no message [{index!r}]: no messages arrived {self._scope} "
                    "(wait_for() waits for mail that is on its way)",
                    *self._hints_if_none(),
                ]
            )
        held = plural(len(self._items), "message")
        head = f"no message [{index!r}]: messages{self._narrowed} holds {held}."
        # The listing of what arrived, under a head of its own.
        listing = failure_report("", {}, (), self._source, scope=self._scope)
        return head + listing[listing.index("\n") :]

    def _none_left(self, which: str) -> str:
        if not self._source:
            return "\n".join(
                [
                    f"no messages arrived {self._scope}, so there is no {which} one",
                    *self._hints_if_none(),
                ]
            )
        # Like _out_of_range: which query left none ("found 0" said
        # nothing of it), and what arrived under a head of its own.
        head = (
            f"no {which} message: messages{self._narrowed} holds 0 messages."
            if self._narrowed
            else f"no {which} message: none left after filtering."
        )
        listing = failure_report("", {}, (), self._source, scope=self._scope)
        return head + listing[listing.index("\n") :]

    def __repr__(self) -> str:
        if not self._items:
            return "Messages([])"
        inner = "\n".join(f"  {m!r}," for m in self._items)
        return f"Messages([\n{inner}\n])"


def compared_lines(messages: Messages, other: Sequence[object]) -> list[str]:
    """The lines a failed plain ``assert messages == other`` shows (the
    plugin's assertrepr hook). A filter's or a slice's result is named as
    such: its being empty says nothing of what arrived."""
    narrowed = messages._narrowed
    what = f"messages{narrowed} holds" if narrowed else "arrived"
    lines = [f"{len(messages)} message(s) {what}, compared with {len(other)} item(s):"]
    lines.extend(f"  {message.summary()}" for message in messages)
    if not messages:
        lines.append("  (none)" if narrowed else "  (no messages arrived)")
    if isinstance(other, Messages) and other is not messages:
        lines.append("against:")
        lines.extend(f"  {message.summary()}" for message in other)
    elif other:
        # "compared with 1 item(s)" never showed the item: a list of
        # subjects, say, which no Message equals.
        lines.append("against:")
        lines.extend(f"  {shorten(repr(item), 200)}" for item in other[:_LISTED])
        if len(other) > _LISTED:
            lines.append(f"  ... {len(other) - _LISTED} more")
        if not any(isinstance(item, Message) for item in other):
            lines.append(
                "(a Message equals only itself: compare a field, e.g. "
                "[m.subject for m in smtpsink.messages] == [...])"
            )
    return lines


def failure_report(
    wanted: str,
    criteria: Any,
    found: Sequence[Message],
    everything: Sequence[Message],
    verb: str = "expected",
    *,
    scope: str = "in this test",
    elsewhere: Sequence[Elsewhere] = (),
    if_none: Sequence[str] = (),
    notes: Sequence[str] = (),
    among: tuple[str, Sequence[Message]] | None = None,
) -> str:
    """The text of a failed assertion: expectation, what arrived (``scope``:
    since when), closest candidate and why it differs, hints; ``elsewhere``:
    matching mail the test's other sinks got, by sink URL; ``if_none``:
    lines added when nothing arrived at all (what connected instead);
    ``notes``: lines added in any case (mail a fault threw away);
    ``among``: the query that narrowed what arrived (``.filter(...)``, a
    slice) and what it left, which the criteria were checked against."""
    criteria_text = _match.describe(criteria)
    head = f"{verb} {wanted}" + (f" matching {criteria_text}" if criteria_text else "")
    query, candidates = ("", everything) if among is None else among
    if among is not None:
        head += f" among the {plural(len(candidates), 'message')} of messages{query}"
    lines = [f"{head}; found {len(found)}."]
    if not everything:
        lines.append(f"No messages arrived {scope}.")
        lines.extend(if_none)
        lines.extend(arrived_elsewhere(elsewhere, criteria))
        lines.extend(notes)
        return "\n".join(lines)
    matched = {id(m) for m in found}
    # Among what the query left: one it took away may match these criteria,
    # and would be "closest" with no difference to show.
    closest = closest_to(candidates, criteria) if not found else None
    lines.append(f"Messages that arrived {scope} ({len(everything)}):")
    # Past _LISTED, the ones that matter are listed first: the matches and
    # the closest, then the newest (a test's mail comes after its setup's).
    shown = listed(everything, [*found, *([closest] if closest else [])])
    left = {id(m) for m in candidates} if among is not None else None
    previous = -1
    for index, message in shown:
        if index > previous + 1:
            lines.append(f"  ... {index - previous - 1} more")
        mark = "* " if id(message) in matched and criteria else "  "
        if left is not None and id(message) not in left and mark == "  ":
            mark = "- "
        lines.append(f"{mark}{summary_or_raw(message)}")
        previous = index
    if previous < len(everything) - 1:
        lines.append(f"  ... {len(everything) - 1 - previous} more")
    if criteria and found:
        lines.append("(* marks the messages that match)")
    if left is not None:
        lines.append(f"(- marks the messages that messages{query} left out)")
    if among is not None and not candidates:
        lines.append(f"messages{query} left none to look at.")
    lines.extend(closest_and_hints(closest, everything, criteria))
    lines.extend(arrived_elsewhere(elsewhere, criteria))
    lines.extend(notes)
    return "\n".join(lines)


#: At most this many of the messages that miss as few criteria as the best
#: are weighed by how near they come (difflib, on failure only).
_WEIGHED = 1000


def closest_to(candidates: Sequence[Message], criteria: Any) -> Message | None:
    """The message that misses the fewest of ``criteria``; among those, the
    one whose subject and addresses come nearest what was asked (the first
    one on a tie). None with no criteria or candidates."""
    if not criteria or not candidates:
        return None
    scored = [(len(_match.mismatches(m, criteria)), m) for m in candidates]
    best_score = min(score for score, _ in scored)
    best = [m for score, m in scored if score == best_score][:_WEIGHED]
    if len(best) == 1:
        return best[0]
    nearness = [_match.likeness(m, criteria) for m in best]
    return best[nearness.index(max(nearness))]


def closest_and_hints(
    closest: Message | None,
    everything: Sequence[Message],
    criteria: Any,
    closest_name: str = "",
) -> list[str]:
    """A report's "Closest" lines (how ``closest`` differs, if given; named
    ``closest_name``, by default its number) and its hints about
    ``everything``."""
    lines = []
    if closest is not None:
        name = closest_name or f"#{closest.number}"
        lines.append(f"Closest: {name}, which differs in:")
        for name in _match.mismatches(closest, criteria):
            lines.append(
                f"  {name}: wanted {_match.wanted_shown(closest, name, criteria[name])}, "
                f"got {_match.explain(closest, name, criteria[name])}"
            )
    for hint in dict.fromkeys(_match.hints(tuple(everything), criteria)):
        lines.append(f"Hint: {hint}")
    return lines


def listed(everything: Sequence[_T], wanted: Sequence[_T]) -> list[tuple[int, _T]]:
    """The messages a report lists, with their index, in arrival order: all
    of them up to _LISTED; past that the ``wanted`` ones (matches, the
    closest) and then the newest, _LISTED in all."""
    if len(everything) <= _LISTED:
        return list(enumerate(everything))
    position = {id(m): i for i, m in enumerate(everything)}
    chosen: dict[int, None] = {}
    for message in wanted:
        index = position.get(id(message))
        if index is not None and len(chosen) < _LISTED:
            chosen[index] = None
    for index in range(len(everything) - 1, -1, -1):
        if len(chosen) >= _LISTED:
            break
        chosen.setdefault(index, None)
    return [(i, everything[i]) for i in sorted(chosen)]


class Elsewhere(NamedTuple):
    """Mail another sink of the test got, for a failure report's hint."""

    url: str
    messages: Sequence[Message]
    matching: bool
    """Whether they match the failed assertion's criteria."""


def arrived_elsewhere(elsewhere: Sequence[Elsewhere], criteria: Any) -> list[str]:
    lines = []
    for url, messages, matching in elsewhere:
        what = "matching message" if matching and criteria else "message"
        none = "" if matching or not criteria else ", none matching"
        lines.append(
            f"Hint: {plural(len(messages), what)} arrived at another sink of "
            f"this test, {url}{none}:"
        )
        lines.extend(f"  {summary_or_raw(m)}" for m in messages[:_LISTED])
        if len(messages) > _LISTED:
            lines.append(f"  ... and {len(messages) - _LISTED} more")
    return lines
