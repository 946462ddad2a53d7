"""Helpers shared by the network tests (test_nets, test_checkpoints, test_inference, test_parity):
small model configs, plausible random models, synthetic images and the reference key listing."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fixtalk.config import Audio2LipConfig, EDIConfig, EMIConfig, ModelConfig  # noqa: E402
from fixtalk.model import FixTalk, plausible_random_init_  # noqa: E402

# The project's reference material (../shared next to the checkout); FIXTALK_SHARED overrides it
# (.ci/run --clone points it at the work tree's neighbour).
SHARED = Path(os.environ.get("FIXTALK_SHARED") or Path(__file__).resolve().parents[2] / "shared")
STATE_DICT_TXT = SHARED / "research" / "edtalk_state_dict.txt"
FIXTURE = SHARED / "fixtures" / "edtalk_parity_small.pt"
# section title prefix in edtalk_state_dict.txt -> our name
SECTIONS = {"EDTalk.pt['gen']": "edtalk-256", "EDTalk_lip_pose.pt['gen']": "edtalk-lip-pose-256",
            "Audio2Lip.pt['audio2lip']": "audio2lip"}
SMALL_CHANNELS = {4: 24, 8: 24, 16: 16, 32: 8}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a shared, loaded CPU OpenMP spin-waiting
    multiplies the cost; the previous setting is restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_config(variant: str = "edtalk", size: int = 32, style_dim: int = 40,
                 channels: dict[int, int] | None = None, level: int = 16) -> ModelConfig:
    """A network small enough for a loaded 2-core CPU; EMI/EDI (variant fixtalk) at ``level``."""
    fix = variant == "fixtalk"
    return ModelConfig(
        name=f"test-{variant}-{size}", variant=variant, size=size, style_dim=style_dim,
        channels=dict(channels or SMALL_CHANNELS), adain_hidden=16,
        audio2lip=Audio2LipConfig(widths=(4, 8, 8, 16, 16), embed_dim=16),
        emi=EMIConfig(enabled=fix, level=level, depth=1, heads=2),
        edi=EDIConfig(enabled=fix, level=level, slots=8, heads=2))


def small_model(variant: str = "edtalk", seed: int = 0, **kw) -> FixTalk:
    """Eval-mode model with plausible random weights (see plausible_random_init_)."""
    torch.manual_seed(seed)
    return plausible_random_init_(FixTalk(small_config(variant, **kw)), seed=seed).eval()


def smooth_image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour field (S, S, 3) uint8 (like the parity fixture's inputs)."""
    rng = np.random.default_rng(seed)
    field = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32))
    img = torch.nn.functional.interpolate(field, size=(size, size), mode="bicubic",
                                          align_corners=False).clamp(-1, 1)
    return ((img[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


def image_tensor(size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """(B, 3, S, S) float in [-1, 1] from :func:`smooth_image`."""
    imgs = [torch.from_numpy(smooth_image(size, seed + i)).permute(2, 0, 1) for i in range(batch)]
    return torch.stack(imgs).float() / 127.5 - 1


def reference_sections(path: Path = STATE_DICT_TXT) -> dict[str, list[tuple[str, tuple, str]]]:
    """Parse edtalk_state_dict.txt: our section name -> [(key, shape, dtype)] in file order."""
    out: dict[str, list[tuple[str, tuple, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("#####"):
            title = line.strip("# ").strip()
            current = next((v for k, v in SECTIONS.items() if title.startswith(k)), None)
            if current is not None:
                out[current] = []
        elif current is not None and line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            out[current].append((key, tuple(ast.literal_eval(shape)), dtype))
    return out


def random_state_dict(entries: list[tuple[str, tuple, str]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the listed names, shapes and dtypes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape, dtype in entries:
        if dtype == "int64":
            sd[key] = torch.randint(0, 100, shape, generator=g, dtype=torch.int64)
        else:
            sd[key] = torch.randn(shape, generator=g, dtype=getattr(torch, dtype))
    return sd
