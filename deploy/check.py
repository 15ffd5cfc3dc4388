"""`make deploy-check`: every manifest under deploy/ checked offline.

Renders each kustomization (base, then each overlay) with the small renderer below,
validates every object against the Kubernetes OpenAPI schemas of KUBERNETES_VERSION
(the `kubernetes-validate` package, strict: unknown fields are errors), then checks
what the schemas cannot: every service has a Deployment and a Service, probes on
/readyz and /healthz, requests and limits, references that resolve, the service key
from a Secret; the NetworkPolicies let through exactly the flows the platform needs
(every flow between the pods, the operators' pods, DNS and outside addresses is played
through them); compose.yaml runs the same image and commands and holds no default
secret; the Dockerfile has the shape the manifests assume.

The renderer knows the kustomization fields this project uses (resources, namespace,
images, replicas, strategic-merge patches, configMapGenerator without hash suffixes)
and refuses any other. When `kubectl` is on the PATH its `kubectl kustomize` output
must equal the renderer's (skip with --no-kubectl).

Exit status 0 when everything holds; otherwise each problem is printed and it is 1.
"""

from __future__ import annotations

import argparse
import copy
import functools
import ipaddress
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, schema_contents
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.31.0"
DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.contracts import limits, topics  # noqa: E402
from shared.kit.stack import SERVICES  # noqa: E402

APPS = (*SERVICES, "gateway")
# Only these consume no topic, so an autoscaler may add replicas freely.
# Scaled by CPU (an HPA): the gateway and ingest keep no state; the thumbnails context's
# consumer only records requests, and its CPU work is taken from the database by any replica.
STATELESS = {"gateway", "ingest", "thumbnails"}
PORT = 8080
KUSTOMIZE_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "replicas",
    "patches",
    "configMapGenerator",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
# Lists a strategic merge patch merges item by item, by this key (as Kubernetes does).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}

Obj = dict[str, Any]


class Invalid(Exception):
    pass


# ---------------------------------------------------------------- rendering


def load_yaml(path: Path) -> list[Obj]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        raise Invalid(f"{path}: not YAML: {error}") from error
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise Invalid(f"{path}: a document without kind and apiVersion")
    return docs


def key_of(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["kind"], meta.get("namespace", ""), meta.get("name", "")


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize <directory>` would print (in another order)."""
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise Invalid(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(path.read_text()) or {}
    unknown = set(k) - KUSTOMIZE_FIELDS
    if unknown:
        raise Invalid(f"{path}: fields this renderer does not know: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        objects += render(target) if target.is_dir() else load_yaml(target)
    for gen in k.get("configMapGenerator", []):
        objects.append(generate_config_map(directory, gen, path))
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise Invalid(f"{path}: only `patches: - path: <strategic merge patch>` is known")
        for doc in load_yaml(directory / patch["path"]):
            apply_patch(objects, doc, path)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        set_image(objects, image, path)
    for rep in k.get("replicas", []):
        found = [
            o
            for o in objects
            if o["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
            and o["metadata"]["name"] == rep["name"]
        ]
        if not found:
            raise Invalid(f"{path}: replicas for {rep['name']}, which is not rendered")
        for obj in found:
            obj["spec"]["replicas"] = rep["count"]
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if key_of(obj) in seen:
            raise Invalid(f"{directory}: {key_of(obj)} defined twice")
        seen.add(key_of(obj))
    return objects


def generate_config_map(directory: Path, gen: Obj, where: Path) -> Obj:
    options = gen.get("options", {})
    if not options.get("disableNameSuffixHash"):
        raise Invalid(f"{where}: configMapGenerator needs options.disableNameSuffixHash: true")
    if set(gen) - {"name", "files", "literals", "options"}:
        raise Invalid(f"{where}: configMapGenerator fields not known: {sorted(gen)}")
    data: dict[str, str] = {}
    for entry in gen.get("files", []):
        key, _, file = entry.rpartition("=")
        data[key or Path(file).name] = (directory / file).read_text()
    for entry in gen.get("literals", []):
        key, _, value = entry.partition("=")
        data[key] = value
    meta: Obj = {"name": gen["name"]}
    if options.get("labels"):
        meta["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def apply_patch(objects: list[Obj], patch: Obj, where: Path) -> None:
    name = patch.get("metadata", {}).get("name")
    targets = [o for o in objects if o["kind"] == patch["kind"] and o["metadata"]["name"] == name]
    if len(targets) != 1:
        raise Invalid(f"{where}: patch of {patch['kind']}/{name} matches {len(targets)} objects")
    merge(targets[0], patch, where)


def merge(into: Obj, patch: Obj, where: Path) -> None:
    for field, value in patch.items():
        if field.startswith("$"):
            raise Invalid(f"{where}: patch directive {field} is not known to this renderer")
        current = into.get(field)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value, where)
        elif field in MERGE_KEYS and isinstance(value, list) and isinstance(current, list):
            key = MERGE_KEYS[field]
            for item in value:
                same = [c for c in current if c.get(key) == item.get(key)]
                if same:
                    merge(same[0], item, where)
                else:
                    current.append(copy.deepcopy(item))
        else:
            into[field] = copy.deepcopy(value)


def pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


def containers(obj: Obj) -> list[Obj]:
    return [
        c
        for pod in pod_specs(obj)
        for c in (*pod.get("initContainers", []), *pod.get("containers", []))
    ]


def set_image(objects: list[Obj], image: Obj, where: Path) -> None:
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise Invalid(f"{where}: image fields not known: {sorted(image)}")
    for obj in objects:
        for c in containers(obj):
            name, tag = split_image(c["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            if "digest" in image:
                c["image"] = f"{name}@{image['digest']}"
                continue
            tag = image.get("newTag", tag)
            c["image"] = name + (tag if tag.startswith("@") else f":{tag}" if tag else "")


def split_image(ref: str) -> tuple[str, str]:
    """`repo/name:tag` -> (`repo/name`, `tag`); a digest comes back as `@sha256:...`."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, ""


# ---------------------------------------------------------------- checks


@functools.cache
def validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """The strict schema of one kind, as kubernetes_validate.validate builds it, kept
    (that function reads the large definitions file again for every object)."""
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", KUBERNETES_VERSION)
    except FileNotFoundError as error:
        raise SchemaNotFoundError(kind, KUBERNETES_VERSION, api_version) from error
    registry = Resource.from_contents(definitions()) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def definitions() -> Any:
    return schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json",
        KUBERNETES_VERSION,
    )


def validate_schemas(objects: Iterable[Obj], where: str) -> list[str]:
    problems = []
    for obj in objects:
        what = f"{where}: {obj['kind']}/{obj.get('metadata', {}).get('name')}"
        try:
            errors = list(validator(obj["kind"], obj["apiVersion"]).iter_errors(obj))
        except SchemaNotFoundError as error:
            problems.append(f"{what}: {error.message}")
            continue
        for found in errors:
            path = ".".join(str(p) for p in found.absolute_path)
            problems.append(f"{what}: {path}: {found.message}")
    return problems


def check_platform(objects: list[Obj], where: str) -> list[str]:
    """What a complete rendering (an overlay) must hold beyond the schemas."""
    problems: list[str] = []
    by_key = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def problem(text: str) -> None:
        problems.append(f"{where}: {text}")

    config_maps = {n: o for (k, n), o in by_key.items() if k == "ConfigMap"}
    secrets = {n: o for (k, n), o in by_key.items() if k == "Secret"}
    for name in APPS:
        deployment = by_key.get(("Deployment", name))
        service = by_key.get(("Service", name))
        if deployment is None or service is None:
            problem(f"{name}: needs a Deployment and a Service")
            continue
        problems += [f"{where}: {name}: {p}" for p in check_deployment(name, deployment)]
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        selector = service["spec"].get("selector", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problem(f"{name}: the Service's selector does not select the Deployment's pods")
        ports = {
            p.get("name")
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        if any(p.get("targetPort") not in ports for p in service["spec"]["ports"]):
            problem(f"{name}: a Service targetPort names no container port")
    for obj in objects:
        for c in containers(obj):
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref and ref["configMapRef"]["name"] not in config_maps:
                    problem(f"{obj['metadata']['name']}: no ConfigMap {ref['configMapRef']}")
                if "secretRef" in ref and ref["secretRef"]["name"] not in secrets:
                    problem(f"{obj['metadata']['name']}: no Secret {ref['secretRef']}")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not secret_has(secrets.get(ref["name"]), ref["key"]):
                    problem(f"{obj['metadata']['name']}: no key {ref['key']} in {ref['name']}")
            if split_image(c["image"])[1] in ("", "latest"):
                problem(f"{obj['metadata']['name']}: image {c['image']} has no fixed tag")
        for pod in pod_specs(obj):
            for volume in pod.get("volumes", []):
                cm = volume.get("configMap", {}).get("name")
                if cm and cm not in config_maps:
                    problem(f"{obj['metadata']['name']}: volume from missing ConfigMap {cm}")
    for (kind, name), obj in by_key.items():
        if kind == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            if (target["kind"], target["name"]) not in by_key:
                problem(f"HPA {name}: its target {target['name']} is not rendered")
            elif target["name"] not in STATELESS:
                problem(f"HPA {name}: {target['name']} consumes topics; size it by partitions")
    if ("PodDisruptionBudget", "gateway") not in by_key:
        problem("the gateway needs a PodDisruptionBudget")
    if not any(k == "HorizontalPodAutoscaler" and n == "gateway" for k, n in by_key):
        problem("the gateway needs a HorizontalPodAutoscaler")
    for name in APPS:
        deployment = by_key.get(("Deployment", name))
        if deployment is not None and not any(
            env.get("name") == "FILES_SERVICE_KEY" and "secretKeyRef" in env.get("valueFrom", {})
            for c in deployment["spec"]["template"]["spec"]["containers"]
            if c["name"] == name
            for env in c.get("env", [])
        ):
            problem(f"{name}: FILES_SERVICE_KEY must come from a Secret")
    problems += [f"{where}: {p}" for p in check_topics(config_maps)]
    problems += [f"{where}: {p}" for p in check_network(objects)]
    return problems


# ---------------------------------------------------------------- network policies

# Where the platform's pods live, as the flows below are played.
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
SERVICES_ONLY = tuple(a for a in APPS if a != "gateway")
# Pods and addresses the platform's pods meet, with the labels their operators give.
POSTGRES = "postgres"
KAFKA = "kafka"
S3 = "minio"
DNS = "dns"
OUTSIDE = "an outside address"
PRIVATE = "a private address"
METADATA = "the cloud metadata address"
INTRUDER = "another pod of the namespace"
ELSEWHERE = "a gateway look-alike in another namespace"
# name: (namespace, None for the platform's; labels)
FOREIGN_PODS: dict[str, tuple[str | None, dict[str, str]]] = {
    POSTGRES: (None, {"cnpg.io/cluster": "files-pg", "cnpg.io/instanceRole": "primary"}),
    KAFKA: (None, {"strimzi.io/cluster": "files-kafka", "strimzi.io/kind": "Kafka"}),
    S3: (None, {"v1.min.io/tenant": "files", "app": "minio"}),
    DNS: ("kube-system", {"k8s-app": "kube-dns"}),
    INTRUDER: (None, {"app": "curious"}),
    ELSEWHERE: ("other", {"app.kubernetes.io/name": "gateway"}),
}
ADDRESSES = {OUTSIDE: "203.0.113.7", PRIVATE: "10.1.2.3", METADATA: "169.254.169.254"}
PORTS = (("UDP", 53), ("TCP", 53), ("TCP", 80), ("TCP", 443), ("TCP", 5432), ("TCP", 8080))
PORTS += (("TCP", 9000), ("TCP", 9090), ("TCP", 9092))


def needed_flows(outsiders: Iterable[str]) -> set[tuple[str, str, str, int]]:
    """(from, to, protocol, port): every flow the platform needs, and no other. Anything
    but the platform's own pods reaches the gateway's two ports (the public edge)."""
    flows = set()
    platform = (*APPS, "files-topics")
    for source in outsiders:
        flows |= {(source, "gateway", "TCP", 8080), (source, "gateway", "TCP", 9090)}
    for pod in platform:
        flows |= {(pod, DNS, "UDP", 53), (pod, DNS, "TCP", 53), (pod, KAFKA, "TCP", 9092)}
    for service in SERVICES_ONLY:
        flows |= {("gateway", service, "TCP", 8080), (service, POSTGRES, "TCP", 5432)}
    flows |= {(name, S3, "TCP", 9000) for name in ("ingest", "dicom", "thumbnails")}
    flows |= {("ingest", OUTSIDE, "TCP", 443), ("datasets", "acl", "TCP", 8080)}
    flows |= {("ingest", "acl", "TCP", 8080)}  # sharing an integration names users
    flows |= {("thumbnails", "ingest", "TCP", 8080)}  # objects imported by reference
    flows |= {("ingest", "catalog", "TCP", 8080)}  # an upload session's opener's folder
    return flows


@dataclass
class Endpoint:
    name: str
    namespace: str | None  # None: an address outside the cluster
    labels: dict[str, str]
    address: str
    ports: dict[str, int]  # named container ports


def _selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: Obj, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.address)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False  # an address outside the cluster is no pod
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {NAMESPACE_LABEL: other.namespace}):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], other.labels)


def _port_matches(rule_ports: list[Obj] | None, target: Endpoint, proto: str, port: int) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != proto:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        if number is not None and number <= port <= entry.get("endPort", number):
            return True
    return False


def _allows(
    policies: list[Obj],
    pod: Endpoint,
    other: Endpoint,
    target: Endpoint,
    direction: str,
    port: tuple[str, int],
) -> bool:
    """Whether the policies selecting `pod` let its traffic with `other` through in
    `direction` (Ingress: other -> pod; Egress: pod -> other), to `target`'s port."""
    if pod.namespace is None:
        return True
    field = "ingress" if direction == "Ingress" else "egress"
    peers = "from" if direction == "Ingress" else "to"
    selecting = []
    for policy in policies:
        spec = policy["spec"]
        kinds = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
        if (
            direction in kinds
            and policy["metadata"].get("namespace", "") == pod.namespace
            and _selects(spec.get("podSelector", {}), pod.labels)
        ):
            selecting.append(policy)
    if not selecting:
        return True  # no policy selects it: Kubernetes lets everything through
    return any(
        _port_matches(rule.get("ports"), target, *port)
        and (
            not rule.get(peers) or any(_peer_matches(p, pod.namespace, other) for p in rule[peers])
        )
        for policy in selecting
        for rule in policy["spec"].get(field) or []
    )


def check_network(objects: list[Obj]) -> list[str]:
    """Plays every flow between the platform's pods, its dependencies and outside
    addresses through the NetworkPolicies: each needed one must pass, no other."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    namespace = next((o["metadata"]["namespace"] for o in objects if o["kind"] == "Deployment"), "")
    problems = []
    endpoints: dict[str, Endpoint] = {}
    for obj in objects:
        for pod in pod_specs(obj):
            template = obj["spec"].get("template") or obj["spec"]["jobTemplate"]["spec"]["template"]
            labels = template.get("metadata", {}).get("labels", {})
            if labels.get("app.kubernetes.io/part-of") != "files":
                problems.append(
                    f"{obj['kind']}/{obj['metadata']['name']}: its pods need the label"
                    " app.kubernetes.io/part-of: files (the default deny selects it)"
                )
            ports = {
                p["name"]: p["containerPort"]
                for c in pod["containers"]
                for p in c.get("ports", [])
                if "name" in p
            }
            endpoints[obj["metadata"]["name"]] = Endpoint(
                obj["metadata"]["name"], namespace, labels, "10.244.0.10", ports
            )
    for name, (ns, labels) in FOREIGN_PODS.items():
        endpoints[name] = Endpoint(name, ns or namespace, labels, "10.244.0.20", {})
    for name, address in ADDRESSES.items():
        endpoints[name] = Endpoint(name, None, {}, address, {})
    if not any(
        set(p["spec"].get("policyTypes", [])) >= {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        and _selects(p["spec"].get("podSelector", {}), {"app.kubernetes.io/part-of": "files"})
        for p in policies
    ):
        problems.append("no default deny (ingress and egress) for the platform's pods")
    platform = {
        n for n, e in endpoints.items() if e.labels.get("app.kubernetes.io/part-of") == "files"
    }
    needed = needed_flows(set(endpoints) - platform)
    for source in endpoints.values():
        for target in endpoints.values():
            if source is target or (source.name not in platform and target.name not in platform):
                continue
            for port in PORTS:
                passes = _allows(policies, source, target, target, "Egress", port) and _allows(
                    policies, target, source, target, "Ingress", port
                )
                flow = (source.name, target.name, *port)
                if passes and flow not in needed:
                    problems.append(
                        f"network: {source.name} can reach {target.name} on {port[0]} {port[1]}"
                    )
                elif not passes and flow in needed:
                    problems.append(
                        f"network: {source.name} cannot reach {target.name} on {port[0]} {port[1]}"
                    )
    return problems


def secret_has(secret: Obj | None, key: str) -> bool:
    return secret is not None and key in {**secret.get("data", {}), **secret.get("stringData", {})}


def check_deployment(name: str, deployment: Obj) -> list[str]:
    problems = []
    pod = deployment["spec"]["template"]["spec"]
    main = [c for c in pod["containers"] if c["name"] == name]
    if not main:
        return [f"no container named {name}"]
    c = main[0]
    if c.get("command") != command_of(name):
        problems.append(f"command {c.get('command')} is not {command_of(name)}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = c.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{probe} must GET {path}, not {got}")
    for c in (*pod.get("initContainers", []), *pod["containers"]):
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part, {})):
                problems.append(f"container {c['name']}: {part} need cpu and memory")
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problems.append("pods must run as non-root (securityContext.runAsNonRoot)")
    return problems


def command_of(name: str) -> list[str]:
    return ["python", "-m", f"services.{name}", "--port", str(PORT)]


def check_topics(config_maps: dict[str, Obj]) -> list[str]:
    data = config_maps.get("files-topics", {}).get("data", {})
    listed = dict(entry.split("=") for entry in data.get("TOPICS", "").split())
    if set(listed) != set(topics.ALL):
        return [f"files-topics lists {sorted(listed)}, the contracts name {sorted(topics.ALL)}"]
    if int(data.get("MIN_INSYNC_REPLICAS", 0)) > int(data.get("REPLICATION_FACTOR", 0)):
        return ["files-topics: MIN_INSYNC_REPLICAS above REPLICATION_FACTOR"]
    return check_message_bytes("files-topics", data)


def check_message_bytes(where: str, env: dict[str, Any]) -> list[str]:
    """Topics take the records the producers send: one number, limits.MAX_MESSAGE_BYTES."""
    if str(env.get("MAX_MESSAGE_BYTES")) != str(limits.MAX_MESSAGE_BYTES):
        return [
            f"{where}: MAX_MESSAGE_BYTES is {env.get('MAX_MESSAGE_BYTES')!r}, the producers"
            f" send up to {limits.MAX_MESSAGE_BYTES} (shared/contracts/limits.py)"
        ]
    return []


def check_compose(path: Path) -> list[str]:
    problems = []
    compose = yaml.safe_load(path.read_text())
    services = compose.get("services", {})
    for infra in ("postgres", "kafka", "minio", "topics"):
        if infra not in services:
            problems.append(f"{path.name}: no {infra} service")
    images = set()
    for name in APPS:
        service = services.get(name)
        if service is None:
            problems.append(f"{path.name}: no service {name}")
            continue
        images.add(service.get("image"))
        if service.get("command") != command_of(name):
            problems.append(f"{path.name}: {name} runs {service.get('command')}")
        env = compose_env(service)
        if str(env.get("FILES_KAFKA_IDEMPOTENCE", "")).lower() != "true":
            problems.append(f"{path.name}: {name} without FILES_KAFKA_IDEMPOTENCE=true")
        if "FILES_SERVICE_KEY" not in env:
            problems.append(f"{path.name}: {name} without FILES_SERVICE_KEY")
    for name, service in services.items():
        for key, value in compose_env(service).items():
            if SECRET_NAME.search(key) and not REQUIRED_VARIABLE.search(str(value)):
                problems.append(
                    f"{path.name}: {name}: {key} must come from a required variable"
                    " (${VARIABLE:?message}), not a value or a default"
                )
    for variable in DEFAULTED_VARIABLE.findall(path.read_text()):
        if SECRET_NAME.search(variable):
            problems.append(f"{path.name}: ${{{variable}}} has a default: secrets have none")
    if len(images) != 1:
        problems.append(f"{path.name}: the services use more than one image: {sorted(images)}")
    if "topics" in services:
        problems += check_message_bytes(f"{path.name} topics", compose_env(services["topics"]))
    return problems


# Variables holding a secret (an S3 access key id is a name, not a secret).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(?<!ACCESS)_KEY$|DATABASE_URL")
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Z0-9_]+:?\?[^}]*\}")
DEFAULTED_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+):?[-=+]")


def compose_env(service: Obj) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(e.split("=", 1) for e in env)
    return dict(env)


def check_dockerfile(path: Path) -> list[str]:
    text = path.read_text()
    wanted = {
        "a python:3.11-slim base": r"^FROM python:3\.11-slim\b",
        "dependencies from uv.lock": r"uv sync --frozen --no-dev",
        "a non-root user": r"^USER [1-9][0-9]*",
        "the topics wait in the image": r"COPY .*deploy/wait_for_topics\.py",
    }
    return [
        f"{path.name}: needs {what}"
        for what, pattern in wanted.items()
        if not re.search(pattern, text, re.MULTILINE)
    ]


def compare_with_kubectl(directory: Path, objects: list[Obj]) -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return []
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        return [f"kubectl kustomize failed: {done.stderr.strip()}"]
    theirs = {key_of(o): o for o in yaml.safe_load_all(done.stdout) if o}
    mine = {key_of(o): o for o in objects}
    if theirs.keys() != mine.keys():
        return [f"kubectl renders {sorted(theirs)}, this renderer {sorted(mine)}"]
    return [
        f"{'/'.join(key)} differs from kubectl kustomize at {', '.join(paths)}"
        for key in sorted(mine)
        if (paths := differences(theirs[key], mine[key]))
    ]


def differences(a: Any, b: Any, at: str = "") -> list[str]:
    """Paths where two rendered objects differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            p
            for k in sorted(a.keys() | b.keys())
            for p in differences(a.get(k), b.get(k), f"{at}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in differences(x, y, f"{at}[{i}]")
        ]
    return [] if a == b else [at or "."]


def check(deploy: Path = DEPLOY, *, kubectl: bool = True) -> list[str]:
    """Every problem found under `deploy` (a copy of this directory, in tests)."""
    problems: list[str] = []
    layouts = [deploy / "k8s" / "base", *sorted((deploy / "k8s" / "overlays").iterdir())]
    for directory in layouts:
        where = str(directory.relative_to(deploy))
        try:
            objects = render(directory)
        except (Invalid, OSError) as error:
            problems.append(f"{where}: {error}")
            continue
        problems += validate_schemas(objects, where)
        if directory.parent.name == "overlays":
            problems += check_platform(objects, where)
        if kubectl:
            problems += [f"{where}: {p}" for p in compare_with_kubectl(directory, objects)]
    problems += check_compose(deploy / "compose.yaml")
    problems += check_dockerfile(deploy / "Dockerfile")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", type=Path, default=DEPLOY, help="the deploy directory")
    parser.add_argument("--no-kubectl", action="store_true", help="skip the kubectl comparison")
    args = parser.parse_args(argv)
    problems = check(args.deploy, kubectl=not args.no_kubectl)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        print(f"deploy-check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    compared = not args.no_kubectl and shutil.which("kubectl")
    checked = "; the renderer agrees with kubectl kustomize" if compared else ""
    print(f"deploy-check: manifests valid for Kubernetes {KUBERNETES_VERSION}{checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
