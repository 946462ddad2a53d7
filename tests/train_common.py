"""Shared inputs of the training tests: a tiny synthetic data set (the public-domain astronaut,
one espeak-ng utterance force-aligned by pocketsphinx, 32x32 frames), a 32x32 FixTalk config,
and a helper that trains one stage on one fixed batch exactly as the trainer does."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fixtalk.config import StageConfig, TrainConfig

SIZE = 32
# 32x32 FixTalk: style_dim 64 >= lip + pose + exp directions (36); EMI/EDI at the 16x16 level
MODEL_OVERRIDE = {
    "size": SIZE, "style_dim": 64, "channels": {4: 32, 8: 32, 16: 32, 32: 16},
    "audio2lip": {"widths": (8, 8, 16, 16, 32), "embed_dim": 32},
    "emi": {"level": 16, "heads": 2}, "edi": {"level": 16, "slots": 8, "heads": 2},
}
SENTENCE = "open your mouth and say ah"


def _config(stages: list[StageConfig], **kw) -> TrainConfig:
    base = dict(preset="tiny", model=MODEL_OVERRIDE, stages=stages, seed=0, device="cpu",
                num_threads=1, checkpoint_minutes=0, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Two training clips (astronaut, augmented) of one espeak-ng utterance, 32x32."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    pytest.importorskip("pocketsphinx")
    from fixtalk.train import synthetic
    from fixtalk.train.speech import Utterance, align_phones, espeak

    audio = espeak(SENTENCE, "en-us", 170, 50)
    utt = Utterance(audio, SENTENCE, "espeak-ng en-us", "espeak-ng output", align_phones(audio, SENTENCE))
    root = tmp_path_factory.mktemp("train_data")
    written = synthetic.build(root, clips=2, size=SIZE, eval_clips=0, seed=0, log=lambda s: None,
                              utterances={"train": [utt]})
    assert len(written) == 2
    return root


def _trainer(data_root: Path, out: Path, cfg: TrainConfig):
    from fixtalk.train.trainer import Trainer

    return Trainer(cfg, data_root, out, log=lambda s: None)


def _overfit(trainer, st: StageConfig, steps: int, relative_flow: bool = False
             ) -> tuple[list[float], list[str], dict, dict]:
    """Train one stage on ONE fixed batch exactly as the trainer does; losses per step, the loss
    term names and the parameters before/after."""
    from fixtalk.train.stage_steps import STAGE_FUNCTIONS, StepContext, set_stage_mode

    model = trainer.model
    set_stage_mode(model, st.name)
    opt, _ = trainer._optimizers(st)
    batch = next(trainer._loader(st))
    ctx = StepContext(model=model, perceptual=trainer.perceptual, relative_flow=relative_flow)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = []
    for _ in range(steps):
        terms, _ = STAGE_FUNCTIONS[st.name](ctx, batch, st)
        loss = sum(terms.values())
        assert torch.isfinite(loss), (st.name, {k: float(v) for k, v in terms.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():  # the loss after the last update
        terms, _ = STAGE_FUNCTIONS[st.name](ctx, batch, st)
        losses.append(float(sum(terms.values())))
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    return losses, list(terms), before, after
