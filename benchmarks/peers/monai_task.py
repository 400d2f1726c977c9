"""The peers' MONAI task: a plain 3D UNet training loop on the bench's site caches, shared by both peers.

Written the way NVFlare's and Flower's MONAI examples write it (MONAI transforms, ``CacheDataset``,
``DiceCELoss``, ``Adam`` created once, sliding-window validation with ``DiceMetric``), with no dose3d code:
the stock-NVFlare peer (``peers/nvflare``) and the Flower peer (``peers/flower``, its own virtual environment
without dose3d) import this file only. Everything that must match the project's runs comes from the task file
``spec.json`` that ``dose3d bench --peers`` writes: each site's training and validation cases (the project's
split), the preprocessing and network of the profile, the crops, augmentation and learning rate, the rounds
and local epochs, the seed and the initial weights (``initial.pt``, the project's seeded initial model).

What a site does each round (``SiteTask.round``): validate the received global model on its validation cases
(its Dice is the global model's of the previous round), train ``local_epochs`` epochs, and append one JSON line
to ``OUT/rounds.jsonl``: when the model arrived and left, validation and training seconds, Dice and the bytes of
the messages received and sent as the framework serialises them.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, decollate_batch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.transforms import (
    AsDiscrete,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    KeepLargestConnectedComponent,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from monai.utils import set_determinism

ROUNDS_LOG = "rounds.jsonl"
FINAL_MODEL = "final_model.pt"
KEYS = ("image", "label")


def write_versions(out: Path, framework: str) -> None:
    """``OUT/versions.json``: the framework's, torch's and MONAI's versions in the peer's environment."""
    import importlib.metadata
    import platform

    names = (framework, "torch", "monai", "numpy")
    versions = {name: importlib.metadata.version(name) for name in names}
    (Path(out) / "versions.json").write_text(
        json.dumps({**versions, "python": platform.python_version()}) + "\n"
    )


def check_complete(spec: dict[str, Any], out: Path) -> str | None:
    """``None`` when every site logged every round in ``out/rounds.jsonl``, else what is missing (a framework
    may finish a run whose sites failed, with the model it had)."""
    path = Path(out) / ROUNDS_LOG
    logged = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                logged.add((record["site"], int(record["round"])))
    missing = [
        (s, r) for s in sorted(spec["sites"]) for r in range(int(spec["rounds"])) if (s, r) not in logged
    ]
    if missing:
        site, round_ = missing[0]
        return (
            f"{len(missing)} site round(s) missing from {path}, first {site} round {round_ + 1}; see the log"
        )
    return None


def load_spec(path: str | Path) -> dict[str, Any]:
    """The task file the bench writes (``spec.json``)."""
    return json.loads(Path(path).read_text())


def build_network(spec: dict[str, Any]) -> UNet:
    """The profile's MONAI UNet (its tensors are the project's network's)."""
    return UNet(**spec["network"])


def initial_weights(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The same initial weights as the project's runs (``initial.pt`` beside the task file)."""
    return torch.load(spec["initial_model"], map_location="cpu", weights_only=True)


def _preprocessing(p: dict[str, Any]) -> list:
    body_hu = float(p["body_hu"])
    return [
        LoadImaged(keys=KEYS, image_only=True),
        EnsureChannelFirstd(keys=KEYS),
        Orientationd(keys=KEYS, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=KEYS, pixdim=p["pixdim"], mode=("bilinear", "nearest")),
        CropForegroundd(keys=KEYS, source_key="image", select_fn=lambda x: x > body_hu, allow_smaller=True),
        ScaleIntensityRanged(
            keys="image", a_min=p["hu_min"], a_max=p["hu_max"], b_min=0.0, b_max=1.0, clip=True
        ),
        SpatialPadd(keys=KEYS, spatial_size=p["roi_size"]),
        EnsureTyped(keys=KEYS, dtype=torch.float32, track_meta=False),
    ]


def train_transforms(p: dict[str, Any]) -> Compose:
    """Preprocessing, positive/negative crops and intensity augmentation of the profile."""
    pos, neg = p["pos_neg"]
    return Compose(
        [
            *_preprocessing(p),
            RandCropByPosNegLabeld(
                keys=KEYS,
                label_key="label",
                spatial_size=p["roi_size"],
                pos=pos,
                neg=neg,
                num_samples=p["num_samples"],
                image_key="image",
                image_threshold=0.0,
            ),
            RandScaleIntensityd(keys="image", factors=p["intensity_scale"], prob=p["aug_prob"]),
            RandShiftIntensityd(keys="image", offsets=p["intensity_shift"], prob=p["aug_prob"]),
            RandGaussianNoised(keys="image", std=p["noise_std"], prob=p["aug_prob"]),
        ]
    )


class SiteTask:
    """One site's data, network, loss and optimiser for a whole run (the example's module-level objects).

    Args:
        spec: the task file.
        site: the site's name (``site-1`` ...).
        out: the run's output folder (``rounds.jsonl``).
        system: ``nvflare`` or ``flower``, for the log lines.
    """

    def __init__(self, spec: dict[str, Any], site: str, out: Path, system: str) -> None:
        self.spec, self.site, self.out, self.system = spec, site, Path(out), system
        p = spec["profile"]
        torch.set_num_threads(int(spec.get("threads_per_site", 1)))
        set_determinism(seed=int(spec["seed"]))
        cases = spec["sites"][site]
        self.val_cases = len(cases["val"])
        self.train_ds = CacheDataset(
            cases["train"], train_transforms(p), cache_rate=1.0, num_workers=0, progress=False
        )
        self.val_ds = CacheDataset(
            cases["val"], Compose(_preprocessing(p)), cache_rate=1.0, num_workers=0, progress=False
        )
        self.train_loader = DataLoader(self.train_ds, batch_size=p["batch_size"], shuffle=True, num_workers=0)
        self.model = build_network(spec)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
        self.classes = int(spec["network"]["out_channels"])

    def validate(self) -> float:
        """Mean Dice (foreground classes) of the current model on the site's validation cases."""
        p = self.spec["profile"]
        metric = DiceMetric(include_background=False, reduction="mean")
        post_pred = Compose(
            [
                AsDiscrete(argmax=True, to_onehot=self.classes),
                KeepLargestConnectedComponent(applied_labels=[1]),
            ]
        )
        post_label = AsDiscrete(to_onehot=self.classes)
        self.model.eval()
        with torch.no_grad():
            for case in DataLoader(self.val_ds, batch_size=1):
                logits = sliding_window_inference(
                    case["image"], p["roi_size"], p["sw_batch_size"], self.model, overlap=p["sw_overlap"]
                )
                metric(
                    y_pred=[post_pred(x) for x in decollate_batch(logits)],
                    y=[post_label(y) for y in decollate_batch(case["label"])],
                )
        value = float(metric.aggregate().item()) if self.val_cases else math.nan
        metric.reset()
        return value

    def train(self, epochs: int) -> tuple[float, int]:
        """``epochs`` passes over the training cases; returns the mean loss and the number of steps."""
        self.model.train()
        total, steps = 0.0, 0
        for _ in range(epochs):
            for batch in self.train_loader:
                self.optimizer.zero_grad()
                loss = self.loss(self.model(batch["image"]), batch["label"])
                loss.backward()
                self.optimizer.step()
                total += float(loss.item())
                steps += 1
        return total / max(steps, 1), steps

    def round(
        self, weights: dict[str, Any], round_: int, received_at: float, received_bytes: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Load the global model, validate it, train, and log the round; returns the new weights and metrics."""
        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        started = time.time()
        dice = self.validate()
        validated = time.time()
        loss, steps = self.train(int(self.spec["local_epochs"]))
        trained = time.time()
        self._last = {
            "system": self.system,
            "site": self.site,
            "round": round_,
            "received_at": round(received_at, 3),
            "val_dice": dice,
            "val_cases": self.val_cases,
            "val_seconds": round(validated - started, 3),
            "train_seconds": round(trained - validated, 3),
            "train_loss": loss,
            "steps": steps,
            "received_bytes": received_bytes,
        }
        metrics = {"val_dice": dice, "train_loss": loss, "steps": steps, "num_examples": len(self.train_ds)}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, metrics

    def log_sent(self, sent_bytes: int) -> None:
        """Complete the round's line with the size of the result and when it left."""
        record = {
            **self._last,
            "sent_bytes": sent_bytes,
            "sent_at": round(time.time(), 3),
            "pid": os.getpid(),
        }
        with (self.out / ROUNDS_LOG).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
