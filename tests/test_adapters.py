"""The provider adapters have one shape: the same names in every module, no adapter importing
another, model names normalised from the shared facts, usage read through each provider's
field table by one reader, and Bedrock's result inspection as a pure function."""

from __future__ import annotations

import ast
import inspect
import io
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody

from cachebench.providers import _base, adapter_for, anthropic, bedrock, gemini, openai
from cachebench.providers._base import (
    Adapter,
    ResultShape,
    TtlSplit,
    UsageTable,
    field,
    read_usage,
)
from cachebench.types import UNKNOWN_USAGE, Provider, Usage

ADAPTERS = {"anthropic": anthropic, "openai": openai, "bedrock": bedrock, "gemini": gemini}
PROVIDERS_DIR = Path(_base.__file__).parent
# What each adapter module is made of: the module and the private modules only it reads.
OWN_MODULES = {
    "anthropic": ("anthropic.py",),
    "openai": ("openai.py", "_openai_request.py"),
    "bedrock": ("bedrock.py", "_bedrock_request.py", "_bedrock_stream.py"),
    "gemini": ("gemini.py",),
}


def protocol_members() -> list[str]:
    names = [n for n in vars(Adapter) if not n.startswith("_")]
    return sorted({*names, *Adapter.__annotations__})


# -- one shape ---------------------------------------------------------------------------


def test_the_protocol_names_what_the_call_path_uses() -> None:
    """The orchestrator's names are all in the protocol, with the model normaliser."""
    assert set(protocol_members()) == {
        "NAME",
        "DEFAULT_TTL",
        "parse_request",
        "prompt_from_parts",
        "request_model",
        "normalize_model",
        "is_stream_request",
        "usage",
        "recorded_usage",
        "new_accumulator",
        "owns_client",
        "owns_response",
        "instrument",
        "min_cacheable",
        "read_tolerance",
        "read_step",
    }


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_adapter_defines_every_protocol_name_with_its_signature(name: str) -> None:
    """Each module has every name of :class:`Adapter`, functions taking the protocol's
    parameters (same names, same kinds), and its ``NAME`` is its provider."""
    module = ADAPTERS[name]
    assert name == module.NAME
    assert isinstance(module.DEFAULT_TTL, str)
    for member in protocol_members():
        assert hasattr(module, member), f"{name} lacks {member}"
        spec = getattr(Adapter, member, None)
        if not callable(spec):
            continue
        want = [(p.name, p.kind) for p in inspect.signature(spec).parameters.values()][1:]  # no self
        got = [(p.name, p.kind) for p in inspect.signature(getattr(module, member)).parameters.values()]
        assert got == want, f"{name}.{member}"


@pytest.mark.parametrize("provider", list(Provider))
def test_adapter_for_gives_the_module(provider: Provider) -> None:
    """``adapter_for`` accepts the enum and its string value and returns the module itself."""
    assert adapter_for(provider) is ADAPTERS[provider.value]
    assert adapter_for(provider.value) is ADAPTERS[provider.value]


def _provider_imports(path: Path) -> set[str]:
    """The adapter modules (``anthropic``, ``openai``, ...) a providers/ file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(a.name for a in node.names if a.name in ADAPTERS)
            elif node.module.split(".")[0] in ADAPTERS:
                found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("cachebench.providers.")
        ):
            found.add(node.module.split(".")[2])
    return found & set(ADAPTERS)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_no_adapter_imports_another(name: str) -> None:
    """What two adapters share sits in a private module (``_messages_body``, ``_stainless``)."""
    for filename in OWN_MODULES[name]:
        assert _provider_imports(PROVIDERS_DIR / filename) == set(), filename


def test_shared_modules_import_no_adapter() -> None:
    """The shared private modules depend on no adapter either."""
    for filename in ("_base.py", "_messages_body.py", "_stainless.py", "_stream.py"):
        assert _provider_imports(PROVIDERS_DIR / filename) == set(), filename


def test_no_adapter_touches_the_call_state() -> None:
    """No adapter module takes the orchestrator's call context (it returns values instead)."""
    for files in OWN_MODULES.values():
        for filename in files:
            assert "CallContext" not in (PROVIDERS_DIR / filename).read_text(), filename
    assert not hasattr(bedrock, "observe_result")
    assert not hasattr(gemini, "observe_result")


# -- model names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "normal"),
    [
        ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini", "projects/p/locations/l/publishers/google/models/gemini-3-pro", "gemini-3-pro"),
        ("gemini", "google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini", "gemini-2.5-flash-001", "gemini-2.5-flash-001"),
        ("gemini", "", None),
        (
            "bedrock",
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-x",
            "us.anthropic.claude-x",
        ),
        ("bedrock", "global.anthropic.claude-x", "global.anthropic.claude-x"),
        ("bedrock", "amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
        ("bedrock", "", None),
        ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("openai", "gpt-5.6-mini", "gpt-5.6-mini"),
    ],
)
def test_normalize_model(name: str, raw: str, normal: str | None) -> None:
    """Resource paths and ARNs are stripped as ``facts`` says; other names pass unchanged."""
    assert ADAPTERS[name].normalize_model(raw) == normal


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize("raw", [None, 42, ["gpt-4o"], {"model": "x"}])
def test_normalize_model_of_a_non_name_is_none(name: str, raw: object) -> None:
    """Anything that is not a string names no model."""
    assert ADAPTERS[name].normalize_model(raw) is None


def test_request_model_is_the_normalised_request_field() -> None:
    """Each adapter's ``request_model`` normalises its request's model field."""
    assert gemini.request_model({"model": "models/gemini-2.5-flash"}) == "gemini-2.5-flash"
    assert bedrock.request_model(
        {"modelId": "arn:aws:bedrock:r:1:foundation-model/amazon.nova-lite-v1:0"}
    ) == ("amazon.nova-lite-v1:0")
    assert anthropic.request_model({"model": "claude-opus-4-1"}) == "claude-opus-4-1"
    assert openai.request_model({"model": "gpt-4.1"}) == "gpt-4.1"


# -- usage tables ------------------------------------------------------------------------

EXCLUSIVE = UsageTable(
    input_tokens=field("in"),
    input_includes_cache=False,
    cache_read_tokens=field("read"),
    cache_write_tokens=field("write"),
    output_tokens=field("out"),
    ttl_split=TtlSplit(("split",), counts=(("5m", "w5m"), ("1h", "w1h"))),
)
INCLUSIVE = UsageTable(
    input_tokens=field("total", "totalCount"),
    input_includes_cache=True,
    cache_read_tokens=field(("details", "cached")),
    cache_write_tokens=field(("details", "written")),
    output_tokens=field("out"),
    billed_as_input=(field("tool"),),
    billed_as_output=(field("thoughts"),),
    ttl_split=TtlSplit(("rows",), row_ttl="ttl", row_tokens="n"),
    writes_reported=True,
)


def test_exclusive_input_is_the_uncached_input_as_it_is() -> None:
    """An exclusive input count is kept; the writes' TTL split gives the 1 h part."""
    u = read_usage(
        EXCLUSIVE, {"in": 7, "read": 100, "write": 30, "out": 5, "split": {"w5m": 10, "w1h": 20}}, model="m"
    )
    assert u == Usage(7, 100, 30, 20, 5, True, True, True, "m", None)


def test_inclusive_input_loses_reads_and_writes_then_gains_what_is_billed_as_input() -> None:
    """Inclusive: uncached = total - read - write (never below 0), plus extra input counts;
    output adds what is billed as output; rows of the split give the 1 h part."""
    body = {
        "total": 1000,
        "details": {"cached": 600, "written": 300},
        "out": 40,
        "tool": 5,
        "thoughts": 60,
        "rows": [{"ttl": "1h", "n": 200}, {"ttl": "5m", "n": 100}],
    }
    assert read_usage(INCLUSIVE, body) == Usage(105, 600, 300, 200, 100, True, True, True)
    over = read_usage(INCLUSIVE, {"total": 10, "details": {"cached": 600}, "tool": 5})
    assert (over.input_tokens, over.cache_read_tokens) == (5, 600)


def test_spellings_are_read_at_the_first_present_and_not_null() -> None:
    """Alternative spellings: a null first spelling falls through to the next."""
    assert read_usage(INCLUSIVE, {"total": None, "totalCount": 9}).input_tokens == 9
    assert read_usage(INCLUSIVE, {"total": 3, "totalCount": 9}).input_tokens == 3


def test_missing_and_null_fields_are_zero_and_writes_follow_the_split() -> None:
    """Missing or null counts are 0 beside a count that is there; a missing write count is the
    split's total; writes count as reported only when the count or the split is present
    (``writes_reported=None``)."""
    assert read_usage(EXCLUSIVE, {"out": 7}) == Usage(0, 0, 0, 0, 7, True, False, False)
    # (a count billed as input or as output alone is a count too)
    tool, thoughts = read_usage(INCLUSIVE, {"tool": 5}), read_usage(INCLUSIVE, {"thoughts": 3})
    assert (tool.known, tool.input_tokens, thoughts.known, thoughts.output_tokens) == (True, 5, True, 3)
    assert read_usage(EXCLUSIVE, {"in": None, "write": None, "split": None, "out": 0}) == Usage(
        0, 0, 0, 0, 0, True, False, False
    )
    from_split = read_usage(EXCLUSIVE, {"split": {"w5m": 10, "w1h": 20}})
    assert (from_split.cache_write_tokens, from_split.cache_write_1h_tokens) == (30, 20)
    assert from_split.writes_reported and from_split.ttl_split_reported
    assert read_usage(EXCLUSIVE, {"write": 0}).writes_reported is True


@pytest.mark.parametrize("usage", [None, "12", 12, [1, 2], object()])
def test_a_usage_that_is_not_a_record_is_unknown(usage: Any) -> None:
    """A usage that carries no named fields is unknown, never zeros."""
    assert read_usage(EXCLUSIVE, usage) is UNKNOWN_USAGE


@pytest.mark.parametrize("usage", [{}, {"in": None, "out": None, "write": None, "split": None}, {"other": 5}])
def test_a_usage_record_without_any_count_is_unknown(usage: Any) -> None:
    """A record with none of the table's counts (empty, every count null, only other fields)
    carries no counts either: unknown (with the model it was read for), never zeros."""
    found = read_usage(EXCLUSIVE, usage, model="m-1")
    assert found == UNKNOWN_USAGE._replace(model="m-1")
    assert not found.known


def test_sdk_objects_read_like_their_json() -> None:
    """Attribute objects read like the dict of their fields, nested ones too."""

    class Obj:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    as_json = {"total": 1000, "details": {"cached": 600, "written": 300}, "out": 4}
    as_obj = Obj(total=1000, details=Obj(cached=600, written=300), out=4)
    assert read_usage(INCLUSIVE, as_obj) == read_usage(INCLUSIVE, as_json)


def test_provider_tables_are_declared_with_their_convention() -> None:
    """Anthropic and Bedrock count input exclusive of cache tokens; OpenAI and Gemini include them."""
    assert not anthropic.USAGE.input_includes_cache
    assert not bedrock.CONVERSE_USAGE.input_includes_cache
    assert bedrock.ANTHROPIC_USAGE is anthropic.USAGE
    assert gemini.USAGE.input_includes_cache and not gemini.USAGE.writes_reported
    assert openai.CHAT_USAGE.input_includes_cache and openai.RESPONSES_USAGE.input_includes_cache


# -- Bedrock's result inspection ---------------------------------------------------------

ANTHROPIC_BODY = {
    "type": "message",
    "model": "claude-sonnet-4-5-20250929",
    "usage": {
        "input_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
        "output_tokens": 9,
    },
}
REQUEST = {
    "modelId": "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
}
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


class FakeEventStream:
    """What ``_bedrock_stream`` hooks on a botocore ``EventStream``."""

    def __init__(self) -> None:
        self._event_generator = iter(())
        self._parse_event = lambda message: message

    def close(self) -> None:
        return None


class BrokenRaw:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self, amt: int | None = None) -> bytes:
        raise self.error


def test_an_event_stream_is_a_stream_to_hook() -> None:
    """``stream`` (ConverseStream) or ``body`` (InvokeModelWithResponseStream) holding an
    EventStream: the shape names it, how to hook it and a fresh accumulator for the model."""
    for name in ("stream", "body"):
        events = FakeEventStream()
        result = {"ResponseMetadata": {}, name: events}
        shape = bedrock.inspect_result(result, REQUEST)
        assert isinstance(shape, ResultShape)
        assert shape.events is events and shape.hook is bedrock.hook_event_stream
        assert isinstance(shape.accumulator, bedrock.StreamAccumulator)
        assert shape.accumulator.usage() is UNKNOWN_USAGE
        assert result[name] is events  # untouched: the caller hooks it


def test_an_invoke_model_body_is_read_and_put_back() -> None:
    """The body is read, its usage returned with the request's model, and an equivalent body
    put back that the caller reads in full."""
    data = json.dumps(ANTHROPIC_BODY).encode()
    result: dict[str, Any] = {
        "body": StreamingBody(io.BytesIO(data), len(data)),
        "contentType": "application/json",
    }
    shape = bedrock.inspect_result(result, REQUEST)
    assert shape == ResultShape(Usage(5, 100, 0, 0, 9, True, True, False, MODEL))
    assert shape.hook is None and shape.error is None
    assert result["body"].read() == data


def test_a_failing_body_read_is_the_error_and_the_caller_reads_it_again() -> None:
    """A body whose read fails: the shape carries that exception (usage unknown), and the
    body put back raises the very same exception to the caller."""
    error = ConnectionResetError("peer went away")
    result: dict[str, Any] = {"body": StreamingBody(BrokenRaw(error), 10)}
    shape = bedrock.inspect_result(result, REQUEST)
    assert shape == ResultShape(UNKNOWN_USAGE, error)
    with pytest.raises(ConnectionResetError) as info:
        result["body"].read()
    assert info.value is error


def test_a_converse_response_is_its_usage() -> None:
    """A Converse dict with ``usage``: a finished response, model from the request."""
    result = {"output": {}, "stopReason": "end_turn", "usage": {"inputTokens": 3, "outputTokens": 4}}
    shape = bedrock.inspect_result(result, REQUEST)
    assert shape == ResultShape(Usage(3, 0, 0, 0, 4, True, True, False, MODEL))


@pytest.mark.parametrize("result", [{"ResponseMetadata": {}}, ("usage",), "usage", None])
def test_anything_else_is_left_to_the_shared_path(result: Any) -> None:
    """No stream, body or usage (or not a dict at all): None."""
    assert bedrock.inspect_result(result, REQUEST) is None
