"""Identifiers of a plan and its orders: the plan id, and each venue's client order id rule
(Binance newClientOrderId, Bybit orderLinkId, OKX clOrdId), the idempotency key of every order."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from models.errors import ValidationError

#: The prefix of every client order id fbr sends.
CLIENT_ID_PREFIX = "fbr"


@dataclass(frozen=True)
class ClientIdRule:
    """A venue's client order id rule: at most ``max_len`` characters, each matching ``alphabet``
    (a regex character class); ``separator`` joins the plan id and the leg index."""

    max_len: int
    alphabet: str
    separator: str

    def make(self, plan_id: str, leg: int) -> str:
        """``fbr{plan_id}{sep}{leg:03d}``, checked against the rule."""
        cid = f"{CLIENT_ID_PREFIX}{plan_id}{self.separator}{leg:03d}"
        if len(cid) > self.max_len or not re.fullmatch(f"{self.alphabet}+", cid):
            raise ValidationError("plan_id", f"gives client order id {cid!r}, outside the venue's rule "
                                  f"(<= {self.max_len} of {self.alphabet})",
                                  "use a shorter, alphanumeric plan id")
        return cid


#: Client id rules per venue (Binance newClientOrderId, Bybit orderLinkId, OKX clOrdId).
CLIENT_ID_RULES: dict[str, ClientIdRule] = {
    "binanceusdm": ClientIdRule(36, r"[.A-Za-z0-9:/_-]", "-"),
    "bybit": ClientIdRule(36, r"[A-Za-z0-9_-]", "-"),
    "okx": ClientIdRule(32, r"[A-Za-z0-9]", ""),
}
DEFAULT_RULE = CLIENT_ID_RULES["binanceusdm"]


def client_id_rule(venue: str) -> ClientIdRule:
    """The venue's rule (Binance's for paper and dry runs)."""
    return CLIENT_ID_RULES.get(venue, DEFAULT_RULE)


def new_plan_id(now: datetime | None = None) -> str:
    """A fresh alphanumeric plan id: UTC time to the second plus 4 random hex digits (18 chars)."""
    t = now or datetime.now(UTC)
    return t.strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
