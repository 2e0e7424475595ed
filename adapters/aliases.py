"""Alias records: which version an alias serves, an optional weighted canary, and its history.

One alias is one small JSON object in the store, replaced whole in one atomic write, so a
reader sees the old or the new state, never a mix:

    {"version": "<sha256>", "canary": "<sha256>" | null, "weight": 0.1,
     "updated_at": "...", "history": [{"version": ..., "canary": ..., "weight": ...}, ...]}

`history` holds the previous states, newest last, so `rollback` works from any process.
A file holding just a version (what stores wrote before canaries) reads as a record
without canary or history.

Canary routing is deterministic per routing key: sha256(alias key + routing key) mapped
to [0, 1) picks the canary when below `weight`, so one user (or one request id, on
retries) keeps seeing the same version, and over many keys the split matches `weight`.
Without a key the pick is random.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loramux.adapters.errors import InvalidRequest

MAX_HISTORY = 50
_VERSION = r"^[0-9a-f]{64}$"


class AliasState(BaseModel):
    """Where an alias points: `version`, and `canary` for a `weight` share of traffic."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(pattern=_VERSION)
    canary: str | None = Field(None, pattern=_VERSION)
    weight: float = Field(0.0, ge=0.0, le=1.0, description="share of traffic the canary gets")

    def versions(self) -> set[str]:
        return {self.version} | ({self.canary} if self.canary else set())

    def pick(self, salt: str, routing_key: str | None = None) -> str:
        """The version one request gets: the canary with probability `weight`."""
        if not self.canary or self.weight <= 0.0:
            return self.version
        if routing_key is None:
            x = random.random()
        else:
            digest = hashlib.sha256(f"{salt}\0{routing_key}".encode()).digest()
            x = int.from_bytes(digest[:8], "big") / 2**64
        return self.canary if x < self.weight else self.version


class AliasRecord(AliasState):
    """The stored object: the current state plus the states it replaced."""

    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    history: list[AliasState] = Field(default_factory=list)

    @property
    def state(self) -> AliasState:
        return AliasState(version=self.version, canary=self.canary, weight=self.weight)

    @classmethod
    def parse(cls, text: str) -> AliasRecord:
        text = text.strip()
        if not text.startswith("{"):
            return cls(version=text)  # a bare version: written before alias records existed
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise InvalidRequest(f"corrupt alias record: {e.errors()[0]['msg']}", param="alias") from None

    def moved_to(self, state: AliasState) -> AliasRecord:
        """This record after pointing at `state` (the current state goes to history; the same state is no move)."""
        if state == self.state:
            return self
        history = [*self.history, self.state][-MAX_HISTORY:]
        return AliasRecord(**state.model_dump(), history=history)

    def rolled_back(self) -> AliasRecord | None:
        """This record pointing at its previous state, or None when there is none."""
        if not self.history:
            return None
        return AliasRecord(**self.history[-1].model_dump(), history=self.history[:-1])

    def to_text(self) -> str:
        return json.dumps(json.loads(self.model_dump_json()), sort_keys=True) + "\n"


def new_state(version: str, canary: str | None = None, weight: float | None = None) -> AliasState:
    """Validate a requested alias state: a canary needs a weight in (0, 1), a weight needs a canary."""
    if canary is None and weight is not None:
        raise InvalidRequest("--weight needs --canary VERSION", param="weight")
    if canary is not None and (weight is None or not 0.0 < weight < 1.0):
        raise InvalidRequest(f"a canary needs a weight strictly between 0 and 1 (the share of traffic it gets),"
                             f" got {weight}", param="weight")
    if canary is not None and canary == version:
        raise InvalidRequest("the canary is the version the alias already serves; name another version",
                             param="canary")
    return AliasState(version=version, canary=canary, weight=weight or 0.0)
