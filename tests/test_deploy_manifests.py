"""deploy/k8s: the Kubernetes manifests, checked offline against the Kubernetes API's own OpenAPI schemas
(kubernetes-validate, strict: an unknown or misspelt field fails), and against what the service and the compose file
say: the shard count, the probes, the token's secret, mutual TLS between the replicas and Triton (flags, mounted
secret files, the README's openssl commands), Triton's restricted admin APIs and NetworkPolicy, the Triton Service's
name and port, the images.

Not checked here: applying them to a cluster (none is available to these tests), and Triton's own image (its
flags are checked as written, not run).
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import REPO_ROOT
from test_deploy import tritonserver_argv

from models.triton_repo import TRITON_IMAGE, RepoOptions
from streamer.__main__ import build_parser
from streamer.camera_config import load_cameras_file
from streamer.server.config import ServerConfig
from streamer.shards import Shard

K8S = REPO_ROOT / "deploy" / "k8s"
# The oldest Kubernetes release the manifests are meant for, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NOT_LISTED = {"kustomization.yaml", "secret.example.yaml", "tls-secrets.example.yaml"}
# Triton's restricted-API categories: those the replicas use (over gRPC), and its admin APIs.
REPLICAS_USE = {"health", "metadata", "model-config", "inference"}
ADMIN_APIS = {"model-repository", "shared-memory", "statistics", "trace", "logging"}


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


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of a container's command and args: ``$$`` is ``$``, ``$(NAME)`` the variable's value
    when the container defines it (left as written otherwise)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("$(", i) and (end := text.find(")", i)) != -1 and text[i + 2:end] in env:
            out.append(env[text[i + 2:end]])
            i = end + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def triton_argv(c: dict[str, Any]) -> list[str]:
    """Triton's own command line out of its container's ``sh -c`` script (as Kubernetes expands it): the key drawn,
    then ``exec tritonserver`` with nothing but arguments (no second command, no redirection)."""
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    command = [k8s_expand(part, env) for part in command_of(c)]
    assert command[:2] == ["/bin/sh", "-c"] and len(command) == 3, command
    return tritonserver_argv(command[2])


def option(argv: list[str], name: str) -> str:
    """The value of ``--NAME=VALUE``, given once."""
    (value,) = [a.removeprefix(f"{name}=") for a in argv if a.startswith(f"{name}=")]
    return value


def mounted_secret_file(workload: dict[str, Any], c: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret, key) of the file at ``path``: a read-only mount of a secret volume that lists that key there."""
    file = Path(path)
    (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == file.parent]
    assert mount["readOnly"] is True and "subPath" not in mount, mount
    (volume,) = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    (item,) = [i for i in secret["items"] if i["path"] == file.name]
    # Readable by the pod's group (fsGroup) only, not by others.
    assert secret["defaultMode"] == 0o440 and "mode" not in item, secret
    assert workload["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == (
        c.get("securityContext", {}).get("runAsGroup")
        or workload["spec"]["template"]["spec"]["securityContext"]["runAsGroup"])
    return secret["secretName"], item["key"]


def scaling_out_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Scaling out: Triton and replicas"):]
    return section[:section.index("\n## ", 1)]


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
    # The pod's name reaches it through the downward API ($POD_NAME), which `auto` reads before the host name: under
    # hostNetwork that is the node's (here one ending in -7, which would be refused).
    env = container(STREAMER, "face-streamer")["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    shards = set()
    for ordinal in range(STREAMER["spec"]["replicas"]):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("POD_NAME", f"{STREAMER['metadata']['name']}-{ordinal}")
            patch.setattr("socket.gethostname", lambda: "gpu-node-7")
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
    triton = triton_argv(container(TRITON, "triton"))
    assert triton[:2] == ["tritonserver", "--model-repository=/models"]
    assert not any(re.fullmatch(r"--(http|grpc|metrics)-(port|address)=.*", a) for a in triton), "the defaults"
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


def test_only_the_replicas_may_reach_tritons_grpc_port_and_nothing_leaves_triton() -> None:
    """Raw frames go to Triton, whose inference endpoints have no access control but the client certificate: its
    NetworkPolicy admits the replicas' pods, to the gRPC port the detector URL names, and nothing else; and it
    denies all egress (Egress among the policy types, no egress rule), since Triton opens no connection."""
    policy = find("NetworkPolicy", "triton")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= TRITON["spec"]["template"]["metadata"]["labels"].items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("egress"), "no egress rule: every outbound connection is dropped"
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
    section = scaling_out_section()
    assert "kubectl apply -n face-streamer -k deploy/k8s" in section
    assert "create secret generic face-streamer-token --from-file=token=" in section
    replicas = sorted(name for name, s in compose_services().items() if "--detector" in s.get("command", []))
    assert f"`docker compose --profile triton up -d {' '.join(replicas)}`" in section
    assert "python -m models.triton_repo" in section and TRITON_IMAGE in section
    shard = flag(command_of(container(STREAMER, "face-streamer")), "--shard")
    assert f"`--shard {shard}`, `replicas: {STREAMER['spec']['replicas']}`" in section
    words = " ".join(section.split())  # as wrapped
    assert "Never `kubectl scale` the StatefulSet or put a HorizontalPodAutoscaler on it" in words
    # And the StatefulSet says so where the two numbers are.
    text = (K8S / "streamer-statefulset.yaml").read_text(encoding="utf-8")
    assert "NEVER `kubectl scale` this StatefulSet" in text and "HorizontalPodAutoscaler" in text


# ------------------------------------------------------------------------------- mutual TLS, Triton's admin APIs


def test_triton_speaks_mutual_tls_only_from_its_mounted_secret() -> None:
    """Triton's gRPC port: mutual TLS (a client must show a certificate the CA signed), its certificate, key and
    that CA files of a read-only secret volume (0440, its group), nothing switching TLS off again."""
    c = container(TRITON, "triton")
    argv = triton_argv(c)
    assert option(argv, "--grpc-use-ssl-mutual") == "true"
    assert not any(a.startswith("--grpc-use-ssl=") for a in argv), "mutual TLS implies it; false would undo it"
    files = {name: mounted_secret_file(TRITON, c, option(argv, name))
             for name in ("--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert")}
    assert {secret for secret, _ in files.values()} == {"triton-tls"}
    assert {name: key for name, (_, key) in files.items()} == {
        "--grpc-server-cert": "tls.crt", "--grpc-server-key": "tls.key", "--grpc-root-cert": "ca.crt"}
    # The probes stay on plain HTTP, health only (the gRPC port wants a client certificate).
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "http" and c[probe]["httpGet"]["path"].startswith("/v2/health/")
    assert port_number(c, "http") == 8000


def test_the_replicas_detect_over_mutual_tls_from_their_mounted_secret() -> None:
    """The replicas check Triton's certificate (--detector-ca) and show their own (--detector-cert/--detector-key),
    all files of one read-only secret volume; the service parses those arguments."""
    c = container(STREAMER, "face-streamer")
    command = command_of(c)
    files = {name: mounted_secret_file(STREAMER, c, flag(command, name))
             for name in ("--detector-ca", "--detector-cert", "--detector-key")}
    assert {secret for secret, _ in files.values()} == {"face-streamer-triton-client"}
    assert {name: key for name, (_, key) in files.items()} == {
        "--detector-ca": "ca.crt", "--detector-cert": "tls.crt", "--detector-key": "tls.key"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POD_NAME", "face-streamer-0")
        args = build_parser().parse_args(command)
    assert (str(args.detector_ca), str(args.detector_cert), str(args.detector_key)) == tuple(
        flag(command, name) for name in files)
    assert flag(command, "--detector").startswith("triton://triton:")  # the name Triton's certificate carries


def test_the_tls_secrets_example_has_the_keys_the_pods_mount() -> None:
    """tls-secrets.example.yaml (not applied) shows both Secrets with exactly the keys the volumes list, which are
    also those a cert-manager Certificate writes; it validates, and holds no real key."""
    examples = {doc["metadata"]["name"]: doc for doc in documents(K8S / "tls-secrets.example.yaml")}
    mounted = {}
    for workload in (TRITON, STREAMER):
        for volume in workload["spec"]["template"]["spec"]["volumes"]:
            if "secret" in volume and volume["secret"]["secretName"] != "face-streamer-token":
                mounted[volume["secret"]["secretName"]] = {i["key"] for i in volume["secret"]["items"]}
    assert mounted == {"triton-tls": {"ca.crt", "tls.crt", "tls.key"},
                       "face-streamer-triton-client": {"ca.crt", "tls.crt", "tls.key"}}
    assert set(examples) == set(mounted)
    for name, example in examples.items():
        assert example["kind"] == "Secret" and set(example["stringData"]) == mounted[name], name
        assert "data" not in example and all("(" in v for v in example["stringData"].values()), "placeholders"
        for version in VERSIONS:
            kubernetes_validate.validate(example, version, strict=True)


def test_tritons_admin_apis_need_a_key_drawn_at_start() -> None:
    """Model loading and unloading, shared memory, statistics, trace and logging need a header with a key drawn at
    each start and handed to no one; what the replicas use over gRPC stays open; plain HTTP (the probes) serves
    health alone without it. The same as the compose file's Triton."""
    argv = triton_argv(container(TRITON, "triton"))
    restrictions = {}
    for name in ("--grpc-restricted-protocol", "--http-restricted-api"):
        categories, _, header = option(argv, name).partition(":")
        assert header == "admin-key=$key", header
        restrictions[name] = set(categories.split(","))
        assert len(restrictions[name]) == len(categories.split(","))
    assert restrictions["--grpc-restricted-protocol"] == ADMIN_APIS
    assert restrictions["--grpc-restricted-protocol"].isdisjoint(REPLICAS_USE)
    assert restrictions["--http-restricted-api"] == (ADMIN_APIS | REPLICAS_USE) - {"health"}
    compose = compose_services()["triton"]["command"][2].replace("$$", "$")
    for name in restrictions:
        assert f" {name}={option(argv, name)}" in compose, name


def readme_tls_commands() -> tuple[str, dict[str, dict[str, str]]]:
    """The README's openssl lines (a shell script) and, from its kubectl lines, each Secret's keys and files."""
    blocks = re.findall(r"```sh\n(.*?)```", scaling_out_section(), re.S)
    (block,) = [b for b in blocks if "openssl req -x509" in b]
    lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    script = "\n".join(line for line in lines if line.startswith(("openssl ", "printf ")))
    secrets: dict[str, dict[str, str]] = {}
    for line in lines:
        words = shlex.split(line) if line.startswith("kubectl ") else []
        if words[:5] == ["kubectl", "-n", "face-streamer", "create", "secret"] and "--type=kubernetes.io/tls" in words:
            pairs = [w.removeprefix("--from-file=").split("=") for w in words if w.startswith("--from-file=")]
            secrets[words[6]] = {key: file for key, file in pairs}
    return script, secrets


def handshake(server: dict[str, Path], client: dict[str, Path], hostname: str, show_cert: bool = True) -> bool:
    """A TLS handshake over a socket pair, Triton's side asking for a client certificate signed by its CA, the
    client checking the server's against its CA and ``hostname``: True when both accept."""
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(server["tls.crt"], server["tls.key"])
    server_side.load_verify_locations(server["ca.crt"])
    server_side.verify_mode = ssl.CERT_REQUIRED
    client_side = ssl.create_default_context(cafile=str(client["ca.crt"]))
    if show_cert:
        client_side.load_cert_chain(client["tls.crt"], client["tls.key"])
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    served: list[bool] = []

    def serve() -> None:
        try:
            with server_side.wrap_socket(a, server_side=True) as tls:
                tls.sendall(b"ok")
                served.append(True)
        except (OSError, ssl.SSLError):
            served.append(False)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_side.wrap_socket(b, server_hostname=hostname) as tls:
            answer = tls.recv(2)
    except (OSError, ssl.SSLError):
        answer = b""
    thread.join(10)
    a.close()
    return answer == b"ok" and served == [True]


def test_the_readmes_openssl_commands_make_certificates_for_mutual_tls(tmp_path: Path) -> None:
    """Run as written, the README's openssl lines make a CA, Triton's certificate and the replicas' client
    certificate; its kubectl lines put them into the Secrets the pods mount, under the keys they mount. A mutual-TLS
    handshake with those files succeeds for the detector URL's host and triton.face-streamer.svc, and fails for
    another name, or without the client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    script, secrets = readme_tls_commands()
    done = subprocess.run(["sh", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert set(secrets) == {"triton-tls", "face-streamer-triton-client"}
    for name, files in secrets.items():
        assert set(files) == {"ca.crt", "tls.crt", "tls.key"}, name
    server = {key: tmp_path / file for key, file in secrets["triton-tls"].items()}
    client = {key: tmp_path / file for key, file in secrets["face-streamer-triton-client"].items()}
    assert server["ca.crt"] == client["ca.crt"], "one CA: Triton checks the replicas' certificate with it, and back"
    host = flag(command_of(container(STREAMER, "face-streamer")), "--detector").partition("://")[2].partition(":")[0]
    assert host == "triton"
    assert handshake(server, client, host)
    assert handshake(server, client, "triton.face-streamer.svc")
    assert not handshake(server, client, "face-streamer")
    assert not handshake(server, client, host, show_cert=False)
