"""Checkpoints (issue 2, deliverable 2): strict loading of tensors shaped exactly as EDTalk's
public files (edtalk_state_dict.txt), errors naming missing / unexpected / mis-shaped keys, other
layouts and non-finite weights refused, our own format round trip, and a FixTalk model initialised
from an EDTalk-layout checkpoint."""
from __future__ import annotations

import pytest
import torch

from fixtalk.checkpoints import (FORMAT, check_state_dict, config_from_generator, config_to_dict,
                                 detect_layout, init_fixtalk_from_edtalk, load_model,
                                 save_checkpoint)
from fixtalk.config import Audio2LipConfig
from fixtalk.model import FixTalk
from fixtalk.nets.audio2lip import Audio2Lip
from fixtalk.presets import get_preset
from tests.nets_common import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.nets_common import STATE_DICT_TXT, image_tensor, random_state_dict, reference_sections
from tests.nets_common import small_config, small_model

needs_txt = pytest.mark.skipif(not STATE_DICT_TXT.is_file(), reason="../shared/research absent")


# ------------------------------------------------------------------ EDTalk's public layouts
@needs_txt
@pytest.mark.parametrize("name", ["edtalk-256", "edtalk-lip-pose-256"])
def test_random_edtalk_generator_loads_strictly(name):
    sd = random_state_dict(reference_sections()[name], seed=1)
    cfg = config_from_generator(sd)  # the preset is recognised from the shapes alone
    assert cfg.name == name and cfg.size == 256 and cfg.style_dim == 512
    model = FixTalk(cfg)
    model.load_generator_state_dict(sd)
    loaded = model.state_dict()
    for key in ("enc.net_app.convs.0.0.weight", "dec.to_rgb1.conv.0.weight", "lip_fc.2.weight",
                "dec.convs.11.conv.weight", "direction_lipnonlip.weight"):
        assert torch.equal(loaded[key], sd[key]), key
    assert detect_layout({"gen": sd}) == ("edtalk" if name == "edtalk-256" else "edtalk_lip_pose")


@needs_txt
def test_random_audio2lip_loads_strictly():
    sd = random_state_dict(reference_sections()["audio2lip"], seed=2)
    net = Audio2Lip(Audio2LipConfig(), 20)
    net.load_state_dict(sd, strict=True)
    assert torch.equal(net.state_dict()["audio_encoder.12.conv_block.1.running_var"],
                       sd["audio_encoder.12.conv_block.1.running_var"])
    assert detect_layout({"audio2lip": sd}) == "audio2lip"


def test_wrong_generator_names_missing_unexpected_and_misshaped_keys():
    model = small_model("edtalk")
    sd = model.generator_state_dict()
    del sd["lip_fc.1.bias"]
    sd["dec.extra_layer.weight"] = torch.zeros(3)
    sd["pose_fc.2.weight"] = torch.zeros(7, 40)
    with pytest.raises(ValueError) as err:
        model.load_generator_state_dict(sd)
    msg = str(err.value)
    assert "1 missing: lip_fc.1.bias" in msg
    assert "1 unexpected: dec.extra_layer.weight" in msg
    assert "pose_fc.2.weight (7, 40) (expected (6, 40))" in msg


def test_check_state_dict_accepts_exact_match_and_rejects_non_dicts():
    model = small_model("edtalk_lip_pose")
    check_state_dict(model.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match="expected a dict of tensors, got list"):
        check_state_dict([1, 2], model.state_dict(), what="x")


@pytest.mark.parametrize("obj, match", [
    ({"dis": {}, "g_optim": {}}, "unrecognised checkpoint layout.*'gen'.*'audio2lip'.*\\['dis', 'g_optim'\\]"),
    ({"format": "fixtalk-ckpt/99", "state_dict": {}}, "unsupported checkpoint format 'fixtalk-ckpt/99'"),
    ([torch.zeros(2)], "unrecognised checkpoint layout"),
])
def test_other_layouts_are_refused(tmp_path, obj, match):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_audio2lip_file_as_generator_and_junk_files_are_refused(tmp_path):
    a2l = tmp_path / "Audio2Lip.pt"
    torch.save({"audio2lip": Audio2Lip(Audio2LipConfig(widths=(4, 4, 4, 4, 4), embed_dim=4)).state_dict()}, a2l)
    with pytest.raises(ValueError, match="is an Audio2Lip checkpoint; pass it as audio2lip="):
        load_model(a2l)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable torch checkpoint with weights_only=True"):
        load_model(junk)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")
    not_gen = tmp_path / "not_gen.pt"
    torch.save({"gen": {"w": torch.zeros(1)}}, not_gen)
    with pytest.raises(ValueError, match="not an EDTalk generator state dict.*direction_lipnonlip"):
        load_model(not_gen)


def test_edtalk_file_with_a_wrong_key_names_it(tmp_path):
    sd = small_model("edtalk").generator_state_dict()
    sd["exp_fc.0.weight"] = sd.pop("exp_fc.0.weight")[:, :5]
    torch.save({"gen": sd}, tmp_path / "EDTalk.pt")
    with pytest.raises(ValueError, match=r"exp_fc.0.weight \(40, 5\) \(expected \(40, 40\)\)"):
        load_model(tmp_path / "EDTalk.pt")


def test_non_finite_weights_are_refused(tmp_path):
    model = small_model("edtalk")
    with torch.no_grad():
        model.fc[0].weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model)
    with pytest.raises(ValueError, match="NaN or Inf.*fc.0.weight"):
        load_model(tmp_path / "nan.pt")


# ------------------------------------------------------------------ our own format
def test_own_checkpoint_round_trip(tmp_path):
    model = small_model("fixtalk", seed=3)
    model.emotion_weights = {"happy": torch.arange(10, dtype=torch.float32)}
    record = {"stage": "fixtalk", "step": 12, "losses": {"l1": 0.25}}
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, training=record)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["format"] == FORMAT and raw["training"] == record
    assert raw["config"] == config_to_dict(model.cfg) and raw["config"]["edi"]["slots"] == 8
    loaded = load_model(path)
    assert config_to_dict(loaded.cfg) == config_to_dict(model.cfg)
    assert loaded.training_record == record and not loaded.training
    assert torch.equal(loaded.emotion_weights["happy"], torch.arange(10, dtype=torch.float32))
    ref, got = model.state_dict(), loaded.state_dict()
    assert list(ref) == list(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    src, drv = image_tensor(32, 1, seed=1), image_tensor(32, 1, seed=2)
    with torch.no_grad():
        assert torch.equal(model(src, drv).image, loaded(src, drv).image)
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_own_checkpoint_whose_weights_do_not_match_its_config(tmp_path):
    model = small_model("edtalk")
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(path, weights_only=True)
    raw["config"]["lip_dim"] = 12
    torch.save(raw, path)
    with pytest.raises(ValueError, match=r"\['state_dict'\] does not match.*lip_fc.2.weight"):
        load_model(path)


# ------------------------------------------------------------------ FixTalk from EDTalk
def _edtalk_file(tmp_path, size: int, variant: str = "edtalk"):
    """An EDTalk-layout file ({'gen': ...}) whose sizes match the ``tiny`` preset's table."""
    cfg = get_preset("tiny")
    cfg.variant, cfg.size, cfg.adain_hidden = variant, size, 128
    cfg.channels = {r: c for r, c in cfg.channels.items() if r <= size}
    torch.manual_seed(4)
    gen = FixTalk(cfg).generator_state_dict()
    torch.save({"gen": gen}, tmp_path / "EDTalk.pt")
    return tmp_path / "EDTalk.pt", gen


def test_init_fixtalk_from_edtalk_same_size_copies_the_whole_generator(tmp_path):
    path, gen = _edtalk_file(tmp_path, 128)
    model = init_fixtalk_from_edtalk(path, preset="tiny")
    assert model.training and model.emi is not None and model.edi is not None
    rep = model.init_report
    assert rep["fresh"] == [] and rep["skipped"] == [] and len(rep["loaded"]) == len(gen)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in gen.items())
    assert model.training_record["loaded"] == len(gen)


def test_init_fixtalk_from_a_smaller_edtalk_matches_levels_by_resolution(tmp_path):
    path, gen = _edtalk_file(tmp_path, 64)
    model = init_fixtalk_from_edtalk(path, preset="tiny")  # 64 -> 128
    sd = model.state_dict()
    # encoder ResBlock with 64x64 input: index 1 in the source, 2 in the 128 destination
    assert torch.equal(sd["enc.net_app.convs.2.conv1.0.weight"], gen["enc.net_app.convs.1.conv1.0.weight"])
    assert torch.equal(sd["enc.net_app.convs.6.weight"], gen["enc.net_app.convs.5.weight"])
    assert torch.equal(sd["dec.convs.7.conv.weight"], gen["dec.convs.7.conv.weight"])  # level 64
    fresh = model.init_report["fresh"]
    assert "enc.net_app.convs.0.0.weight" in fresh and "dec.convs.8.conv.weight" in fresh


def test_init_fixtalk_refuses_other_layouts_and_latent_sizes(tmp_path):
    a2l = tmp_path / "a2l.pt"
    torch.save({"audio2lip": {}}, a2l)
    with pytest.raises(ValueError, match="expected EDTalk.pt or EDTalk_lip_pose.pt.*audio2lip"):
        init_fixtalk_from_edtalk(a2l, preset="tiny")
    torch.save({"gen": FixTalk(small_config()).generator_state_dict()}, tmp_path / "small.pt")
    with pytest.raises(ValueError, match="style_dim 128 but .* has 40"):
        init_fixtalk_from_edtalk(tmp_path / "small.pt", preset="tiny")
