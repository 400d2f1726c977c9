"""A real, tiny multi-organ training run with partial labels: the marginal loss on phantom crops (CPU).

The phantom of ``synth`` sampled on a 4 mm grid around the left upper quadrant: spleen, liver and left kidney
(labels 1, 2, 3), HU windowed as the spleen recipe, noise added. Some training cases leave one organ
unlabelled (its voxels set to background), as partially delineating sites do. A MONAI UNet is trained with
:class:`~dose3d_fl.seg.partial_loss.MarginalDiceCELoss` and scored with
:class:`~dose3d_fl.seg.organ_metrics.OrganMetrics` on a held-out, fully labelled crop.

Run by tests/seg/test_partial_loss.py (short); ``python -m tests.seg.partial_training --steps 60`` prints the
numbers of a longer run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.nets import UNet

from dose3d_fl.seg.organ_metrics import OrganMetrics, score_organs
from dose3d_fl.seg.partial_loss import MarginalDiceCELoss
from dose3d_fl.synth.contouring import organ_label_map
from dose3d_fl.synth.phantom import sample_phantom

ORGANS = ("Spleen", "Liver", "Kidney_L")
SPACING = 4.0
# Training crops and which organs each delineates: one lacks the liver, one the kidney.
TRAIN = ((0, (True, True, True)), (1, (True, False, True)), (2, (True, True, False)), (3, (True, True, True)))
HELD_OUT = 4


def phantom_crop(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed image ``(1, S, S, S)`` and label ``(1, S, S, S)`` of one phantom patient."""
    rng = np.random.default_rng(seed)
    phantom = sample_phantom(rng)
    centre = (np.asarray(phantom.spleen.center) + np.asarray(phantom.kidneys[0].center)) / 2
    centre[0] -= 30.0  # towards the midline, so the liver's left lobe is in the crop
    axes = [(np.arange(size) - (size - 1) / 2) * SPACING + centre[a] for a in range(3)]
    values = phantom.evaluate(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32))
    hu = values.hu + rng.normal(0.0, 10.0, values.hu.shape)
    image = np.clip((hu + 57.0) / (164.0 + 57.0), 0.0, 1.0).astype(np.float32)
    return image[None], organ_label_map(values.fields, ORGANS)[None].astype(np.float32)


@dataclass
class TrainingRun:
    """Losses of every step and the held-out crop's per-organ metrics."""

    losses: list[float]
    held_out: dict

    def mean_loss(self, first: bool, steps: int = 5) -> float:
        part = self.losses[:steps] if first else self.losses[-steps:]
        return float(np.mean(part))


def train_partially_labelled(
    steps: int = 40, size: int = 48, seed: int = 0, as_background: bool = False
) -> TrainingRun:
    """Train a small UNet for ``steps`` Adam steps (batch of 2 crops) and score the held-out crop.

    ``as_background`` trains with every organ marked labelled, i.e. plain Dice-CE that takes the undelineated
    organs for background: the comparison the marginal loss is for.
    """
    torch.manual_seed(seed)
    crops = [phantom_crop(case, size) for case, _ in TRAIN]
    images = torch.from_numpy(np.stack([image for image, _ in crops]))
    labels = torch.from_numpy(np.stack([label for _, label in crops]))
    labelled = torch.tensor([flags for _, flags in TRAIN])
    for case, flags in enumerate(labelled):
        for organ, known in enumerate(flags):
            if not known:
                labels[case][labels[case] == organ + 1] = 0  # not delineated: the site's label says 0
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=len(ORGANS) + 1,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=2,
        norm="batch",
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = MarginalDiceCELoss()
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(TRAIN), generator=generator)[:2]
        optimiser.zero_grad(set_to_none=True)
        flags = None if as_background else labelled[batch]
        loss = loss_fn(model(images[batch]), labels[batch], flags)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.item()))
    image, label = phantom_crop(HELD_OUT, size)
    model.eval()
    with torch.inference_mode():
        prediction = model(torch.from_numpy(image)[None]).argmax(dim=1, keepdim=True)
    metrics = OrganMetrics(ORGANS)
    metrics.add(score_organs(prediction, torch.from_numpy(label)[None], ORGANS, (SPACING,) * 3), ["held-out"])
    return TrainingRun(losses, metrics.to_json()["organs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--as-background", action="store_true", help="plain Dice-CE: undelineated organs taken for background"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = train_partially_labelled(args.steps, args.size, as_background=args.as_background)
    print(
        json.dumps(
            {
                "steps": args.steps,
                "loss": "plain Dice-CE" if args.as_background else "marginal Dice-CE",
                "crop": f"{args.size}^3 at {SPACING} mm",
                "loss_first_5": run.mean_loss(True),
                "loss_last_5": run.mean_loss(False),
                "loss_every_10": run.losses[::10],
                "held_out": run.held_out,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
