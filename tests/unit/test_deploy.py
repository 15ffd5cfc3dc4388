"""The deployment manifests: valid offline, complete, and a broken one is refused."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shared.kit.settings import Settings
from shared.kit.stack import SERVICES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
APPS = (*SERVICES, "gateway")


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_check", DEPLOY / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = _load_check()


@pytest.fixture(scope="module")
def local() -> dict[tuple[str, str], Any]:
    objects = check.render(DEPLOY / "k8s" / "overlays" / "local")
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_every_manifest_passes_the_check() -> None:
    assert check.check(DEPLOY, kubectl=False) == []


def test_broken_manifests_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    gateway = broken / "k8s" / "base" / "gateway.yaml"
    text = gateway.read_text()
    assert "\n  replicas: 2\n" in text
    gateway.write_text(text.replace("\n  replicas: 2\n", '\n  replicas: "two"\n', 1))
    acl = broken / "k8s" / "base" / "acl.yaml"
    acl.write_text(
        acl.read_text()
        .replace("path: /readyz", "path: /ready")
        .replace("revisionHistoryLimit", "revisionHistoryLimmit")
    )

    assert check.main(["--deploy", str(broken), "--no-kubectl"]) == 1
    err = capsys.readouterr().err
    assert "Deployment/gateway: spec.replicas: 'two' is not of type 'integer'" in err
    assert "acl: readinessProbe must GET /readyz" in err
    assert "revisionHistoryLimmit" in err  # strict: an unknown field is an error


@pytest.mark.parametrize("name", APPS)
def test_each_service_has_a_deployment_with_probes_and_resources(
    local: dict[tuple[str, str], Any], name: str
) -> None:
    deployment = local[("Deployment", name)]
    assert ("Service", name) in local
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    assert container["command"] == ["python", "-m", f"services.{name}", "--port", "8080"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for part in ("requests", "limits"):
        assert set(container["resources"][part]) == {"cpu", "memory"}


@pytest.mark.parametrize("name", APPS)
def test_the_probed_paths_exist(name: str, tmp_path: Path) -> None:
    build = importlib.import_module(f"services.{name}.app").build
    app = build(Settings(data_dir=tmp_path))  # nothing connects before startup
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/readyz", "/healthz"} <= paths


def test_the_gateway_is_autoscaled_and_protected_from_disruption(
    local: dict[tuple[str, str], Any],
) -> None:
    assert local[("HorizontalPodAutoscaler", "gateway")]["spec"]["scaleTargetRef"]["name"] == (
        "gateway"
    )
    assert local[("PodDisruptionBudget", "gateway")]["spec"]["maxUnavailable"] == 1


def test_topics_take_what_the_producers_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The topics Job and compose set max.message.bytes from the one constant."""
    from shared.contracts.limits import MAX_MESSAGE_BYTES
    from shared.kit.bus import TOPIC_CONFIG

    assert TOPIC_CONFIG["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    for path in (broken / "k8s" / "base" / "topics.yaml", broken / "compose.yaml"):
        text = path.read_text()
        assert f'MAX_MESSAGE_BYTES: "{MAX_MESSAGE_BYTES}"' in text
        path.write_text(text.replace(f'"{MAX_MESSAGE_BYTES}"', '"524288"'))
    assert check.main(["--deploy", str(broken), "--no-kubectl"]) == 1
    err = capsys.readouterr().err
    assert "files-topics: MAX_MESSAGE_BYTES is '524288'" in err
    assert "compose.yaml topics: MAX_MESSAGE_BYTES is '524288'" in err
