"""Train the zstd dictionary that compresses prediction events in Redis (``schemas.codec``).

Events are small JSON documents of the same shape, so most of their bytes are field names and repeated values; a
dictionary trained on representative events lets zstd encode them in a fraction of their size. The samples are
events exactly as the API writes them, decided by two models (champion and challenger, in and out of an experiment)
and by the rule-based fallback, on the synthetic generator's traffic. A dictionary is trained once per codec version
and committed (``python -m training.event_codec schemas/event-dictionary-1.zstd``); the committed file *is* the
codec (zstd's trainer is not bit-for-bit reproducible), so a new dictionary is a new codec version, and old versions
stay decodable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import numpy as np

from datagen import generate
from decision.engine import DecisionEngine
from decision.experiment import Experiment
from decision.models import LoadedModel, ModelSet
from decision.scorers import LinearScorer
from features.spec import N_FEATURES
from schemas import parse_request

DICTIONARY_BYTES = 32_768
#: zstd dictionary id of codec ``zd1`` (written into every frame; ids below 32,768 are reserved).
DICTIONARY_ID = 0x7A640001


def _model(alias: str, version: str, family: str, seed: int) -> LoadedModel:
    rng = np.random.default_rng(seed)
    scorer = LinearScorer(rng.normal(0, 0.05, N_FEATURES), -3.0, np.zeros(N_FEATURES))
    return LoadedModel(alias, "bnpl_default_predictor", version, family, scorer, review=0.07, deny=0.2)


def sample_documents(n: int = 6_000, seed: int = 404) -> list[bytes]:
    """``n`` prediction events as the API encodes them, from three deployments in equal parts."""
    models = (_model("champion", "3", "hgb", 1), _model("challenger", "1", "logreg", 2))
    experiment = Experiment("2", "champion-vs-challenger", "2", (("champion", 0.7), ("challenger", 0.3)))
    engines = [DecisionEngine(ModelSet(models)), DecisionEngine(ModelSet(models, experiment)), DecisionEngine(None)]
    data = generate(n, seed=seed)
    encode = msgspec.json.Encoder().encode
    return [encode(engines[i % 3].decide(parse_request(data.request(i)))[1]) for i in range(n)]


def train(path: Path) -> int:
    """Write a dictionary trained on :func:`sample_documents` to ``path``; returns its zstd dictionary id."""
    import zstandard

    samples: list[bytes | bytearray | memoryview] = list(sample_documents())
    dictionary = zstandard.train_dictionary(DICTIONARY_BYTES, samples, dict_id=DICTIONARY_ID, threads=0)
    path.write_bytes(dictionary.as_bytes())
    return int(dictionary.dict_id())


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "schemas/event-dictionary-1.zstd")
    print(f"trained dictionary {train(target)} → {target}")
