"""Request and response bodies of the HTTP API (``POST /rank``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# JSON integers only: "42" and true are refused (422), as are ids outside (0, 2**63)
Id = Annotated[StrictInt, Field(gt=0, lt=2**63)]


class RankRequest(BaseModel):
    """Score ``candidates`` for ``user_id``; ``variant`` forces an A/B arm (else sticky split)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    # at most the app config's max_candidates (checked by the ingress: 422)
    candidates: list[Id] = Field(min_length=1, max_length=100_000)
    k: StrictInt | None = Field(default=None, ge=1)
    variant: str | None = None
    request_id: str | None = Field(default=None, max_length=64)


class ScoredItem(BaseModel):
    item_id: int
    score: float


class Answer(BaseModel):
    """What every answer says: who, which request, and the versions that scored it."""

    user_id: int
    request_id: str
    variant: str
    model_version: str
    bank_version: str | None = None
    history_length: int


class RankResponse(Answer):
    """``POST /rank``: the items best first (the top ``k`` when asked)."""

    items: list[ScoredItem]


class ScoreResponse(Answer):
    """``POST /score``: scores in the order of the candidates (duplicates dropped)."""

    item_ids: list[int]
    scores: list[float]
