"""Saved calls read back from files (cachebench.importing): saved-call records, Anthropic
Message Batches and OpenAI Batch file pairs, over the recorded bodies in tests/import_cases
(built from tests/usage_cases), with malformed lines reported by line number."""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from cachebench.importing import ImportFileError, SavedCall, Skipped, read_saved
from cachebench.types import Provider

from . import fakes

CASES = Path(__file__).parent / "import_cases"
USAGE_CASES = Path(__file__).parent / "usage_cases"

RECORDS = CASES / "records.jsonl"
A_REQUESTS = CASES / "anthropic_batch_requests.jsonl"
A_RESULTS = CASES / "anthropic_batch_results.jsonl"
O_INPUT = CASES / "openai_chat_batch_input.jsonl"
O_OUTPUT = CASES / "openai_chat_batch_output.jsonl"
O_ERRORS = CASES / "openai_chat_batch_errors.jsonl"
R_INPUT = CASES / "openai_responses_batch_input.jsonl"
R_OUTPUT = CASES / "openai_responses_batch_output.jsonl"


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_custom_id(path: Path) -> dict[str, dict[str, Any]]:
    return {row["custom_id"]: row for row in rows(path)}


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def dumps(value: Any) -> str:
    return json.dumps(value)


def skips(items: list[SavedCall | Skipped]) -> list[tuple[str, int, str, str]]:
    """(file name, line, kind, reason) of each line skipped; orjson's own words for bad JSON
    are left out, the column where it stopped kept."""
    return [
        (
            Path(s.source).name,
            s.line,
            s.kind,
            re.sub(r"^not valid JSON: .* at column", "not valid JSON at column", s.reason),
        )
        for s in items
        if isinstance(s, Skipped)
    ]


def calls(items: list[SavedCall | Skipped]) -> list[SavedCall]:
    return [c for c in items if isinstance(c, SavedCall)]


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


# -- saved-call records ---------------------------------------------------------------------------


def test_records_file_yields_each_call_with_its_fields() -> None:
    """Every line of a records file is one call with its request, response, provider,
    timestamp (numbers and ISO-8601 strings, in seconds), elapsed time and flow; absent and
    null optional fields are None."""
    source = str(RECORDS)
    r = rows(RECORDS)
    assert list(read_saved(source)) == [
        SavedCall(
            source, 1, Provider.ANTHROPIC, r[0]["request"], r[0]["response"], 1790000000.25, 812.5, "support"
        ),
        SavedCall(
            source,
            2,
            Provider.ANTHROPIC,
            r[1]["request"],
            r[1]["response"],
            utc(2026, 9, 21, 14, 13, 50),
            240.0,
            "support",
        ),
        SavedCall(source, 3, None, r[2]["request"], r[2]["response"], 1790000100.0, None, None),
        SavedCall(
            source,
            4,
            Provider.BEDROCK,
            r[3]["request"],
            r[3]["response"],
            utc(2026, 9, 21, 14, 15, 30),
            None,
            "triage",
        ),
        SavedCall(source, 5, Provider.GEMINI, r[4]["request"], r[4]["response"], None, None, None),
    ]
    assert all(type(c.timestamp) is float for c in calls(list(read_saved(source)))[:4])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1790000000, 1790000000.0),
        (1790000000.5, 1790000000.5),
        ("2026-09-21T14:13:20Z", 1790000000.0),
        ("2026-09-21T14:13:20.500+00:00", 1790000000.5),
        ("2026-09-21T16:13:20+02:00", 1790000000.0),
        ("2026-09-21 14:13:20z", 1790000000.0),
        ("2026-09-21T14:13:20", 1790000000.0),
        (99999999999, 99999999999.0),
        ("9999-12-31T00:00:00Z", utc(9999, 12, 31, 0, 0, 0)),
    ],
)
def test_timestamps_in_seconds_or_iso_8601(tmp_path: Path, value: Any, seconds: float) -> None:
    """A timestamp is seconds since the epoch or an ISO-8601 string; one without an offset is UTC."""
    assert utc(2026, 9, 21, 14, 13, 20) == 1790000000.0
    line = dumps({"request": {}, "response": {}, "timestamp": value})
    [call] = read_saved(write(tmp_path / "t.jsonl", [line]))
    assert isinstance(call, SavedCall)
    assert call.timestamp == seconds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "timestamp is a boolean: seconds since the epoch or ISO-8601"),
        ([], "timestamp is an array: seconds since the epoch or ISO-8601"),
        ("yesterday", "timestamp 'yesterday' is not an ISO-8601 date and time"),
        ("", "timestamp '' is not an ISO-8601 date and time"),
        (1790000000000, "timestamp 1790000000000 looks like milliseconds, not seconds"),
        (1e11, "timestamp 100000000000.0 looks like milliseconds, not seconds"),
    ],
)
def test_bad_timestamps_are_reported(tmp_path: Path, value: Any, reason: str) -> None:
    """A timestamp that is not a time, or is in milliseconds, makes its line malformed."""
    line = dumps({"request": {}, "response": {}, "timestamp": value})
    assert skips(list(read_saved(write(tmp_path / "t.jsonl", [line])))) == [
        ("t.jsonl", 1, "malformed", reason)
    ]


def test_a_timestamp_without_offset_is_utc_whatever_the_local_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ISO-8601 time without an offset is read as UTC, not in the machine's local zone."""
    line = dumps({"request": {}, "response": {}, "timestamp": "2026-09-21T14:13:20"})
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        [call] = read_saved(write(tmp_path / "t.jsonl", [line]))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert isinstance(call, SavedCall)
    assert call.timestamp == 1790000000.0


def test_malformed_record_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    """Each bad line is reported with its 1-based line number (blank lines count, and are not
    reported) and why; every good line around them is still read."""
    good = dumps({"request": {"model": "m"}, "response": {"id": "r"}, "flow": "f"})
    lines = [
        good,
        "",
        "{not json",
        "[1, 2]",
        '"a string"',
        "   ",
        dumps({"response": {}}),
        dumps({"request": {}}),
        dumps({"request": None, "response": {}}),
        dumps({"request": [], "response": {}}),
        dumps({"request": {}, "response": "text"}),
        dumps({"request": {}, "response": {}, "provider": "azure"}),
        dumps({"request": {}, "response": {}, "provider": 5}),
        dumps({"request": {}, "response": {}, "elapsed_ms": -1}),
        dumps({"request": {}, "response": {}, "elapsed_ms": "fast"}),
        dumps({"request": {}, "response": {}, "flow": 3}),
        good + "\r",
        dumps({"request": {}, "response": {}, "provider": " OpenAI "}),
    ]
    items = list(read_saved(write(tmp_path / "calls.jsonl", lines)))
    providers = "anthropic, openai, bedrock, gemini"
    assert skips(items) == [
        ("calls.jsonl", 3, "malformed", "not valid JSON at column 2"),
        ("calls.jsonl", 4, "malformed", "not a JSON object but an array"),
        ("calls.jsonl", 5, "malformed", "not a JSON object but a string"),
        ("calls.jsonl", 7, "malformed", "no request"),
        ("calls.jsonl", 8, "malformed", "no response"),
        ("calls.jsonl", 9, "malformed", "no request"),
        ("calls.jsonl", 10, "malformed", "request is an array, not an object"),
        ("calls.jsonl", 11, "malformed", "response is a string, not an object"),
        ("calls.jsonl", 12, "malformed", f"provider 'azure' is not one of {providers}"),
        ("calls.jsonl", 13, "malformed", f"provider 5 is not one of {providers}"),
        ("calls.jsonl", 14, "malformed", "elapsed_ms -1 is not a number of milliseconds"),
        ("calls.jsonl", 15, "malformed", "elapsed_ms 'fast' is not a number of milliseconds"),
        ("calls.jsonl", 16, "malformed", "flow is a number, not a string"),
    ]
    assert [(c.line, c.provider, c.flow, c.request) for c in calls(items)] == [
        (1, None, "f", {"model": "m"}),
        (17, None, "f", {"model": "m"}),
        (18, Provider.OPENAI, None, {}),
    ]


def test_bom_and_gzip_are_read_like_plain_utf8(tmp_path: Path) -> None:
    """A UTF-8 BOM before the first line is ignored, and a gzip-compressed file (known by its
    content, whatever its name) reads line for line like the plain one."""
    text = RECORDS.read_bytes()
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text)
    compressed = tmp_path / "calls.log"
    compressed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text))
    plain = [
        (c.line, c.provider, c.request, c.response, c.timestamp, c.flow)
        for c in calls(list(read_saved(RECORDS)))
    ]
    for path in (with_bom, compressed):
        items = list(read_saved(path))
        assert [
            (c.line, c.provider, c.request, c.response, c.timestamp, c.flow) for c in calls(items)
        ] == plain
        assert len(items) == 5


def test_format_is_found_past_leading_bad_lines(tmp_path: Path) -> None:
    """The format is that of the first line of a known shape: bad lines before it are reported
    like any other, and a record carrying a custom_id is still a record."""
    record = dumps({"request": {}, "response": {}, "custom_id": "x"})
    items = list(read_saved(write(tmp_path / "calls.jsonl", ["oops", dumps({"other": 1}), record])))
    assert skips(items) == [
        ("calls.jsonl", 1, "malformed", "not valid JSON at column 1"),
        ("calls.jsonl", 2, "malformed", "no request"),
    ]
    assert [c.line for c in calls(items)] == [3]


# -- batch pairs ----------------------------------------------------------------------------------


def test_anthropic_batch_pair() -> None:
    """Each succeeded result is a call with the params of the request of the same custom_id and
    the result's Message (no timestamp: a Message has none); errored, expired and canceled
    results are reported as failed, at their results line."""
    requests, results = by_custom_id(A_REQUESTS), by_custom_id(A_RESULTS)
    source = str(A_RESULTS)

    def call(line: int, custom_id: str) -> SavedCall:
        message = results[custom_id]["result"]["message"]
        params = requests[custom_id]["params"]
        return SavedCall(source, line, Provider.ANTHROPIC, params, message, custom_id=custom_id)

    assert list(read_saved([A_REQUESTS, A_RESULTS])) == [
        Skipped(
            source,
            1,
            "failed",
            "result errored: invalid_request_error: max_tokens: 1024 > 512, which is the maximum allowed",
        ),
        call(2, "ticket-1"),
        Skipped(source, 3, "failed", "result expired"),
        call(4, "ticket-2"),
        Skipped(source, 5, "failed", "result canceled"),
    ]


def test_openai_chat_batch_pair_with_its_error_file() -> None:
    """Status-200 outputs are calls (the body, timestamped by its ``created``); the error file
    joins the same input, its lines (a non-200 status, an expired request) reported as failed."""
    inputs, outputs = by_custom_id(O_INPUT), by_custom_id(O_OUTPUT)
    source = str(O_OUTPUT)

    def call(line: int, custom_id: str, created: float) -> SavedCall:
        body = outputs[custom_id]["response"]["body"]
        return SavedCall(
            source, line, Provider.OPENAI, inputs[custom_id]["body"], body, created, custom_id=custom_id
        )

    assert list(read_saved([O_INPUT, O_OUTPUT, O_ERRORS])) == [
        call(1, "request-2", 1790003600.0),
        call(2, "request-1", 1790003540.0),
        Skipped(
            str(O_ERRORS),
            1,
            "failed",
            "status_code 400: invalid_request_error: context_length_exceeded: This model's maximum context length is 128000 tokens.",
        ),
        Skipped(
            str(O_ERRORS),
            2,
            "failed",
            "request failed: batch_expired: This request could not be executed before the completion window expired.",
        ),
    ]
    # Without the error file, its two requests have no result.
    assert skips(list(read_saved([O_OUTPUT, O_INPUT]))) == [
        (O_INPUT.name, 3, "unmatched", f"custom_id 'request-3' has no result in {O_OUTPUT}"),
        (O_INPUT.name, 4, "unmatched", f"custom_id 'request-4' has no result in {O_OUTPUT}"),
    ]


def test_openai_responses_batch_pair_is_timestamped_by_created_at() -> None:
    """A Responses body's time is its ``created_at`` (a float there)."""
    items = list(read_saved([R_OUTPUT, R_INPUT]))
    inputs = by_custom_id(R_INPUT)
    assert [(c.line, c.custom_id, c.timestamp, c.request) for c in calls(items)] == [
        (1, "summary-b", 1790007205.0, inputs["summary-b"]["body"]),
        (2, "summary-a", 1790007200.5, inputs["summary-a"]["body"]),
    ]
    assert skips(items) == []


PAIRS = [(A_REQUESTS, A_RESULTS), (O_INPUT, O_OUTPUT), (R_INPUT, R_OUTPUT)]


@pytest.mark.parametrize(("inputs", "outputs"), PAIRS, ids=["anthropic", "openai-chat", "openai-responses"])
def test_pairs_join_in_either_order_and_with_lines_moved(tmp_path: Path, inputs: Path, outputs: Path) -> None:
    """The pair is found whichever file comes first, and lines join by custom_id, not position:
    inputs rotated and outputs reversed give the same calls."""
    straight = list(read_saved([inputs, outputs]))
    assert list(read_saved([outputs, inputs])) == straight
    lines = inputs.read_text().splitlines()
    moved = write(tmp_path / "in.jsonl", lines[1:] + lines[:1])
    reversed_out = write(tmp_path / "out.jsonl", outputs.read_text().splitlines()[::-1])

    def joined(items: list[SavedCall | Skipped]) -> dict[str | None, tuple[Any, ...]]:
        return {c.custom_id: (c.request, c.response, c.timestamp) for c in calls(items)}

    again = list(read_saved([reversed_out, moved]))
    assert joined(again) == joined(straight)
    assert len(joined(straight)) >= 2
    assert sorted(s.kind for s in again if isinstance(s, Skipped)) == sorted(
        s.kind for s in straight if isinstance(s, Skipped)
    )


MESSAGE = by_custom_id(A_RESULTS)["ticket-1"]["result"]["message"]


def anthropic_result(custom_id: str) -> str:
    return dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": MESSAGE}})


def anthropic_request(custom_id: str, user: str = "Summarise.") -> str:
    params = {"model": "claude-sonnet-5", "max_tokens": 100, "messages": [{"role": "user", "content": user}]}
    return dumps({"custom_id": custom_id, "params": params})


def test_shuffled_batch_joins_each_result_to_its_own_request(tmp_path: Path) -> None:
    """Three hundred requests and their results, each file shuffled differently (blank lines
    among them): every result is joined to the request with its custom_id, read back at its
    offset in the input file."""
    order = random.Random(13)
    ids = [f"job-{n:03}" for n in range(300)]
    requests = [anthropic_request(i, user=f"question for {i}") for i in ids]
    results = [anthropic_result(i) for i in ids]
    order.shuffle(requests)
    order.shuffle(results)
    requests_file = write(tmp_path / "requests.jsonl", [line + "\n" for line in requests])
    results_file = write(tmp_path / "results.jsonl", results)
    items = list(read_saved([results_file, requests_file]))
    assert skips(items) == []
    assert [c.custom_id for c in calls(items)] == [json.loads(line)["custom_id"] for line in results]
    for c in calls(items):
        assert c.request["messages"][0]["content"] == f"question for {c.custom_id}"
        assert results[c.line - 1] == anthropic_result(str(c.custom_id))


def test_unmatched_custom_ids_are_reported(tmp_path: Path) -> None:
    """A result whose custom_id is not among the requests is reported at its line; requests with
    no result are reported after the results, at their input lines."""
    requests = write(tmp_path / "requests.jsonl", [anthropic_request(f"t-{n}") for n in (1, 2, 3)])
    results = write(tmp_path / "results.jsonl", [anthropic_result("t-9"), anthropic_result("t-2")])
    items = list(read_saved([requests, results]))
    assert skips(items) == [
        ("results.jsonl", 1, "unmatched", f"custom_id 't-9' is not in {requests}"),
        ("requests.jsonl", 1, "unmatched", f"custom_id 't-1' has no result in {results}"),
        ("requests.jsonl", 3, "unmatched", f"custom_id 't-3' has no result in {results}"),
    ]
    assert [(c.line, c.custom_id) for c in calls(items)] == [(2, "t-2")]


def test_duplicate_custom_ids_are_reported(tmp_path: Path) -> None:
    """A custom_id on two request lines is ambiguous: both lines and its results are reported and
    nothing of it is imported. A second result for one request is reported, the first kept."""
    requests = write(
        tmp_path / "requests.jsonl",
        [anthropic_request("t-1", "first"), anthropic_request("t-2"), anthropic_request("t-1", "second")],
    )
    results = write(
        tmp_path / "results.jsonl",
        [anthropic_result("t-1"), anthropic_result("t-2"), anthropic_result("t-2")],
    )
    items = list(read_saved([requests, results]))
    assert skips(items) == [
        ("requests.jsonl", 1, "duplicate", "custom_id 't-1' is on lines [1, 3]"),
        ("requests.jsonl", 3, "duplicate", "custom_id 't-1' is on lines [1, 3]"),
        ("results.jsonl", 1, "duplicate", f"custom_id 't-1' is on several lines of {requests}"),
        ("results.jsonl", 3, "duplicate", f"custom_id 't-2' had a result at {results}:2"),
    ]
    assert [(c.line, c.custom_id) for c in calls(items)] == [(2, "t-2")]


def test_malformed_anthropic_batch_lines(tmp_path: Path) -> None:
    """Bad lines in either file are reported at their own line; a bad request is reported at its
    input line when its result arrives, and the other lines are still joined."""
    requests = write(
        tmp_path / "requests.jsonl",
        [
            anthropic_request("t-1"),
            "{",
            dumps({"params": {}}),
            dumps({"custom_id": 7, "params": {}}),
            dumps({"custom_id": "t-2", "params": "text"}),
            anthropic_request("t-3"),
            anthropic_request("t-4"),
        ],
    )
    results = write(
        tmp_path / "results.jsonl",
        [
            anthropic_result("t-2"),
            "[]",
            dumps({"result": {"type": "succeeded"}}),
            dumps({"custom_id": "t-3"}),
            dumps({"custom_id": "t-4", "result": {"type": "succeeded"}}),
            anthropic_result("t-1"),
        ],
    )
    items = list(read_saved([requests, results]))
    assert skips(items) == [
        ("requests.jsonl", 2, "malformed", "not valid JSON at column 2"),
        ("requests.jsonl", 3, "malformed", "no custom_id"),
        ("requests.jsonl", 4, "malformed", "custom_id is a number"),
        ("requests.jsonl", 5, "malformed", "params is a string, not an object"),
        ("results.jsonl", 2, "malformed", "not a JSON object but an array"),
        ("results.jsonl", 3, "malformed", "no custom_id"),
        ("results.jsonl", 4, "malformed", "no result"),
        ("results.jsonl", 5, "malformed", "no result.message"),
    ]
    assert [(c.line, c.custom_id) for c in calls(items)] == [(6, "t-1")]


def test_malformed_and_unsupported_openai_batch_lines(tmp_path: Path) -> None:
    """An endpoint cachebench does not read (embeddings) is reported as unsupported at its input
    line; an output without a usable response or body is malformed."""
    body = by_custom_id(O_OUTPUT)["request-1"]["response"]["body"]

    def output(custom_id: str, response: Any) -> str:
        return dumps({"id": "batch_req_1", "custom_id": custom_id, "response": response, "error": None})

    inputs = write(
        tmp_path / "input.jsonl",
        [
            dumps(
                {
                    "custom_id": f"r-{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "m"},
                }
            )
            for n in range(1, 5)
        ]
        + [dumps({"custom_id": "e-1", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}})],
    )
    outputs = write(
        tmp_path / "output.jsonl",
        [
            output(
                "e-1", {"status_code": 200, "request_id": "req_1", "body": {"object": "list", "data": []}}
            ),
            output("r-1", None),
            output("r-2", {"status_code": 200, "request_id": "req_2"}),
            output("r-3", {"status_code": 200, "request_id": "req_3", "body": [1]}),
            output("r-4", {"status_code": 200, "request_id": "req_4", "body": body}),
        ],
    )
    items = list(read_saved([inputs, outputs]))
    assert skips(items) == [
        (
            "input.jsonl",
            5,
            "unsupported",
            "url '/v1/embeddings': cachebench reads /v1/chat/completions and /v1/responses",
        ),
        ("output.jsonl", 2, "malformed", "no response"),
        ("output.jsonl", 3, "malformed", "no response.body"),
        ("output.jsonl", 4, "malformed", "response.body is an array, not an object"),
    ]
    assert [(c.line, c.custom_id, c.request, c.timestamp) for c in calls(items)] == [
        (5, "r-4", {"model": "m"}, 1790003540.0)
    ]


def test_one_input_takes_every_output_of_its_provider(tmp_path: Path) -> None:
    """With a single input file, an output whose custom_ids it does not hold is still its pair:
    each such result is reported unmatched, and so is each request left without a result."""
    requests = write(tmp_path / "requests.jsonl", [anthropic_request("t-1")])
    results = write(tmp_path / "results.jsonl", [anthropic_result("z-1")])
    assert skips(list(read_saved([requests, results]))) == [
        ("results.jsonl", 1, "unmatched", f"custom_id 'z-1' is not in {requests}"),
        ("requests.jsonl", 1, "unmatched", f"custom_id 't-1' has no result in {results}"),
    ]


def test_several_batches_pair_by_their_custom_ids(tmp_path: Path) -> None:
    """With several input files of one provider, each output goes with the input that holds its
    custom_ids, whatever the order of the files."""
    a_in = write(tmp_path / "a_in.jsonl", [anthropic_request(f"a-{n}") for n in (1, 2)])
    b_in = write(tmp_path / "b_in.jsonl", [anthropic_request(f"b-{n}") for n in (1, 2, 3)])
    a_out = write(tmp_path / "a_out.jsonl", [anthropic_result(f"a-{n}") for n in (2, 1)])
    b_out = write(tmp_path / "b_out.jsonl", [anthropic_result(f"b-{n}") for n in (3, 1, 2)])
    items = list(read_saved([a_in, b_in, b_out, a_out]))
    assert skips(items) == []
    assert [(Path(c.source).name, c.line, c.custom_id) for c in calls(items)] == [
        ("a_out.jsonl", 1, "a-2"),
        ("a_out.jsonl", 2, "a-1"),
        ("b_out.jsonl", 1, "b-3"),
        ("b_out.jsonl", 2, "b-1"),
        ("b_out.jsonl", 3, "b-2"),
    ]


# -- files that cannot be imported ----------------------------------------------------------------


def test_a_file_that_cannot_be_imported_raises_before_anything_is_read(tmp_path: Path) -> None:
    """Missing, unreadable, empty and unknown files, a batch file without its partner, a file
    given twice, and batches whose pairing cannot be told raise ImportFileError from
    read_saved() itself, in one line naming the file (and, for a lone output, the kind of
    file it needs)."""
    empty = write(tmp_path / "empty.jsonl", ["", "  "])
    csv = write(tmp_path / "calls.csv", ["provider,model", "openai,gpt-4o"])
    other = write(tmp_path / "other.jsonl", [dumps({"messages": []}), dumps({"model": "m"})])
    twin_a = write(tmp_path / "twin_a.jsonl", [anthropic_request("t-1")])
    twin_b = write(tmp_path / "twin_b.jsonl", [anthropic_request("t-1")])
    twin_out = write(tmp_path / "twin_out.jsonl", [anthropic_result("t-1")])
    stray_out = write(tmp_path / "stray_out.jsonl", [anthropic_result("z-1")])
    known = (
        "no known format in its first {} lines (expected JSON Lines of saved calls with request and"
        " response, Anthropic Message Batches requests or results, or OpenAI Batch input or output)"
    )
    cases: list[tuple[list[Any], str]] = [
        ([tmp_path / "missing.jsonl"], f"{tmp_path / 'missing.jsonl'}: no such file"),
        ([tmp_path], f"{tmp_path}: cannot be read (Is a directory)"),
        ([empty], f"{empty}: empty file"),
        ([csv], f"{csv}: " + known.format(2)),
        ([other], f"{other}: " + known.format(2)),
        (
            [O_OUTPUT],
            f"{O_OUTPUT}: an OpenAI Batch output file needs its OpenAI Batch input file, which holds the"
            " requests (the prompt prefixes): pass both",
        ),
        (
            [RECORDS, A_RESULTS],
            f"{A_RESULTS}: an Anthropic Message Batches results file needs its Anthropic Message Batches"
            " requests file, which holds the requests (the prompt prefixes): pass both",
        ),
        (
            [A_REQUESTS],
            f"{A_REQUESTS}: an Anthropic Message Batches requests file needs its Anthropic Message"
            " Batches results file: pass both",
        ),
        ([RECORDS, str(RECORDS)], f"{RECORDS}: given twice (also as {RECORDS})"),
        (
            [twin_a, twin_b, twin_out],
            f"{twin_out}: its custom_ids are in {twin_a} and {twin_b}; import one batch at a time",
        ),
        (
            [twin_a, A_REQUESTS, stray_out, A_RESULTS],
            f"{stray_out}: none of the Anthropic Message Batches requests files given holds its custom_ids",
        ),
        ([], "no files given"),
    ]
    for paths, message in cases:
        with pytest.raises(ImportFileError) as raised:
            read_saved(paths)
        assert str(raised.value) == message
        assert isinstance(raised.value, ValueError)


def test_a_truncated_gzip_file_raises_while_read(tmp_path: Path) -> None:
    """A gzip file cut short is read up to the cut, then raises ImportFileError naming it."""
    data = gzip.compress(RECORDS.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) - 40])
    items = read_saved(cut)
    with pytest.raises(ImportFileError, match=rf"^{cut}: cannot be read after line \d+ \("):
        list(items)


def test_a_compressed_or_bom_prefixed_batch_input_is_joined(tmp_path: Path) -> None:
    """An input file with a BOM, plain or gzip-compressed, is read back at its offsets like a
    plain one."""
    bom = b"\xef\xbb\xbf" + A_REQUESTS.read_bytes()
    packed = tmp_path / "requests.jsonl.gz"
    packed.write_bytes(gzip.compress(bom))
    with_bom = tmp_path / "requests.jsonl"
    with_bom.write_bytes(bom)
    results = tmp_path / "results.jsonl"
    shutil.copy(A_RESULTS, results)
    plain = [(c.line, c.request, c.response) for c in calls(list(read_saved([A_REQUESTS, A_RESULTS])))]
    assert len(plain) == 2
    for requests in (packed, with_bom):
        assert [
            (c.line, c.request, c.response) for c in calls(list(read_saved([requests, results])))
        ] == plain


def test_the_format_is_looked_for_in_the_first_thousand_lines(tmp_path: Path) -> None:
    """A record on line 1,000 after lines of no known shape sets the format; on line 1,001 it
    is too late."""
    record = dumps({"request": {}, "response": {}})
    found = write(tmp_path / "found.jsonl", ["{}"] * 999 + [record])
    assert [c.line for c in calls(list(read_saved(found)))] == [1000]
    late = write(tmp_path / "late.jsonl", ["{}"] * 1000 + [record])
    with pytest.raises(ImportFileError, match=r": no known format in its first 1000 lines \("):
        read_saved(late)


# -- what the importer does with them -------------------------------------------------------------


def usage_cases() -> list[dict[str, Any]]:
    return [case for path in sorted(USAGE_CASES.glob("*.json")) for case in json.loads(path.read_text())]


def expected_counts(response: dict[str, Any]) -> dict[str, int]:
    """The hand-computed counts of the usage case whose usage this response carries."""
    usage = response.get("usage", response.get("usageMetadata"))
    [case] = [
        c
        for c in usage_cases()
        if "response" in c and c["response"].get("usage", c["response"].get("usageMetadata")) == usage
    ]
    keys = (
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
    )
    return {k: case["expected"][k] for k in keys}


@pytest.mark.parametrize(
    "paths",
    [[RECORDS], [A_REQUESTS, A_RESULTS], [O_INPUT, O_OUTPUT, O_ERRORS], [R_INPUT, R_OUTPUT]],
    ids=["records", "anthropic-batch", "openai-chat-batch", "openai-responses-batch"],
)
def test_recording_what_is_read_gives_the_responses_usage(paths: list[Path]) -> None:
    """Each call read, passed to CacheTracker.record() as the importer does, is recorded with the
    token counts of its response's usage, its provider, flow and (when it has one) timestamp."""
    tracker = fakes.quiet_tracker(clock=lambda: 1_795_000_000.0)
    read = calls(list(read_saved(paths)))
    assert len(read) >= 2
    for s in read:
        m = tracker.record(
            s.response,
            request=s.request,
            provider=s.provider,
            timestamp=s.timestamp,
            elapsed_ms=s.elapsed_ms,
            flow=s.flow,
        )
        assert m is not None
        got = {k: getattr(m, k) for k in expected_counts(s.response)}
        assert got == expected_counts(s.response)
        assert m.usage_known
        assert m.timestamp == (s.timestamp if s.timestamp is not None else 1_795_000_000.0)
        assert m.elapsed_ms == s.elapsed_ms
        if s.provider is not None:
            assert m.provider == s.provider.value
        if s.flow is not None:
            assert m.flow == s.flow
    tracker.close()
