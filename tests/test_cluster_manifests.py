"""The deployment manifests in configs/cluster/, validated offline the way Ray and KubeRay read them (no cloud).

* ``aws.yaml``: Ray's own launcher check (``prepare_config`` merges the AWS defaults, ``validate_config`` applies
  Ray's schema), the ``provider`` section strictly against the keys that schema lists, and each ``node_config`` as
  EC2 RunInstances parameters through botocore's own validator (what boto3 checks before anything is sent).
* ``kuberay-*.yaml``: the KubeRay v1.7.0 CRD schemas made strict (unknown fields fail, like kubeconform
  ``-strict``), the operator's own checks that apply to them, and Ray's RayCluster-to-autoscaler translation.
* runtime envs through ``ray.runtime_env.RuntimeEnv``; the RayJob's entrypoint through the project's CLI parser
  and config loaders, and against the cluster it runs on.

Each check is shown to reject a broken copy (a misspelled key, a wrong type), so a typo cannot pass.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "configs" / "cluster"
SCHEMAS = Path(os.environ.get("CONGRAD_KUBERAY_SCHEMAS", ROOT.parent / "shared" / "schemas" / "kuberay-v1.7.0"))
needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(), reason=f"KubeRay CRD schemas not found at {SCHEMAS} (set CONGRAD_KUBERAY_SCHEMAS)"
)
IMAGE = re.compile(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py3\d+(-gpu|-cu\d+)?")
# vCPUs and GPUs of the instance types aws.yaml uses (AWS's published shapes): a node type must not declare
# more than its instance has. Add a row when you pick another type.
INSTANCE_SHAPES = {
    "m6i.2xlarge": {"CPU": 8},
    "m6i.4xlarge": {"CPU": 16},
    "g6.2xlarge": {"CPU": 8, "GPU": 1},
    "g6e.2xlarge": {"CPU": 8, "GPU": 1},
}


def load(name: str) -> dict:
    return yaml.load((CLUSTER / name).read_text(), Loader=yaml.CSafeLoader)


def changed(doc: dict, path: str, value=None, *, rename: str | None = None) -> dict:
    """A deep copy of ``doc`` with the value at dotted ``path`` replaced, or its key renamed (a typo)."""
    out = copy.deepcopy(doc)
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = functools.reduce(lambda n, k: n[k], parents, out)
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return out


# ---------------------------------------------------------------------------------------------- launcher (AWS)


@functools.cache
def ec2_model():
    """EC2's API model as botocore ships it (no network, no credentials)."""
    import botocore.session

    return botocore.session.get_session().get_service_model("ec2")


def launcher_problems(config: dict) -> list[str]:
    """Everything wrong with a cluster launcher config, by Ray's and botocore's own validators."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except (jsonschema.ValidationError, ValueError, KeyError) as e:  # Ray's own messages
        return [f"ray: {str(e).splitlines()[0]}"]
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    known = set(schema["properties"]["provider"]["properties"])  # listed, but the schema lets any key through
    problems = [f"provider: unknown key {k!r}" for k in sorted(set(prepared["provider"]) - known)]
    for name, node_type in prepared["available_node_types"].items():
        problems += node_type_problems(name, node_type)
    return problems


def node_type_problems(name: str, node_type: dict) -> list[str]:
    """``node_config`` as the EC2 RunInstances call Ray makes with it; resources within the instance's shape."""
    from botocore.validate import ParamValidator

    node_config, declared = node_type["node_config"], node_type["resources"]
    run_instances = ec2_model().operation_model("RunInstances").input_shape
    report = ParamValidator().validate({**node_config, "MinCount": 1, "MaxCount": 1}, run_instances)
    problems = [f"{name}.node_config: {line}" for line in report.generate_report().splitlines()]
    itype = node_config.get("InstanceType")
    if itype not in ec2_model().shape_for("InstanceType").enum:
        return [*problems, f"{name}.node_config: unknown InstanceType {itype!r}"]
    if itype not in INSTANCE_SHAPES:
        return [*problems, f"{name}: add {itype}'s vCPUs and GPUs to INSTANCE_SHAPES"]
    shape = INSTANCE_SHAPES[itype]
    if declared.get("CPU", 0) > shape["CPU"]:
        problems.append(f"{name}: declares CPU={declared['CPU']}, {itype} has {shape['CPU']}")
    if declared.get("GPU", 0) != shape.get("GPU", 0):
        problems.append(f"{name}: declares GPU={declared.get('GPU', 0)}, {itype} has {shape.get('GPU', 0)}")
    return problems


def test_launcher_config_passes_rays_and_ec2s_validation():
    assert launcher_problems(load("aws.yaml")) == []


def test_launcher_cluster_is_what_the_configs_need():
    from congrad_ray.config import load_filter_config
    from congrad_ray.train.config import load_train_config

    cfg = load("aws.yaml")
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}  # no work on the head
    gpu, cpu = types["gpu"], types["cpu"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] >= 1 and cpu["min_workers"] == 0
    assert gpu["max_workers"] + cpu["max_workers"] <= cfg["max_workers"] and cfg["idle_timeout_minutes"] > 0
    for name in ("gemma2-2b.yaml", "llama3-8b.yaml"):
        res = load_filter_config(ROOT / "configs" / name, check_paths=False).resources
        assert res.actors_max <= gpu["max_workers"] and res.gpus_per_actor <= gpu["resources"]["GPU"]
        assert res.cpus_per_actor <= gpu["resources"]["CPU"]
    for name in ("train-gemma2-2b.yaml", "train-llama3-8b.yaml"):
        scaling = load_train_config(ROOT / "configs" / name, check_paths=False).scaling
        assert scaling.num_workers <= gpu["max_workers"] and scaling.cpus_per_worker <= gpu["resources"]["CPU"]


def test_launcher_pins_ray_installs_the_project_and_uses_the_token():
    cfg = load("aws.yaml")
    images = [cfg["docker"]["image"], cfg["available_node_types"]["gpu"]["docker"]["worker_image"]]
    assert {IMAGE.fullmatch(i)["ray"] for i in images} == {ray.__version__}
    assert images[1].endswith("-gpu")
    assert cfg["setup_commands"] == ["pip install -e ~/congrad-ray"] and cfg["file_mounts"]["~/congrad-ray"] == "."
    assert "requirements-cpu" not in json.dumps(cfg)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert {".gitignore"} == set(cfg["rsync_filter"]) and ".git" in cfg["rsync_exclude"]


@pytest.mark.parametrize(
    ("path", "value", "rename", "expect"),
    [
        ("idle_timeout_minutes", None, "idle_timeout_minute", "ray: Additional properties"),
        ("max_workers", "20", None, "ray: '20' is not of type 'integer'"),
        ("available_node_types.gpu.min_workers", None, "min_worker", "ray: Additional properties"),
        ("available_node_types.gpu.resources", {"CPU": 8, "GPU": 0.5}, None, "ray: 0.5 is not of type 'integer'"),
        ("head_node_type", "head-node", None, "ray: `head_node_type` must be one of"),
        ("provider.region", None, "regoin", "provider: unknown key 'regoin'"),
        ("available_node_types.gpu.node_config.InstanceType", None, "InstanceTyp", 'Unknown parameter in input: "I'),
        ("available_node_types.cpu.node_config.BlockDeviceMappings.0.Ebs.VolumeSize", "200", None, "Invalid type"),
        ("available_node_types.gpu.node_config.InstanceType", "g6e.2xlarg", None, "unknown InstanceType"),
        ("available_node_types.gpu.resources", {"CPU": 8}, None, "gpu: declares GPU=0, g6e.2xlarge has 1"),
        ("available_node_types.cpu.resources", {"CPU": 32}, None, "cpu: declares CPU=32, m6i.4xlarge has 16"),
    ],
)
def test_launcher_validation_rejects_a_broken_copy(path, value, rename, expect):
    problems = launcher_problems(changed(load("aws.yaml"), path, value, rename=rename))
    assert any(expect in p for p in problems), problems


# ---------------------------------------------------------------------------------------------- KubeRay


def _strict(node):
    """``additionalProperties: false`` on every object schema that lists its properties (the schemas' README)."""
    if isinstance(node, dict):
        lists_fields = "properties" in node and "additionalProperties" not in node
        if lists_fields and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for key, sub in node.items():
            for child in sub.values() if key == "properties" else [sub]:
                _strict(child)
    elif isinstance(node, list):
        for child in node:
            _strict(child)
    return node


@functools.cache
def crd_validator(kind: str):
    import jsonschema

    schema = json.loads((SCHEMAS / f"{kind.lower()}s.v1.schema.json").read_text())
    return jsonschema.Draft7Validator(_strict(schema))


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def autoscaling_config(doc: dict) -> dict:
    """Ray's own translation of the cluster spec, as the autoscaler next to the head runs it."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": doc["metadata"]["name"], "namespace": "default"}, "spec": cluster_spec(doc)}
    )


def operator_problems(doc: dict) -> list[str]:
    """The KubeRay operator's own checks (ray-operator/controllers/ray/utils/validation.go) that apply here."""
    spec, problems = cluster_spec(doc), []
    name, limit = doc["metadata"]["name"], 53 if doc["kind"] == "RayCluster" else 47
    if len(name) > limit or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        problems.append(f"metadata.name {name!r}: a DNS-1035 label of at most {limit} characters")
    if doc["apiVersion"] != "ray.io/v1":
        problems.append(f"apiVersion {doc['apiVersion']!r}: ray.io/v1")
    version = tuple(int(p) for p in spec.get("rayVersion", "0.0.0").split("."))
    if spec.get("authOptions", {}).get("mode") == "token" and version < (2, 52, 0):
        problems.append(f"authOptions.mode token needs rayVersion >= 2.52.0, got {spec.get('rayVersion')}")
    for group in spec["workerGroupSpecs"]:
        if not 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]:
            problems.append(f"{group['groupName']}: needs 0 <= minReplicas <= replicas <= maxReplicas")
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for image in (c["image"] for g in groups for c in g["template"]["spec"]["containers"]):
        match = IMAGE.fullmatch(image)
        if not match or match["ray"] != spec.get("rayVersion"):
            problems.append(f"image {image}: use rayproject/ray:{spec.get('rayVersion')}-pyXY[-gpu] (= rayVersion)")
    if doc["kind"] == "RayJob" and doc["spec"].get("ttlSecondsAfterFinished", 0) < 0:
        problems.append("ttlSecondsAfterFinished must be >= 0")
    return problems


def kuberay_problems(doc: dict) -> list[str]:
    problems = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in crd_validator(doc["kind"]).iter_errors(doc)]
    return problems + (operator_problems(doc) if not problems else [])


def runtime_env_problems(runtime_env) -> list[str]:
    from ray.runtime_env import RuntimeEnv

    if not isinstance(runtime_env, dict):
        return [f"not a mapping: {runtime_env!r}"]
    unknown = sorted(set(runtime_env) - RuntimeEnv.known_fields)
    if unknown:
        return [f"unknown runtime_env fields {unknown}"]
    try:
        RuntimeEnv(**runtime_env)
    except (TypeError, ValueError) as e:
        return [str(e)]
    return []


KUBERAY = ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]


@needs_schemas
@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_passes_the_strict_crd_schema(name):
    assert kuberay_problems(load(name)) == []


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_cluster_through_rays_autoscaler_translation(name):
    doc = load(name)
    assert operator_problems(doc) == []
    types = autoscaling_config(doc)["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert types["gpu"]["min_workers"] == 0 and types["gpu"]["resources"]["GPU"] == 1
    assert types["cpu"]["min_workers"] == 0 and "GPU" not in types["cpu"]["resources"]
    spec = cluster_spec(doc)
    assert spec["enableInTreeAutoscaling"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "congrad-ray-auth"}
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "dashboard", "containerPort": 8265} in head["ports"]  # kubectl port-forward svc/...-head-svc 8265
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        shm = [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert {"name": shm[0], "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_rayjob_and_raycluster_run_the_same_cluster():
    job, cluster = load("kuberay-rayjob.yaml"), load("kuberay-raycluster.yaml")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    # each gets a Service <metadata.name>-head-svc: both can live in one namespace only under different names
    assert job["metadata"]["name"] != cluster["metadata"]["name"]


def test_rayjob_runtime_env_entrypoint_and_lifecycle():
    from congrad_ray.cli import build_parser
    from congrad_ray.config import load_filter_config
    from congrad_ray.train.config import load_train_config

    job = load("kuberay-rayjob.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] and job["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env_problems(runtime_env) == [] and runtime_env["working_dir"].endswith(".zip")
    # the submitter pod and the head each pass the entrypoint through a shell: keep it free of quoting and globs
    assert not re.search(r"[\[\]*?$;|&<>'\"`\\]", job["entrypoint"])
    python, script, *argv = shlex.split(job["entrypoint"])
    assert (python, script) == ("python", "jobs/congrad.py") and (ROOT / script).is_file()
    args = build_parser().parse_args(["run", *argv])
    out = args.output.rstrip("/")
    fcfg = load_filter_config(ROOT / args.filter, args.set_filter, args.input, f"{out}/filter", check_paths=False)
    tcfg = load_train_config(ROOT / args.train, args.set_train, [fcfg.run.output], None, f"{out}/train", False)
    assert all(p.startswith("s3://") for p in [*fcfg.input.paths, fcfg.run.output, tcfg.run.output, *tcfg.data.eval])
    gpu = next(g for g in job["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    gpu_cpus = int(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert fcfg.resources.actors_max <= gpu["maxReplicas"] and fcfg.resources.cpus_per_actor <= gpu_cpus
    assert tcfg.scaling.num_workers <= gpu["maxReplicas"] and tcfg.scaling.cpus_per_worker <= gpu_cpus


@needs_schemas
@pytest.mark.parametrize(
    ("name", "path", "value", "rename", "expect"),
    [
        ("kuberay-raycluster.yaml", "spec.workerGroupSpecs.0.maxReplicas", None, "maxReplica", "'maxReplica' was"),
        ("kuberay-raycluster.yaml", "spec.workerGroupSpecs.1.minReplicas", "0", None, "'0' is not of type 'integer'"),
        ("kuberay-raycluster.yaml", "spec.authOptions.mode", "tokens", None, "'tokens' is not one of"),
        ("kuberay-raycluster.yaml", "spec.headGroupSpec.rayStartParams.num-cpus", 0, None, "0 is not of type 'str"),
        (
            "kuberay-raycluster.yaml",
            "spec.workerGroupSpecs.0.template.spec.containers.0.volumeMounts",
            None,
            "volumeMount",
            "'volumeMount' was unexpected",
        ),
        ("kuberay-rayjob.yaml", "spec.shutdownAfterJobFinishes", None, "shutdownAfterJobFinish", "Finish' was"),
        ("kuberay-rayjob.yaml", "spec.ttlSecondsAfterFinished", "600", None, "'600' is not of type 'integer'"),
        ("kuberay-rayjob.yaml", "spec.rayClusterSpec.enableInTreeAutoscaling", "yes", None, "not of type 'boolean'"),
        ("kuberay-rayjob.yaml", "spec.rayClusterSpec.rayVersion", "2.50.0", None, "needs rayVersion >= 2.52.0"),
        ("kuberay-rayjob.yaml", "metadata.name", "congrad_ray", None, "DNS-1035 label"),
        ("kuberay-rayjob.yaml", "spec.rayClusterSpec.workerGroupSpecs.0.minReplicas", 20, None, "minReplicas <="),
        ("kuberay-rayjob.yaml", "spec.rayClusterSpec.rayVersion", "2.59.0", None, "use rayproject/ray:2.59.0-pyXY"),
    ],
)
def test_kuberay_validation_rejects_a_broken_copy(name, path, value, rename, expect):
    problems = kuberay_problems(changed(load(name), path, value, rename=rename))
    assert any(expect in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.headGroupSpec.rayStartParams.num-cpus", "zero"),
        ("spec.workerGroupSpecs.0.template.spec.containers.0.resources.limits", {"cpu": "8", "nvidia.com/gpu": "one"}),
    ],
)
def test_autoscaler_translation_rejects_a_broken_copy(path, value):
    with pytest.raises(ValueError):
        autoscaling_config(changed(load("kuberay-raycluster.yaml"), path, value))


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"workng_dir": "s3://b/c.zip"}, "unknown runtime_env fields ['workng_dir']"),
        ({"working_dir": "s3://b/congrad-ray"}, "Only .zip"),
        ({"env_vars": {"PYTHONUNBUFFERED": 1}}, "must be of type Dict[str, str]"),
        ({"pip": {"packages": ["x"], "pip_chek": False}}, "can only have these fields"),
    ],
)
def test_runtime_env_validation_rejects_a_broken_copy(change, expect):
    runtime_env = {**yaml.safe_load(load("kuberay-rayjob.yaml")["spec"]["runtimeEnvYAML"]), **change}
    problems = runtime_env_problems(runtime_env)
    assert any(expect in p for p in problems), problems


# ---------------------------------------------------------------------------------------------- every file

VALIDATED = {
    "aws.yaml": lambda doc: launcher_problems(doc),
    "kuberay-raycluster.yaml": lambda doc: kuberay_problems(doc) if SCHEMAS.is_dir() else operator_problems(doc),
    "kuberay-rayjob.yaml": lambda doc: kuberay_problems(doc) if SCHEMAS.is_dir() else operator_problems(doc),
    "runtime_env.yaml": runtime_env_problems,  # for `ray job submit --runtime-env` (the README's commands)
}


@pytest.mark.parametrize("path", sorted(CLUSTER.iterdir()), ids=lambda p: p.name)
def test_every_file_in_configs_cluster_is_validated(path):
    assert path.name in VALIDATED, f"{path.name}: add a validator for it to VALIDATED in this file"
    assert VALIDATED[path.name](load(path.name)) == []
