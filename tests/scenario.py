"""The support-agent conversation the emulator scenario tests share, as plain text.

Each provider's tests shape it into that provider's request (tools, system prompt, a user's
context, the conversation); the texts are the same so the layers are comparable.
"""

from __future__ import annotations

SYSTEM = "You are ACME's support agent. Answer briefly, cite the policy section, never guess. " * 60


def context(user: str) -> str:
    """``user``'s context layer."""
    return f"Customer {user}: plan Pro since 2023, three open tickets, prefers email. " * 20


def turns(user: str, n: int) -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs of ``user``'s conversation."""
    return [
        (f"{user} asks question {i} about order {i * 7}.", f"Order {i * 7} ships on day {i}.")
        for i in range(n)
    ]
