"""``bnpl demo``: the whole system on embedded defaults, ending with a readable report."""

from __future__ import annotations

from common.progress import step
from common.settings import Settings
from datagen import example_request
from features import FEATURE_NAMES, featurize


def _banner(title: str) -> None:
    print(f"\n== {title} ==")


def run_demo(settings: Settings, retrain: bool = False) -> int:
    """Train (unless the registry already has champion + challenger) and report the registry and features."""
    from bnpl_cli.report import registry_table, training_summary
    from registry import has_aliases, list_versions, mlflow_client
    from training.train import train_and_register

    print(f"BNPL risk demo — data dir {settings.data_dir.resolve()}, MLflow {settings.mlflow_tracking_uri}")
    with step("connecting to the MLflow registry"):
        client = mlflow_client(settings)
    _banner("models")
    if retrain or not has_aliases(client, settings.model_name):
        report = train_and_register(settings)
        print(training_summary(report))
    else:
        print(
            f"registry already has {settings.model_name}@champion and @challenger; skipping training "
            "(bnpl demo --retrain to train again)"
        )
    _banner(f"registry: {settings.model_name}")
    print(registry_table(list_versions(client, settings.model_name)))

    _banner("features of the original example request")
    for provider in ("klarna", "zip"):
        result = featurize(example_request(payment_provider=provider))
        unknown = ", ".join(result.unknown_fields) or "none"
        print(f"payment_provider={provider!r}: {len(result.vector)} features, unknown fields: {unknown}")
    shown = ", ".join(f"{n}={v:g}" for n, v in zip(FEATURE_NAMES[:8], result.vector[:8], strict=True))
    print(f"first features: {shown} …")
    return 0
