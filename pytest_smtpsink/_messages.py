"""`Messages`: an ordered, read-only snapshot of messages with queries, and
the failure report every message assertion shares (what was expected, what
arrived, the closest candidate and why it differs).

Test side; pure (it reads messages, never the store).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from . import _match
from ._message import Message, summary_or_raw
from ._text import plural

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._match import Criteria

_LISTED = 20


class Messages(Sequence[Message]):
    """An ordered, read-only snapshot of messages, with queries."""

    def __init__(
        self,
        items: Sequence[Message],
        source: Sequence[Message] | None = None,
        *,
        scope: str = "in this test",
    ) -> None:
        self._items = tuple(items)
        # Everything the query started from, so that a failure after
        # filter() can still list what arrived, not just what was left.
        self._source = self._items if source is None else tuple(source)
        # Where they came from, as failure reports say it ("since clear()").
        self._scope = scope

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> Messages: ...
    def __getitem__(self, index: int | slice) -> Message | Messages:
        if isinstance(index, slice):
            return Messages(self._items[index], self._source, scope=self._scope)
        return self._items[index]

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
                )
            )
        return found[0]

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

    def _none_left(self, which: str) -> str:
        if not self._source:
            return f"no messages arrived {self._scope}, so there is no {which} one"
        return failure_report(
            f"a {which} message",
            {},
            (),
            self._source,
            verb="no messages left after filtering; wanted",
            scope=self._scope,
        )

    def __repr__(self) -> str:
        if not self._items:
            return "Messages([])"
        inner = "\n".join(f"  {m!r}," for m in self._items)
        return f"Messages([\n{inner}\n])"


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
) -> str:
    """The text of a failed assertion: expectation, what arrived (``scope``:
    since when), closest candidate and why it differs, hints; ``elsewhere``:
    matching mail the test's other sinks got, by sink URL; ``if_none``:
    lines added when nothing arrived at all (what connected instead);
    ``notes``: lines added in any case (mail a fault threw away)."""
    criteria_text = _match.describe(criteria)
    head = f"{verb} {wanted}" + (f" matching {criteria_text}" if criteria_text else "")
    lines = [f"{head}; found {len(found)}."]
    if not everything:
        lines.append(f"No messages arrived {scope}.")
        lines.extend(if_none)
        lines.extend(arrived_elsewhere(elsewhere, criteria))
        lines.extend(notes)
        return "\n".join(lines)
    matched = {id(m) for m in found}
    lines.append(f"Messages that arrived {scope} ({len(everything)}):")
    for message in everything[:_LISTED]:
        mark = "* " if id(message) in matched and criteria else "  "
        lines.append(f"{mark}{summary_or_raw(message)}")
    if len(everything) > _LISTED:
        lines.append(f"  ... and {len(everything) - _LISTED} more")
    if criteria and found:
        lines.append("(* marks the messages that match)")
    if criteria and not found:
        scored = [(len(_match.mismatches(m, criteria)), m) for m in everything]
        best_score = min(score for score, _ in scored)
        closest = next(m for score, m in scored if score == best_score)
        lines.append(f"Closest: #{closest.number}, which differs in:")
        for name in _match.mismatches(closest, criteria):
            lines.append(
                f"  {name}: wanted {_match.describe({name: criteria[name]}).split('=', 1)[1]}, "
                f"got {_match.explain(closest, name, criteria[name])}"
            )
    for hint in dict.fromkeys(_match.hints(tuple(everything), criteria)):
        lines.append(f"Hint: {hint}")
    lines.extend(arrived_elsewhere(elsewhere, criteria))
    lines.extend(notes)
    return "\n".join(lines)


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
