"""``llmserve build --kuberay``: RayService manifests checked against KubeRay's own CRD."""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmserve.builder.serve_config import serve_config
from llmserve.cli.main import EXIT_CONFIG, EXIT_ERROR, main
from llmserve.cluster.kuberay import (
    IMAGE_CONFIG_DIR,
    PodShape,
    pods_per_replica,
    worker_groups,
    worker_start_params,
)
from llmserve.cluster.needs import EngineNeed, engine_needs
from llmserve.cluster.pod_env import IMAGE_INSTALL, RAY_TOKEN_KEY
from llmserve.config import load_config, validate_config_dict
from llmserve.engine.device import summed
from llmserve.literals import PLACEMENT_STRATEGIES
from llmserve.runtime.ray import serve_env
from tests.conftest import CONFIGS, ROOT

pytestmark = pytest.mark.unit

# A copy of KubeRay's CRD; tests/data/kuberay/README.md says where it comes from.
CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayservices.yaml"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def _strict(schema: Any) -> Any:
    """Reject unknown fields: Kubernetes would silently prune them, so they would do nothing."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@functools.cache
def crd_schema() -> dict[str, Any]:
    """The CRD's ``ray.io/v1`` RayService schema (1 MB of YAML: read once)."""
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(_strict(copy.deepcopy(crd_schema())))


def build_documents(config: Path, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    """Every document ``llmserve build --kuberay`` writes for ``config``."""
    out = tmp_path / f"{config.stem}.rayservice.yaml"
    assert main(["build", str(config), "--kuberay", "-o", str(out), *extra]) == 0
    return list(yaml.safe_load_all(out.read_text()))


def _build(config: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """The RayService ``llmserve build --kuberay`` writes for ``config``."""
    [manifest] = [d for d in build_documents(config, tmp_path, *extra) if d["kind"] == "RayService"]
    return manifest


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["template"]["spec"]["containers"]]


def _errors(validator: jsonschema.Validator, manifest: dict) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(manifest)]


def test_the_strict_crd_schema_catches_mistakes(validator, tmp_path: Path) -> None:
    manifest = _build(CONFIGS / "gpu-tp2.yaml", tmp_path)
    group = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["minReplica"] = group.pop("minReplicas")
    errors = _errors(validator, manifest)
    assert any("'minReplica' was unexpected" in e for e in errors)
    assert any("'minReplicas' is a required property" in e for e in errors)


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_gives_a_valid_rayservice(validator, config: Path, tmp_path) -> None:
    manifest = _build(config, tmp_path)
    assert _errors(validator, manifest) == []
    assert manifest["kind"] == "RayService"
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    # Every pod, head and workers, starts Ray with the flags a local Ray gets
    # (direct ingress, the user-code thread, the idle-cost settings) and token
    # auth, and only those.
    for container in _containers(manifest):
        values = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert values == serve_env(load_config(config), IMAGE_INSTALL) | {"RAY_AUTH_MODE": "token"}


def _serve_config(manifest: dict) -> dict:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_serve_config_is_what_build_writes_with_the_config_inline(config: Path, tmp_path) -> None:
    served = _serve_config(_build(config, tmp_path))
    built = serve_config(config, load_config(config))
    [app], [built_app] = served["applications"], built["applications"]
    args = app.pop("args")
    built_app.pop("args")
    built["http_options"]["host"] = "0.0.0.0"  # reachable from the Kubernetes Service
    assert served == built
    # The inline config is the file's own data: it validates to the same app in the pod.
    assert args["base_dir"] == IMAGE_CONFIG_DIR
    assert args["config"] == yaml.safe_load(config.read_text())
    validate_config_dict(args["config"], base_dir=Path(args["base_dir"]))


def _groups(manifest: dict) -> list[dict]:
    return manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]


def test_gpu_tp2_worker_sizing(tmp_path: Path) -> None:
    """TP=2 in STRICT_PACK: a replica is one 2-GPU pod; 1-4 replicas autoscale."""
    manifest = _build(CONFIGS / "gpu-tp2.yaml", tmp_path)
    [group] = _groups(manifest)
    assert group["rayStartParams"]["num-gpus"] == "2"
    [container] = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (1, 1, 4)
    assert manifest["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


def test_gpu_tp8_pp2_worker_sizing(tmp_path: Path) -> None:
    """TP=8 x PP=2 with PACK: 16 GPU workers in two 8-GPU pods, one pipeline stage each."""
    manifest = _build(CONFIGS / "gpu-tp8-pp2.yaml", tmp_path)
    [group] = _groups(manifest)
    assert group["rayStartParams"]["num-gpus"] == "8"
    [container] = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (2, 2, 2)
    assert manifest["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is False


def test_one_group_per_accelerator_shape(tmp_path: Path, validator) -> None:
    data = yaml.safe_load((CONFIGS / "gpu-tp2.yaml").read_text())
    big = yaml.safe_load((CONFIGS / "gpu-tp8-pp2.yaml").read_text())["models"][0]
    second = copy.deepcopy(data["models"][0]) | {"id": "second"}
    spread = copy.deepcopy(data["models"][0]) | {"id": "spread"}
    spread["parallelism"] = {"tensor_parallel_size": 2, "placement_strategy": "SPREAD"}
    spread["deployment"] = {"num_replicas": 3}
    data["models"] += [big, second, spread]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    manifest = _build(path, tmp_path)
    assert _errors(validator, manifest) == []
    groups = {g["groupName"]: g for g in _groups(manifest)}
    assert set(groups) == {"gpu8", "gpu2", "gpu1"}
    # Two TP=2 STRICT_PACK models share the 2-GPU shape and add up their bounds.
    assert (groups["gpu2"]["minReplicas"], groups["gpu2"]["maxReplicas"]) == (2, 8)
    # SPREAD puts each worker on its own pod: 3 replicas x 2 workers.
    assert (groups["gpu1"]["minReplicas"], groups["gpu1"]["maxReplicas"]) == (6, 6)
    engines = groups["gpu2"]["template"]["metadata"]["annotations"]["llmserve/engines"]
    assert engines == "models[0], models[2]"


def test_api_keys_come_from_the_secret(tmp_path: Path) -> None:
    manifest = _build(CONFIGS / "gpu-tp2.yaml", tmp_path, "--secret", "my-keys")
    flags = serve_env(load_config(CONFIGS / "gpu-tp2.yaml"), IMAGE_INSTALL)
    for pod in [manifest["spec"]["rayClusterConfig"]["headGroupSpec"], *_groups(manifest)]:
        [container] = pod["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["LLMSERVE_API_KEY"] == {
            "name": "LLMSERVE_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "my-keys", "key": "LLMSERVE_API_KEY"}},
        }
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
        # Only the Ray and Serve flags and the auth mode are literal values; nothing secret is.
        assert all("value" not in e for n, e in env.items() if n not in {*flags, "RAY_AUTH_MODE"})


def test_ray_token_auth_is_on_with_the_token_from_the_secret(tmp_path: Path) -> None:
    manifest = _build(CONFIGS / "gpu-tp2.yaml", tmp_path, "--secret", "my-keys")
    cluster = manifest["spec"]["rayClusterConfig"]
    # KubeRay puts the token into every Ray container (and its own dashboard
    # client, which deploys the Serve app, reads it from the same Secret).
    assert cluster["authOptions"] == {"mode": "token", "secretName": "my-keys"}
    # The containers name it too: an operator older than authOptions (KubeRay
    # 1.5.1) prunes the field, and Ray then still starts with token auth, so
    # that the deploy fails instead of serving an open control plane.
    for container in _containers(manifest):
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "my-keys", "key": RAY_TOKEN_KEY}
        }


def test_only_ports_something_must_reach_are_declared(tmp_path: Path) -> None:
    manifest = _build(CONFIGS / "gpu-tp2.yaml", tmp_path)
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    # KubeRay's Services stay inside the Kubernetes cluster.
    assert head["serviceType"] == "ClusterIP"
    [container] = head["template"]["spec"]["containers"]
    # The head Service lists the head container's ports. KubeRay finds the
    # dashboard (its way to deploy the Serve app) by the name "dashboard", and
    # workers reach the GCS through that Service when it has a cluster IP; the
    # serve Service is made of "serve" alone. Ray Client (10001) is not used.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "serve": 8000}
    for group in _groups(manifest):
        [container] = group["template"]["spec"]["containers"]
        assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("serve", 8000)]


HOSTILE = "x$(id>&2)`id>&2`;id>&2 'q\""


def test_start_params_reach_kuberays_shell_as_literal_words() -> None:
    # KubeRay runs `ulimit -n 65536; ray start --KEY=VALUE ...` through bash.
    shape = PodShape(gpus=2, custom=((HOSTILE, 1),))
    params = worker_start_params(shape)
    command = "printf '%s\\n'" + "".join(f" --{k}={v}" for k, v in sorted(params.items()))
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=10)
    assert result.stderr == ""  # nothing ran
    assert result.stdout.splitlines() == [
        "--num-gpus=2",
        "--resources=" + json.dumps({HOSTILE: 1}),
    ]


def test_custom_resources_are_read_back_by_the_autoscaler() -> None:
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_custom_resources

    need = {"GPU": 1.0, "accelerator_type:H100": 0.001}
    [group] = worker_groups([_need(need, tp=2)])
    params = worker_start_params(group.shape)
    # Whole units: a pod offers what its workers need, rounded up, as the
    # autoscaler (which accepts integers only) and `ray start` read it.
    assert _get_custom_resources({}, params, group.name) == {"accelerator_type:H100": 1}


def _need(bundle: dict[str, float], tp: int) -> EngineNeed:
    model = {"id": "m", "source": "org/m", "device": "gpu"}
    model["parallelism"] = {"tensor_parallel_size": tp, "resources_per_worker": bundle}
    [need] = engine_needs(validate_config_dict({"models": [model]}), lambda d: d)
    return need


def test_group_names_stay_unique_and_valid() -> None:
    needs = [_need({"GPU": 1, name: 1}, tp=1) for name in ("a.b", "a_b", "A-B", "x" * 100)]
    names = [group.name for group in worker_groups(needs)]
    assert len(set(names)) == len(names) == 4
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name


@pytest.mark.parametrize("command", ["validate", "build"])
def test_a_resource_name_that_would_reach_a_shell_is_a_config_error(
    tmp_path: Path, capsys, command: str
) -> None:
    data = yaml.safe_load((CONFIGS / "gpu-tp2.yaml").read_text())
    data["models"][0]["parallelism"]["resources_per_worker"] = {"GPU": 1, "x$(id>&2)": 1}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "rs.yaml"
    extra = ["--kuberay", "-o", str(out)] if command == "build" else []
    assert main([command, str(path), *extra]) == EXIT_CONFIG
    assert not out.exists()
    err = capsys.readouterr().err
    assert "models[0].parallelism.resources_per_worker.x$(id>&2): not a valid resource name" in err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--name", "x$(id)"),
        ("--name", "Llmserve"),  # RayService names are DNS-1035 labels
        ("--name", "a" * 48),  # KubeRay appends 6 characters for the RayCluster, up to 53
        ("--secret", "my keys"),
        ("--operator-namespace", "ray_system"),
    ],
)
def test_names_from_the_command_line_are_checked(
    tmp_path: Path, capsys, option: str, value: str
) -> None:
    out = tmp_path / "rs.yaml"
    args = ["build", str(CONFIGS / "gpu-tp2.yaml"), "--kuberay", "-o", str(out), option, value]
    assert main(args) == EXIT_ERROR
    assert not out.exists()
    assert f"{option} {value!r} is not" in capsys.readouterr().err


def test_the_printed_commands_create_the_secret_and_apply_both_documents(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "rs.yaml"
    args = ["build", str(CONFIGS / "gpu-tp2.yaml"), "--kuberay", "-o", str(out)]
    assert main([*args, "--secret", "keys"]) == 0
    printed = capsys.readouterr().out
    assert "kubectl create secret generic keys" in printed
    assert "--from-literal=LLMSERVE_API_KEY=" in printed
    assert f'--from-literal={RAY_TOKEN_KEY}="$(openssl rand -hex 32)"' in printed
    assert f"kubectl apply -f {out}" in printed
    text = out.read_text()
    # The policy first: it exists before the operator creates any pod.
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["NetworkPolicy", "RayService"]
    assert "*id0" not in text  # no YAML aliases: each document reads on its own


def test_a_literal_api_key_is_refused(tmp_path: Path, capsys) -> None:
    data = yaml.safe_load((CONFIGS / "gpu-tp2.yaml").read_text())
    data["ingress"]["api_keys"] = ["sk-secret", {"env": "K"}]
    path = tmp_path / "literal.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "rs.yaml"
    assert main(["build", str(path), "--kuberay", "-o", str(out)]) == EXIT_CONFIG
    assert not out.exists()
    err = capsys.readouterr().err
    assert "ingress.api_keys[0]: a literal key would be written into the manifest" in err
    assert "sk-secret" not in err


@pytest.mark.parametrize("env", ["auth_token", "RAY_AUTH_TOKEN", "RAY_SERVE_ENABLE_HA_PROXY"])
def test_an_api_key_named_like_the_ray_token_is_refused(tmp_path: Path, capsys, env) -> None:
    data = yaml.safe_load((CONFIGS / "gpu-tp2.yaml").read_text())
    data["ingress"]["api_keys"] = [{"env": "K"}, {"env": env}]
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["build", str(path), "--kuberay", "-o", str(tmp_path / "rs.yaml")]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"ingress.api_keys[1].env: {env} is the Ray token or a Ray setting" in err
    assert "api_keys[0]" not in err


def test_tenant_keys_come_from_the_secret_too(tmp_path: Path, capsys) -> None:
    data = yaml.safe_load((CONFIGS / "gpu-tp2.yaml").read_text())
    data["ingress"]["tenants"] = [
        {"id": "a", "api_keys": [{"env": "TEAM_A_KEY"}, "sk-team"]},
        {"id": "b", "api_key": {"env": "TEAM_B_KEY"}},
    ]
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "rs.yaml"
    assert main(["build", str(path), "--kuberay", "-o", str(out)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "ingress.tenants[0].api_keys[1]: a literal key would be written" in err
    assert "sk-team" not in err
    data["ingress"]["tenants"][0]["api_keys"] = [{"env": "TEAM_A_KEY"}]
    path.write_text(yaml.safe_dump(data))
    manifest = _build(path, tmp_path, "--secret", "my-keys")
    [container] = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ]
    names = {e["name"] for e in container["env"]}
    assert {"LLMSERVE_API_KEY", "TEAM_A_KEY", "TEAM_B_KEY"} <= names


def test_auto_device_is_planned_into_the_pods_config(tmp_path: Path) -> None:
    data = yaml.safe_load((CONFIGS / "gpu-tp2.yaml").read_text())
    data["models"][0]["device"] = "auto"
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(data))
    gpu = _build(path, tmp_path)
    assert _serve_config(gpu)["applications"][0]["args"]["config"]["models"][0]["device"] == "gpu"
    assert _groups(gpu)[0]["rayStartParams"]["num-gpus"] == "2"
    cpu = _build(path, tmp_path, "--auto-device", "cpu", "--image", "registry.example/llm:1")
    assert _serve_config(cpu)["applications"][0]["args"]["config"]["models"][0]["device"] == "cpu"
    [group] = _groups(cpu)  # two {CPU: 1} bundles in STRICT_PACK
    assert group["groupName"] == "cpu"
    [container] = group["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "2"}}
    assert container["image"] == "registry.example/llm:1"


def test_without_output_the_manifest_goes_to_stdout(validator, capsys) -> None:
    assert main(["build", str(CONFIGS / "gpu-tp8-pp2.yaml"), "--kuberay"]) == 0
    captured = capsys.readouterr()
    [manifest] = [d for d in yaml.safe_load_all(captured.out) if d["kind"] == "RayService"]
    assert _errors(validator, manifest) == []
    assert "worker group gpu8: 8 GPUs per pod, 2-2 pods (start 2)" in captured.err


def test_every_auto_engine_is_planned_and_only_those(tmp_path: Path) -> None:
    data = {
        "models": [
            {"id": "m", "source": "org/m", "device": "auto"},
            {"id": "n", "source": "org/n", "device": "cpu"},
        ],
        "embedders": [{"id": "e", "source": "org/e", "device": "auto"}],
        "rerankers": [{"id": "r", "source": "org/r", "device": "auto"}],
    }
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(data))
    inline = _serve_config(_build(path, tmp_path))["applications"][0]["args"]["config"]
    for engine in validate_config_dict(data).engines():
        planned = "gpu" if engine.config.device == "auto" else engine.config.device
        assert inline[engine.section][engine.index]["device"] == planned, engine.path


@pytest.mark.parametrize("strategy", PLACEMENT_STRATEGIES)
def test_every_strategy_gets_pods_holding_its_bundles(strategy: str) -> None:
    model = {"id": "m", "source": "org/m", "device": "gpu"}
    model["parallelism"] = {
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 2,
        "placement_strategy": strategy,
    }
    [need] = engine_needs(validate_config_dict({"models": [model]}), lambda d: d)
    pods = pods_per_replica(need)
    assert summed(pods) == summed(need.bundles)
    assert len(pods) == {"STRICT_PACK": 1, "PACK": 2, "SPREAD": 4, "STRICT_SPREAD": 4}[strategy]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_the_images_have_llmserve_where_the_pods_haproxy_looks_for_it(dockerfile: str) -> None:
    """Ray's HAProxy in a pod starts llmserve's launcher from IMAGE_INSTALL's folder."""
    text = (ROOT / "docker" / dockerfile).read_text()
    assert "\nWORKDIR /app\n" in text
    assert re.search(r"^COPY \S+ llmserve \./llmserve$", text, re.MULTILINE)
    assert IMAGE_INSTALL.package == "/app/llmserve"
    assert "PATH=/app/.venv/bin:$PATH" in text
    assert IMAGE_INSTALL.python == "/app/.venv/bin/python"
