"""ray_cluster.yaml passes Ray's own cluster-config validation (offline: the schema shipped
with the installed Ray, after the same default-filling `ray up` does) and says what the
cluster needs: a CPU head running the MLflow server, autoscaling GPU workers on a current
`rayproject/ray` GPU image, and this project installed on every node."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_ray_validates_the_config(config):
    # `ray up` runs prepare_config (merge with the provider's defaults.yaml) and then
    # validate_config (ray-schema.json + node-type checks); both are offline.
    validate_config(prepare_config(copy.deepcopy(config)))


def test_validation_is_not_vacuous(config):
    import jsonschema

    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_worker"]["node_typo"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(config)
    bad["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))


def test_cluster_shape(config):
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head.get("resources", {}).get("GPU", 0) == 0
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # CPU instance
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t.get("resources", {}).get("GPU", 0) > 0]
    assert gpu, "needs a GPU worker type"
    assert all(t["max_workers"] > t.get("min_workers", 0) for t in gpu)  # autoscaling
    assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in gpu)


def test_images_are_current_ray_gpu_images(config):
    docker = config["docker"]
    major_minor = ".".join(ray.__version__.split(".")[:2])
    for key in ("head_image", "worker_image"):
        image = docker[key]
        assert image.startswith(f"rayproject/ray:{major_minor}."), image  # not ray-ml
        assert "-py311-" in image
    assert docker["worker_image"].endswith("-gpu")


def test_head_runs_mlflow_and_nodes_install_the_project(config):
    head_cmds = " ".join(config["head_start_ray_commands"] + config["head_setup_commands"])
    assert "mlflow server" in head_cmds
    assert "--backend-store-uri sqlite:///" in head_cmds
    assert "--artifacts-destination s3://" in head_cmds
    assert any("pip install" in c and "/home/ray/kitchen-study" in c
               for c in config["setup_commands"])
    assert config["file_mounts"]["/home/ray/kitchen-study"] == "."
