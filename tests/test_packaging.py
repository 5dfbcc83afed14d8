"""Packaging and deployment files: provider registration, declared dependencies, docker-compose, Dockerfile."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import distribution, distributions, packages_distributions
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "airflow_provider_attentive"


def test_provider_entry_point_and_metadata() -> None:
    dist = distribution("airflow-provider-attentive")
    (entry,) = [e for e in dist.entry_points if e.group == "apache_airflow_provider"]
    info = entry.load()()
    assert info["package-name"] == dist.metadata["Name"] == "airflow-provider-attentive"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "attentive"
    assert conn["hook-class-name"] == "airflow_provider_attentive.hooks.attentive.AttentiveHook"
    assert set(conn["ui-field-behaviour"]["hidden-fields"]) == {"port", "login", "schema"}
    assert conn["ui-field-behaviour"]["relabeling"] == {"password": "API key", "host": "Base URL"}
    for name, field in conn["conn-fields"].items():
        assert "null" in field["schema"]["type"], f"{name} must be optional (nullable) in the React form"
    assert (ROOT / "airflow_provider_attentive" / "py.typed").exists()


def test_test_tools_are_not_runtime_dependencies() -> None:
    requires = distribution("airflow-provider-attentive").requires or []
    runtime = [r for r in requires if "extra ==" not in r]
    for tool in ("pytest", "hypothesis", "ruff", "selenium", "jsonschema"):
        assert not [r for r in runtime if r.lower().startswith(tool)], f"{tool} must not be a runtime dependency"


def test_airflow_lists_the_provider(tmp_path: Path) -> None:
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert any(p["package_name"] == "airflow-provider-attentive" for p in json.loads(out[out.index("[") :]))


@pytest.fixture(scope="module")
def compose() -> dict:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing: run scripts/ensure-packages.sh compose")
    proc = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_compose_stack_has_celery_airflow_and_demo_services(compose: dict) -> None:
    services = compose["services"]
    airflow = {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker-1",
        "airflow-worker-2",
        "airflow-init",
    }
    assert airflow | {"postgres", "redis", "warehouse", "attentive-emulator"} <= set(services)
    for name in airflow:
        service = services[name]
        assert service["build"]["context"] == str(ROOT), f"{name} must build the provider image from the repo"
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env
        conn = json.loads(env["AIRFLOW_CONN_ATTENTIVE_DEFAULT"])
        assert conn["extra"]["rate_limit_backend"] == "redis"
        assert json.loads(env["AIRFLOW_CONN_WAREHOUSE"])["conn_type"] == "postgres"
        mounts = [str(v) for v in service.get("volumes", [])]
        assert any(f"{ROOT / 'dags'}:/opt/airflow/dags" in m for m in mounts), f"{name} must mount the example DAGs"
    assert services["airflow-worker-1"]["command"] == services["airflow-worker-2"]["command"] == "celery worker"


def test_dockerfile_extends_the_official_image_and_installs_the_repo() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in text and "ARG AIRFLOW_VERSION=3.3" in text
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in text and "/opt/airflow-provider-attentive" in text


# -- dependencies: each declared one is imported, each import is declared, extras stay optional ------------

# The one import the package may make without declaring it: the pytest plugin is only ever loaded by pytest.
_HOST_PROVIDED = {"airflow_provider_attentive/emulator/pytest_plugin.py": {"pytest"}}
# The extra that an import-time dependency is allowed for, and where: the emulator needs jsonschema to run.
_EAGER_EXTRAS = {"emulator": "airflow_provider_attentive/emulator/"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _canonical(match.group(1))


@dataclass(frozen=True)
class _Declared:
    runtime: frozenset[str]
    extras: dict[str, frozenset[str]]

    def extra_of(self, dist: str) -> str | None:
        return next((extra for extra, dists in self.extras.items() if dist in dists), None)


def _declared() -> _Declared:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _Declared(
        runtime=frozenset(_requirement_name(r) for r in project["dependencies"]),
        extras={
            extra: frozenset(_requirement_name(r) for r in reqs)
            for extra, reqs in project.get("optional-dependencies", {}).items()
        },
    )


@dataclass(frozen=True)
class _Import:
    module: str
    path: str  # relative to the repository, with forward slashes
    line: int
    deferred: bool  # inside a function or under ``if TYPE_CHECKING:``: runs only when the feature is used
    guarded: bool  # in a ``try`` that catches ImportError: the module has a fallback when the package is absent

    @property
    def eager(self) -> bool:
        """Runs when the importing module is imported, and fails it if the package is missing."""
        return not (self.deferred or self.guarded)

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}"


class _ImportCollector(ast.NodeVisitor):
    """Absolute imports of one module, each marked deferred, guarded, or eager (neither)."""

    _GUARDS = {"ImportError", "ModuleNotFoundError"}

    def __init__(self, path: str) -> None:
        self.path = path
        self.imports: list[_Import] = []
        self._deferred = 0
        self._guarded = 0

    def _add(self, module: str, node: ast.stmt) -> None:
        self.imports.append(_Import(module, self.path, node.lineno, self._deferred > 0, self._guarded > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node)

    def _visit_all(self, nodes: list[ast.AST], *, deferred: int = 0, guarded: int = 0) -> None:
        self._deferred += deferred
        self._guarded += guarded
        for child in nodes:
            self.visit(child)
        self._deferred -= deferred
        self._guarded -= guarded

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._visit_all(list(ast.iter_child_nodes(node)), deferred=1)

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self._visit_all(list(node.body), deferred=1)
        self._visit_all(list(node.orelse))

    def visit_Try(self, node: ast.Try) -> None:
        caught: set[str] = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {k.id for k in kinds if isinstance(k, ast.Name)}
        if not caught & self._GUARDS:
            self.generic_visit(node)
            return
        self._visit_all(list(node.body), guarded=1)
        self._visit_all([*node.handlers, *node.orelse, *node.finalbody])


def _package_imports() -> Iterator[_Import]:
    for file in sorted(PACKAGE.rglob("*.py")):
        collector = _ImportCollector(file.relative_to(ROOT).as_posix())
        collector.visit(ast.parse(file.read_text(), filename=str(file)))
        yield from collector.imports


def _distribution_of(module: str, known: set[str]) -> str | None:
    """The distribution that provides ``module``; None for the standard library and the package itself.

    ``airflow`` is a namespace shared by many distributions: ``airflow.providers.common.sql`` belongs to
    apache-airflow-providers-common-sql, the rest of ``airflow`` to apache-airflow (core and task SDK).
    """
    parts = module.split(".")
    top = parts[0]
    if top in sys.stdlib_module_names or top in ("__future__", "airflow_provider_attentive"):
        return None
    if top == "airflow":
        if len(parts) < 3 or parts[1] != "providers":
            return "apache-airflow"
        candidates = ["apache-airflow-providers-" + "-".join(parts[2:k]) for k in range(3, len(parts) + 1)]
        return next((_canonical(c) for c in candidates if _canonical(c) in known), _canonical(candidates[0]))
    providers = packages_distributions().get(top)
    return _canonical(providers[0]) if providers else _canonical(top)


def _import_name_of(dist: str) -> str:
    """The module a distribution provides: ``airflow.providers.common.sql`` for a provider, else its top level."""
    if dist.startswith("apache-airflow-providers-"):
        return "airflow.providers." + dist.removeprefix("apache-airflow-providers-").replace("-", ".")
    tops = [top for top, dists in packages_distributions().items() if dist in {_canonical(d) for d in dists}]
    return min(tops, default=dist.replace("-", "_"))


@pytest.fixture(scope="module")
def resolved_imports() -> list[tuple[_Import, str]]:
    declared = _declared()
    known = {_canonical(d.metadata["Name"]) for d in distributions()} | declared.runtime
    known |= {dist for dists in declared.extras.values() for dist in dists}
    pairs = [(imp, _distribution_of(imp.module, known)) for imp in _package_imports()]
    return [(imp, dist) for imp, dist in pairs if dist is not None]


def test_every_declared_dependency_is_imported(resolved_imports: list[tuple[_Import, str]]) -> None:
    declared = _declared()
    imported = {dist for _, dist in resolved_imports}
    assert declared.runtime >= {"apache-airflow", "apache-airflow-providers-common-sql", "httpx", "phonenumbers"}
    assert not declared.runtime - imported, (
        f"runtime dependencies never imported: {sorted(declared.runtime - imported)}"
    )
    for extra, dists in declared.extras.items():
        assert not dists - imported, f"the {extra!r} extra installs packages never imported: {sorted(dists - imported)}"


def test_every_third_party_import_is_declared(resolved_imports: list[tuple[_Import, str]]) -> None:
    """Declared as a runtime dependency or in an extra, also when only a lazy import needs it.

    An import in a ``try`` that catches ImportError has its fallback in the ``except`` (which is checked in
    turn), so the package it names is optional by construction.
    """
    declared = _declared()
    undeclared = [
        f"{imp} ({dist})"
        for imp, dist in resolved_imports
        if dist not in declared.runtime
        and declared.extra_of(dist) is None
        and not imp.guarded
        and imp.module.split(".")[0] not in _HOST_PROVIDED.get(imp.path, set())
    ]
    assert not undeclared, "imports of packages that pyproject.toml does not declare:\n" + "\n".join(undeclared)


def test_extras_are_imported_only_where_they_are_optional(resolved_imports: list[tuple[_Import, str]]) -> None:
    """An extra's package is imported lazily (when the feature is used), so the package imports without it.

    The emulator's extra is the exception, inside the emulator only: the emulator needs it to start at all.
    """
    declared = _declared()
    misplaced = []
    for imp, dist in resolved_imports:
        extra = declared.extra_of(dist)
        if extra is None or dist in declared.runtime or not imp.eager:
            continue
        allowed = _EAGER_EXTRAS.get(extra)
        if allowed is None or not imp.path.startswith(allowed):
            misplaced.append(f"{imp} at import time ({dist}, extra {extra!r})")
    assert not misplaced, "an extra's package imported at module import time:\n" + "\n".join(misplaced)


def test_the_import_collector_tells_eager_deferred_and_guarded_imports() -> None:
    source = """
import os
import httpx
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import redis
try:
    from airflow.providers.openlineage.extractors import OperatorLineage
except ImportError:
    from airflow.sdk.lineage import OperatorLineage
def f():
    import jsonschema
try:
    import yaml
except Exception:
    yaml = None
from . import sibling
"""
    collector = _ImportCollector("x.py")
    collector.visit(ast.parse(source))
    kinds = {i.module: "eager" if i.eager else "deferred" if i.deferred else "guarded" for i in collector.imports}
    assert kinds == {
        "os": "eager",
        "httpx": "eager",
        "typing": "eager",
        "redis": "deferred",
        "airflow.providers.openlineage.extractors": "guarded",
        "airflow.sdk.lineage": "eager",
        "jsonschema": "deferred",
        "yaml": "eager",
    }
    known = {"apache-airflow-providers-common-sql", "apache-airflow-providers-openlineage"}
    assert _distribution_of("airflow.providers.common.sql.hooks.sql", known) == "apache-airflow-providers-common-sql"
    assert _distribution_of("airflow.providers.openlineage.extractors", known) == "apache-airflow-providers-openlineage"
    assert _distribution_of("airflow.providers.http.hooks.http", known) == "apache-airflow-providers-http"
    assert _distribution_of("airflow.sdk", known) == "apache-airflow"
    assert _distribution_of("json", known) is None
    assert _distribution_of("httpx", known) == "httpx"


# Run by the fresh virtualenv's interpreter: imports every module of the installed package, found on disk
# (pkgutil.iter_modules, no import needed to list them), and prints what each import needed but missed.
_IMPORT_EVERY_MODULE = """
import importlib, importlib.util, json, pkgutil, sys
from pathlib import Path

absent = sorted(name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None)
root = Path(importlib.util.find_spec("airflow_provider_attentive").origin).parent

def modules(path, prefix):
    for info in pkgutil.iter_modules([str(path)]):
        yield prefix + info.name
        if info.ispkg:
            yield from modules(path / info.name, prefix + info.name + ".")

results = {}
for name in ["airflow_provider_attentive", *modules(root, "airflow_provider_attentive.")]:
    try:
        importlib.import_module(name)
        results[name] = None
    except ModuleNotFoundError as exc:
        results[name] = exc.name
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"root": str(root), "present_but_should_not_be": absent, "modules": results}))
"""


def _uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs uv from the cache first, and asks the package registry only for what the cache lacks."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is missing: make venv installs it into .venv"
    proc = subprocess.run([uv, *args, "--offline"], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        proc = subprocess.run([uv, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"uv {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_imports_with_only_its_runtime_dependencies(tmp_path: Path) -> None:
    """The built wheel, installed alone into a fresh virtualenv, imports every module but the emulator's.

    The versions are pinned to the development environment's, so uv installs from its cache; the emulator
    needs its extra (jsonschema) and the pytest plugin pytest, every other module imports without any extra.
    """
    declared = _declared()
    _uv("build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("airflow_provider_attentive-*.whl")
    constraints = tmp_path / "constraints.txt"
    freeze = _uv("pip", "freeze", "--python", sys.executable, "--exclude-editable", cwd=tmp_path).stdout
    constraints.write_text(freeze)
    venv = tmp_path / "venv"
    _uv("venv", "--python", sys.executable, str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    _uv("pip", "install", "--python", str(python), "--constraint", str(constraints), str(wheel), cwd=tmp_path)

    installed = _uv("pip", "freeze", "--python", str(python), cwd=tmp_path).stdout
    names = {_requirement_name(line.split("==")[0]) for line in installed.splitlines() if "==" in line}
    assert declared.runtime <= names
    # Airflow itself requires jsonschema, so the emulator's extra is installed anyway; the other extras (and
    # pytest) must really be missing here, or importing without them proves nothing.
    optional = {dist for extra in declared.extras.values() for dist in extra} - declared.runtime - names
    must_be_absent = sorted({_import_name_of(dist) for dist in optional} | {"pytest"})
    assert "redis" in must_be_absent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [str(python), "-I", "-c", _IMPORT_EVERY_MODULE, *must_be_absent],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["root"]).is_relative_to(venv), "imported the working tree instead of the wheel"
    assert not report["present_but_should_not_be"]

    emulator_needs = {_import_name_of(dist) for dist in declared.extras["emulator"]}
    failed = {}
    for module, missing in report["modules"].items():
        if missing is None:
            continue
        allowed = emulator_needs if module.startswith("airflow_provider_attentive.emulator") else set()
        if module == "airflow_provider_attentive.emulator.pytest_plugin":
            allowed = allowed | {"pytest"}
        if missing.split(".")[0] not in allowed:
            failed[module] = missing
    assert not failed, f"modules that do not import with only the runtime dependencies: {failed}"
    imported = [m for m, missing in report["modules"].items() if missing is None]
    assert "airflow_provider_attentive.operators.subscriptions" in imported and len(imported) >= 20
