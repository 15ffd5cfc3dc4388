"""The deployment manifests: valid offline, complete, and a broken one is refused."""

from __future__ import annotations

import copy
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
from tests.conftest import SERVICE_KEY

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
    app = build(Settings(data_dir=tmp_path, service_key=SERVICE_KEY))  # nothing connects yet
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/readyz", "/healthz"} <= paths


def test_the_gateway_is_autoscaled_and_protected_from_disruption(
    local: dict[tuple[str, str], Any],
) -> None:
    assert local[("HorizontalPodAutoscaler", "gateway")]["spec"]["scaleTargetRef"]["name"] == (
        "gateway"
    )
    assert local[("PodDisruptionBudget", "gateway")]["spec"]["maxUnavailable"] == 1


def test_broken_network_policies_and_secrets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    policies = broken / "k8s" / "base" / "network-policies.yaml"
    documents = policies.read_text().split("\n---\n")
    # The default deny gone, and any pod (or address) may call the services.
    kept = [d for d in documents if "name: files-default-deny" not in d]
    assert len(kept) == len(documents) - 1
    gateway_only = """    - from:
        - podSelector:
            matchLabels: {app.kubernetes.io/name: gateway, app.kubernetes.io/part-of: files}
"""
    assert gateway_only in "".join(kept)
    policies.write_text("\n---\n".join(kept).replace(gateway_only, "    - from: []\n"))
    # A service without the service key; a compose secret with a default.
    catalog = broken / "k8s" / "base" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("name: FILES_SERVICE_KEY", "name: FILES_KEY"))
    compose = broken / "compose.yaml"
    compose.write_text(
        compose.read_text().replace(
            "${FILES_SERVICE_KEY:?set FILES_SERVICE_KEY}", "${FILES_SERVICE_KEY:-0123456789}"
        )
    )

    assert check.main(["--deploy", str(broken), "--no-kubectl"]) == 1
    err = capsys.readouterr().err
    assert "no default deny (ingress and egress) for the platform's pods" in err
    assert "network: another pod of the namespace can reach catalog on TCP 8080" in err
    assert "network: an outside address can reach acl on TCP 8080" in err
    assert "catalog: FILES_SERVICE_KEY must come from a Secret" in err
    assert "${FILES_SERVICE_KEY} has a default: secrets have none" in err
    assert "FILES_SERVICE_KEY must come from a required variable" in err


def test_ingest_reaches_public_buckets_but_not_the_cloud_metadata_address(
    local: dict[tuple[str, str], Any],
) -> None:
    objects = copy.deepcopy(list(local.values()))
    (policy,) = [o for o in objects if o["metadata"]["name"] == "ingest-to-cloud-buckets"]
    excluded = policy["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in excluded and "10.0.0.0/8" in excluded
    assert check.check_network(objects) == []
    # Without that exception, the check sees the metadata address reachable.
    excluded.remove("169.254.0.0/16")
    assert "network: ingest can reach the cloud metadata address on TCP 443" in (
        check.check_network(objects)
    )


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
