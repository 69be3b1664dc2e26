"""Fingerprint properties: what changes a prefix id and what never does."""

from __future__ import annotations

import copy
import random
from typing import Any

import anthropic.types as at
import orjson
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachebench import fingerprint
from cachebench.diagnose.prints import Printer
from cachebench.fingerprint import key, ordered
from cachebench.providers import anthropic as adapter
from cachebench.types import Prompt

text = st.text(min_size=1, max_size=40)
json_scalar = st.one_of(st.integers(-1000, 1000), st.booleans(), text)
schema = st.dictionaries(st.text(min_size=1, max_size=8), json_scalar, min_size=1, max_size=5)

tools_st = st.lists(
    st.fixed_dictionaries({"name": st.from_regex(r"[a-z]{3,8}", fullmatch=True), "input_schema": schema}),
    min_size=0,
    max_size=3,
)
system_st = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), min_size=1, max_size=3)
turn_st = st.lists(st.tuples(text, text), min_size=0, max_size=3)

MARK = {"type": "ephemeral"}


def block_digests(prompt: Prompt) -> list[int]:
    """Each block's own digest (independent of the blocks before it), as diffs use them."""
    return [b.features.digest for b in Printer(keep_text=False).layer(prompt, 0, len(prompt.blocks))]


def build(tools: list[Any], system: list[Any], turns: list[tuple[str, str]], newest: str) -> dict[str, Any]:
    system = copy.deepcopy(system)
    system[-1]["cache_control"] = MARK
    messages: list[dict[str, Any]] = []
    for user, assistant in turns:
        messages.append({"role": "user", "content": [{"type": "text", "text": user}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": newest}]})
    return {"model": "claude-sonnet-5", "tools": copy.deepcopy(tools), "system": system, "messages": messages}


def prefix_id(req: dict[str, Any]) -> str | None:
    return key(adapter.parse_request(req)).prefix_id


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(tools_st, system_st, turn_st, text, st.integers(0, 2**32))
def test_key_order_never_changes_the_id(tools: Any, system: Any, turns: Any, newest: str, seed: int) -> None:
    """Re-ordering dict keys anywhere leaves ``prefix_id`` and ``breakpoint_ids`` unchanged."""
    req = build(tools, system, turns, newest)
    other = shuffled(req, random.Random(seed))
    pa, pb = adapter.parse_request(req), adapter.parse_request(other)
    a, b = key(pa), key(pb)
    assert a.prefix_id == b.prefix_id
    assert a.breakpoint_ids == b.breakpoint_ids
    assert block_digests(pa) == block_digests(pb)


@settings(max_examples=100)
@given(tools_st, system_st, turn_st, text)
def test_sdk_objects_and_dicts_give_the_same_id(tools: Any, system: Any, turns: Any, newest: str) -> None:
    """Passing SDK model objects instead of dicts does not change the id."""
    req = build(tools, system, turns, newest)
    # SDK objects carry no cache marker, so both forms use automatic (top-level) caching.
    plain = dict(req, cache_control=MARK)
    plain["system"] = [{k: v for k, v in b.items() if k != "cache_control"} for b in req["system"]]
    as_objects = dict(plain)
    as_objects["system"] = [at.TextBlock.model_validate(b) for b in plain["system"]]
    as_objects["messages"] = [
        {"role": m["role"], "content": [at.TextBlock.model_validate(b) for b in m["content"]]}
        for m in plain["messages"]
    ]
    assert prefix_id(plain) == prefix_id(as_objects)


@settings(max_examples=150)
@given(tools_st, system_st, turn_st, text, st.integers(0, 10))
def test_moving_a_marker_does_not_change_the_bytes_hashed(
    tools: Any, system: Any, turns: Any, newest: str, where: int
) -> None:
    """Block digests and chained hashes ignore where the cache markers sit."""
    req = build(tools, system, turns, newest)
    moved = copy.deepcopy(req)
    for block in moved["system"]:
        block.pop("cache_control", None)
    blocks = [b for m in moved["messages"] for b in m["content"]]
    blocks[where % len(blocks)]["cache_control"] = MARK
    pa, pb = adapter.parse_request(req), adapter.parse_request(moved)
    assert key(pa).chain == key(pb).chain
    assert block_digests(pa) == block_digests(pb)


@settings(max_examples=150)
@given(tools_st, system_st, turn_st, text, text)
def test_newest_user_turn_never_enters_the_id(
    tools: Any, system: Any, turns: Any, newest: str, other: str
) -> None:
    """Only the newest user turn differs: same ``prefix_id``."""
    assert prefix_id(build(tools, system, turns, newest)) == prefix_id(build(tools, system, turns, other))


@settings(max_examples=200)
@given(tools_st, system_st, turn_st, text, st.data())
def test_any_change_inside_the_prefix_changes_the_id(
    tools: Any, system: Any, turns: Any, newest: str, data: st.DataObject
) -> None:
    """Changing any tool, system block or earlier turn changes ``prefix_id``."""
    req = build(tools, system, turns, newest)
    # The prefix runs through the system breakpoint; mark the last earlier turn too so turns count.
    if turns:
        req["messages"][-2]["content"][-1]["cache_control"] = MARK
    base = prefix_id(req)
    targets: list[tuple[str, int]] = [("system", i) for i in range(len(system))]
    targets += [("tools", i) for i in range(len(tools))]
    targets += [("messages", i) for i in range(len(req["messages"]) - 1)]
    section, index = data.draw(st.sampled_from(targets))
    changed = copy.deepcopy(req)
    if section == "system":
        changed["system"][index]["text"] += "!"
    elif section == "tools":
        changed["tools"][index]["name"] += "x"
    else:
        changed["messages"][index]["content"][0]["text"] += "!"
    assert prefix_id(changed) != base


def test_model_and_provider_bind_the_id() -> None:
    """Caches are per model: the same prompt on another model has another id."""
    req = build([], [{"type": "text", "text": "S"}], [], "q")
    other = dict(req, model="claude-opus-5")
    assert prefix_id(req) != prefix_id(other)


def test_public_fingerprint_function() -> None:
    """``fingerprint()`` agrees with the tracker's id and is None without a breakpoint."""
    system = [{"type": "text", "text": "Stable", "cache_control": MARK}]
    messages = [{"role": "user", "content": "hello"}]
    fid = fingerprint(messages=messages, system=system, model="claude-sonnet-5")
    req = {"model": "claude-sonnet-5", "system": system, "messages": messages}
    assert fid == prefix_id(req)
    assert fingerprint(messages=messages, system="no markers", model="claude-sonnet-5") is None
    with pytest.raises(TypeError, match="model"):
        fingerprint(messages=messages, system=system, model=5)  # type: ignore[arg-type]
    assert (
        fingerprint(messages=[{"role": "user", "content": "other"}], system=system, model="claude-sonnet-5")
        == fid
    )


def test_a_dict_with_non_string_keys_is_fingerprinted_like_its_json() -> None:
    """A tool schema built with int keys (JSON would turn them into strings) still gets a
    prefix id, the one of the same schema with string keys; key order still never matters."""
    system = [{"type": "text", "text": "Stable", "cache_control": MARK}]

    def req(enum: dict[Any, str]) -> dict[str, Any]:
        tool = {"name": "pick", "input_schema": {"type": "object", "x-labels": enum}}
        return build([tool], system, [], "q")

    as_ints = prefix_id(req({2: "two", 1: "one"}))
    assert as_ints is not None
    assert as_ints == prefix_id(req({1: "one", 2: "two"})) == prefix_id(req({"1": "one", "2": "two"}))
    assert as_ints != prefix_id(req({"1": "one", "2": "TWO"}))


def test_reordered_schema_keeps_id_but_changes_order_digest() -> None:
    """A re-serialised tool schema keeps ``prefix_id`` but its order-sensitive digest differs."""
    tool = {"name": "t", "input_schema": {"type": "object", "properties": {"a": {}, "b": {}}}}
    reordered = {"input_schema": {"properties": {"b": {}, "a": {}}, "type": "object"}, "name": "t"}
    pa = adapter.parse_request({"model": "m", "tools": [dict(tool, cache_control=MARK)], "messages": []})
    pb = adapter.parse_request({"model": "m", "tools": [dict(reordered, cache_control=MARK)], "messages": []})
    assert key(pa).prefix_id == key(pb).prefix_id
    assert [ordered(p) for p in pa.pairs] != [ordered(p) for p in pb.pairs]
    assert [ordered(p) for p in pa.pairs] == [
        ordered(p) for p in adapter.parse_request({"model": "m", "tools": [dict(tool)], "messages": []}).pairs
    ]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_string_content_and_a_single_text_part_are_the_same_prompt(provider: str) -> None:
    """``"content": "hi"`` and ``[{"type": "text", "text": "hi"}]`` render the same prompt at the
    provider, so they hash alike block for block; a text part with more than its text (a
    citation) is a different block."""
    from cachebench.providers import adapter_for

    parse = adapter_for(provider).parse_request

    def request(messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "m", "messages": messages}
        if provider == "anthropic":
            body["system"] = [{"type": "text", "text": "You are terse.", "cache_control": MARK}]
        return body

    plain = [{"role": "user", "content": "Where is order 7?"}, {"role": "assistant", "content": "Shipped."}]
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "Where is order 7?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Shipped."}]},
    ]
    cited = [
        {"role": "user", "content": [{"type": "text", "text": "Where is order 7?", "citations": [{"n": 1}]}]},
        {"role": "assistant", "content": "Shipped."},
    ]
    newest = [{"role": "user", "content": "And order 8?"}]
    a, b, c = (key(parse(request(m + newest))) for m in (plain, parts, cited))
    assert a.chain == b.chain and a.prefix_id == b.prefix_id is not None
    assert c.chain != a.chain


def documented_chain(prompt: Prompt) -> tuple[list[int], list[int]]:
    """``chain`` and ``cum`` written from fingerprint's documented definition, not its code.

    The stream is, block after block, ``[section, payload]`` as compact JSON with sorted keys and
    a comma after it; request settings go in as ``["settings", settings]`` (and a comma) just
    before the first message block, hashed but not counted in ``cum``. ``chain[i]`` is xxh3-64
    of the stream through block ``i``, seeded with the xxh3-64 of ``provider NUL model NUL``."""
    seed = xxhash.xxh3_64_intdigest(f"{prompt.provider}\x00{prompt.model or ''}\x00".encode())
    stream = b""
    counted = 0
    chain: list[int] = []
    cum: list[int] = []
    settings_done = prompt.settings is None
    for section, payload in prompt.pairs:
        if not settings_done and section == "messages":
            stream += orjson.dumps(["settings", prompt.settings], option=orjson.OPT_SORT_KEYS) + b","
            settings_done = True
        block = orjson.dumps([section, payload], option=orjson.OPT_SORT_KEYS) + b","
        stream += block
        counted += len(block)
        chain.append(xxhash.xxh3_64_intdigest(stream, seed))
        cum.append(counted)
    return chain, cum


@given(tools_st, system_st, turn_st, text, st.data())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_the_key_is_the_documented_hash_chain(
    tools: Any, system: Any, turns: Any, newest: str, data: st.DataObject
) -> None:
    """The key hashes whole runs between breakpoints and the per-block chain only when asked
    for; both must equal the chain written here from the documented canonical form (an oracle
    that shares no code with fingerprint): the breakpoint hashes and sizes, ``prefix_id`` (the
    chain through the last breakpoint before the newest turn, or through the block before that
    turn when every breakpoint is in it), and every position of the chain."""
    req = build(tools, system, turns, newest)
    blocks = [*req["tools"], *req["system"], *(m["content"][0] for m in req["messages"])]
    for b in blocks:
        b.pop("cache_control", None)
    marked = data.draw(st.lists(st.integers(0, len(blocks) - 1), max_size=4, unique=True))
    for i in marked:
        blocks[i]["cache_control"] = {"type": "ephemeral", "ttl": data.draw(st.sampled_from(["5m", "1h"]))}
    if data.draw(st.booleans()):
        req["tool_choice"] = {"type": "auto"}  # settings: hashed before the first message block
    if data.draw(st.booleans()):
        req["cache_control"] = {"type": "ephemeral"}  # automatic caching marks the last block
    prompt = adapter.parse_request(req)
    chain, cum = documented_chain(prompt)
    marks = [p for p, _ in prompt.marks]
    k = key(prompt)
    assert not k.materialized  # the breakpoint values below come from the run-at-a-time hashing
    assert k.n_blocks == len(chain) == len(blocks)
    assert k.breakpoints == tuple(marks)
    assert k.bp_hashes == tuple(chain[p] for p in marks)
    assert k.bp_bytes == tuple(cum[p] for p in marks)
    assert k.breakpoint_ids == tuple(format(chain[p], "016x") for p in marks)
    if marks:
        before_turn = [p for p in marks if p < prompt.turn_start]
        end = before_turn[-1] if before_turn else prompt.turn_start - 1
        assert k.prefix_end == end
        assert k.prefix_id == format(chain[end], "016x")
        assert k.prefix_hash == chain[end]
    else:
        assert k.prefix_id is None
    assert [k.hash_at(p) for p in range(len(chain))] == chain
    assert list(k.chain) == chain and list(k.cum) == cum
    assert k.total_bytes == cum[-1] == sum(k.sizes)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.sampled_from([b"{", b"[", b"\\", b'"', b"n", b" ", b"x", b"]"]), max_size=80).map(b"".join),
    st.integers(0, 40),
)
def test_the_quick_search_for_json_in_text_finds_what_searching_each_mark_finds(
    data: bytes, repeat: int
) -> None:
    """A block's features parse it as content when its bytes hold a mark of JSON inside a
    string; the search that looks around each ``[`` and backslash (and falls back past a
    number of them) answers as searching for every mark does, also far past that number."""
    from cachebench.diagnose import prints

    for sample in (data, data * repeat, b"[x" * repeat + data, b"\\x" * repeat + data):
        assert prints._carries_json(sample) == any(m in sample for m in prints._JSON_IN_TEXT), sample


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=12), st.lists(st.integers(0, 3), max_size=12))
def test_the_equal_run_of_two_chunk_digest_runs_counts_their_shared_leading_digests(
    a: list[int], b: list[int]
) -> None:
    """Where two blocks' chunk digests first differ (from the start, or from the end) locates a
    change: the count of leading digests two packed runs share, whatever their lengths."""
    from array import array

    from cachebench.diagnose import prints

    def packed(values: list[int]) -> bytes:
        return array("Q", [v * 0x9E3779B97F4A7C15 % 2**64 for v in values]).tobytes()

    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    assert prints._equal_run(packed(a), packed(b)) == shared


def test_a_block_with_a_key_that_is_not_a_string_is_in_the_chain_as_its_canonical_bytes() -> None:
    """A dict with an int key (a tool's input built in Python) cannot be serialised with
    string keys only: its block goes in as orjson writes it with the key made a string, in the
    breakpoint's run and in the per-block chain alike (the oracle: the documented stream)."""
    pairs = [
        ("tools", {"name": "lookup", "input_schema": {"type": "object"}}),
        ("messages", {"type": "tool_use", "input": {1: "first", "b": 2}}),
        ("messages", {"type": "text", "text": "And then?"}),
    ]
    prompt = Prompt("anthropic", "claude-sonnet-4-5", pairs, [(1, "5m")], 2)
    seed = xxhash.xxh3_64_intdigest(b"anthropic\x00claude-sonnet-4-5\x00")
    option = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    stream = b""
    chain = []
    for pair in pairs:
        stream += orjson.dumps(list(pair), option=option) + b","
        chain.append(xxhash.xxh3_64_intdigest(stream, seed))
    k = key(prompt)
    assert k.bp_hashes == (chain[1],)
    assert list(k.chain) == chain
