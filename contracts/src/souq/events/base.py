"""The base of every event and command model."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """An event (past tense) or command (imperative). Its wire type is `<TYPE>.v<VERSION>`.

    Consumers ignore fields they do not know, so a publisher may add optional fields
    within a version; anything else needs a new version.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    @classmethod
    def type_name(cls) -> str:
        return f"{cls.TYPE}.v{cls.VERSION}"


def message_types() -> dict[str, type[Message]]:
    """Every contract model by its wire type name."""
    found: dict[str, type[Message]] = {}
    pending = list(Message.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if hasattr(model, "TYPE"):
            found[model.type_name()] = model
    return found
