"""The nearest earlier print of a layer (what a changed layer is compared with): the most blocks
equal from the start, then the most blocks in common, then the first differing block's chunks
shared at both ends, then the newest. Prints made from prompts by the tracker's own printer."""

from __future__ import annotations

from cachebench.diagnose.prints import LayerPrint, Printer, compare, nearest
from cachebench.types import Prompt

POLICY = "Refunds within 30 days need the order number and the customer's email address. " * 12


def layer(*texts: str) -> LayerPrint:
    pairs = [("system", {"type": "text", "text": t}) for t in texts]
    return Printer(keep_text=False).layer(Prompt("anthropic", "m", pairs, [], len(pairs)), 0, len(pairs))


def test_the_most_blocks_equal_from_the_start_win_over_newer_candidates() -> None:
    new = layer("tools", "policy", "customer 7")
    far, close = layer("tools", "other", "customer 7"), layer("tools", "policy", "customer 9")
    assert nearest([far, close], new) is close  # (candidates come newest first)


def test_among_equal_starts_the_most_blocks_in_common_win() -> None:
    new = layer("tools", "changed", "customer 7", "faq")
    fewer, more = layer("tools", "x", "other", "faq"), layer("tools", "y", "customer 7", "faq")
    assert nearest([fewer, more], new) is more


def test_then_the_first_differing_block_that_shares_the_most_chunks_at_both_ends() -> None:
    """Three earlier values of a long block, each edited in one place: the one whose edit is
    nearest the current one's shares the most chunks from the start and from the end."""
    new = layer("tools", "Now: 10:00. " + POLICY)
    unlike = layer("tools", POLICY[:400] + "Now: 09:00. " + POLICY[400:])
    alike = layer("tools", "Now: 09:59. " + POLICY)
    assert nearest([unlike, alike], new) is alike
    assert nearest([alike, unlike], new) is alike


def test_candidates_alike_in_every_measure_give_the_newest() -> None:
    new = layer("tools", "Now: 10:00. " + POLICY)
    first, second = layer("tools", "Now: 09:58. " + POLICY), layer("tools", "Now: 09:59. " + POLICY)
    assert nearest([first, second], new) is first
    assert nearest([second, first], new) is second


def _sections(*blocks: tuple[str, str]) -> LayerPrint:
    pairs = [(section, {"type": "text", "text": t}) for section, t in blocks]
    return Printer(keep_text=False).layer(Prompt("anthropic", "m", pairs, [], len(pairs)), 0, len(pairs))


def test_a_reordered_section_is_named_when_a_later_section_changed_too() -> None:
    """Re-ordered tools and a new timestamp in the system prompt: the first difference is the
    re-ordering (not an edit of the first tool); tools in the same order give the timestamp."""
    old = _sections(("tools", "alpha"), ("tools", "beta"), ("system", "Now: 09:59. " + POLICY))
    both = _sections(("tools", "beta"), ("tools", "alpha"), ("system", "Now: 10:00. " + POLICY))
    change = compare(old, both)
    assert change is not None
    assert (change.diff.section, change.diff.block_index, change.diff.kind) == ("tools", 0, "reordered")
    other_tool = _sections(("tools", "gamma"), ("tools", "alpha"), ("system", "Now: 10:00. " + POLICY))
    edited = compare(old, other_tool)
    assert edited is not None and edited.diff.kind == "content"  # (not the same tools: an edit)
    same_order = _sections(("tools", "alpha"), ("tools", "beta"), ("system", "Now: 10:00. " + POLICY))
    found = compare(old, same_order)
    assert found is not None and (found.diff.section, found.diff.kind) == ("system", "content")
