"""``bnpl demo``: the whole system on embedded defaults, ending with a readable report.

Trains (unless the registry already has champion + challenger), starts a private redis-server, starts a
champion/challenger experiment, runs ``bnpl serve`` and sends simulated traffic through it, then reports; then lets
weeks pass: decides more traffic (with a concept shift halfway), sends the funded loans' outcomes, and runs the
weekly performance analyses.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from common.keys import Keys
from common.progress import step
from common.settings import ConsumerSettings, Settings
from datagen import NewCategory, example_request, generate
from features import FEATURE_NAMES, featurize

DEMO_REQUESTS = 20_000
DEMO_CONNECTIONS = 16
DEMO_EXPERIMENT = "champion-vs-challenger"
DEMO_ALLOCATION = "champion:0.7,challenger:0.3"
#: Registered-model tag: the aliases the demo's training promoted (restored by later runs).
BASELINE_TAG = "bnpl.demo_baseline"
#: How often the demo's API re-reads the registry and the fallback switch (seconds).
DEMO_POLL_S = 2.0
#: Share of requests using a never-seen payment provider in the second half of the demo traffic (drift injection).
DEMO_DRIFT_SHARE = 0.15
#: The performance loop's traffic: weeks of decisions, a concept shift from the fourth week: loans of the <25k income
#: bracket default far less often (a payment-relief programme). The models, unaware, over-predict them.
PERF_DECISIONS = 125_000
PERF_WEEKS = 5
PERF_START = datetime(2026, 4, 6, tzinfo=UTC)
PERF_SHIFT = datetime(2026, 4, 27, tzinfo=UTC)
PERF_SEGMENT = {"customer_income_bracket": "<25k"}
PERF_SHIFT_FACTOR = 0.3


def _banner(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def _models(settings: Settings, retrain: bool) -> Any:
    from bnpl_cli.report import calibration_table, registry_table, training_summary
    from registry import POLICY_FILE, has_aliases, list_versions, mlflow_client, resolve_alias
    from registry.store import read_extra_file
    from training.train import train_and_register

    model_name = settings.registry.model_name
    with step("connecting to the MLflow registry"):
        client = mlflow_client(settings.registry)
    _banner("models")
    if retrain or not has_aliases(client, model_name):
        report = train_and_register(settings, promote=True)
        print(training_summary(report))
        baseline = ",".join(f"{p.alias}={p.candidate}" for p in report.proposals if p.moved)
        client.set_registered_model_tag(model_name, BASELINE_TAG, baseline)
    else:
        print(
            f"registry already has {model_name}@champion and @challenger; skipping training "
            "(bnpl demo --retrain to train again)"
        )
        _restore_baseline(settings, client)
    _banner(f"registry: {model_name}")
    print(registry_table(list_versions(client, model_name)))
    champion = resolve_alias(client, model_name, "champion")
    _banner(f"calibration of the champion (v{champion.version}, {champion.family})")
    print(calibration_table(read_extra_file(champion, POLICY_FILE)))
    return client


def _restore_baseline(settings: Settings, client: Any) -> None:
    """A previous demo's guardian moved aliases: point them back at what training promoted (audited), so every run
    tells the same story."""
    from governance.aliases import current_holder, promote

    model_name = settings.registry.model_name
    tag = client.get_registered_model(model_name).tags.get(BASELINE_TAG, "")
    for alias, _, version in (part.partition("=") for part in tag.split(",") if part):
        holder = current_holder(client, model_name, alias)
        if holder is None or holder.version != version:
            promote(client, settings, alias, version, force=True, reason="demo: restore the trained baseline")
            print(f"{model_name}@{alias} restored to v{version} (a previous demo's guardian had moved it)")


def _features() -> None:
    _banner("features of the original example request")
    for provider in ("klarna", "zip"):
        result = featurize(example_request(payment_provider=provider))
        unknown = ", ".join(result.unknown_fields) or "none"
        print(f"payment_provider={provider!r}: {len(result.vector)} features, unknown fields: {unknown}")
    shown = ", ".join(f"{n}={v:g}" for n, v in zip(FEATURE_NAMES[:8], result.vector[:8], strict=True))
    print(f"first features: {shown} …")


def _traffic(settings: Settings, client: Any, requests: int, performance_requests: int = PERF_DECISIONS) -> None:
    from common import processes
    from common.keys import decode_entry
    from common.redis_client import connect_sync
    from common.redis_server import free_port
    from registry.experiments import start_experiment
    from traffic.http import simulate

    _banner("decision API under simulated traffic")
    experiment = start_experiment(client, settings.registry, DEMO_EXPERIMENT, DEMO_ALLOCATION)
    print(f"experiment {experiment.name!r} (MLflow id {experiment.experiment_id}) active: {DEMO_ALLOCATION}")
    redis_server, duckdb_path = _fresh_stores(settings)
    port, receiver_port, key = free_port(), free_port(), secrets.token_urlsafe(16)
    webhook_secret = secrets.token_urlsafe(16)
    prefix = settings.keys.prefix
    env = {
        "BNPL_REDIS_URL": redis_server.url,
        "BNPL_API_KEYS": key,
        "BNPL_PORT": str(port),
        "BNPL_INSTANCE_ID": "demo-api",
        "BNPL_KEY_PREFIX": prefix,
        "BNPL_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.registry.tracking_uri,
        "BNPL_DUCKDB_PATH": str(duckdb_path),
        "BNPL_CONSUMER_WAIT_S": "0.5",
        "BNPL_MLFLOW_WINDOW_S": "5",
        # Batch decisions reach the stream up to a few seconds after their decision time on a busy machine: a
        # smaller lateness turns them into late events, which MLflow never gets (`bnpl reconcile` reports them).
        "BNPL_MLFLOW_LATENESS_S": "10",
        "BNPL_DRIFT_WINDOW": str(max(500, min(5_000, requests // 8))),
        "BNPL_WEBHOOK_URLS": f"http://127.0.0.1:{receiver_port}/webhook",
        "BNPL_WEBHOOK_SECRET": webhook_secret,
        "BNPL_PERFORMANCE_SCHEDULE_S": "0",  # the demo runs its analyses itself, for past dates
        "BNPL_REGISTRY_POLL_SECONDS": str(DEMO_POLL_S),
    }
    logs = settings.data_dir / "logs"
    bnpl = str(processes.BIN / "bnpl")
    receiver = processes.start([bnpl, "webhook-receiver", "--port", str(receiver_port)], env, logs / "receiver.log")
    api = processes.start([bnpl, "serve"], env, logs / "api.log")
    groups = [
        processes.start([bnpl, "consume", g], env, logs / f"{g}.log")
        for g in ("warehouse", "mlflow", "drift", "alert-sender", "outcomes")
    ]
    keys = settings.replace(key_prefix=prefix).keys
    try:
        with step(
            f"starting bnpl serve on 127.0.0.1:{port}, the warehouse, mlflow, drift, alert-sender and outcomes groups "
            f"and a webhook receiver on :{receiver_port} (redis {redis_server.url})"
        ):
            processes.wait_http(f"http://127.0.0.1:{port}/readyz?strict=1", api)
        data = generate(
            requests,
            seed=2026,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            days=30,
            drifts=[NewCategory(start_index=requests // 2, share=DEMO_DRIFT_SHARE)],
        )
        with step(
            f"sending {requests:,} generated requests over {DEMO_CONNECTIONS} connections "
            f"(from request {requests // 2:,} on, {DEMO_DRIFT_SHARE:.0%} use the new provider 'zip')"
        ):
            result = asyncio.run(
                simulate(f"http://127.0.0.1:{port}", data.iter_requests(), api_key=key, connections=DEMO_CONNECTIONS)
            )
        with step("waiting for the consumer groups to catch up (and the mlflow group to log its windows)"):
            asyncio.run(_drained(redis_server.url, keys))
        status_text = asyncio.run(_status(redis_server.url, keys, settings.consumers))
        reader = connect_sync(redis_server.url)
        try:
            in_stream = Counter(
                decode_entry(fields).record_id
                for stream in keys.prediction_streams()
                for _, fields in reader.xrange(stream)
            )
        finally:
            reader.close()
        print(f"requests: {result.sent:,}, statuses: {dict(result.statuses)}, client errors: {result.errors}")
        print(
            f"decisions/s: {result.rate:,.0f}; latency p50 {result.percentile(50):.2f} ms, "
            f"p95 {result.percentile(95):.2f} ms, p99 {result.percentile(99):.2f} ms (client side, incl. HTTP)"
        )
        print("decision mix per arm:")
        for arm in sorted({arm for arm, _ in result.decisions}):
            total = sum(n for (a, _), n in result.decisions.items() if a == arm)
            mix = "  ".join(
                f"{d} {result.decisions[(arm, d)] / total:6.1%}" for d in ("approve", "manual_review", "deny")
            )
            print(f"  {arm:<11s} n={total:>6,}  {mix}")
        once = sum(1 for pid in result.prediction_ids if in_stream.get(pid) == 1)
        print(
            f"events in stream {keys.predictions()}: {sum(in_stream.values()):,}; decided requests found exactly "
            f"once: {once:,}/{len(result.prediction_ids):,}"
        )
        _banner("consumer groups")
        print(status_text)
        _warehouse_report(duckdb_path, result.prediction_ids)
        _mlflow_report(client, experiment.experiment_id)
        _banner(f"A/B report: {experiment.name}")
        from bnpl_cli.ab_report import run as ab_report

        ab_settings = settings.replace(
            duckdb_path=duckdb_path, key_prefix=prefix, redis_url=redis_server.url, registry_poll_seconds=DEMO_POLL_S
        )
        ab_report(ab_settings, experiment.name, str(settings.data_dir / f"ab-report-{experiment.name}.html"))
        _banner("A/A check: the same traffic, the champion deciding in both arms")
        _aa_check(ab_settings, client, experiment, data)
        _banner("drift and alerts")
        with step("waiting for the alert sender to deliver to the local webhook receiver"):
            alerts = asyncio.run(_delivered(redis_server.url, keys.alerts(), receiver_port))
        print(f"alerts on {keys.alerts()} delivered (HMAC-signed) to the receiver: {len(alerts)}")
        for alert in alerts:
            print(f"  [{alert['severity']}] {alert['kind']} {alert.get('feature') or ''}: {alert['message']}")
        _banner("drift report of the champion: bnpl drift-report --days 31")
        from argparse import Namespace

        from bnpl_cli.drift_report import run as drift_report

        drift_html = settings.data_dir / "drift-report.html"
        drift_report(ab_settings, Namespace(version=None, days=31.0, window_hours=None, html=str(drift_html)))
        _banner("ground truth: outcomes in, model performance out")
        base_url = f"http://127.0.0.1:{port}"
        raised = _performance_loop(ab_settings, base_url, key, performance_requests)
        _outcome_guardrail(ab_settings, experiment.name)
        with step("waiting for the alert sender to deliver the performance alerts"):
            later = asyncio.run(_delivered(redis_server.url, keys.alerts(), receiver_port))
        delivered = [a for a in later if a["kind"].startswith("performance") or a["kind"] == "retraining_recommended"]
        print(f"performance alerts raised: {raised}; delivered (HMAC-signed) to the webhook receiver: {len(delivered)}")
        _banner("governance: the guardian, the emergency fallback, a retrained challenger")
        _api_state(ab_settings, base_url, key)
        _governance(ab_settings, client, base_url, key, performance_requests)
        _api_state(ab_settings, base_url, key)
        with step("waiting for the alert sender to deliver the governance alerts"):
            final = asyncio.run(_delivered(redis_server.url, keys.alerts(), receiver_port))
        governance = [a for a in final if a["kind"].startswith(("guardian", "fallback"))]
        print(f"governance alerts delivered (HMAC-signed) to the webhook receiver: {len(governance)}")
        for alert in governance:
            print(f"  [{alert['severity']}] {alert['kind']}: {alert['message'][:160]}")
        code = processes.stop(api)
        print(f"API exit code {code}")
        _left_behind(settings, experiment.name)
    finally:
        for proc in (api, *groups, receiver):
            processes.stop(proc)
        redis_server.stop()


def _fresh_stores(settings: Settings) -> tuple[Any, Any]:
    """The data dir's own stores, emptied so every run tells the same story: its private redis-server (started,
    then flushed) and the warehouse file (removed). They stay behind for ``bnpl status``, ``ab-report``,
    ``drift-report`` and ``experiment list``, which read the same defaults."""
    from common.redis_client import connect_sync
    from common.redis_server import BINARY_FILE, RedisServer, running_embedded

    directory = settings.data_dir / "redis"
    if running_embedded(directory) is not None:
        raise RuntimeError(f"a redis-server of {directory} is running (a `bnpl serve`?): stop it first")
    duckdb_path = settings.warehouse.duckdb_path
    if duckdb_path is None or settings.warehouse.warehouse != "duckdb":
        raise RuntimeError("the demo writes a DuckDB warehouse: unset BNPL_WAREHOUSE")
    for stale in (duckdb_path, duckdb_path.with_name(duckdb_path.name + ".wal")):
        stale.unlink(missing_ok=True)
    # Emptied anyway: the old files go first, so a server that cannot read them (another version) starts clean.
    shutil.rmtree(directory / "appendonlydir", ignore_errors=True)
    (directory / BINARY_FILE).unlink(missing_ok=True)
    server = RedisServer(directory).start()
    client = connect_sync(server.url)
    try:
        client.flushall()
    finally:
        client.close()
    server_name = server.binary.describe() if server.binary else "redis-server"
    print(f"stores: {server_name} at {server.url} (data in {directory}), warehouse {duckdb_path} — both emptied first")
    return server, duckdb_path


def _left_behind(settings: Settings, experiment: str) -> None:
    """What the demo leaves, and the commands that read it (their defaults are the demo's stores)."""
    _banner("what the demo left behind (the defaults of every command)")
    data_dir = settings.data_dir
    print(f"data dir {data_dir.resolve()}:")
    print(f"  warehouse   {settings.warehouse.duckdb_path}")
    print(f"  MLflow      {settings.registry.tracking_uri}")
    print(f"  redis       {data_dir / 'redis'} (append-only file; started on demand by the commands below)")
    print(f"  reports     {data_dir}/ab-report-{experiment}.html, {data_dir}/drift-report.html")
    print(f"  logs        {data_dir / 'logs'}")
    print("try:")
    for command in (
        "bnpl status",
        "bnpl experiment list",
        f"bnpl ab-report {experiment}",
        "bnpl drift-report --html drift.html",
        "bnpl models",
        f"mlflow ui --backend-store-uri {settings.registry.tracking_uri}",
    ):
        print(f"  {command}")


def _aa_check(settings: Settings, client: Any, experiment: Any, data: Any) -> None:
    """Re-decide the experiment's traffic with one model in both arms (same customers, same arms): the report must
    find no difference and raise no alert, whatever the customer mix."""
    import numpy as np

    from analysis.ab_report import Decisions, build_report, render_text
    from bnpl_cli.ab_report import _alert_crossings, plan_of
    from decision.engine import DecisionEngine
    from decision.models import ModelSet
    from registry.experiments import get_experiment
    from registry.loader import load_version
    from registry.store import resolve_alias
    from schemas import parse_request

    champion = load_version(resolve_alias(client, settings.registry.model_name, "champion"))
    engine = DecisionEngine(ModelSet((champion,)))
    decided = [engine.decide(parse_request(data.request(i)))[0] for i in range(len(data))]
    customers = np.asarray(data.columns["customer_id"], dtype=np.str_)
    aa = Decisions(
        arm=np.array([experiment.assign(str(c)) for c in customers], dtype=np.str_),
        version=np.full(len(decided), champion.version, dtype=np.str_),
        customer=customers,
        decision=np.array([d.business_decision for d in decided], dtype=np.str_),
        score=np.array([d.default_probability for d in decided], dtype=np.float64),
        latency_ms=np.array([d.processing_time_ms for d in decided], dtype=np.float64),
    )
    tags = get_experiment(client, settings.registry.model_name, experiment.name).tags
    report = build_report(f"{experiment.name} (A/A)", aa, plan_of(tags, dict(experiment.allocation)))
    print(render_text(report))
    crossed = [c.treatment.label for c in report.comparisons if c.sequential.crossed is not None]
    alerts = _alert_crossings(settings, report)
    print(
        f"A/A: sequential test crossed for {crossed or 'no arm'}; ab_test_significant alerts published: {len(alerts)}"
    )


async def _delivered(redis_url: str, stream: str, receiver_port: int) -> list[dict[str, Any]]:
    import aiohttp

    from common.redis_client import connect
    from consumers.status import wait_drained

    client = connect(redis_url)
    try:
        if await client.exists(stream):
            for _ in range(300):  # the sender creates its group when it starts
                groups = [g["name"] for g in await client.xinfo_groups(stream)]
                if b"alert-sender" in groups:
                    break
                await asyncio.sleep(0.1)
            await wait_drained(client, stream, "alert-sender", seconds=120)
    finally:
        await client.aclose()
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{receiver_port}/alerts") as resp:
        received: list[dict[str, Any]] = await resp.json()
    return received


def _decide_weeks(
    settings: Settings, base_url: str, key: str, n: int, start: datetime, weeks: int, seed: int, drifts: list[Any]
) -> list[dict[str, Any]]:
    """Decide ``n`` requests of ``weeks`` weeks through the batch endpoint; returns the outcome records of the
    funded loans (approved, and reviews a reviewer funded)."""
    from datagen.outcomes import funded_outcomes
    from traffic.http import post_batches

    data = generate(n, seed=seed, start=start, days=7 * weeks, drifts=drifts)
    answers = asyncio.run(
        post_batches(base_url, "/v1/bnpl/risk-assessment/batch", "requests", list(data.iter_requests()), api_key=key)
    )
    decisions = {r["transaction_id"]: r["business_decision"] for status, body in answers for r in body["results"]}
    print(f"decided {len(decisions):,} ({Counter(s for s, _ in answers)} batch statuses)")
    return funded_outcomes(data, decisions, settings.performance.review_approval_rate, seed=seed)


def _analyses(settings: Settings, dates: list[Any], title: str) -> list[Any]:
    """Run the weekly performance analyses (with the guardian, auto mode) and print one line per date."""
    from governance.guardian import guarded_analysis

    results = []
    with step(f"running the performance job and the guardian for {len(dates)} analysis dates ({title})"):
        for d in dates:
            results.append(guarded_analysis(settings, d, html_dir=settings.data_dir / "performance"))
    print("  analysis    cohort        loans  per version: AUC / observed÷expected defaults   alerts · guardian")
    for d, r in zip(dates, results, strict=True):
        w = r.report.windows
        cells = "  ".join(
            f"v{v.version} {v.auc.value:.3f}/{v.calibration.overall.ratio:.2f}" if v.calibration else f"v{v.version} —"
            for v in r.report.versions
        )
        kinds = ", ".join(sorted({f"{a.kind}({a.feature or a.model_version})" for a in r.alerts})) or "—"
        verdict = r.verdict.action if r.verdict is not None else "off"
        print(
            f"  {d}  {w.cohort_start:%m-%d}–{(w.cohort_end - timedelta(days=1)):%m-%d}  {r.report.labelled:>6,}  "
            f"{cells}  {kinds} · {verdict}"
        )
    return results


def _performance_loop(settings: Settings, base_url: str, key: str, n: int = PERF_DECISIONS) -> int:
    """Weeks of traffic decided through the API, a concept shift from the fourth week, the funded loans' outcomes
    sent through the outcomes endpoint, then the weekly performance analyses with the guardian in auto mode;
    returns how many performance alerts they raised."""
    from bnpl_cli.outcomes import performance_text
    from datagen import ConceptShift
    from performance.analysis import weekly_analysis_dates, windows
    from traffic.http import post_batches

    perf = settings.replace(time_column="transaction", schedule_s=0, guardian_mode="auto")
    maturity = perf.performance.maturity_days
    shift = ConceptShift(start_time=PERF_SHIFT, factor=PERF_SHIFT_FACTOR, segment=PERF_SEGMENT)
    with step(
        f"deciding {n:,} requests of {PERF_WEEKS} weeks from {PERF_START:%Y-%m-%d} through the batch endpoint; from "
        f"{PERF_SHIFT:%Y-%m-%d} loans of the <25k income bracket default {1 / PERF_SHIFT_FACTOR:.1f}× less often (a "
        "payment-relief programme; features unchanged: no drift detector can see it)"
    ):
        records = _decide_weeks(perf, base_url, key, n, PERF_START, PERF_WEEKS, 2027, [shift])
    with step(
        f"sending the {len(records):,} outcomes of funded loans (approved, and manual reviews a reviewer funded at "
        f"{perf.performance.review_approval_rate:.0%}) through POST /v1/bnpl/outcomes, the first 5,000 twice"
    ):
        sent = asyncio.run(
            post_batches(base_url, "/v1/bnpl/outcomes", "outcomes", records + records[:5_000], api_key=key, batch=2_500)
        )
    print(f"outcome calls: {Counter(s for s, _ in sent)} (202 = stored in the outcome stream)")
    with step("waiting for the warehouse and outcomes groups to land them"):
        asyncio.run(_groups_drained(settings))
    from warehouse.duckdb_store import DuckDBWarehouse

    assert perf.warehouse.duckdb_path is not None
    wh = DuckDBWarehouse(perf.warehouse.duckdb_path)
    loans, distinct, superseded = wh.query(
        "SELECT count(*), count(DISTINCT transaction_id), sum(superseded) FROM outcomes"
    )[0]
    expected = len({r["transaction_id"] for r in records})
    print(
        f"outcomes table: {loans:,} loans ({distinct:,} distinct; {expected:,} expected), {superseded or 0:,} "
        f"outcomes superseded by a later one (defaults charged off); the 5,000 re-sent changed nothing"
    )
    dates = weekly_analysis_dates(PERF_START, 7 * PERF_WEEKS, maturity)
    shifted_from = next(d for d in dates if windows(d, "weekly", maturity).cohort_end > PERF_SHIFT)
    print(
        f"\nweekly analyses ({len(dates)}; cohorts mature {maturity} days after the decision; the first shifted "
        f"cohort is analysed on {shifted_from}); guardian: BNPL_GUARDIAN_MODE=auto"
    )
    results = _analyses(perf, dates, "phase 1")
    flagged = next((r for d, r in zip(dates, results, strict=True) if d >= shifted_from and r.alerts), None)
    shown = flagged or results[-1]
    if flagged is not None:
        periods = (flagged.report.windows.analysis_date - shifted_from).days // 7
        print(f"\nthe concept shift is flagged {periods} analysis period(s) after its first cohort matured:")
    print(performance_text(shown))
    runs = sum(len(r.runs) for r in results)
    print(
        f"MLflow experiment 'bnpl-performance': {runs} runs (one per version and analysis date, each with its "
        "HTML report: ROC, calibration, vintages)"
    )
    _verdicts(results)
    return sum(len(r.raised) for r in results)


def _verdicts(results: list[Any]) -> None:
    for r in results:
        v = r.verdict
        if v is not None and v.action != "none":
            print(f"  {v.summary()}")
            for b in v.breaches[:3]:
                print(f"    breach: {b.message}")
            for c in v.comparisons:
                print(
                    f"    v{c.version} (@{c.alias}) vs champion on the same {c.loans:,} matured loans: AUC "
                    f"{c.delta:+.4f} (z {c.z:.1f}, customers as clusters)"
                )


def _api_state(settings: Settings, base_url: str, key: str) -> None:
    """What the running API says now: readiness, and which policy decides the original example request."""
    import urllib.request

    import orjson

    from datagen.examples import ORIGINAL_EXAMPLE

    with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as resp:  # noqa: S310 - our own local API
        ready = orjson.loads(resp.read())
    request = urllib.request.Request(  # noqa: S310 - our own local API
        f"{base_url}/v1/bnpl/risk-assessment",
        data=orjson.dumps(ORIGINAL_EXAMPLE),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - our own local API
        decided = orjson.loads(resp.read())
    print(f"API /readyz: {ready['status']}" + (f" — {'; '.join(ready['reasons'])}" if ready["reasons"] else ""))
    print(
        f"API decides the original example with {decided['decision_policy']} ({decided['deployment_mode']}): "
        f"{decided['business_decision']}; models scored it: "
        + ", ".join(f"{a} v{v}" for a, v in decided["model_versions"].items())
    )


def _governance(settings: Settings, client: Any, base_url: str, key: str, n: int) -> None:
    """The team's answer to the shift, and the guardian's: retrain on the new world, put the model in as challenger
    through the gate, release the fallback, decide more weeks; the guardian switches when the evidence is there."""
    from bnpl_cli.report import alias_change_text, history_table
    from datagen import ConceptShift
    from governance.aliases import GovernanceError, promote
    from governance.audit import history
    from governance.fallback import switch
    from performance.analysis import weekly_analysis_dates
    from training.train import train_and_register, training_data

    perf = settings.replace(time_column="transaction", schedule_s=0, guardian_mode="auto")
    model_name = settings.registry.model_name
    world = [ConceptShift(start_index=0, factor=PERF_SHIFT_FACTOR, segment=PERF_SEGMENT)]
    with step("retraining gradient boosting on data of the new world (the <25k bracket's lower default rate)"):
        retrained = train_and_register(
            settings,
            families=["hgb"],
            data=training_data(settings.training, drifts=world),
            aliases=(),
            data_description=f"synthetic BNPL applications, seed {settings.training.train_seed}, where loans of the "
            f"<25k income bracket default {PERF_SHIFT_FACTOR}× as often (the post-shift world)",
        ).models[0]
    print(f"registered v{retrained.version} (holdout AUC {retrained.metrics['holdout_auc']:.4f}); no alias moved")
    try:
        change = promote(client, settings, "challenger", retrained.version, reason="retrained after the relief shift")
    except GovernanceError as exc:
        print(f"bnpl promote --alias challenger refused: {exc}")
        change = promote(
            client,
            settings,
            "challenger",
            retrained.version,
            force=True,
            reason="retrained on the post-shift world; its holdout is that world's, not comparable",
        )
    print(alias_change_text(model_name, change))
    released = switch(client, settings, False, "a retrained challenger is in place; models decide again")
    if released is not None:
        print(f"\n{released.summary()}")
    time.sleep(settings.registry.registry_poll_seconds + 0.5)  # the API reads the switch and the new alias
    weeks = 2
    start = PERF_START + timedelta(days=7 * PERF_WEEKS)
    per_phase = max(n // PERF_WEEKS * 2 * weeks, 2_000)
    shift = ConceptShift(start_time=start, factor=PERF_SHIFT_FACTOR, segment=PERF_SEGMENT)
    with step(f"deciding {per_phase:,} more requests of {weeks} weeks from {start:%Y-%m-%d} (the new world goes on)"):
        records = _decide_weeks(perf, base_url, key, per_phase, start, weeks, 2028, [shift])
    from traffic.http import post_batches

    with step(f"sending their {len(records):,} outcomes and landing them"):
        asyncio.run(post_batches(base_url, "/v1/bnpl/outcomes", "outcomes", records, api_key=key, batch=2_500))
        asyncio.run(_groups_drained(settings))
    dates = weekly_analysis_dates(start, 7 * weeks, perf.performance.maturity_days)
    results = _analyses(perf, dates, "phase 2")
    _verdicts(results)
    _banner("audit trail: bnpl models --history")
    print(history_table(history(client, model_name)))
    champion = client.get_model_version_by_alias(model_name, "champion")
    print(f"\n{model_name}@champion is now v{champion.version}")
    _cards(client, model_name)


def _cards(client: Any, model_name: str) -> None:
    """Every registered version's model card, checked against the registry's figures."""
    from governance.cards import read_card
    from registry import list_versions

    figures = ("holdout_auc", "threshold_review", "threshold_deny", "holdout_adverse_impact_ratio", "calibration")
    versions = list_versions(client, model_name)
    agree = 0
    for v in versions:
        try:
            card = read_card(client, model_name, v.version)
        except LookupError:
            continue
        agree += all(v.tags.get(f, "\0") in card for f in figures)
    print(
        f"model cards: {agree}/{len(versions)} versions have one whose figures equal the registry's "
        f"(bnpl models --card {versions[0].version} prints the newest)"
    )


def _outcome_guardrail(settings: Settings, experiment: str) -> None:
    """The experiment's report again, now that outcomes have landed: the default-rate guardrail joins."""
    from analysis.ab_report import format_delta, format_value
    from bnpl_cli.ab_report import report_for

    report, _, _ = report_for(settings, experiment)
    for c in report.comparisons:
        r = c.result("default_rate_approved")
        if r is None:
            print(f"A/B guardrail 'default rate among approved': no matured outcomes in {experiment!r} yet")
            continue
        d = r.difference
        print(
            f"A/B guardrail with outcomes, {c.treatment.label} vs {c.control.label}: default rate among approved "
            f"{format_value(r.metric, d.control)} vs {format_value(r.metric, d.treatment)} "
            f"(Δ {format_delta(r.metric, d.delta)}, margin {format_delta(r.metric, r.margin or 0.0)}) → {r.status}; "
            f"verdict now {report.verdict}"
        )


async def _groups_drained(settings: Settings) -> None:
    from common.redis_client import redis_for
    from consumers.status import wait_drained

    keys = settings.keys
    client = redis_for(settings.streams)
    try:
        for stream in keys.prediction_streams():
            await wait_drained(client, stream, "warehouse", seconds=180)
        await wait_drained(client, keys.outcomes(), "outcomes", seconds=180)
    finally:
        await client.aclose()


def _mlflow_report(client: Any, experiment_id: str) -> None:
    runs = client.search_runs([experiment_id], filter_string="tags.`bnpl.kind` = 'arm-metrics'")
    print(f"MLflow experiment {experiment_id}: {len(runs)} arm run(s) (one per arm and model version)")
    for run in sorted(runs, key=lambda r: r.data.tags["bnpl.arm"]):
        history = client.get_metric_history(run.info.run_id, "requests")
        total = sum(m.value for m in history)
        print(
            f"  run {run.info.run_name!r}: {len(history)} window(s) logged so far, {total:,.0f} requests, last window "
            f"approve {run.data.metrics.get('approve_rate', float('nan')):.1%}, "
            f"score p50 {run.data.metrics.get('score_p50', float('nan')):.3f}"
        )


async def _drained(redis_url: str, keys: Keys) -> None:
    from common.redis_client import connect
    from consumers.status import wait_drained

    client = connect(redis_url)
    try:
        for stream in keys.prediction_streams():
            for group in ("warehouse", "mlflow", "drift"):
                await wait_drained(client, stream, group, seconds=120)
        for _ in range(600):  # every window logged to MLflow
            if not any([await client.zcard(keys.mlflow_open(shard)) for shard in range(keys.shards)]):
                return
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def _status(redis_url: str, keys: Keys, consumers: ConsumerSettings) -> str:
    from common.redis_client import connect
    from consumers.status import collect, render

    client = connect(redis_url)
    try:
        return render(await collect(client, keys, consumers))
    finally:
        await client.aclose()


def _warehouse_report(path: Any, prediction_ids: list[str]) -> None:
    from warehouse.duckdb_store import DuckDBWarehouse

    warehouse = DuckDBWarehouse(path)
    total, distinct = warehouse.query("SELECT count(*), count(DISTINCT prediction_id) FROM prediction_logs")[0]
    print(
        f"rows in prediction_logs: {total:,} ({distinct:,} distinct prediction ids; "
        f"{len(prediction_ids):,} decided)  — {path}"
    )
    print("decisions per arm per day (first 6 days of transactions, by transaction date):")
    rows = warehouse.query(
        "SELECT CAST(transaction_timestamp[1:10] AS DATE) AS day, traffic_segment, count(*) AS n, "
        "avg((business_decision = 'approve')::INT) AS approve, avg((business_decision = 'deny')::INT) AS deny "
        "FROM prediction_logs GROUP BY ALL ORDER BY day, traffic_segment LIMIT 12"
    )
    print("  day         arm          n     approve  deny")
    for day, arm, n, approve, deny in rows:
        print(f"  {day}  {arm:<11s} {n:>5,}   {approve:6.1%}  {deny:6.1%}")


def run_demo(
    settings: Settings, retrain: bool = False, requests: int = DEMO_REQUESTS, performance_requests: int = PERF_DECISIONS
) -> int:
    """Run every part that exists and print the report."""
    print(f"BNPL risk demo — data dir {settings.data_dir.resolve()}, MLflow {settings.registry.tracking_uri}")
    client = _models(settings, retrain)
    _features()
    _traffic(settings, client, requests, performance_requests)
    return 0
