"""deploy/k8s: the Kubernetes manifests, checked offline against the Kubernetes API's own OpenAPI schemas
(kubernetes-validate, strict: an unknown or misspelt field fails), and against what the service and the compose file
say: the shard count, the probes, the token's secret, the Triton Service's name and port, the images.

Not checked here: applying them to a cluster (none is available to these tests), and Triton's own image.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import REPO_ROOT

from models.triton_repo import TRITON_IMAGE, RepoOptions
from streamer.__main__ import build_parser
from streamer.camera_config import load_cameras_file
from streamer.server.config import ServerConfig
from streamer.shards import Shard

K8S = REPO_ROOT / "deploy" / "k8s"
# The oldest Kubernetes release the manifests are meant for, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NOT_LISTED = {"kustomization.yaml", "secret.example.yaml"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {path.name: documents(path) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"}


def find(kind: str, name: str) -> dict[str, Any]:
    found = [doc for docs in manifests().values() for doc in docs
             if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container(workload: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    pod = workload["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = [c for c in pod["initContainers" if init else "containers"] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def port_number(c: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    return int(ports[name])


def command_of(c: dict[str, Any]) -> list[str]:
    return [*c.get("command", []), *c.get("args", [])]


def flag(command: list[str], name: str) -> str:
    assert command.count(name) == 1, (name, command)
    return command[command.index(name) + 1]


def compose_services() -> dict[str, Any]:
    """docker-compose.yml as YAML reads it (anchors and merge keys resolved; no docker-compose needed)."""
    services: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    return services


STREAMER = find("StatefulSet", "face-streamer")
TRITON = find("Deployment", "triton")


# -------------------------------------------------------------------------------------------------- the schemas


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(manifests()))
def test_every_manifest_validates_strictly_against_the_kubernetes_schemas(name: str, version: str) -> None:
    docs = manifests()[name]
    assert docs, f"{name} holds no document"
    for doc in docs:
        # Raises on any error, and on a kind it has no schema for: nothing passes unchecked.
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(("what", "mutate"), [
    ("a misspelt field", lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
     .__setitem__("pathh", "/healthz")),
    ("an unknown field in the pod", lambda d: d["spec"]["template"]["spec"].__setitem__("hostnetwork", True)),
    ("a wrong type", lambda d: d["spec"].__setitem__("replicas", "two")),
    ("a missing required field", lambda d: d["spec"].pop("selector")),
    ("a field at the wrong level", lambda d: d["metadata"].__setitem__("replicas", 2)),
    ("a list where an object goes", lambda d: d["spec"]["template"]["spec"].__setitem__("securityContext", [])),
])
def test_a_broken_manifest_fails_the_validator(what: str, mutate: Any) -> None:
    broken = copy.deepcopy(STREAMER)
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    kubernetes_validate.validate(STREAMER, VERSIONS[-1], strict=True)  # the original still passes


def test_an_unknown_kind_is_an_error_not_a_pass() -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "apps/v1", "kind": "StatefulSett", "metadata": {"name": "x"}},
                                     VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = documents(K8S / "kustomization.yaml")[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - NOT_LISTED
    assert sorted(resources) == sorted(on_disk) and len(set(resources)) == len(resources), resources
    assert "secret.example.yaml" not in resources
    assert set(kustomization) == {"apiVersion", "kind", "resources"}, "nothing kustomize would rewrite unannounced"


# ----------------------------------------------------------------------------------- what the manifests promise


def test_the_statefulset_runs_as_many_replicas_as_shards() -> None:
    command = command_of(container(STREAMER, "face-streamer"))
    spec, _, count = flag(command, "--shard").partition("/")
    assert spec == "auto", "the index comes from the pod's ordinal"
    assert STREAMER["spec"]["replicas"] == int(count) >= 2
    # Every pod the StatefulSet makes gets its own shard, and the service parses those arguments.
    shards = set()
    for ordinal in range(STREAMER["spec"]["replicas"]):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("socket.gethostname", lambda o=ordinal: f"{STREAMER['metadata']['name']}-{o}")
            args = build_parser().parse_args(command)
        shards.add(args.shard)
        assert args.command == "serve" and args.host == "0.0.0.0"
    assert shards == {Shard(i, int(count)) for i in range(int(count))}


def test_probes_point_at_healthz_and_tritons_health() -> None:
    streamer = container(STREAMER, "face-streamer")
    env = {e["name"]: e.get("value") for e in streamer["env"]}
    assert streamer["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert port_number(streamer, "http") == int(env["STREAMER_PORT"]) == 9002
    assert "tcpSocket" in streamer["livenessProbe"], "a Triton outage must not restart the replicas"
    triton = container(TRITON, "triton")
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert port_number(triton, "http") == 8000


def test_the_token_comes_from_a_mounted_secret() -> None:
    streamer = container(STREAMER, "face-streamer")
    command = command_of(streamer)
    token_file = Path(flag(command, "--token-file"))
    assert "--token" not in command and "--insecure-no-token" not in command
    assert not any(e["name"].startswith("STREAMER_TOKEN") for e in streamer["env"])
    mount = next(m for m in streamer["volumeMounts"] if token_file.parent == Path(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in STREAMER["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    secret = volume["secret"]
    assert {"key": "token", "path": token_file.name} in secret["items"]
    # Readable by the image's group only (fsGroup), not by others.
    assert secret["defaultMode"] == 0o440 and STREAMER["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == (
        10001)
    example = documents(K8S / "secret.example.yaml")[0]
    assert example["kind"] == "Secret" and example["metadata"]["name"] == secret["secretName"]
    assert set(example["stringData"]) == {"token"}
    for version in VERSIONS:
        kubernetes_validate.validate(example, version, strict=True)
    # What the kustomization and the README tell an operator to run makes that secret.
    expected = f"kubectl -n face-streamer create secret generic {secret['secretName']} --from-file=token="
    assert expected in (K8S / "kustomization.yaml").read_text()


def test_the_detector_url_points_at_the_triton_service_grpc_port() -> None:
    command = command_of(container(STREAMER, "face-streamer"))
    url = flag(command, "--detector")
    scheme, _, rest = url.partition("://")
    address, _, model = rest.partition("/")
    host, _, port = address.partition(":")
    service = find("Service", host)
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert scheme == "triton" and int(port) == grpc["port"] == 8001
    assert service["spec"]["selector"].items() <= TRITON["spec"]["template"]["metadata"]["labels"].items()
    assert port_number(container(TRITON, "triton"), grpc["targetPort"]) == 8001
    assert service["spec"]["type"] == "ClusterIP"
    # The model the initContainer writes under that name, into the folder Triton serves.
    init = command_of(container(TRITON, "model-repository", init=True))
    assert init == ["python", "-m", "models.triton_repo", "/models"] and model == RepoOptions().name
    triton = command_of(container(TRITON, "triton"))
    assert triton == ["tritonserver", "--model-repository=/models"]
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]}
              for c in (container(TRITON, "model-repository", init=True), container(TRITON, "triton"))}
    assert mounts["model-repository"]["models"]["mountPath"] == mounts["triton"]["models"]["mountPath"] == "/models"
    assert mounts["triton"]["models"]["readOnly"] is True
    volume = next(v for v in TRITON["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert "emptyDir" in volume
    assert container(TRITON, "triton")["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_images_are_the_compose_files() -> None:
    services = compose_services()
    triton_replicas = [s for s in services.values() if "--detector" in s.get("command", [])]
    assert triton_replicas
    streamer_images = {s["image"] for s in triton_replicas} | {services["triton-repo"]["image"]}
    assert streamer_images == {services["streamer-cpu"]["image"]}
    assert container(STREAMER, "face-streamer")["image"] in streamer_images
    assert container(TRITON, "model-repository", init=True)["image"] in streamer_images
    assert container(TRITON, "triton")["image"] == services["triton"]["image"] == TRITON_IMAGE
    # And the same detector URL and shard count as the compose replicas.
    k8s = command_of(container(STREAMER, "face-streamer"))
    for replica in triton_replicas:
        assert flag(replica["command"], "--detector") == flag(k8s, "--detector")
        assert flag(replica["command"], "--shard").split("/")[1] == flag(k8s, "--shard").split("/")[1]


def test_services_select_the_pods_and_keep_a_client_on_one_replica() -> None:
    labels = STREAMER["spec"]["template"]["metadata"]["labels"]
    assert STREAMER["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = find("Service", STREAMER["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    service = find("Service", "face-streamer")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    for svc in (headless, service):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert TRITON["spec"]["selector"]["matchLabels"].items() <= TRITON["spec"]["template"]["metadata"]["labels"].items()


def test_only_the_replicas_may_reach_tritons_grpc_port() -> None:
    """Raw frames go to Triton, which has no access control: its NetworkPolicy admits the replicas' pods, to the
    gRPC port the detector URL names, and nothing else."""
    policy = find("NetworkPolicy", "triton")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= TRITON["spec"]["template"]["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector or ipBlock widening it
    assert source["podSelector"]["matchLabels"].items() <= STREAMER["spec"]["template"]["metadata"]["labels"].items()
    grpc = port_number(container(TRITON, "triton"), "grpc")
    assert rule["ports"] == [{"protocol": "TCP", "port": grpc}]
    assert flag(command_of(container(STREAMER, "face-streamer")), "--detector").endswith(f":{grpc}/centerface")


def test_pods_run_as_non_root_with_requests_and_the_streamer_on_a_read_only_root() -> None:
    for workload in (STREAMER, TRITON):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
    for c in (container(STREAMER, "face-streamer"), container(TRITON, "model-repository", init=True)):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}  # what the image writes (upload jobs)
    assert STREAMER["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001  # the image's USER


def test_allowed_hosts_are_valid_for_each_pod() -> None:
    env = {e["name"]: e.get("value") for e in container(STREAMER, "face-streamer")["env"]}
    assert any(e["name"] == "POD_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
               for e in container(STREAMER, "face-streamer")["env"])
    names = env["STREAMER_ALLOWED_HOSTS"].replace("$(POD_NAME)", "face-streamer-1").split()
    assert "face-streamer" in names and "face-streamer-1.face-streamer-headless" in names
    ServerConfig(allowed_hosts=tuple(names))  # refused there if any is not a host name


def test_the_cameras_configmap_is_a_cameras_file(tmp_path: Path) -> None:
    configmap = find("ConfigMap", "face-streamer-cameras")
    command = command_of(container(STREAMER, "face-streamer"))
    config = Path(flag(command, "--config"))
    mount = next(m for m in container(STREAMER, "face-streamer")["volumeMounts"]
                 if Path(m["mountPath"]) == config.parent)
    volume = next(v for v in STREAMER["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    text = configmap["data"][config.name]
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    assert load_cameras_file(path) == []  # as shipped: an example, commented out
    path.write_text("\n".join(line.removeprefix("# ").removeprefix("#") for line in text.splitlines()))
    tomllib.loads(path.read_text())
    assert [c.name for c in load_cameras_file(path)] == ["lobby", "door"]


def test_the_readme_applies_what_is_here() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Scaling out: Triton and replicas"):]
    section = section[:section.index("\n## ", 1)]
    assert "kubectl apply -n face-streamer -k deploy/k8s" in section
    assert "create secret generic face-streamer-token --from-file=token=" in section
    assert "docker compose --profile triton up -d" in section
    assert "python -m models.triton_repo" in section and TRITON_IMAGE in section
    shard = flag(command_of(container(STREAMER, "face-streamer")), "--shard")
    assert f"`--shard {shard}`, `replicas: {STREAMER['spec']['replicas']}`" in section
