"""`llmserve validate --address` and `deploy` against a simulated two-node GPU cluster.

A CPU-only head plus two nodes of 4 logical GPUs each (Ray schedules them
like real ones). Nothing is deployed: the check reads the nodes and stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmserve.cli.main import main
from tests.conftest import CONFIGS
from tests.helpers import simulated_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with simulated_cluster([4, 4]) as address:
        yield address


@pytest.fixture(autouse=True)
def disconnected() -> Iterator[None]:
    """Each command connects by itself, as it would in its own process."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


def _tp8_strict_pack(tmp_path: Path) -> Path:
    data = yaml.safe_load((CONFIGS / "gpu-tp8-pp2.yaml").read_text())
    data["models"][0]["parallelism"] = {
        "tensor_parallel_size": 8,
        "placement_strategy": "STRICT_PACK",
    }
    path = tmp_path / "tp8-strict.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_fitting_config_passes(address: str, capsys) -> None:
    config = CONFIGS / "gpu-tp2.yaml"
    assert main(["validate", str(config), "--address", address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{config}: OK (models: llama-3.1-8b-instruct)"
    assert out[1] == f"{config} fits the cluster at {address} (3 nodes; GPUs per node: 0, 4, 4):"
    assert out[2] == (
        "  models[0] (llama-3.1-8b-instruct, gpu): fits (2 x {GPU: 1}, STRICT_PACK, on 1 node)"
    )


def test_a_config_that_does_not_fit_fails_with_what_is_missing(
    address: str, tmp_path: Path, capsys
) -> None:
    config = _tp8_strict_pack(tmp_path)
    assert main(["validate", str(config), "--address", address]) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err[0]
        == f"{config} does not fit the cluster at {address} (3 nodes; GPUs per node: 0, 4, 4):"
    )
    assert err[1:] == ["  models[0] needs 8 GPUs on one node for STRICT_PACK; largest node has 4"]


def test_pack_over_two_nodes_fits_only_with_enough_gpus(address: str, capsys) -> None:
    assert main(["validate", str(CONFIGS / "gpu-tp8-pp2.yaml"), "--address", address]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[1:] == [
        "  models[0] needs 16 GPUs across nodes for PACK; the cluster has 8"
    ]


def test_deploy_checks_the_fit_before_starting_anything(
    address: str, tmp_path: Path, capsys
) -> None:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    config = _tp8_strict_pack(tmp_path)
    assert main(["deploy", str(config), "--address", address, "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert "models[0] needs 8 GPUs on one node for STRICT_PACK; largest node has 4" in err
    assert "nothing was deployed" in err
    with pytest.raises(ValueError):  # Serve was never started on the cluster
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
