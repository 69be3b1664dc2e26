"""The prompts of the demo's support agent: a shared handbook and tool set, per-customer context.

Sizes, in the emulator's token estimate (``cachebench.tokens``): the tools alone are about
1,500 tokens and the system prompt about 1,700, so each layer passes the 1,024-token minimum
of both models on its own; a customer's context is about 270 tokens.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

CHAT_ROLE = "You are the support agent of Parcelly, the storefront platform. Answer the customer.\n"
TRIAGE_ROLE = "You triage incoming Parcelly support tickets: give a queue, a priority and one tag.\n"

_SECTIONS = {
    "Tone": "Be brief and warm. Use the customer's first name. Never promise what a tool has not confirmed.",
    "Orders": "Look an order up before you talk about it. Quote its number and its current status.",
    "Refunds": "Refunds within 30 days of delivery need no approval. Later ones go to the billing queue.",
    "Shipping": "Carriers update tracking every 4 hours. A parcel with no scan for 5 days is lost.",
    "Addresses": "An address can change until the label is printed; after that, open a carrier claim.",
    "Warranty": "Hardware has a 2-year warranty; ask for a photo of the defect and the serial number.",
    "Accounts": "Never reveal or change an email address without a one-time code sent to the old address.",
    "Billing": "Invoices are issued on the 1st. Plan changes are prorated to the day.",
    "Escalation": "Escalate legal threats, press enquiries and safety issues at once, with a summary.",
    "Privacy": "Do not repeat card numbers, passwords or health data, even when the customer sends them.",
}


def _handbook() -> str:
    lines = ["# Parcelly support handbook"]
    for n, (title, rule) in enumerate(_SECTIONS.items(), 1):
        lines.append(f"\n## {n}. {title}\n{rule}")
        lines.extend(
            f"{n}.{k} Case {k} of {title.lower()}: check the order, the plan and the region, apply the "
            f"rule above, and say in one sentence what happens next and by when."
            for k in range(1, 5)
        )
    return "\n".join(lines)


HANDBOOK = _handbook()


def system_prompt(role: str, now: float | None = None) -> str:
    """The system prompt as the app renders it. From the deploy on, the template begins with
    the current time, which makes every rendering, and so every prefix after it, new."""
    stamp = (
        f"Current time: {datetime.fromtimestamp(now, timezone.utc):%Y-%m-%d %H:%M:%S} UTC.\n" if now else ""
    )
    return stamp + role + HANDBOOK


def _tool(name: str, purpose: str, **params: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{purpose} Call it only with values the customer gave or a previous tool "
        "returned; never guess an identifier. Returns JSON, or an error object with a reason. " * 3,
        "input_schema": {
            "type": "object",
            "properties": {p: {"type": "string", "description": d} for p, d in params.items()},
            "required": list(params),
        },
    }


TOOLS = [
    _tool("lookup_order", "Find an order and its status.", order_id="The order number, e.g. P-10442."),
    _tool("track_parcel", "Latest carrier scans of a parcel.", tracking_id="The carrier's tracking id."),
    _tool("refund_order", "Refund an order, fully or partly.", order_id="Order number.", amount="In EUR."),
    _tool("change_address", "Change a delivery address.", order_id="Order number.", address="New address."),
    _tool("open_claim", "Open a carrier claim for a lost parcel.", tracking_id="Tracking id.", note="Why."),
    _tool("escalate", "Hand the ticket to a human team.", queue="billing, legal or safety.", summary="Why."),
]
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
    }
    for t in TOOLS
]

TENANTS = ("nordic-knits", "bolt-bikes", "verde-tea", "atlas-audio")
FIRST_NAMES = (
    *("Ada", "Bruno", "Chen", "Dina", "Emil", "Fatou", "Goran", "Hana", "Ivo", "Jana"),
    *("Kofi", "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tove"),
)

QUESTIONS = (
    "Hi, my order {order} has not arrived yet. Where is it?",
    "The tracking page has said 'in transit' for six days now.",
    "Can you send the rest of it to my office instead? Same street, number 12.",
    "And if it is lost, do I get a refund or a new one?",
)


def customer_context(tenant: str, name: str, n: int) -> str:
    """What the app knows about one customer: profile and recent orders (about 300 tokens)."""
    orders = "\n".join(
        f"- P-{10400 + n * 10 + k}: {k + 1} item(s), EUR {19 + 7 * k + n}.90, "
        f"{('delivered', 'in transit', 'label printed', 'returned')[(n + k) % 4]}"
        for k in range(20)
    )
    return (
        f"# Customer\nShop: {tenant}. Name: {name}. Customer since 20{18 + n % 7}. Plan: "
        f"{('Basic', 'Plus', 'Pro')[n % 3]}. Language: English. Region: EU.\n"
        f"Recent orders:\n{orders}\nNotes: prefers email; {n % 3} open ticket(s)."
    )
