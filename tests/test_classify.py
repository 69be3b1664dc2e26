"""The kind of a change: a volatile value (and which), a re-ordering, a re-serialisation, or
other content. The changed ranges here are found by comparing two texts the way a diff of
two prompts would (first and last differing character), not written by hand."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachebench.diagnose.classify import VALUE_SHAPES, normalized_digest, reordered, volatile_value


def changed_range(before: str, after: str) -> tuple[int, int]:
    """The range of ``after`` that differs from ``before``: common prefix and suffix removed."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end_b, end_a = len(before), len(after)
    while end_b > start and end_a > start and before[end_b - 1] == after[end_a - 1]:
        end_b -= 1
        end_a -= 1
    return start, end_a


def kind_of(before: str, after: str) -> str | None:
    return volatile_value(after, *changed_range(before, after))


T0 = datetime(2026, 12, 7, 9, 42, 13, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("template", "render", "expected"),
    [
        ("Now: {}. Be kind.", lambda t: t.isoformat(), "timestamp"),
        ("Now: {}. Be kind.", lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), "timestamp"),
        ("Now: {} (server time)", lambda t: t.strftime("%Y-%m-%d %H:%M:%S"), "timestamp"),
        ("Date: {}.", lambda t: t.strftime("%a, %d %b %Y %H:%M:%S GMT"), "timestamp"),
        ("The time is {} for you.", lambda t: t.strftime("%H:%M"), "timestamp"),
        ("Epoch {} seconds", lambda t: str(int(t.timestamp())), "timestamp"),
        ("Epoch {} ms", lambda t: str(int(t.timestamp() * 1000)), "timestamp"),
        ("Today is {}. Rules follow.", lambda t: t.strftime("%Y-%m-%d"), "date"),
        ("Today is {}. Rules follow.", lambda t: t.strftime("%B %d, %Y"), "date"),
        ("Today is {}. Rules follow.", lambda t: t.strftime("%d.%m.%Y"), "date"),
    ],
)
def test_times_and_dates_are_named(template: str, render: object, expected: str) -> None:
    for step in (timedelta(seconds=7), timedelta(minutes=3), timedelta(days=1), timedelta(days=40)):
        before = template.format(render(T0))  # type: ignore[operator]
        after = template.format(render(T0 + step))  # type: ignore[operator]
        if before == after:
            continue
        got = kind_of(before, after)
        if expected == "timestamp" and step >= timedelta(days=1) and "%" not in template:
            assert got in ("timestamp", "date"), (before, after, got)
        else:
            assert got == expected, (before, after, got)


def test_ids_are_named() -> None:
    rnd = random.Random(7)
    for _ in range(50):
        a, b = uuid.UUID(int=rnd.getrandbits(128)), uuid.UUID(int=rnd.getrandbits(128))
        assert kind_of(f"session {a} open", f"session {b} open") == "uuid"
        h1, h2 = f"{rnd.getrandbits(64):016x}", f"{rnd.getrandbits(64):016x}"
        if h1.isdigit() or h2.isdigit() or h1.isalpha() or h2.isalpha():
            continue
        assert kind_of(f"trace {h1} end", f"trace {h2} end") == "hex_id"
        r1, r2 = f"req_{rnd.getrandbits(48):012x}", f"req_{rnd.getrandbits(48):012x}"
        assert kind_of(f"request {r1}.", f"request {r2}.") in ("hex_id",), (r1, r2)


def test_numbers_are_named_and_words_are_not() -> None:
    assert kind_of("You have 42 unread messages", "You have 43 unread messages") == "number"
    assert kind_of("Balance: 1,204.50 USD", "Balance: 1,304.75 USD") == "number"
    assert kind_of("Be concise and kind.", "Be brief and kind.") is None
    assert kind_of("Answer in English.", "Answer in French.") is None
    # A change that runs from a number into words is no volatile value.
    assert kind_of("Use 3 examples per answer.", "Use 4 sentences per answer.") is None
    # A change inside a date but reaching into the next sentence is not one either.
    assert kind_of("Today is 2026-12-07. Be kind.", "Today is 2026-12-08. Be rude.") is None


def test_json_escaped_canonical_text_is_read_as_it_is() -> None:
    """The text classified is a block's canonical JSON: quotes and escapes around the value."""
    before = json.dumps(["system", {"text": f"Now {T0.isoformat()}\nRules", "type": "text"}])
    after = json.dumps(
        ["system", {"text": f"Now {(T0 + timedelta(seconds=61)).isoformat()}\nRules", "type": "text"}]
    )
    assert kind_of(before, after) == "timestamp"


@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2200, 1, 1)), st.integers(1, 10**7))
@settings(max_examples=200)
def test_any_iso_timestamp_change_is_a_timestamp(t: datetime, seconds: int) -> None:
    before = f"You are the support agent. Current time: {t.replace(microsecond=0).isoformat()}Z. Be helpful."
    after_t = t.replace(microsecond=0) + timedelta(seconds=seconds)
    after = f"You are the support agent. Current time: {after_t.isoformat()}Z. Be helpful."
    assert kind_of(before, after) == "timestamp"


def test_normalized_digest_ignores_key_order_json_in_text_and_whitespace() -> None:
    profile = {"name": "Ada", "plan": "pro", "limits": {"seats": 5, "region": "eu"}}
    shuffled = {"limits": {"region": "eu", "seats": 5}, "plan": "pro", "name": "Ada"}
    a = {"type": "text", "text": "Customer profile: " + json.dumps(profile)}
    b = {"type": "text", "text": "Customer profile: " + json.dumps(shuffled)}
    # Text that is JSON through and through, as a profile block often is.
    c = {"type": "text", "text": json.dumps(profile)}
    d = {"type": "text", "text": json.dumps(shuffled, indent=2)}
    assert normalized_digest(c) == normalized_digest(d)
    assert normalized_digest({"x": 1, "y": [1, {"b": 2, "a": 1}]}) == normalized_digest(
        {"y": [1, {"a": 1, "b": 2}], "x": 1}
    )
    assert normalized_digest({"text": "two  spaces\nand a line"}) == normalized_digest(
        {"text": "two spaces and a line"}
    )
    assert normalized_digest(c) != normalized_digest(
        {"type": "text", "text": json.dumps(dict(profile, plan="free"))}
    )
    assert normalized_digest(a) == normalized_digest(b)  # JSON inside prose, too
    e = {"type": "text", "text": "Customer profile: " + json.dumps(dict(shuffled, plan="free")) + " [end]"}
    assert normalized_digest(a) != normalized_digest(e)
    assert normalized_digest({"text": "a list [1, 2] and {not json} here"}) == normalized_digest(
        {"text": "a list [1,2] and  {not json} here"}
    )


def test_reordered_is_the_same_blocks_in_another_order() -> None:
    assert reordered([1, 2, 3], [3, 1, 2])
    assert not reordered([1, 2, 3], [1, 2, 3])
    assert not reordered([1, 2, 3], [1, 2, 4])
    assert not reordered([1, 1, 2], [1, 2, 2])  # the same digests, not as many times each
    assert reordered([1, 1, 2], [1, 2, 1])
    assert not reordered([1, 2, 3], [1, 2])


def test_normalized_digest_writes_whole_floats_as_integers() -> None:
    """``1.0`` and ``1`` are one number written two ways (a template that re-serialises
    numbers), in a value and in JSON carried inside text; ``1.5`` is another number."""
    assert normalized_digest({"discount": 1.0}) == normalized_digest({"discount": 1})
    assert normalized_digest('{"discount": 1.0}') == normalized_digest('{"discount":1}')
    assert normalized_digest({"discount": 1.5}) != normalized_digest({"discount": 1})


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        ("at 12:56:27 Amazon shipped", "timestamp", ["12:56:27"]),  # "Am" is not AM
        ("due 3:04 pm today", "timestamp", ["3:04 pm"]),
        ("epoch 2100000000 here", "timestamp", ["2100000000"]),  # after 2033-05-18
        ("Decimal 5, 2020 and Marching 3, 2021", "date", []),  # no month names
        ("March 5, 2020", "date", ["March 5, 2020"]),
        ("host 10.0.0.12 and v1.2.3.4", "date", []),  # addresses and versions
        ("Today is 07.12.2026. Rules", "date", ["07.12.2026"]),
    ],
)
def test_value_shapes_keep_to_their_values(text: str, kind: str, found: list[str]) -> None:
    """The shapes end where the value ends: an AM/PM must not run into a word, an epoch runs
    to 2286, a month is a month's name, and a dotted date is not a piece of an address."""
    shape = dict(VALUE_SHAPES)[kind]
    assert [m.group() for m in shape.finditer(text)] == found
