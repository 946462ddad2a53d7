"""The training loop behind ``fixtalk train``: stages in order, resumable, logged.

One :class:`~fixtalk.config.TrainConfig` lists the stages (base -> lip_pose -> exp -> fixtalk ->
audio2lip by default); each stage trains the parameters :func:`stage_steps.trainable_prefixes`
names with a fresh Adam optimizer and its own loss terms (:mod:`fixtalk.train.stage_steps`).
Optional non-saturating GAN terms use the StyleGAN2-style discriminator with a lazy R1 penalty
(gamma ``r1`` every ``r1_every`` discriminator steps, scaled by ``r1_every`` as in StyleGAN2).

Checkpoints (``OUT/train_state.pt``) hold model, discriminator, optimizers, RNG states, the
stage/step position and the loss log, written atomically every ``checkpoint_minutes`` (and/or
``checkpoint_steps``) and at the end of each stage, so a killed run resumes where it stopped
(to the step of the last checkpoint) and continues bit-for-bit as if never stopped (CPU, same
thread count). The final model is written with :func:`fixtalk.checkpoints.save_checkpoint`
(``OUT/model.pt``), carrying its config, format version and training record.

Data-parallel runs (``fixtalk train --workers N``, :mod:`fixtalk.train.distributed`) run this same
class in every worker with a :class:`~fixtalk.train.collective.World` of size N: each worker takes
its share of every global batch (:mod:`fixtalk.train.sharding`), gradients and logged losses are
averaged over the workers, clock-based choices are rank 0's, and rank 0 alone writes files (the
state holds every worker's RNG state). Alone (size 1) each collective step returns at once.

Choices the papers leave open: EMI's fusion logits ``emi.beta`` get 10x the stage learning rate
(see :mod:`fixtalk.nets.emi`) and the decoder's flow/mask heads ``dec.to_flows`` ``flow_lr_mult``
times it; to_flow weights are scaled by ``init_flow_scale`` at init so the first warps are near
identity; Adam betas (0, 0.99) as in StyleGAN2/LIA.
"""
from __future__ import annotations

import csv
import math
import os
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from fixtalk.checkpoints import config_from_dict, config_to_dict, save_checkpoint
from fixtalk.config import StageConfig, TrainConfig
from fixtalk.model import FixTalk
from fixtalk.presets import get_preset
from fixtalk.train.collective import SINGLE, World
from fixtalk.train.data_format import TalkingFaceDataset
from fixtalk.train.discriminator import Discriminator
from fixtalk.train.schedule import set_learning_rate
from fixtalk.train.losses import d_logistic, g_nonsaturating, perceptual_loss, r1_penalty
from fixtalk.train.sharding import RankBatchSampler, local_batch_size
from fixtalk.train.stage_steps import (STAGE_FUNCTIONS, StepContext, set_stage_mode, trainable_prefixes,
                                       wants_warp)

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"
LOG_FILE = "loss_log.csv"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return dev


def merge_overrides(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_model(cfg: TrainConfig) -> FixTalk:
    model_cfg = config_from_dict(merge_overrides(config_to_dict(get_preset(cfg.preset)), cfg.model))
    model = FixTalk(model_cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("dec.to_flows.") and name.endswith("conv.weight"):
                p.mul_(cfg.init_flow_scale)
    return model


def _rng_state() -> dict:
    """torch, numpy and Python RNG states as tensors and plain tuples (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
            "python": (version, torch.tensor(internal, dtype=torch.int64), gauss)}


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"].cpu())
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))


def _infinite(loader) -> Iterator[dict]:
    epoch = 0
    while True:
        loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


class Trainer:
    """Runs ``cfg.stages`` on the clips under ``data_root``; writes everything under ``out_dir``."""

    def __init__(self, cfg: TrainConfig, data_root: str | Path, out_dir: str | Path,
                 log: Callable[[str], None] = print, model: FixTalk | None = None,
                 world: World = SINGLE) -> None:
        """``model``: train this network (e.g. a loaded checkpoint) instead of a fresh ``cfg.preset``;
        ``world``: the workers of a data-parallel run (default: this process alone)."""
        self.cfg, self.data_root, self.out = cfg, Path(data_root), Path(out_dir)
        self.world = world
        if world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.device = resolve_device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        for st in cfg.stages:
            local_batch_size(st.batch_size, world.size, st.name)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.model = (model if model is not None else build_model(cfg)).to(self.device, self.dtype)
        self.perceptual = perceptual_loss(cfg.perceptual_weights or None).to(self.device, self.dtype)
        self.disc = (Discriminator(self.model.cfg.size, base=cfg.disc_channels,
                                   stddev_group=cfg.disc_stddev_group).to(self.device, self.dtype)
                     if any(s.gan for s in cfg.stages) else None)
        if world.size > 1:
            from fixtalk.train.sync_batchnorm import use_global_batchnorm

            use_global_batchnorm(self.model)
        self.stage_index, self.stage_step, self.global_step = 0, 0, 0
        self.rows: list[dict] = []
        self.opt_state: dict | None = None
        self.started = time.monotonic()
        self.elapsed_before = 0.0
        if (self.out / STATE_FILE).is_file():
            self._load_state(self.out / STATE_FILE)

    # ------------------------------------------------------------------ checkpoints
    def _state(self, opt, d_opt, rngs: list[dict]) -> dict:
        return {"format": 1, "train_config": asdict(self.cfg), "model_config": config_to_dict(self.model.cfg),
                "model": self.model.state_dict(), "disc": self.disc.state_dict() if self.disc else None,
                "opt": opt.state_dict() if opt else None, "d_opt": d_opt.state_dict() if d_opt else None,
                "stage_index": self.stage_index, "stage_step": self.stage_step,
                "global_step": self.global_step, "rows": self.rows, "elapsed": self.elapsed(),
                "rng": rngs[0], "rng_workers": rngs}

    def save_state(self, opt=None, d_opt=None) -> Path:
        """Every worker calls it (their RNG states are gathered); rank 0 writes the file."""
        path = self.out / STATE_FILE
        rngs = self.world.gather(_rng_state())
        if self.world.is_main:
            fd, tmp = tempfile.mkstemp(prefix=STATE_FILE, suffix=".tmp", dir=self.out)
            os.close(fd)
            torch.save(self._state(opt, d_opt, rngs), tmp)
            os.replace(tmp, path)
        return path

    def _load_state(self, path: Path) -> None:
        st = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(st["model"])
        if self.disc is not None and st.get("disc"):
            self.disc.load_state_dict(st["disc"])
        self.stage_index, self.stage_step = st["stage_index"], st["stage_step"]
        self.global_step, self.rows = st["global_step"], st["rows"]
        self.elapsed_before = st.get("elapsed", 0.0)
        self.opt_state = {"opt": st.get("opt"), "d_opt": st.get("d_opt")}
        rngs = st.get("rng_workers") or [st["rng"]]
        _set_rng_state(rngs[self.world.rank] if len(rngs) == self.world.size else st["rng"])
        self.log(f"resumed from {path}: stage {self.stage_index} step {self.stage_step}")

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    # ------------------------------------------------------------------ one stage
    def _optimizers(self, st: StageConfig):
        prefixes = trainable_prefixes(st.name, self.model, st.trainable)
        frozen = tuple(f.strip() for f in st.frozen.split(",") if f.strip())
        mults: dict[float, list] = {}
        for name, p in self.model.named_parameters():
            train = (not name.startswith("audio2lip.")) if prefixes is None else name.startswith(prefixes)
            train = train and not (frozen and name.startswith(frozen))
            p.requires_grad_(train)
            if train:
                mult = 10.0 if name == "emi.beta" else st.flow_lr_mult if name.startswith("dec.to_flows.") else 1.0
                mults.setdefault(mult, []).append(p)
        groups = [{"params": ps, "lr": st.lr * m, "base_lr": st.lr * m} for m, ps in sorted(mults.items())]
        opt = torch.optim.Adam(groups, lr=st.lr, betas=(0.0, 0.99))
        d_opt = (torch.optim.Adam(self.disc.parameters(), lr=st.d_lr, betas=(0.0, 0.99))
                 if st.gan and self.disc is not None else None)
        if self.opt_state is not None:
            if self.opt_state["opt"]:
                opt.load_state_dict(self.opt_state["opt"])
            if d_opt is not None and self.opt_state["d_opt"]:
                d_opt.load_state_dict(self.opt_state["d_opt"])
            self.opt_state = None
        return opt, d_opt

    def _loader(self, st: StageConfig):
        ds = TalkingFaceDataset(self.data_root, window=st.window, split="train",
                                audio_config=self.model.cfg.audio, seed=self.cfg.seed + self.stage_index,
                                with_mel=st.name == "audio2lip", with_warp=wants_warp(st),
                                colour_augment=self.cfg.colour_augment,
                                audio_noise_dbfs=self.cfg.audio_noise_dbfs, stickers=self.cfg.stickers)
        gen = torch.Generator().manual_seed(self.cfg.seed + 1000 * self.stage_index)
        share = RankBatchSampler(len(ds), st.batch_size, gen, self.world.rank, self.world.size)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=share, num_workers=0, generator=gen)
        return _infinite(loader)

    def _amp(self):
        on = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def run_stage(self, st: StageConfig) -> None:
        if st.name not in STAGE_FUNCTIONS:
            raise ValueError(f"unknown training stage {st.name!r}; choose from {sorted(STAGE_FUNCTIONS)}")
        if self.cfg.relative_flow and st.flow and st.name not in ("base", "lip_pose"):
            raise ValueError(f"stage {st.name!r}: with relative_flow the flow term is supported in the "
                             "base and lip_pose stages only; set flow: 0 here")
        set_stage_mode(self.model, st.name)  # frozen parts keep inference behaviour
        opt, d_opt = self._optimizers(st)
        ctx = StepContext(model=self.model, perceptual=self.perceptual,
                          relative_flow=self.cfg.relative_flow)
        batches = self._loader(st)
        for _ in range(self.stage_step):  # replay the sampler to the position of a resumed run
            next(batches)
        stage_start = time.monotonic()
        last_ckpt = time.monotonic()
        while self.stage_step < st.steps:
            if self.world.decide(bool(st.max_minutes and (time.monotonic() - stage_start) / 60 > st.max_minutes)):
                self.log(f"stage {st.name}: time budget of {st.max_minutes} min reached at step {self.stage_step}")
                break
            if self.world.decide(bool(self.cfg.max_minutes and self.elapsed() / 60 > self.cfg.max_minutes)):
                self.log(f"run budget of {self.cfg.max_minutes} min reached")
                self.save_state(opt, d_opt)
                self.write_log()  # the loss log of a stopped run is as far as its state
                raise TimeoutError("training time budget reached; rerun the same command to continue")
            batch = {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype)
                     for k, v in next(batches).items()}
            use_gan = bool(st.gan and self.disc is not None and self.stage_step >= st.gan_start)
            with_image = st.name != "audio2lip" or self.stage_step % max(1, st.image_every) == 0
            with self._amp():
                if st.name == "audio2lip":
                    terms, fakes = STAGE_FUNCTIONS[st.name](ctx, batch, st, with_image=with_image)
                else:
                    terms, fakes = STAGE_FUNCTIONS[st.name](ctx, batch, st)
                if use_gan and fakes:
                    for p in self.disc.parameters():
                        p.requires_grad_(False)
                    terms["gan"] = st.gan * sum(g_nonsaturating(self.disc(f)) for f in fakes) / len(fakes)
                loss = sum(terms.values())
            if not self.world.all_finite(loss):
                raise FloatingPointError(f"stage {st.name} step {self.stage_step}: loss is {loss.item()} "
                                         f"({ {k: float(v) for k, v in terms.items()} }); lower the lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self.world.average_gradients(p for g in opt.param_groups for p in g["params"])
            set_learning_rate(opt, st, self.stage_step)
            opt.step()
            row = {"global_step": self.global_step, "stage": st.name, "step": self.stage_step,
                   "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
            if use_gan and fakes and d_opt is not None:
                for p in self.disc.parameters():
                    p.requires_grad_(True)
                real = batch["driving"][:, 0]
                with self._amp():
                    d_loss = d_logistic(self.disc(real), self.disc(fakes[0].detach()))
                d_total = d_loss
                if st.r1 and self.stage_step % max(1, st.r1_every) == 0:
                    r1 = r1_penalty(self.disc, real.to(self.dtype))
                    d_total = d_loss + 0.5 * st.r1 * max(1, st.r1_every) * r1
                    row["r1"] = float(r1.detach())
                d_opt.zero_grad(set_to_none=True)
                d_total.backward()
                self.world.average_gradients(self.disc.parameters())
                d_opt.step()
                row["d_loss"] = float(d_loss.detach())
            self.stage_step += 1
            self.global_step += 1
            if self.stage_step % self.cfg.log_every == 0 or self.stage_step == 1:
                row["elapsed_min"] = round(self.elapsed() / 60, 2)
                row = self.world.mean_row(row)
                self.rows.append(row)
                self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            due_time = self.cfg.checkpoint_minutes and time.monotonic() - last_ckpt > 60 * self.cfg.checkpoint_minutes
            due_step = self.cfg.checkpoint_steps and self.stage_step % self.cfg.checkpoint_steps == 0
            if self.world.decide(bool(due_time or due_step)):
                self.save_state(opt, d_opt)
                self.write_log()
                last_ckpt = time.monotonic()
        self.stage_index += 1
        self.stage_step = 0
        self.save_state()
        self.write_log()

    # ------------------------------------------------------------------ whole run
    def run(self) -> Path:
        while self.stage_index < len(self.cfg.stages):
            st = self.cfg.stages[self.stage_index]
            self.log(f"stage {self.stage_index + 1}/{len(self.cfg.stages)}: {st.name} ({st.steps} steps)")
            self.run_stage(st)
        return self.finish()

    def finish(self) -> Path:
        """``OUT/model.pt`` (rank 0 writes it; every worker returns its path)."""
        self.model.eval().float()
        path = self.out / MODEL_FILE
        if not self.world.is_main:
            return path
        record = {"data": str(self.data_root), "stages": [asdict(s) for s in self.cfg.stages],
                  "steps": self.global_step, "minutes": round(self.elapsed() / 60, 1),
                  "seed": self.cfg.seed, "device": str(self.device), "workers": self.world.size,
                  "perceptual": "vgg19:" + self.cfg.perceptual_weights if self.cfg.perceptual_weights
                  else "StructureLoss (no-download substitute)",
                  "final_losses": self.rows[-1] if self.rows else {}}
        path = save_checkpoint(path, self.model, training=record)
        self.write_log()
        self.log(f"wrote {path}")
        return path

    def write_log(self) -> None:
        """``loss_log.csv`` (one row per logged step) and ``loss_log.png`` (one curve per term)."""
        if not self.rows or not self.world.is_main:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.out / LOG_FILE, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        plot_log(self.rows, self.out / "loss_log.png")


def plot_log(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"global_step", "stage", "step", "elapsed_min"}
    terms = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k in terms:
        pts = [(r["global_step"], r[k]) for r in rows if k in r and r[k] is not None and math.isfinite(r[k])]
        if pts:
            ax.plot(*zip(*pts), label=k, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
