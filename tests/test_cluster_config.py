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
