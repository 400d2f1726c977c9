"""The local GAN trainer (label-conditioned, SPADE generator, patch discriminator): plain MONAI/torch, used
unchanged by the federated client and by a local or pooled run. It knows nothing of NVFlare.

Objective (pix2pixHD / SPADE): for a real crop's label map the generator draws an image; the discriminator
scores (image, label map) patches with MONAI's least-squares ``PatchAdversarialLoss``; the generator's loss
adds the L1 distance to the real image of the same label map and the L1 distance between the
discriminator's features of the real and the synthetic pair (feature matching). One discriminator step
precedes each generator step. Each network has its own Adam optimiser, kept across rounds in the site's
process; in ``generator-only`` aggregation the discriminator never leaves the site.

Samples (``generate``) are drawn for new label maps (``dose3d_fl.gan.label_sampler``): the site's own
training labels under random deformation, each checked before use.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.losses import PatchAdversarialLoss
from torch.nn import functional

from dose3d_fl import __version__
from dose3d_fl.data.cases import Case
from dose3d_fl.gan.checkpoint import GanCheckpoint, save_gan_checkpoint
from dose3d_fl.gan.crops import CropSampler, load_organ_volumes, memorization_regions, reference_crops
from dose3d_fl.gan.label_maps import OrganVolumeRange, one_hot
from dose3d_fl.gan.label_sampler import LabelMapSampler
from dose3d_fl.gan.memorization import MemorizationCheck
from dose3d_fl.gan.metrics import msssim_metric, pairwise_msssim, quality_metrics
from dose3d_fl.gan.network import GENERATOR_PREFIX, build_gan
from dose3d_fl.gan.profiles import GanProfile, get_gan_profile

log = logging.getLogger(__name__)
# 3D convolutions on the CPU (oneDNN) run 3 to 5 times faster in this layout, the backward pass most.
MEMORY_FORMAT = torch.channels_last_3d
METRIC_SEED_OFFSET = 12345


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 distance between the discriminator's intermediate features of synthetic and real pairs."""
    pairs = [
        (f, r.detach())
        for scale_f, scale_r in zip(fake, real, strict=True)
        for f, r in zip(scale_f, scale_r, strict=True)
    ]
    return sum(functional.l1_loss(f, r) for f, r in pairs) / max(len(pairs), 1)


class GanTrainer:
    """Trains the label-conditioned GAN on a site's training cases and measures its samples against them.

    Args:
        train_cases: dicts with absolute ``image`` and ``label`` NIfTI paths (the site's training split).
        profile: the GAN profile (default ``cpu-small``).
        device: ``"cuda"``, ``"cpu"``, ...; default CUDA when available.
        num_threads: ``torch.set_num_threads`` value (CPU); ``None`` leaves torch's setting alone.

    Raises:
        ValueError: no training case holds an organ.
    """

    def __init__(
        self,
        train_cases: Sequence[Case],
        profile: GanProfile | None = None,
        *,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.profile = p = profile or get_gan_profile()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.volumes = load_organ_volumes(train_cases, p)
        self.sampler = CropSampler(self.volumes, p, seed=p.seed)
        self.reference = reference_crops(self.volumes, p)
        self.organ_volumes = OrganVolumeRange.from_label_maps(
            self.reference[:, 1].round().long(), p.volume_tolerance
        )
        self.label_maps = LabelMapSampler(self.volumes, p, self.organ_volumes, seed=p.seed + 2)
        self.memorization = MemorizationCheck.for_profile(memorization_regions(self.volumes, p), p)
        self._metric_maps: torch.Tensor | None = None
        self._msssim_real: float | None = None
        self.model = build_gan(p).to(self.device, memory_format=MEMORY_FORMAT)
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=p.lr_generator, betas=p.betas)
        self.opt_d = torch.optim.Adam(
            self.model.discriminator.parameters(), lr=p.lr_discriminator, betas=p.betas
        )
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.noise = torch.Generator(device="cpu").manual_seed(p.seed)
        self.steps_done = 0
        log.info(
            "GAN trainer: %d case(s) with an organ, %d reference crops",
            len(self.volumes),
            len(self.reference),
        )

    def _inputs(self, label_maps: torch.Tensor) -> torch.Tensor:
        labels = one_hot(label_maps, self.profile.label_classes)
        return labels.to(self.device).contiguous(memory_format=MEMORY_FORMAT)

    def _discriminate(self, image: torch.Tensor, labels: torch.Tensor) -> tuple[list, list]:
        return self.model.discriminator(torch.cat([image, labels], 1).contiguous(memory_format=MEMORY_FORMAT))

    def train_step(self) -> dict[str, float]:
        """One discriminator step then one generator step on a batch of real crops; returns the losses.

        Returns:
            ``loss_d`` (discriminator), ``loss_g`` (generator, all terms), ``loss_adv`` (its adversarial
            term), ``loss_l1`` (L1 to the real image, window units) and ``loss_fm`` (feature matching).
        """
        p, generator = self.profile, self.model.generator
        self.model.train()
        crops = self.sampler.sample(p.batch_size)
        real = crops[:, :1].to(self.device).contiguous(memory_format=MEMORY_FORMAT)
        labels = self._inputs(crops[:, 1].round().long())
        fake = generator(labels, generator.draw_noise(p.batch_size, self.noise, self.device))

        self.opt_d.zero_grad(set_to_none=True)
        real_out, real_features = self._discriminate(real, labels)
        fake_out, _ = self._discriminate(fake.detach(), labels)
        loss_d = 0.5 * (
            self.adversarial(real_out, target_is_real=True, for_discriminator=True)
            + self.adversarial(fake_out, target_is_real=False, for_discriminator=True)
        )
        loss_d.backward()
        self.opt_d.step()

        self.opt_g.zero_grad(set_to_none=True)
        for (
            param
        ) in self.model.discriminator.parameters():  # no discriminator gradients in the generator step
            param.requires_grad_(False)
        fake_out, fake_features = self._discriminate(fake, labels)
        loss_adv = self.adversarial(fake_out, target_is_real=True, for_discriminator=False)
        loss_l1 = functional.l1_loss(fake, real)
        loss_fm = feature_matching(fake_features, real_features)
        loss_g = p.adversarial_weight * loss_adv + p.l1_weight * loss_l1 + p.feature_matching_weight * loss_fm
        loss_g.backward()
        for param in self.model.discriminator.parameters():
            param.requires_grad_(True)
        self.opt_g.step()
        self.steps_done += 1
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "loss_adv": loss_adv.item(),
            "loss_l1": loss_l1.item(),
            "loss_fm": loss_fm.item(),
        }

    def train_epochs(self, epochs: int = 1) -> dict[str, float | int]:
        """Train ``epochs x steps_per_epoch`` generator steps.

        Returns:
            the mean of each loss of ``train_step`` over this call, ``steps`` (generator steps, the FedAvg
            weight) and ``seconds``.
        """
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        start = time.perf_counter()
        history = [self.train_step() for _ in range(epochs * self.profile.steps_per_epoch)]
        keys = ("loss_d", "loss_g", "loss_adv", "loss_l1", "loss_fm")
        means = {
            key: float(sum(h[key] for h in history) / len(history)) if history else math.nan for key in keys
        }
        seconds = time.perf_counter() - start
        log.info(
            "%d GAN step(s): discriminator %.4f, generator %.4f (adversarial %.4f, L1 %.4f, features %.4f), %.1f s",
            len(history),
            *(means[key] for key in keys),
            seconds,
        )
        return {**means, "steps": len(history), "seconds": seconds}

    @torch.no_grad()
    def generate_for(self, label_maps: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Pairs ``(n, 2, S, S, S)`` (image in window units, the given label map) on the CPU, for given label
        maps ``(n, S, S, S)``; a ``seed`` makes the noise reproducible. The label channel is the input, exactly."""
        self.model.eval()
        noise = torch.Generator().manual_seed(seed) if seed is not None else self.noise
        generator = self.model.generator
        size = label_maps.shape[-1]
        images = [
            generator(self._inputs(chunk), generator.draw_noise(len(chunk), noise, self.device, size))
            .float()
            .cpu()
            for chunk in label_maps.split(max(self.profile.batch_size, 1))
        ]
        image = torch.cat(images)[:, 0] if images else torch.empty((0, *label_maps.shape[1:]))
        return torch.stack([image.contiguous(), label_maps.float()], 1)

    def generate(self, n: int, seed: int | None = None, size: int | None = None) -> torch.Tensor:
        """``n`` synthetic pairs for new label maps drawn from the site's training labels; a ``seed`` makes
        both the label maps and the noise reproducible. ``size``: edge of the pairs (default the training
        crop; the generator is fully convolutional)."""
        if seed is None and size is None:
            label_maps = self.label_maps.sample(n)
        else:
            sampler = LabelMapSampler(
                self.volumes,
                self.profile,
                self.organ_volumes,
                seed=self.profile.seed if seed is None else seed,
                size=size,
            )
            label_maps = sampler.sample(n)
        return self.generate_for(label_maps, seed)

    def memorization_check(self, size: int | None = None) -> MemorizationCheck:
        """The site's memorisation check for samples of ``size`` voxels (default the training crop)."""
        if size is None or size == self.profile.crop_size:
            return self.memorization
        return MemorizationCheck.for_profile(
            memorization_regions(self.volumes, self.profile, size), self.profile
        )

    def evaluate(self) -> dict[str, float]:
        """Quality metrics of ``metric_samples`` fixed-seed samples against this site's training crops (the
        same label maps and noise every time, so values compare between rounds and models)."""
        p, seed = self.profile, self.profile.seed + METRIC_SEED_OFFSET
        if self._metric_maps is None:
            self._metric_maps = LabelMapSampler(self.volumes, p, self.organ_volumes, seed=seed).sample(
                p.metric_samples
            )
            count = min(p.metric_samples, len(self.reference))
            self._msssim_real = pairwise_msssim(self.reference[:count], msssim_metric(p.crop_size))
        samples = self.generate_for(self._metric_maps, seed)
        return quality_metrics(samples, self.reference, p, self.memorization, self._msssim_real)

    def evaluate_weights(self, weights: dict[str, Any]) -> dict[str, float]:
        """``evaluate`` for other weights (another site's or a global generator); this trainer's own weights
        are restored afterwards."""
        own = self.get_weights()
        self.set_weights(weights)
        try:
            return self.evaluate()
        finally:
            self.model.load_state_dict(own)

    # -- weights -------------------------------------------------------------------------------------------

    def get_weights(self, generator_only: bool = False) -> dict[str, torch.Tensor]:
        """A contiguous CPU copy of the state dict, or of its ``generator.*`` entries."""
        return {
            name: tensor.detach().cpu().contiguous().clone()
            for name, tensor in self.model.state_dict().items()
            if not generator_only or name.startswith(GENERATOR_PREFIX)
        }

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load received weights: all of ``GanPair``'s, or only its ``generator.*`` ones (the discriminator
        stays).

        Raises:
            ValueError: a name that is not a tensor of this model, or generator tensors missing.
        """
        own = self.model.state_dict()
        unknown = sorted(set(weights) - set(own))
        missing = sorted(name for name in own if name.startswith(GENERATOR_PREFIX) and name not in weights)
        if unknown or missing:
            raise ValueError(
                f"received weights do not fit GAN profile {self.profile.name!r}: unknown {unknown[:3]}, "
                f"missing {missing[:3]}; check that the job and the site use the same GAN profile"
            )
        self.model.load_state_dict(
            {name: torch.as_tensor(value) for name, value in weights.items()}, strict=False
        )

    def save_checkpoint(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write ``{"model", "gan_profile", "meta"}`` (the whole pair)."""
        facts = {
            "steps": self.steps_done,
            "dose3d_fl": __version__,
            "torch": str(torch.__version__),
            **(meta or {}),
        }
        return save_gan_checkpoint(path, GanCheckpoint(self.get_weights(), self.profile, facts))
