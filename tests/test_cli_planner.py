"""``cachebench lint`` and ``cachebench check``, each run as a real process on request files
written here, and ``docs/lint.md`` against the rule table.

The expected byte ranges are written down from the inputs: a block's bytes are its canonical
JSON ``["<section>", <payload>]`` (sorted keys, compact; cache markers left out), and an
Anthropic system text block's payload is its text, so a system text starts at byte
``len('["system","')`` = 11.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from cachebench._cli_planner import github_command, plural
from cachebench.planner import RULES

ROOT = Path(__file__).resolve().parents[1]
MODEL = "claude-sonnet-4-5"
POLICY = "You are the support assistant of Acme. Be brief and exact. " * 120  # about 1,800 tokens
SYSTEM_START = len('["system","')  # 11
CACHED = {"type": "ephemeral"}
STAMP = "2026-03-05 14:22:31"
UUIDS = ("0b9c6f1e-4f3a-4d2b-9a51-7e2f7c3d9a10", "5d1e8a2b-77c4-4e0f-8b3a-2c9d0e6f4b21")
TOOLS = [
    {
        "name": name,
        "description": f"Look up the customer's {name} by its number. " * 30,
        "input_schema": {"type": "object", "properties": {"number": {"type": "string"}}},
    }
    for name in ("orders", "refunds", "shipping")
]
CB102_FIX = (
    "Keep at most the provider's number: one at the end of each layer that is shared "
    "differently (all users, one user, one session)."
)
CB303_MESSAGE = (
    "tool_choice names one tool; when it changes between calls, every breakpoint in the messages misses."
)
CB303_FIX = (
    "Keep tool_choice and thinking the same across a flow's calls, or keep the breakpoints that "
    "matter before the messages."
)


def anthropic(system_text: str = POLICY, **extra: Any) -> dict[str, Any]:
    """An Anthropic Messages body: one cached system text block and a user question."""
    return {
        "model": MODEL,
        "max_tokens": 512,
        "system": [{"type": "text", "text": system_text, "cache_control": CACHED}],
        "messages": [{"role": "user", "content": "Where is my order?"}],
        **extra,
    }


def five_breakpoints() -> dict[str, Any]:
    """Five cached system blocks: one more than Anthropic allows."""
    system = [{"type": "text", "text": f"{POLICY}Part {i}.", "cache_control": CACHED} for i in range(5)]
    return {**anthropic(), "system": system}


def forced_tool() -> dict[str, Any]:
    """tool_choice naming one tool while a breakpoint sits in the messages (a warning only)."""
    return {
        "model": MODEL,
        "max_tokens": 512,
        "system": POLICY,
        "tools": [{"name": "lookup", "description": "Look up an order.", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Order 7?", "cache_control": CACHED}]},
            {"role": "assistant", "content": "Checking."},
            {"role": "user", "content": "Thanks"},
        ],
    }


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def write_lines(path: Path, values: list[Any]) -> Path:
    text = "".join((v if isinstance(v, str) else json.dumps(v)) + "\n" for v in values)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def cachebench(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CACHEBENCH_STRICT": "1", "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-m", "cachebench", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def canonical_len(section: str, payload: Any) -> int:
    """The length of a block's canonical bytes, for ASCII payloads (sorted keys, compact)."""
    return len(json.dumps([section, payload], sort_keys=True, separators=(",", ":")))


# -- lint ----------------------------------------------------------------------------------------


def test_lint_a_clean_request_exits_0_with_only_the_summary(tmp_path: Path) -> None:
    """A cached system prompt with nothing volatile, one breakpoint above the minimum: no
    finding, the summary line alone, exit 0, nothing on stderr."""
    write_json(tmp_path / "clean.json", anthropic())
    done = cachebench(tmp_path, "lint", "clean.json")
    assert (done.returncode, done.stdout, done.stderr) == (0, "0 errors, 0 warnings in 1 request\n", "")


def test_lint_finds_a_timestamp_in_a_cached_system_prompt(tmp_path: Path) -> None:
    """A date and time to the second in a cached Anthropic system prompt is CB201, an error
    (exit 1), located at system block 0 on the value's own bytes: after the 11 bytes of
    '["system","' and the 14 of 'Current time: ', 19 bytes long."""
    write_json(tmp_path / "stamped.json", anthropic(f"Current time: {STAMP}. {POLICY}"))
    done = cachebench(tmp_path, "lint", "stamped.json")
    assert done.returncode == 1, done.stderr
    *findings, summary = done.stdout.splitlines()
    start = SYSTEM_START + len("Current time: ")
    assert start == 25
    assert len(findings) == 1
    assert findings[0].startswith(
        f"stamped.json:1: CB201 error (volatile-value) system block 0, bytes {start}-{start + len(STAMP)}: a timestamp "
    )
    assert findings[0].endswith(f" Fix: {RULES['CB201'].fix}")
    assert summary == "1 error, 0 warnings in 1 request"


def test_lint_finds_too_many_breakpoints_at_the_fifth(tmp_path: Path) -> None:
    """Five breakpoints on Anthropic: CB102 on the fifth one's block (system block 4, the
    whole block), naming the count and the limit."""
    body = five_breakpoints()
    write_json(tmp_path / "five.json", body)
    done = cachebench(tmp_path, "lint", "five.json")
    assert done.returncode == 1
    end = SYSTEM_START + len(body["system"][4]["text"]) + len('"]')
    assert done.stdout.splitlines() == [
        f"five.json:1: CB102 error (too-many-breakpoints) system block 4, bytes 0-{end}: "
        f"5 breakpoints; anthropic allows 4. Fix: {CB102_FIX}",
        "1 error, 0 warnings in 1 request",
    ]


def test_lint_json_is_a_list_of_findings_with_file_and_line(tmp_path: Path) -> None:
    """--json prints a JSON array: each finding's fields (code, severity, name, title, place,
    bytes, value type, request index) plus the file and the JSON Lines line it came from."""
    write_lines(tmp_path / "flow.jsonl", [anthropic(), anthropic(f"Current time: {STAMP}. {POLICY}")])
    done = cachebench(tmp_path, "lint", "--json", "flow.jsonl")
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)
    volatile = [f for f in findings if f["code"] == "CB201"]
    assert len(volatile) == 1
    f = volatile[0]
    assert {k: f[k] for k in ("file", "line", "request", "severity", "name", "title")} == {
        "file": "flow.jsonl",
        "line": 2,
        "request": 1,
        "severity": "error",
        "name": "volatile-value",
        "title": "A value that changes per request inside the cached prefix",
    }
    assert (f["section"], f["block_index"], f["position"]) == ("system", 0, 0)
    assert (f["byte_start"], f["byte_end"], f["value_type"]) == (25, 44, "timestamp")
    assert f["fix"] == RULES["CB201"].fix


def test_lint_github_format_prints_exact_workflow_commands(tmp_path: Path) -> None:
    """--format github: one ::error or ::warning command per finding, the file name's ',' and
    ':' escaped in its property, the title 'CODE name', the message then 'Fix: ...'."""
    write_lines(tmp_path / "team,a:v1.jsonl", [five_breakpoints()])
    write_json(tmp_path / "tools.json", forced_tool())
    done = cachebench(tmp_path, "lint", "--format", "github", "team,a:v1.jsonl", "tools.json")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "::error file=team%2Ca%3Av1.jsonl,line=1,title=CB102 too-many-breakpoints::"
        f"5 breakpoints; anthropic allows 4. Fix: {CB102_FIX}",
        f"::warning file=tools.json,line=1,title=CB303 dynamic-tool-choice::{CB303_MESSAGE} Fix: {CB303_FIX}",
        "1 error, 1 warning in 2 requests",
    ]


def test_github_commands_escape_data_and_properties() -> None:
    """A command's message escapes '%', CR and LF (%25, %0D, %0A); a property escapes those and
    ':' and ',' (%3A, %2C), as GitHub's toolkit does."""
    assert (
        github_command("error", "a:b,c%.json", 3, "CB201 x:y", "50% off\r\nnext: a, b")
        == "::error file=a%3Ab%2Cc%25.json,line=3,title=CB201 x%3Ay::50%25 off%0D%0Anext: a, b"
    )


def test_lint_strict_fails_on_a_warning(tmp_path: Path) -> None:
    """A warning alone exits 0; with --strict it exits 1."""
    write_json(tmp_path / "tools.json", forced_tool())
    assert cachebench(tmp_path, "lint", "tools.json").returncode == 0
    done = cachebench(tmp_path, "lint", "--strict", "tools.json")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"tools.json:1: CB303 warning (dynamic-tool-choice) request: {CB303_MESSAGE} Fix: {CB303_FIX}",
        "0 errors, 1 warning in 1 request",
    ]


def test_lint_a_malformed_line_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    """A line that is not JSON: exit 2 and one message naming file:line on stderr; the file's
    other lines and the other files are still linted (the timestamp on line 3 is found)."""
    write_lines(
        tmp_path / "saved.jsonl",
        [
            anthropic(),
            "{not json",
            {"request": anthropic(f"Current time: {STAMP}. {POLICY}"), "provider": "anthropic"},
        ],
    )
    write_json(tmp_path / "five.json", five_breakpoints())
    done = cachebench(tmp_path, "lint", "saved.jsonl", "five.json")
    assert done.returncode == 2
    assert re.fullmatch(r"cachebench: saved\.jsonl:2: not valid JSON: .*\n", done.stderr), done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines[:-1]] == [
        ["saved.jsonl:3:", "CB201"],
        ["five.json:1:", "CB102"],
    ]
    assert lines[-1] == "2 errors, 0 warnings in 3 requests; 1 line not linted (see stderr)"


def test_lint_reads_gzip_lines_and_wrappers_and_says_when_the_provider_is_unknown(tmp_path: Path) -> None:
    """A .jsonl.gz file is read; a body whose provider cannot be told is exit 2 at its line,
    and the same body in a wrapper naming the provider and model is linted."""
    bare = {"messages": [{"role": "user", "content": "Hello"}]}
    wrapped = {"request": bare, "provider": "anthropic", "model": MODEL}
    write_lines(tmp_path / "saved.jsonl.gz", [bare, wrapped])
    done = cachebench(tmp_path, "lint", "saved.jsonl.gz")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "cachebench: saved.jsonl.gz:1: cannot tell which provider this request is for"
    )
    assert done.stdout == "0 errors, 0 warnings in 1 request; 1 line not linted (see stderr)\n"


def test_lines_that_cannot_be_read_or_linted_are_listed_in_line_order(tmp_path: Path) -> None:
    """A line whose provider cannot be told (line 2) and a line that is not JSON (line 3): the
    file's problems on stderr in line order, whichever step found them."""
    bare = {"messages": [{"role": "user", "content": "Hello"}]}
    write_lines(tmp_path / "saved.jsonl", [anthropic(), bare, "{not json", anthropic()])
    done = cachebench(tmp_path, "lint", "saved.jsonl")
    assert done.returncode == 2
    found = [line.split(" ", 2)[1] for line in done.stderr.splitlines()]
    assert found == ["saved.jsonl:2:", "saved.jsonl:3:"], done.stderr


def test_lint_usage_errors_exit_2(tmp_path: Path) -> None:
    """An unknown --format or --provider, and a file that does not exist, exit 2."""
    write_json(tmp_path / "clean.json", anthropic())
    assert cachebench(tmp_path, "lint", "--format", "xml", "clean.json").returncode == 2
    assert cachebench(tmp_path, "lint", "--provider", "acme", "clean.json").returncode == 2
    missing = cachebench(tmp_path, "lint", "missing.json")
    assert missing.returncode == 2
    assert missing.stderr.startswith("cachebench: missing.json: cannot be read")


# -- check ---------------------------------------------------------------------------------------


def test_check_fails_on_reordered_tools(tmp_path: Path) -> None:
    """Two builds whose tools come in another order: exit 1, CB202 on the second build, and
    the prefix difference on line 2 at tools block 0 (the reversed list's first tool, whole),
    kind reordered."""
    write_lines(tmp_path / "builds.jsonl", [anthropic(tools=TOOLS), anthropic(tools=TOOLS[::-1])])
    done = cachebench(tmp_path, "check", "builds.jsonl")
    assert done.returncode == 1, done.stderr
    end = canonical_len("tools", TOOLS[2])
    assert (
        f"builds.jsonl:2: CB202 error (reordered-blocks) tools block 0, bytes 0-{end}: "
        f"the tools are the same as in request 0, in another order. Fix: {RULES['CB202'].fix}"
    ) in done.stdout.splitlines()
    differs = [line for line in done.stdout.splitlines() if ": prefix differs: " in line]
    assert len(differs) == 1
    assert differs[0].startswith(
        f"builds.jsonl:2: prefix differs: line 2 differs from line 1: "
        f"tools block 0, bytes 0-{end}, kind reordered: "
    )
    assert "reordered" in differs[0] and " Fix: " in differs[0]


def test_check_names_every_build_that_differs(tmp_path: Path) -> None:
    """Build 2 re-orders the tools, build 3 puts another time in the system prompt, build 4 is
    the first again: builds 2 and 3 are named, each with its own kind; the summary counts the
    one file."""
    first = anthropic(f"Built at {STAMP}. {POLICY}", tools=TOOLS)
    later = anthropic(f"Built at {STAMP.replace('14:22:31', '14:23:05')}. {POLICY}", tools=TOOLS)
    reordered = anthropic(f"Built at {STAMP}. {POLICY}", tools=TOOLS[::-1])
    write_lines(tmp_path / "builds.jsonl", [first, reordered, later, first])
    done = cachebench(tmp_path, "check", "builds.jsonl")
    assert done.returncode == 1, done.stderr
    differs = [line for line in done.stdout.splitlines() if ": prefix differs: " in line]
    assert [line.split(":")[1] for line in differs] == ["2", "3"]
    assert "kind reordered" in differs[0]
    assert "kind volatile, value timestamp" in differs[1]
    assert done.stdout.splitlines()[-1].endswith("1 file whose cached prefix differs between builds")


def test_check_fails_on_a_uuid_that_differs_between_builds(tmp_path: Path) -> None:
    """A UUID at the end of the cached system prompt, another in each build: exit 1, the
    difference at system block 0 on the UUID's 36 bytes, kind volatile, value uuid (in the
    text and in --json)."""
    builds = [anthropic(f"{POLICY}Session {u}.") for u in UUIDS]
    write_json(tmp_path / "builds.json", builds)
    start = SYSTEM_START + len(POLICY) + len("Session ")
    done = cachebench(tmp_path, "check", "builds.json")
    assert done.returncode == 1
    assert (
        f"builds.json:1: prefix differs: request 1 differs from request 0: "
        f"system block 0, bytes {start}-{start + 36}, kind volatile, value uuid: "
    ) in done.stdout
    data = json.loads(cachebench(tmp_path, "check", "--json", "builds.json").stdout)
    [difference] = data["differences"]
    assert (difference["file"], difference["line"], difference["request"], difference["kind"]) == (
        "builds.json",
        1,
        1,
        "volatile",
    )
    diff = difference["diff"]
    assert (
        diff["section"],
        diff["block_index"],
        diff["byte_start"],
        diff["byte_end"],
        diff["value_type"],
    ) == (
        "system",
        0,
        start,
        start + 36,
        "uuid",
    )
    assert {f["code"] for f in data["findings"]} == {"CB201"}


def test_check_passes_two_identical_builds(tmp_path: Path) -> None:
    """The same request built twice, nothing volatile in it: exit 0, the summary alone, and an
    empty JSON report."""
    write_lines(tmp_path / "builds.jsonl", [anthropic(tools=TOOLS), anthropic(tools=TOOLS)])
    done = cachebench(tmp_path, "check", "builds.jsonl")
    assert (done.returncode, done.stdout, done.stderr) == (0, "0 errors, 0 warnings in 2 requests\n", "")
    data = json.loads(cachebench(tmp_path, "check", "--json", "builds.jsonl").stdout)
    assert data == {"findings": [], "differences": []}


def test_check_fails_on_builds_for_different_models(tmp_path: Path) -> None:
    """Two builds for different models differ although their bytes are equal (the provider
    caches per model): exit 1, a difference of kind model in GitHub's format."""
    builds = [anthropic(), {**anthropic(), "model": "claude-opus-4-1"}]
    write_json(tmp_path / "builds.json", builds)
    done = cachebench(tmp_path, "check", "--format", "github", "builds.json")
    assert done.returncode == 1
    assert (
        "::error file=builds.json,line=1,title=prefix differs::request 1 differs from request 0: "
        "kind model: built for anthropic/claude-opus-4-1, request 0 for anthropic/claude-sonnet-4-5"
    ) in done.stdout


def test_check_needs_two_builds(tmp_path: Path) -> None:
    """A file with one build has nothing to compare: exit 2 with a message naming the file."""
    write_json(tmp_path / "one.json", anthropic())
    done = cachebench(tmp_path, "check", "one.json")
    assert done.returncode == 2
    assert done.stderr == "cachebench: one.json: holds one request; check compares two or more builds of it\n"


# -- docs/lint.md --------------------------------------------------------------------------------


def test_docs_lint_md_documents_exactly_the_rule_table() -> None:
    """docs/lint.md names every rule of RULES with its code, name and exact title on one
    heading, and names no code that is not in RULES."""
    text = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (CB\d{3}) `([a-z-]+)`: (.+)$", text, re.MULTILINE))
    assert headings == {(r.code, r.name, r.title) for r in RULES.values()}
    assert set(re.findall(r"\bCB\d{3}\b", text)) == set(RULES)


def test_check_fails_when_a_build_lost_its_breakpoint(tmp_path: Path) -> None:
    """Two builds with the same blocks, one without its cache marker: not the same cached
    prefix (exit 1, kind breakpoints, the fix)."""
    marked = {
        "model": "claude-sonnet-5",
        "max_tokens": 64,
        "system": [
            {
                "type": "text",
                "text": "Answer as the shop's agent. " * 200,
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    plain = json.loads(json.dumps(marked))
    del plain["system"][0]["cache_control"]
    path = tmp_path / "builds.jsonl"
    path.write_text(json.dumps(marked) + "\n" + json.dumps(plain) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "cachebench", "check", str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{path}:2: prefix differs:" in run.stdout and "kind breakpoints" in run.stdout
    assert "its breakpoints are none, request 0's block 0 (5m)" in run.stdout


# -- naming builds, counts, help -----------------------------------------------------------------


def test_check_names_builds_by_their_line_in_a_json_lines_file(tmp_path: Path) -> None:
    """A build is named by its file line, whatever came before it: with line 2 not JSON and
    line 3 of no provider's shape (neither checked), the difference is 'line 4 differs from
    line 1' in text and GitHub's format, and in --json the difference and the findings give
    line 4 and request 3 (its place among the file's lines that are not blank), the first
    build line 1 and request 0 (where the finding, merged over both builds, is); the summary
    counts the 2 requests checked and the 2 lines not."""
    session = [anthropic(f"{POLICY}Session {u}.") for u in UUIDS]
    bare = {"messages": [{"role": "user", "content": "Hello"}]}
    write_lines(tmp_path / "builds.jsonl", [session[0], "{oops", bare, session[1]])
    start = SYSTEM_START + len(POLICY) + len("Session ")
    where = f"system block 0, bytes {start}-{start + 36}, kind volatile, value uuid: "
    summary = (
        "1 error, 0 warnings in 2 requests; 1 file whose cached prefix differs between builds; "
        "2 lines not checked (see stderr)"
    )

    done = cachebench(tmp_path, "check", "builds.jsonl")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith("cachebench: builds.jsonl:2: not valid JSON: ")
    assert done.stderr.splitlines()[1].startswith("cachebench: builds.jsonl:3: cannot tell which provider")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("builds.jsonl:1: CB201 error (volatile-value) ")
    assert lines[0].endswith(f" (in 2 of 2 requests) Fix: {RULES['CB201'].fix}")
    assert lines[1].startswith(f"builds.jsonl:4: prefix differs: line 4 differs from line 1: {where}")
    assert lines[2] == summary

    github = cachebench(tmp_path, "check", "--format", "github", "builds.jsonl").stdout.splitlines()
    assert github[-2].startswith(
        f"::error file=builds.jsonl,line=4,title=prefix differs::line 4 differs from line 1: {where}"
    )
    assert github[-1] == summary

    data = json.loads(cachebench(tmp_path, "check", "--json", "builds.jsonl").stdout)
    [difference] = data["differences"]
    assert {k: difference[k] for k in ("file", "line", "request", "first_line", "first_request")} == {
        "file": "builds.jsonl",
        "line": 4,
        "request": 3,
        "first_line": 1,
        "first_request": 0,
    }
    assert [(f["line"], f["request"]) for f in data["findings"]] == [(1, 0)]


def test_check_names_builds_of_a_json_list_by_their_index_in_it(tmp_path: Path) -> None:
    """In a JSON file (every request on line 1) a build is named by its index in the file's
    list, the entries that cannot be checked counted: 'request 3 differs from request 0', the
    findings and the problems named 'request N: ' after the file and line, 'request': 3 in
    --json, and the summary's 2 requests not checked."""
    session = [anthropic(f"{POLICY}Session {u}.") for u in UUIDS]
    bare = {"messages": [{"role": "user", "content": "Hello"}]}
    write_json(tmp_path / "builds.json", [session[0], "not a body", bare, session[1]])
    done = cachebench(tmp_path, "check", "builds.json")
    assert done.returncode == 2
    problems = done.stderr.splitlines()
    assert problems[0] == "cachebench: builds.json:1: request 1: not a JSON object but a string"
    assert problems[1].startswith("cachebench: builds.json:1: request 2: cannot tell which provider")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("builds.json:1: request 0: CB201 error (volatile-value) ")
    assert lines[1].startswith(
        "builds.json:1: prefix differs: request 3 differs from request 0: system block 0"
    )
    assert lines[2].endswith("; 2 requests not checked (see stderr)")
    data = json.loads(cachebench(tmp_path, "check", "--json", "builds.json").stdout)
    [difference] = data["differences"]
    assert (difference["line"], difference["request"], difference["first_request"]) == (1, 3, 0)


def test_the_summary_counts_what_was_not_linted_in_words_that_agree(tmp_path: Path) -> None:
    """Counts are grammatical: a folder, two unreadable lines of a JSON Lines file and one
    entry of a JSON list are '1 file, 2 lines and 1 request not linted'; one of each alone is
    singular ('1 error', '1 request', '1 line')."""
    (tmp_path / "folder").mkdir()
    write_lines(tmp_path / "saved.jsonl", [anthropic(), "{oops", "[1]"])
    write_json(tmp_path / "list.json", [anthropic(), 5])
    done = cachebench(tmp_path, "lint", "folder", "saved.jsonl", "list.json")
    assert done.returncode == 2
    assert done.stdout == (
        "0 errors, 0 warnings in 2 requests; 1 file, 2 lines and 1 request not linted (see stderr)\n"
    )
    assert done.stderr.splitlines() == [
        "cachebench: folder: is a folder, not a file",
        "cachebench: saved.jsonl:2: not valid JSON: unexpected character, expected a string key at column 2",
        "cachebench: saved.jsonl:3: not a JSON object but an array",
        "cachebench: list.json:1: request 1: not a JSON object but a number",
    ]
    write_lines(tmp_path / "one.jsonl", [anthropic(f"Current time: {STAMP}. {POLICY}"), "{oops"])
    done = cachebench(tmp_path, "lint", "one.jsonl")
    assert done.stdout.splitlines()[-1] == "1 error, 0 warnings in 1 request; 1 line not linted (see stderr)"


def test_plural_agrees_with_its_count() -> None:
    """1 takes the singular, 0 and more the plural (an irregular one when given), with a
    thousands separator."""
    assert [plural(n, "token") for n in (0, 1, 2, 1234)] == [
        "0 tokens",
        "1 token",
        "2 tokens",
        "1,234 tokens",
    ]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"


def test_check_help_says_a_file_holds_builds_of_the_same_request(tmp_path: Path) -> None:
    """check's help and docs/lint.md's command line section say what a FILE holds: the same
    request built several times (processes, times, hash seeds), not builds for different
    users, whose per-user layers legitimately differ."""
    done = cachebench(tmp_path, "check", "--help")
    text = " ".join(done.stdout.split())
    assert "each FILE holds the same request built several times" in text
    assert "with other hash seeds; not for different users, whose per-user layers differ" in text
    docs = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    section = " ".join(docs[docs.index("## The command line") :].split())
    assert "at different times, with other hash seeds" in section
    assert "for different users)" not in section
    assert "differ in their per-user layers" in section


def test_help_shows_file_arguments_and_the_format_choices_cleanly(tmp_path: Path) -> None:
    """lint's and check's help: the usage ends 'FILE...', the Arguments section names
    'FILE...' without a type, and --format shows its choices, text|github."""
    for command in ("lint", "check"):
        done = cachebench(tmp_path, command, "--help")
        assert done.returncode == 0
        lines = done.stdout.splitlines()
        assert lines[0] == f"Usage: cachebench {command} [OPTIONS] FILE..."
        assert any(line.startswith("  FILE...  JSON (a body or a list)") for line in lines)
        assert any(line.startswith("  --format <text|github>  ") for line in lines)
        assert "list[str]" not in done.stdout and "{FILE}" not in done.stdout
    bad = cachebench(tmp_path, "lint", "--format", "xml", "x.json")
    assert bad.returncode == 2 and "'xml' is not one of 'text', 'github'" in bad.stderr
