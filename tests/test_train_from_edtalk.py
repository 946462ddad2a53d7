"""The transfer recipe (configs/train_from_edtalk.yaml) on a small EDTalk-layout checkpoint made
here: ``fixtalk train --init EDTalk.pt`` copies the whole generator into the run's FixTalk, the
recipe's stages train EMI and EDI (then the decoder), and everything the recipe freezes (encoder,
FDM heads and banks) leaves the run exactly as EDTalk.pt had it. Also ``fixtalk eval``."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from tests.train_common import MODEL_OVERRIDE, data_root  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "train_from_edtalk.yaml"
FROZEN = ("enc.", "fc.", "lip_fc.", "pose_fc.", "exp_fc.", "direction_lipnonlip", "direction_exp")


def _edtalk_file(path: Path) -> dict[str, torch.Tensor]:
    """EDTalk.pt's layout ({'gen': generator state dict}) at the tests' 32x32 size."""
    from fixtalk.checkpoints import config_from_dict, config_to_dict
    from fixtalk.model import FixTalk
    from fixtalk.presets import get_preset
    from fixtalk.train.trainer import merge_overrides

    over = {k: v for k, v in MODEL_OVERRIDE.items() if k not in ("emi", "edi")}
    cfg = config_from_dict(merge_overrides(config_to_dict(get_preset("edtalk-256")), over))
    torch.manual_seed(7)
    gen = FixTalk(cfg).generator_state_dict()
    torch.save({"gen": gen}, path)
    return gen


def _recipe_at_test_size(tmp_path: Path, stages: slice) -> Path:
    """The shipped recipe with the test's model size and a few steps; its stages (what each trains,
    its loss terms) unchanged."""
    raw = yaml.safe_load(RECIPE.read_text())
    raw["model"] = {**raw["model"], **MODEL_OVERRIDE, "name": "fixtalk-32",
                    "emi": {**raw["model"]["emi"], **MODEL_OVERRIDE["emi"]},
                    "edi": {**raw["model"]["edi"], **MODEL_OVERRIDE["edi"]}}
    raw.update(device="cpu", num_threads=1, log_every=1, checkpoint_minutes=0)
    raw["stages"] = [{**s, "steps": 2, "batch_size": 2, **({"window": 3} if s["name"] == "audio2lip" else {}),
                      **({"gan_start": 0} if s.get("gan") else {})} for s in raw["stages"][stages]]
    path = tmp_path / f"recipe{stages.stop}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_recipe_from_edtalk_trains_emi_edi_and_keeps_edtalk_frozen(data_root, tmp_path):  # noqa: F811
    from fixtalk.checkpoints import load_model
    from pipeline.cli import main

    raw = yaml.safe_load(RECIPE.read_text())
    assert [s["name"] for s in raw["stages"]][:2] == ["fixtalk", "fixtalk"]
    assert raw["preset"] == "edtalk-256" and raw["model"]["variant"] == "fixtalk"
    gen = _edtalk_file(tmp_path / "EDTalk.pt")
    runs = {}
    for n in (1, 3):  # stage 1 alone (decoder frozen too), then the whole recipe
        out = tmp_path / f"run{n}"
        code = main(["train", "--config", str(_recipe_at_test_size(tmp_path, slice(0, n))), "--data",
                     str(data_root), "--out", str(out), "--init", str(tmp_path / "EDTalk.pt")])
        assert code == 0
        runs[n] = load_model(out / "model.pt").state_dict()
    for key, v in gen.items():
        assert key in runs[3], key
        if key.startswith(FROZEN):
            assert torch.equal(runs[1][key], v) and torch.equal(runs[3][key], v), f"{key} trained"
        if key.startswith("dec."):
            assert torch.equal(runs[1][key], v), f"stage 1 trained the decoder ({key})"
    assert any(not torch.equal(runs[3][k], v) for k, v in gen.items() if k.startswith("dec."))
    # EMI and EDI (fresh: not in EDTalk.pt) trained from the run's seeded initialisation
    from fixtalk.train.cli import load_train_config
    from fixtalk.train.trainer import build_model

    torch.manual_seed(0)
    init = build_model(load_train_config(_recipe_at_test_size(tmp_path, slice(0, 1)))).state_dict()
    fresh = [k for k in runs[1] if k.startswith(("emi.", "edi."))]
    assert fresh and all(k not in gen for k in fresh)
    assert any(not torch.equal(runs[1][k], init[k]) for k in fresh if runs[1][k].is_floating_point())
    with open(tmp_path / "run3" / "loss_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["fixtalk"] * 4 + ["audio2lip"] * 2
    assert all(float(r["dis"]) >= 0 and r["d_mem"] and r["align"] for r in rows[:4])
    assert rows[2]["d_loss"] and rows[2]["gan"]  # stage 2 runs the GAN


def test_fixtalk_eval_is_a_command(tmp_path, capsys):
    """``fixtalk eval`` reaches fixtalk.train.evaluate (usage errors exit 2 with its message)."""
    from pipeline.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0 and "--checkpoint" in capsys.readouterr().out
    assert main(["eval", "--data", str(tmp_path / "nothing")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
