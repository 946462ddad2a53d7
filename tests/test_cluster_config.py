"""The cluster-launcher files are valid for the Ray that is installed: each goes through what
``ray up`` does before it starts anything (``prepare_config``: defaults of its provider merged in,
then ``validate_config``: Ray's own cluster config schema), plus what this project relies on."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_file_is_valid_for_ray_up(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / name).read_text())
    validate_config(prepare_config(config))  # jsonschema.ValidationError: an unknown or mistyped key
    setup = "\n".join(config.get("setup_commands", []) + config.get("head_setup_commands", []))
    assert "make install" in setup  # every node gets the same pinned environment
    starts = "\n".join(config.get("head_start_ray_commands", []) + config.get("worker_start_ray_commands", []))
    assert ".venv/bin/ray start" in starts


def test_a_broken_cluster_file_is_refused():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["max_wrokers"] = 3  # a typo
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        validate_config(prepare_config(config))


def _train_command(text: str) -> list[str]:
    """The argv after ``fixtalk`` of the ``fixtalk train`` command in a file's header comments."""
    import shlex

    lines = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    first = next(i for i, line in enumerate(lines) if ".venv/bin/fixtalk train" in line)
    block = []
    for line in lines[first:]:
        block.append(line.rstrip("\\").strip())
        if line.endswith("'"):
            break
    command = " ".join(block).split(".venv/bin/fixtalk", 1)[1].rstrip("'")
    return shlex.split(command)


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_file_says_how_to_train_and_its_command_parses(name):
    """The header's training command is one ``fixtalk train`` accepts; on cluster.yaml the
    gpu_train nodes carry the custom resource it asks for and GPUs for all its workers."""
    from fixtalk.train.cli import build_parser, distributed_config

    text = (REPO / name).read_text()
    args = build_parser().parse_args(_train_command(text))
    dist = distributed_config(args)
    assert args.cmd == "train" and dist is not None and dist.workers > 1 and dist.gpus_per_worker >= 1
    assert dist.address == "auto" and args.out.startswith("/mnt/fixtalk/")
    if name == "cluster.yaml":
        node = yaml.safe_load(text)["available_node_types"]["gpu_train"]["resources"]
        assert node["GPU"] >= dist.workers * dist.gpus_per_worker and node["CPU"] >= dist.workers * dist.cpus_per_worker
        assert dist.resources and all(node[k] >= dist.workers * v for k, v in dist.resources.items())
