"""Registry aliases moved while the API is under load: no failed request, the new version takes over."""

from __future__ import annotations

from collections import Counter

from registry import mlflow_client, resolve_alias
from tests.conftest import api_settings, make_settings, start_api
from traffic.http import simulate
from training.train import train_and_register


async def test_alias_switch_under_load_has_no_failed_requests(tmp_path, redis_server, key_prefix):
    registry = make_settings(tmp_path / "data")
    report = train_and_register(registry, families=("logreg", "hgb"), rows=20_000)
    client = mlflow_client(registry.registry)
    for proposal in report.proposals:  # set directly: this test is about the watcher, not the promotion gate
        client.set_registered_model_alias(registry.registry.model_name, proposal.alias, proposal.candidate)
    champion = resolve_alias(client, registry.registry.model_name, "champion")
    challenger = resolve_alias(client, registry.registry.model_name, "challenger")

    settings = api_settings(tmp_path, redis_server.url, key_prefix, registry_poll_seconds=0.1)
    api, stop = await start_api(settings, engine=None, watch_registry=True)

    def switch() -> None:
        client.set_registered_model_alias(registry.registry.model_name, "champion", challenger.version)

    def requests():
        from datagen import generate

        data = generate(3_000, seed=3)
        for i in range(len(data)):
            if i == 1_000:
                switch()
            yield data.request(i)

    try:
        result = await simulate(api.url("/"), requests(), api_key="test-key", connections=4)
    finally:
        await stop()
    assert result.statuses == Counter({200: 3_000})
    assert result.errors == 0
    assert result.versions[0] == champion.version
    assert result.versions[-1] == challenger.version
    switched_at = result.versions.index(challenger.version)
    assert switched_at >= 900
    assert set(result.versions[switched_at + 200 :]) == {challenger.version}
