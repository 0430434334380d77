"""ray_cluster.yaml passes Ray's own cluster-config validation (offline: the schema shipped
with the installed Ray, after the same default-filling `ray up` does) and says what the
cluster needs: a CPU head running the MLflow server, autoscaling GPU workers on a current
`rayproject/ray` GPU image, and this project installed on every node."""

from __future__ import annotations

import copy
import re
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


# -- secure by default (docs/cluster.md, "Security") -------------------------------------------

SECRETS = "/home/ray/kitchen-study/.cluster-secrets"


def _start(config: dict, key: str) -> str:
    """The `ray start` command of head or worker start commands."""
    (cmd,) = [c for c in config[key] if "ray start" in c]
    return cmd


def test_nothing_binds_all_interfaces():
    text = CONFIG.read_text()
    assert "0.0.0.0" not in text
    assert not re.search(r"(host|bind)\S*[= ]+['\"]?\[?::\]?", text)  # nor IPv6's


def test_token_auth_on_head_and_workers(config):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cmd = _start(config, key)
        before_start = cmd[: cmd.index("ray start")]
        assert "RAY_AUTH_MODE=token" in before_start, key
        assert f"RAY_AUTH_TOKEN_PATH={SECRETS}/ray_auth_token" in before_start, key
    # the token is generated on the head, once, inside the project directory the autoscaler
    # syncs to every worker (so workers start with the same token)
    gen = " ".join(config["head_setup_commands"])
    assert "test -s ray_auth_token ||" in gen and "secrets.token_hex(32)" in gen
    assert SECRETS.startswith(next(iter(config["file_mounts"])) + "/")
    assert not any(".cluster-secrets" in p for p in config["rsync_exclude"])
    # interactive shells on the nodes (ray exec / attach, `ray status`) authenticate too
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])


def test_dashboard_and_job_api_on_loopback(config):
    head = _start(config, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head
    assert "--ray-client-server-port" not in head


def test_mlflow_behind_basic_auth_not_on_all_interfaces(config):
    (cmd,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert "--app-name basic-auth" in cmd
    assert '--host "$HEAD_IP"' in cmd  # the head's private IP, which only cluster nodes reach
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=" in cmd and "MLFLOW_FLASK_SERVER_SECRET_KEY=" in cmd
    setup = " ".join(config["head_setup_commands"])
    assert "mlflow[auth]" in setup
    assert "default_permission = READ" in setup
    # driver and workers log in (trials download pre-train checkpoints through the server)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "MLFLOW_TRACKING_PASSWORD=" in _start(config, key), key
