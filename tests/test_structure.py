"""The code's own contracts, checked by reading the source: one module builds Redis keys and stream entries, the
packages import each other without cycles, serving code never imports the data generator, settings are read from the
environment in one place, and the README's configuration table is the settings table."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "alerting",
    "analysis",
    "app",
    "bench",
    "bnpl_cli",
    "common",
    "consumers",
    "datagen",
    "decision",
    "drift",
    "features",
    "governance",
    "performance",
    "producers",
    "registry",
    "schemas",
    "traffic",
    "training",
    "warehouse",
)
#: What runs on the request path and to serve it: none of it may import the synthetic data generator.
SERVING = ("app", "common", "decision", "features", "governance", "producers", "registry", "schemas")
KEYS_MODULE = Path("common/keys.py")


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), str(path))


# --- Redis keys and stream entries ----------------------------------------------------------------------------------
#: Fragments of every key family and of the entry layout: only ``common/keys.py`` may spell them.
KEY_FRAGMENTS = (
    ":predictions",
    ":outcomes",
    ":alerts",
    "{alerts}",
    ":pub",
    ":dead",
    ":health:",
    ":rates:",
    ":drift:",
    ":mlflow:",
    ":alerted:",
    ":delivered:",
    "XADD",
)
ENTRY_FIELDS = {"v", "id", "e"}


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _const_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        value = node.value
        return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def key_violations(tree: ast.Module) -> list[str]:
    """Where a module builds a Redis key or a stream entry itself (empty for a clean module)."""
    problems = []
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        text = _const_text(node)
        if text is not None and id(node) not in docstrings:
            for fragment in KEY_FRAGMENTS:
                if fragment in text:
                    problems.append(f"line {node.lineno}: key fragment {fragment!r} in {text[:60]!r}")
        if isinstance(node, ast.JoinedStr):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
                n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
            }
            literal = "".join(_const_text(v) or "" for v in node.values)
            # A key has no spaces; a message that mentions a stream does.
            if ":" in literal and not re.search(r"\s", literal) and any("prefix" in n or n == "stream" for n in names):
                problems.append(f"line {node.lineno}: key built in an f-string from {sorted(names)}")
        if isinstance(node, ast.Dict):
            keys = {_const_text(k) for k in node.keys if k is not None}
            if keys >= ENTRY_FIELDS:
                problems.append(f"line {node.lineno}: stream entry written as a dict")
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, bytes)
            and node.slice.value.decode() in ENTRY_FIELDS
        ):
            problems.append(f"line {node.lineno}: stream entry field {node.slice.value!r} read by name")
    return problems


#: Lines of the code before the keys module existed: each must be caught.
OLD_CODE = [
    'written = await self._script(keys=[stream, f"{stream}:pub"], args=args)',
    'await redis.xadd(key, {"v": 1, "id": alert.alert_id, "e": msgspec.json.encode(alert)})',
    'fresh = await self.redis.set(f"{self.settings.key_prefix}:alerted:{key}", 1, nx=True)',
    'return f"{self.keys.prefix}:health:{self.group}:{self.name}"',
    'marker = f"{self.settings.key_prefix}:delivered:{alert_id}:{url}"',
    'return f"{self.keys.prefix}:mlflow:agg:{experiment}|{arm}|{version}|{window}"',
    'payload = fields[b"e"]',
    "script = \"redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 'id', i, 'e', e)\"",
]


@pytest.mark.parametrize("line", OLD_CODE)
def test_the_key_scan_catches_inline_keys_and_entries(line):
    assert key_violations(ast.parse(line))


def test_only_the_keys_module_builds_redis_keys_and_stream_entries():
    found = {
        str(path): problems for path, tree in _sources() if path != KEYS_MODULE and (problems := key_violations(tree))
    }
    assert found == {}


# --- imports --------------------------------------------------------------------------------------------------------
def _imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def package_graph() -> dict[str, set[str]]:
    """Package → the other project packages it imports (anywhere in its modules, lazy imports included)."""
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for path, tree in _sources():
        package = path.parts[0]
        for module in _imports(tree):
            top = module.split(".")[0]
            if top in graph and top != package:
                graph[package].add(top)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_packages_import_each_other_without_cycles():
    assert find_cycle(package_graph()) is None


def test_serving_code_never_reaches_the_data_generator():
    graph = package_graph()
    reached, todo = set(SERVING), list(SERVING)
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    assert "datagen" not in reached
    assert "training" not in reached


# --- settings -------------------------------------------------------------------------------------------------------
def _is_ours(node: ast.AST) -> bool:
    """A variable name of this project's configuration (or one computed at run time, which could be)."""
    name = _const_text(node)
    return name is None or name.startswith(("BNPL_", "BENCH_", "MLFLOW_"))


def _environment_reads(tree: ast.Module) -> list[int]:
    """Lines reading one of the project's variables from the environment (``PATH`` and the like are not ours)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            target = ast.unparse(node.func)
            if target in ("os.getenv", "os.environ.get", "environ.get") and _is_ours(node.args[0]):
                lines.append(node.lineno)
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) == "os.environ"
            and _is_ours(node.slice)
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_the_environment():
    assert _environment_reads(ast.parse('x = os.environ.get("BNPL_WORKER_INDEX", "0")'))  # the scan works
    found = {
        str(path): lines
        for path, tree in _sources()
        if path != Path("common/settings.py") and (lines := _environment_reads(tree))
    }
    assert found == {}


def test_the_readme_configuration_table_is_the_settings_table():
    from common.settings import configuration_table

    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", readme, re.S)
    assert match, "README.md lacks the settings table markers"
    assert match.group(1) == configuration_table(), "regenerate it with: bnpl config --markdown"


def test_every_setting_is_read_by_some_code():
    """A declared setting that no code reads is dead configuration (an operator would set it for nothing).
    Declarations are ``name: type = setting(…)``; every read is an attribute access ``.name``."""
    from common.settings import declared

    sources = "\n".join(path.read_text() for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
    unread = [info.env for info in declared() if not re.search(rf"\.{info.name}\b", sources)]
    assert unread == []


def test_settings_parse_types_and_reject_bad_values():
    from common.settings import Settings, SettingsError

    settings = Settings.from_env(
        {
            "BNPL_PORT": "9000",
            "BNPL_AUTH_DISABLED": "yes",
            "BNPL_MODEL_ALIASES": "a, b",
            "BNPL_SPOOL_DIR": "/tmp/s",
            "BNPL_DATA_DIR": "/tmp/d",
        }
    )
    assert (settings.api.port, settings.api.auth_disabled, settings.registry.model_aliases) == (9000, True, ("a", "b"))
    assert str(settings.publisher.spool_dir) == "/tmp/s"
    assert str(settings.warehouse.duckdb_path) == "/tmp/d/warehouse.duckdb"  # derived from the data dir
    assert settings.replace(data_dir=Path("/tmp/e")).warehouse.duckdb_path == Path("/tmp/e/warehouse.duckdb")
    with pytest.raises(SettingsError, match="BNPL_PORT='x'"):
        Settings.from_env({"BNPL_PORT": "x"})
    with pytest.raises(SettingsError, match="BNPL_AUTH_DISABLED"):
        Settings.from_env({"BNPL_AUTH_DISABLED": "maybe"})
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.build(no_such_setting=1)
    hidden = dict(
        (env, value)
        for env, value, _ in Settings.from_env(
            {"BNPL_API_KEYS": "k1", "BNPL_REDIS_URL": "redis://:pw@h:6379/0"}
        ).describe()
    )
    assert hidden["BNPL_API_KEYS"] == "(set)"
    assert hidden["BNPL_REDIS_URL"] == "redis://:***@h:6379/0"


def test_every_variable_the_docs_and_deployment_name_is_declared():
    from common.settings import declared

    known = {info.env for info in declared()} | {"BNPL_BQ_CONTRACT_PROJECT"}  # the credential-gated contract test
    for name in ("README.md", "compose.yaml", "Dockerfile", "Makefile"):
        named = set(re.findall(r"\b(?:BNPL|BENCH)_[A-Z_]+\b", (ROOT / name).read_text()))
        assert named <= known, f"{name} names undeclared variables {sorted(named - known)}"


def _creates_client(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr in ("from_url", "Redis", "RedisCluster")) or (
        isinstance(func, ast.Name) and func.id in ("Redis", "RedisCluster")
    )


def test_redis_clients_are_created_in_one_place():
    """``common.redis_client`` connects every process (the embedded server's own start-up probe aside)."""
    assert _creates_client(ast.parse("aioredis.from_url(url)").body[0].value)  # type: ignore[attr-defined]
    allowed = {Path("common/redis_client.py"), Path("common/redis_server.py")}
    creating = {
        str(path)
        for path, tree in _sources()
        if path not in allowed and any(_creates_client(n) for n in ast.walk(tree))
    }
    assert creating == set()


def test_the_scaling_example_names_every_shard_stream_and_caps_workers_at_the_shard_count():
    import yaml

    from common.keys import Keys

    manifest = yaml.safe_load((ROOT / "deploy" / "keda-scaledobject.yaml").read_text())
    triggers = manifest["spec"]["triggers"]
    shards = manifest["spec"]["maxReplicaCount"]
    assert [t["metadata"]["stream"] for t in triggers] == Keys("bnpl", shards).prediction_streams()
    assert {t["type"] for t in triggers} == {"redis-cluster-streams"}
    assert all(int(t["metadata"]["lagCount"]) > 0 for t in triggers)  # lag mode (XINFO GROUPS), Redis 7+
