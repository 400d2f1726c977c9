"""The local segmentation trainer: plain MONAI/torch, used unchanged by the federated client, the
centralised baseline and the local-only baseline. It knows nothing of NVFlare.

One trainer for one organ or many: the network has a class per organ of the profile (``profile.organs``)
plus the background, and the loss is the marginal Dice-CE (``seg.partial_loss``), which leaves out the organs
a case does not delineate (its ``labelled`` row, ``dose3d_fl.data.cases``) and equals MONAI's ``DiceCELoss``
when every organ is labelled, as in the single-spleen task. Validation scores each organ (Dice, HD95 and
surface Dice, ``seg.organ_metrics``), leaving out the organs a case does not delineate; ``val_dice`` is the
mean over organs (with one organ: the spleen's Dice, as before).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import monai
import torch
from monai.data import CacheDataset, DataLoader, decollate_batch
from monai.inferers import sliding_window_inference
from monai.transforms import AsDiscrete, Compose, KeepLargestConnectedComponent
from monai.utils import set_determinism
from tqdm import tqdm

from dose3d_fl import __version__
from dose3d_fl.data.cases import IMAGE, LABEL, LABELLED, Case, case_id, labelled_row
from dose3d_fl.seg.case_check import usable_cases
from dose3d_fl.seg.checkpoint import SegCheckpoint, load_checkpoint, save_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.organ_metrics import DEFAULT_TOLERANCE_MM, OrganMetrics, score_organs
from dose3d_fl.seg.partial_loss import MarginalDiceCELoss
from dose3d_fl.seg.profiles import SegProfile, get_profile
from dose3d_fl.seg.transforms import eval_transforms, train_transforms

log = logging.getLogger(__name__)

# An extra loss term computed from the network alone, e.g. FedProx's proximal term towards the global model.
Regularizer = Callable[[torch.nn.Module], torch.Tensor]


def _check_cases(cases: Sequence[Case], role: str, organs: int) -> list[Case]:
    """Copies of the cases, each with its ``(organs,)`` labelled row (all true where a case has none)."""
    for case in cases:
        for key in (IMAGE, LABEL):
            if key not in case:
                raise ValueError(f"{role} case {case!r} has no {key!r} path")
    return [{**case, LABELLED: labelled_row(case, organs)} for case in cases]


class SegTrainer:
    """Trains and validates a profile's network on a site's cases.

    Datasets are built on first use, so a trainer that only validates (e.g. for cross-site evaluation)
    never loads its training cases. The deterministic preprocessing of each case is cached in memory
    (``CacheDataset``); random crops and augmentation run per step. A case whose files are missing,
    unreadable or whose label is empty is logged and left out when its dataset is built
    (``dose3d_fl.seg.case_check``).

    Args:
        train_cases: dicts with absolute ``image`` and ``label`` NIfTI paths (and optionally an ``id``, and
            the ``labelled`` row and ``organ_values`` of ``dose3d_fl.data.cases``; a case without a labelled
            row delineates every organ).
        val_cases: the same, for validation.
        profile: the segmentation profile (default ``cpu-small``); its ``organs`` are the task's.
        device: ``"cuda"``, ``"cpu"``, ...; default CUDA when available. Mixed precision is used on CUDA
            when ``profile.amp``.
        num_threads: ``torch.set_num_threads`` value (CPU); ``None`` leaves torch's setting alone.
        num_workers: DataLoader workers; default 0 on the CPU (the cores are busy training), 2 on CUDA.
        show_progress: a progress bar per epoch, shown only when stderr is a terminal.
        extra_augmentation: random transforms appended to the profile's augmentation of each training crop
            (e.g. spatial augmentation, ``benchmarks/gan_augment.py``).
        tolerance_mm: the surface Dice tolerance of validation.
        channels_last: train in torch's ``channels_last_3d`` memory format (the network and every training
            batch). One trainer on one CPU thread runs an epoch in about 0.83x the time
            (``benchmarks/memory_format.py``); three simulated sites on two cores gained nothing
            (``benchmarks/sim_core_pinning.py --compare channels-last``). The same computation up to
            floating-point rounding: the convolutions sum in another order, so a training run's figures
            differ from contiguous training's. Not measured on CUDA.
        cpu_bfloat16: on the CPU, train under ``torch.autocast("cpu", dtype=torch.bfloat16)``: the
            convolutions in bfloat16; the weights, the optimiser, the loss and BatchNorm's running
            statistics stay in float32. Validation and inference stay in float32. Faster where the cores have
            bfloat16 units (``benchmarks/cpu_bfloat16.py``). On held-out patients (3 seeds) six organs score
            as in float32 and the pancreas lower, within its seed spread (docs/performance.md): not adopted
            by default. Ignored on CUDA (``profile.amp`` applies there).

    Raises:
        ValueError: a case without an ``image`` or ``label`` entry, or with a labelled row of another length
            than the profile's organs.
    """

    def __init__(
        self,
        train_cases: Sequence[Case],
        val_cases: Sequence[Case],
        profile: SegProfile | None = None,
        *,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
        num_workers: int | None = None,
        show_progress: bool = True,
        extra_augmentation: Sequence[Callable[[Any], Any]] = (),
        tolerance_mm: float = DEFAULT_TOLERANCE_MM,
        channels_last: bool = False,
        cpu_bfloat16: bool = False,
    ) -> None:
        self.profile = profile or get_profile()
        self.organs = self.profile.organs
        self.tolerance_mm = tolerance_mm
        self.extra_augmentation = list(extra_augmentation)
        self.train_cases = _check_cases(train_cases, "training", len(self.organs))
        self.val_cases = _check_cases(val_cases, "validation", len(self.organs))
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.use_amp = self.profile.amp and self.device.type == "cuda"
        self.cpu_bfloat16 = cpu_bfloat16 and self.device.type == "cpu"
        self.num_workers = (
            num_workers if num_workers is not None else (2 if self.device.type == "cuda" else 0)
        )
        self.show_progress = show_progress and sys.stderr.isatty()
        self.epochs_done = 0

        set_determinism(seed=self.profile.seed)
        self.model = build_network(self.profile).to(self.device)
        # channels_last_3d: the network's convolution weights and every training batch laid out channels-last
        # (the weights it hands out stay contiguous, get_weights); the same computation up to rounding.
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.profile.lr, weight_decay=self.profile.weight_decay
        )
        # Marginal Dice-CE: DiceCELoss(to_onehot_y, softmax) where every organ is labelled; "dice" drops the CE.
        self.loss_fn = MarginalDiceCELoss(lambda_ce=1.0 if self.profile.loss == "dice_ce" else 0.0)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self._train_loader: DataLoader | None = None
        self._val_dataset: CacheDataset | None = None

    # -- data ---------------------------------------------------------------------------------------------

    def _cache(self, cases: list[Case], transform: Any, copy_cache: bool = True) -> CacheDataset:
        return CacheDataset(
            data=cases,
            transform=transform,
            cache_rate=1.0,
            num_workers=1,
            progress=self.show_progress,
            copy_cache=copy_cache,
        )

    @property
    def train_loader(self) -> DataLoader:
        """Shuffled batches of ``batch_size`` cases x ``num_samples`` random crops each."""
        if self._train_loader is None:
            given = len(self.train_cases)
            self.train_cases = usable_cases(self.train_cases, "training")
            if not self.train_cases:
                raise ValueError(
                    f"this trainer has no usable training case ({given} given, {given} skipped: see the errors "
                    "above)"
                )
            transform = Compose([*train_transforms(self.profile).transforms, *self.extra_augmentation])
            transform.set_random_state(seed=self.profile.seed)
            generator = torch.Generator().manual_seed(self.profile.seed)
            self._train_loader = DataLoader(
                # No copy of the cached volume per step: the first random transform crops it into new
                # tensors and never writes to it (tests/seg/test_trainer.py); copying was a quarter of the
                # time a step waited for its batch (docs/performance.md).
                self._cache(self.train_cases, transform, copy_cache=False),
                batch_size=self.profile.batch_size,
                shuffle=True,
                num_workers=self.num_workers,
                generator=generator,
            )
        return self._train_loader

    @property
    def val_dataset(self) -> CacheDataset:
        """The validation cases after the deterministic preprocessing, cached."""
        if self._val_dataset is None:
            self.val_cases = usable_cases(self.val_cases, "validation")
            self._val_dataset = self._cache(self.val_cases, eval_transforms(self.profile))
        return self._val_dataset

    def _autocast(self, training: bool = False) -> torch.autocast:
        if training and self.cpu_bfloat16:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=self.use_amp)

    # -- training and validation ----------------------------------------------------------------------------

    def reset_optimizer(self) -> None:
        """Forget the optimiser's state (Adam's moments and step counts); its learning rate stays.

        A federated site calls this before each round's local training: the moments it kept from its own
        last round point from its local model, not from the global model it just received.
        """
        self.optimizer.state.clear()

    def set_progress(self, progress: float) -> float:
        """Set the optimiser's learning rate to the profile's schedule at ``progress`` (0..1); return it.

        Centrally ``progress`` is the share of epochs done; in a federation, the share of rounds done.
        """
        lr = self.profile.learning_rate(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_epochs(self, epochs: int = 1, regularizer: Regularizer | None = None) -> dict[str, float | int]:
        """Train for ``epochs`` passes over the training cases.

        Args:
            epochs: passes over the training cases.
            regularizer: a term added to every step's loss, computed from the network (the federated client
                passes FedProx's proximal term this way); the reported loss excludes it.

        Returns:
            ``loss`` (mean over this call's steps), ``steps`` (optimiser steps, the FedAvg weight),
            ``seconds`` (training), ``cache_seconds`` (building the training dataset's cache, first call
            only), ``data_seconds`` (of ``seconds``, waiting for batches: random crops and augmentation),
            ``epochs`` (this call) and ``total_epochs`` (since the trainer was built).
        """
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        cache_start = time.perf_counter()
        loader = self.train_loader  # built, and its cases' preprocessing cached, on first use
        start = time.perf_counter()
        self.model.train()
        losses: list[float] = []
        data_seconds = 0.0
        for _ in range(epochs):
            bar = tqdm(
                loader,
                desc=f"epoch {self.epochs_done + 1}",
                unit="step",
                leave=False,
                disable=not self.show_progress,
            )
            epoch_start, first_step = time.perf_counter(), len(losses)
            waited = time.perf_counter()
            for batch in bar:
                data_seconds += time.perf_counter() - waited  # random crops and augmentation of this batch
                losses.append(self.train_step(batch[IMAGE], batch[LABEL], regularizer, batch.get(LABELLED)))
                waited = time.perf_counter()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            self.epochs_done += 1
            if not self.show_progress:  # no terminal (a site's log file): one line per epoch instead of a bar
                epoch_losses = losses[first_step:]
                log.info(
                    "epoch %d: %d steps, loss %.4f, %.1f s",
                    self.epochs_done,
                    len(epoch_losses),
                    sum(epoch_losses) / max(len(epoch_losses), 1),
                    time.perf_counter() - epoch_start,
                )
        seconds = time.perf_counter() - start
        loss = float(sum(losses) / len(losses)) if losses else math.nan
        log.info("%d epoch(s), %d steps, loss %.4f, %.1f s", epochs, len(losses), loss, seconds)
        return {
            "loss": loss,
            "steps": len(losses),
            "seconds": seconds,
            "cache_seconds": start - cache_start,
            "data_seconds": data_seconds,
            "epochs": epochs,
            "total_epochs": self.epochs_done,
        }

    def train_step(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        regularizer: Regularizer | None = None,
        labelled: torch.Tensor | None = None,
    ) -> float:
        """One optimiser step on a batch (``(B, 1, X, Y, Z)`` image and label); returns its loss.

        ``train_epochs`` calls it for every batch; the GPU check times it on batches fetched beforehand.
        The model must be in training mode (``model.train()``).

        Args:
            image: the batch's images.
            label: its labels (values ``0..N``).
            regularizer: a term added to the loss (FedProx).
            labelled: ``(B, N)`` bool, the organs each case delineates; None: all.
        """
        image, label = (
            image.to(self.device).contiguous(memory_format=self.memory_format),
            label.to(self.device),
        )
        if labelled is not None:
            labelled = torch.as_tensor(labelled, dtype=torch.bool, device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast(training=True):
            logits = self.model(image)
            if self.cpu_bfloat16:  # the loss in float32: bfloat16 keeps 8 bits of the logits' mantissa
                logits = logits.float()
            loss = self.loss_fn(logits, label, labelled)
        total = loss if regularizer is None else loss + regularizer(self.model)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        return float(loss.item())

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits of a preprocessed ``(B, 1, X, Y, Z)`` batch by sliding-window inference."""
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            return sliding_window_inference(
                image.to(self.device),
                roi_size=self.profile.roi_size,
                sw_batch_size=self.profile.sw_batch_size,
                predictor=self.model,
                overlap=self.profile.sw_overlap,
            )

    def postprocessing(self) -> Compose:
        """From one case's logits ``(C, X, Y, Z)`` to a one-hot class map (argmax, largest component)."""
        classes = self.profile.out_channels
        steps: list[Any] = [AsDiscrete(argmax=True, to_onehot=classes)]
        if self.profile.keep_largest_component:
            steps.append(
                KeepLargestConnectedComponent(applied_labels=list(range(1, classes)), is_onehot=True)
            )
        return Compose(steps)

    def validate(self, distances: bool = True) -> dict[str, Any]:
        """Per-organ Dice, HD95 and surface Dice on the validation cases, at the profile's voxel size.

        Each case's organs are scored with ``seg.organ_metrics.score_organs`` after argmax (and the largest
        component, as the profile says); an organ the case does not delineate, or absent from its label, is
        left out. An organ in the label but not predicted scores Dice 0 and is counted as missed.

        Args:
            distances: also compute HD95 and surface Dice (about half of a multi-organ validation's time on
                the CPU); False: Dice alone, the others NaN (a federated site's training rounds).

        Returns:
            ``val_dice`` (the mean over organs of each organ's mean Dice over cases; with one organ, the mean
            Dice over cases), ``organs`` (organ -> ``dice``, ``hd95`` (mm, over finite values),
            ``surface_dice``, ``cases`` scored, ``missed``), ``tolerance_mm`` (of the surface Dice),
            ``case_dice`` (case id -> the mean Dice of its scored organs; cases with none left out),
            ``organ_metrics`` (``OrganMetrics.to_json()``: every case and organ), ``cases`` and ``seconds``.

        Raises:
            ValueError: the trainer has no validation cases.
        """
        start = time.perf_counter()
        dataset = self.val_dataset
        if not self.val_cases:
            raise ValueError("this trainer has no usable validation case")
        to_class = self.postprocessing()
        metrics = OrganMetrics(self.organs, self.tolerance_mm)
        loader = DataLoader(dataset, batch_size=1, num_workers=self.num_workers)
        for case, batch in zip(self.val_cases, loader, strict=True):
            logits = self.predict(batch[IMAGE])
            prediction = torch.stack([to_class(item) for item in decollate_batch(logits.float())])
            scores = score_organs(
                prediction,
                batch[LABEL].to(prediction.device),
                self.organs,
                self.profile.pixdim,
                labelled=labelled_row(case, len(self.organs))[None],
                tolerance_mm=self.tolerance_mm,
                distances=distances,
            )
            metrics.add(scores, [case_id(case)])
        summary = metrics.summary()
        case_dice: dict[str, float] = {}
        for case, organs in metrics.cases.items():
            values = [scores["dice"] for scores in organs.values() if not math.isnan(scores["dice"])]
            if values:
                case_dice[case] = float(sum(values) / len(values))
        val_dice = metrics.mean_dice()
        seconds = time.perf_counter() - start
        log.info(
            "validation Dice %.4f on %d case(s)%s, %.1f s",
            val_dice,
            len(case_dice),
            ""
            if len(self.organs) == 1
            else " (" + ", ".join(f"{organ} {values['dice']:.3f}" for organ, values in summary.items()) + ")",
            seconds,
        )
        return {
            "val_dice": val_dice,
            "organs": summary,
            "tolerance_mm": self.tolerance_mm,
            "case_dice": case_dice,
            "organ_metrics": metrics.to_json(),
            "cases": len(self.val_cases),
            "seconds": seconds,
        }

    # -- weights and checkpoints ------------------------------------------------------------------------------

    def get_weights(self) -> dict[str, torch.Tensor]:
        """A copy of the network's state dict as contiguous CPU tensors (whatever the training memory format)."""
        return {
            name: tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
            for name, tensor in self.model.state_dict().items()
        }

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load a state dict (e.g. the global model); every tensor of the network must be present."""
        self.model.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()})

    def save_checkpoint(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write ``{"model", "profile", "meta"}``; ``meta`` adds to the epochs and library versions."""
        facts = {
            "epochs": self.epochs_done,
            "dose3d_fl": __version__,
            "monai": str(monai.__version__),
            "torch": str(torch.__version__),
            **(meta or {}),
        }
        return save_checkpoint(path, SegCheckpoint(self.get_weights(), self.profile, facts))

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Load a checkpoint's weights into this trainer and return its ``meta``.

        Raises:
            ValueError: the checkpoint's profile has a different network or preprocessing.
        """
        checkpoint = load_checkpoint(path)
        differences = self.profile.incompatibilities(checkpoint.profile)
        if differences:
            raise ValueError(
                f"{path} was trained with profile {checkpoint.profile.name!r}, which differs from this "
                f"trainer's profile {self.profile.name!r} in {', '.join(differences)}; build the trainer "
                "with SegTrainer.from_checkpoint"
            )
        self.set_weights(checkpoint.model)
        return checkpoint.meta

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, train_cases: Sequence[Case], val_cases: Sequence[Case], **kwargs: Any
    ) -> SegTrainer:
        """A trainer with the checkpoint's profile and weights (``kwargs`` as for the constructor)."""
        checkpoint = load_checkpoint(path)
        trainer = cls(train_cases, val_cases, checkpoint.profile, **kwargs)
        trainer.set_weights(checkpoint.model)
        return trainer
