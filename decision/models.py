"""What the engine scores with: an immutable snapshot of loaded models and the active experiment."""

from __future__ import annotations

from dataclasses import dataclass, field

from decision.experiment import Experiment
from decision.scorers import Scorer


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One registry version, compiled and warmed up."""

    alias: str
    name: str
    version: str
    family: str
    scorer: Scorer
    review: float
    deny: float
    #: ``{"review": …, "deny": …}`` as responses and events carry it (built once; never mutated).
    thresholds: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", {"review": self.review, "deny": self.deny})


@dataclass(frozen=True, slots=True)
class ModelSet:
    """Models by alias (the first is the champion) and the experiment that picks the deciding one.

    Replaced as a whole on every change, so a request always sees one consistent snapshot.
    """

    models: tuple[LoadedModel, ...]
    experiment: Experiment | None = None
    #: Why the active experiment is not applied (the champion decides): readiness reports it.
    experiment_problem: str | None = None
    by_alias: dict[str, LoadedModel] = field(init=False)
    #: Alias → version: what responses and events carry, and what the watcher compares (built once; never mutated).
    versions: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a model set needs at least one model")
        object.__setattr__(self, "by_alias", {m.alias: m for m in self.models})
        object.__setattr__(self, "versions", {m.alias: m.version for m in self.models})

    @property
    def champion(self) -> LoadedModel:
        return self.models[0]
