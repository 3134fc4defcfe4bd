"""The training configuration: one validated, frozen tree of plain values.

A run is described by one :class:`TrainConfig`, built by :func:`wrn.train.compose.build_config` from the
defaults (the paper's CIFAR recipe), a shipped preset, a YAML file and command-line overrides, and completed by
:func:`wrn.train.resolve.resolve`. Each field carries its command-line marker (:func:`wrn.train.fields.option`):
the flag, its help and choices, what ``--resume`` may change, what a grid counts as scaling, what an edit of
config.yaml ignores and which other commands take it all come from these markers (:mod:`wrn.train.options`).

Values are read by the field's type, never as YAML 1.1: a file with :func:`wrn.train.compose.read_yaml` (only
``true``/``false`` are booleans, so ``amp: off`` stays the word ``off``), a command-line value with
:func:`wrn.train.options.parse_text`.
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from wrn.data.registry import (
    AUGMENT_CHOICES,
    CROP_PADDINGS,
    DATASETS,
    NORMALIZATION_CHOICES,
    POLICY_CHOICES,
    STRONG_POLICIES,
)
from wrn.errors import ConfigError
from wrn.train.fields import Section, flagged, fraction, option
from wrn.train.objectives import ADVERSARIES, SEMI_SUPERVISED, objective_section
from wrn.train.rules import consistency_problem


class ModelSection(Section):
    name: str = flagged("wrn-28-10", "--model", "model name, e.g. wrn-28-10 (`wrn models` lists them)")
    dropout: float | None = flagged(
        None, "--dropout", "dropout rate in [0, 1) between the convs of a block", ge=0.0, lt=1.0
    )
    # None: the paper's ReLU and BN momentum 0.1. leaky_relu has slope 0.1 (FixMatch); FixMatch's BN: 0.001.
    act: Literal["relu", "leaky_relu", "silu"] | None = None
    bn_momentum: float | None = Field(default=None, gt=0.0, le=1.0)
    # DM-Improves-AT's watrain.py (lines 87-91) runs the first step at BN momentum 1 ("make BN running mean and
    # variance init same as Haiku"), then at 0.01, its network's
    bn_momentum_first: float | None = flagged(
        None,
        "--bn-momentum-first",
        "the BN momentum of the run's first training step, then the network's own (1.0: BN's running statistics "
        "start as that step's batch statistics, as Haiku's moving averages and DM-Improves-AT's code start; "
        "default: the network's throughout)",
        gt=0.0,
        le=1.0,
    )
    # The weights' initialisation, wrn.models.cifar.INITS (tests keep the two lists equal). None: the network's
    # own (the paper's WRNs: the authors'; wrn-D-K-sam and wrn-D-K-aa: AutoAugment's, as their codes)
    init: Literal["paper", "pytorch", "autoaugment", "xternalz", "fixmatch"] | None = flagged(
        None,
        "--init",
        "the weights' initialisation: the authors' (paper), PyTorch's defaults, AutoAugment's, which SAM's "
        "code keeps, the common WideResNet port's (xternalz), which the robustness codes keep, or FixMatch's "
        "code's (default: the network's own)",
    )

    # Fine-tuning: the weights of a finished run or a model directory (wrn convert's, wrn.save_model's).
    init_from: str | None = flagged(
        None,
        "--init-from",
        "start from the weights of a finished run or a model directory (wrn train's, wrn convert's): the same "
        "network; its classifier is replaced where the data set's classes differ",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from wrn.models.registry import model_info

        model_info(value)  # a name the registry cannot build fails here, before any data is read
        return value


class DataSection(Section):
    name: Literal[tuple(DATASETS)] = flagged("cifar10", "--dataset", "the data set", commands=("reproduce",))
    root: str = flagged(
        "data",
        "--data-dir",
        "folder that holds (or will hold) the data set (default ./data)",
        how=True,
        commands=("reproduce",),
    )
    train_split: str | None = flagged(
        None,
        "--train-split",
        "the split to train on (default: the data set's own; SVHN: train+extra, or train alone, FixMatch's "
        "svhn_noextra)",
    )
    augment: Literal[AUGMENT_CHOICES] | None = flagged(
        None, "--augment", "training augmentation (default: the data set's recipe)"
    )
    normalization: Literal[NORMALIZATION_CHOICES] | None = flagged(
        None, "--normalization", "input normalisation (default: the data set's)"
    )
    crop_padding: Literal[CROP_PADDINGS] = flagged(
        "reflect",
        "--crop-padding",
        "border of the training crop, the paper's reflection or the zeros of torchvision's RandomCrop(padding=4)",
    )
    rotate: float = flagged(
        0.0,
        "--rotate",
        "rotate each training image by an angle uniform in [-ROTATE, ROTATE] degrees after its crop and flip "
        "(torchvision's RandomRotation: nearest, black corners; AT-AWP's CIFAR-100 code uses 15)",
        ge=0,
        le=180,
    )
    image_size: int | None = flagged(
        None,
        "--image-size",
        "training crop side (ImageNet / image folders)",
        gt=0,
        le=4096,
        commands=("reproduce",),
    )
    workers: int = flagged(
        4,
        "--workers",
        "data loading processes (image folders; the per-image policies)",
        how=True,
        ge=0,
        le=1024,
    )
    download: bool = flagged(False, "--download", "fetch a missing data set", how=True)
    # Cutout (DeVries & Taylor 2017): 16 px on CIFAR-10, 8 on CIFAR-100 in their code; on the device, after
    # normalisation, as their util/cutout.py
    cutout: int = flagged(
        0,
        "--cutout",
        "Cutout: the side in pixels of one square hole per training image (0: off; 16 on CIFAR-10)",
        ge=0,
        le=4096,
    )
    # google-research/sam cuts one hole at one place into every image of a batch (augmentation.cutout, after
    # normalisation, on each host's batch): "batch", one place per step and process
    cutout_per: Literal["image", "batch"] = flagged(
        "image",
        "--cutout-per",
        "Cutout: a place of its own for each image's hole (Cutout's code), or one place for every image of the "
        "batch (google-research/sam's batch-level cutout)",
    )
    # torchvision's v2.MixUp / v2.CutMix arithmetic, per batch on the device; both on: one of them per batch
    mixup: float = flagged(
        0.0,
        "--mixup",
        "mixup: alpha of the Beta distribution of the mixing weight, per batch (0: off; e.g. 1.0)",
        ge=0.0,
        le=1e6,
    )
    cutmix: float = flagged(
        0.0,
        "--cutmix",
        "CutMix: alpha of the Beta distribution of the pasted area, per batch (0: off; e.g. 1.0)",
        ge=0.0,
        le=1e6,
    )
    # torchvision's AutoAugment(CIFAR10 policy) / RandAugment / TrivialAugmentWide, or AutoAugment's 95 CIFAR
    # sub-policies with the ops of the AutoAugment code (autoaugment-paper) or of google-research/sam's
    # (autoaugment-sam), on each uint8 training image before the crop and flip (image folders: after), in the
    # loader's worker processes (wrn.data.policies, wrn.data.autoaugment)
    policy: Literal[POLICY_CHOICES] = flagged(
        "none",
        "--policy",
        "per-image augmentation policy (before the crop and flip, as the AutoAugment code; image folders: "
        "after): torchvision's AutoAugment CIFAR-10 policy, AutoAugment's 95 sub-policies as the AutoAugment "
        "code (autoaugment-paper) or google-research/sam (autoaugment-sam) applies them, RandAugment "
        "(--randaugment-n, --randaugment-m) or TrivialAugmentWide (default none)",
    )
    randaugment_n: int = flagged(
        2, "--randaugment-n", "RandAugment: number of operations per image (N, default 2)", ge=1, le=16
    )
    randaugment_m: int = flagged(
        9, "--randaugment-m", "RandAugment: magnitude of the operations (M in 0..30, default 9)", ge=0, le=30
    )
    # torchvision's RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0) after normalisation
    random_erasing: float = flagged(
        0.0,
        "--random-erasing",
        "random erasing: the probability that a training image gets one box set to 0 after normalisation "
        "(0: off; e.g. 0.5)",
        ge=0.0,
        le=1.0,
    )
    # Generated images (DM-Improves-AT's .npz: 'image' uint8 N x H x W x C, 'label' ints), int(F x batch) of
    # every training batch as their SemiSupervisedSampler draws them (wrn.data.generated, docs/robustness.md)
    aux_data: str | None = flagged(
        None,
        "--aux-data",
        "a .npz of generated training images ('image': uint8 N x H x W x C, 'label': integers), mixed into "
        "every training batch as DM-Improves-AT does (CIFAR-10/100, the digits)",
    )
    aux_fraction: float = flagged(
        0.7,
        "--aux-fraction",
        "with --aux-data, the share of each training batch that is generated images, int(F x batch) of it "
        "(their 0.7)",
        gt=0.0,
        lt=1.0,
    )
    # md5 of every file; false only for re-packed copies (still safely unpickled)
    verify: bool = flagged(
        True,
        "--verify",
        "md5 checks of the data files (--no-verify: re-packed copies only; still safely unpickled)",
        how=True,
    )


class OptimSection(Section):
    lr: float = flagged(0.1, "--lr", "initial learning rate", gt=0.0, le=1e6)
    momentum: float = flagged(0.9, "--momentum", "SGD momentum", ge=0.0, lt=1.0)
    nesterov: bool = flagged(True, "--nesterov", "Nesterov momentum (the paper's)")
    weight_decay: float = flagged(5e-4, "--weight-decay", "L2 weight decay on all parameters", ge=0.0, le=1e6)
    batch_size: int = flagged(128, "--batch-size", "global batch size (split over processes)", gt=0, le=2**20)
    eval_batch_size: int | None = flagged(
        None,
        "--eval-batch-size",
        "batch size of evaluation (default twice the training batch)",
        gt=0,
        le=2**20,
    )
    label_smoothing: float = flagged(
        0.0, "--label-smoothing", "label smoothing of the training loss", ge=0.0, lt=1.0, commands=("bench",)
    )
    # torch.optim.swa_utils.AveragedModel(get_ema_multi_avg_fn(decay), use_buffers=True), after every step
    ema_decay: float = flagged(
        0.0,
        "--ema",
        "decay of an average of the weights after every step, e.g. 0.999 (0: off); it is also "
        "evaluated, and saved as the run's model",
        commands=("bench",),
        ge=0.0,
        lt=1.0,
    )
    # timm's ModelEmaV3 warm-up: the k-th update (k from 0) uses min(decay, 1 - (1 + k) ** (-2/3)).
    ema_warmup: bool = flagged(
        False,
        "--ema-warmup",
        "warm the EMA's decay up as timm's ModelEmaV3: min(decay, 1 - (1 + k)^(-2/3))",
        commands=("bench",),
    )
    # DM-Improves-AT's ema_update (gowal21uncovering/utils/watrain.py lines 244-258), called after step g (from 1):
    # decay 0 (a copy) while g < W, the lr warm-up's steps, then min(decay, (1 + g - W) / (10 + g - W))
    ema_warmup_rule: Literal["timm", "gowal"] = flagged(
        "timm",
        "--ema-warmup-rule",
        "with --ema-warmup: timm's ModelEmaV3 warm-up, or DM-Improves-AT's (Gowal et al.'s ema_update): the "
        "average copies the weights until the lr warm-up ends (cosinew's 0.025 x epochs, or "
        "--warmup-epochs), then averages with min(decay, (1 + d) / (10 + d)) d steps after it",
    )
    # FixMatch's tf.train.ExponentialMovingAverage averages the trainable variables only: the average is
    # evaluated with the model's BN statistics as they are ("copy")
    ema_buffers: Literal["average", "copy"] = flagged(
        "average",
        "--ema-buffers",
        "with --ema: average the BN statistics with the weights (timm's, torch's AveragedModel(use_buffers=True)), "
        "or copy the model's into the average (FixMatch's code, which averages the trainable variables only)",
        commands=("bench",),
    )
    # Sharpness-Aware Minimization (Foret et al., ICLR 2021; google-research/sam): 0 is off.
    sam_rho: float = flagged(
        0.0,
        "--sam",
        "SAM's neighbourhood radius rho, e.g. 0.05 (0: off; two passes per step)",
        commands=("bench",),
        ge=0.0,
        le=1e6,
    )
    # google-research/sam trains the batch of 256 on 8 accelerators: each takes 32 images, normalises BN over
    # them and (with SAM) takes its own ascent (m-sharpness, the paper's Section 4.1); the gradients are averaged
    replica_batch: int = flagged(
        0,
        "--replica-batch",
        "split each process's batch into slices of this many images, as on that many accelerators: each slice "
        "has its own BN statistics and, with --sam, its own ascent (SAM's m-sharpness); the step takes the mean "
        "of their gradients (0: the whole batch)",
        commands=("bench",),
        ge=0,
        le=2**20,
    )
    grad_clip: float = flagged(
        0.0,
        "--grad-clip",
        "clip the gradient's global L2 norm to this value (0: off)",
        commands=("bench",),
        ge=0.0,
        le=1e6,
    )
    # The paper (and its code) decays every parameter; off: no weight decay on 1-d ones (BN's and biases).
    decay_norm_and_bias: bool = flagged(
        True,
        "--decay-norm-and-bias",
        "weight decay on BN parameters and biases too (the paper's; default on)",
        commands=("bench",),
    )

    # DM-Improves-AT's group_weight (gowal21uncovering/utils/watrain.py lines 58-68) exempts the parameters named
    # 'batchnorm' only: the classifier's bias decays
    decay_bias: bool = flagged(
        False,
        "--decay-bias",
        "with --no-decay-norm-and-bias, keep the weight decay on the biases: only the normalisation layers' "
        "parameters go without (DM-Improves-AT's group_weight; default off: biases go without too)",
        commands=("bench",),
    )

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimSection:
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "--nesterov needs momentum above 0; add --no-nesterov, or give a --momentum above 0"
            )
        if self.decay_bias and self.decay_norm_and_bias:
            raise ValueError(
                "--decay-bias keeps the biases' weight decay when --no-decay-norm-and-bias takes it away, and "
                "every parameter decays already; add --no-decay-norm-and-bias or leave --decay-bias out"
            )
        return self


MAX_EPOCHS = 100_000


class ScheduleSection(Section):
    name: Literal["multistep", "cosine", "fixmatch", "cosinew"] = flagged(
        "multistep",
        "--schedule",
        "the learning-rate schedule: the paper's multistep, cosine (per step, to 0), FixMatch's lr x cos(7 pi "
        "k / 16 K) at step k of K, or DM-Improves-AT's cosinew (torch's OneCycleLR stepped once an epoch: a "
        "cosine from lr/25 up to lr at epoch 0.025 x epochs, then down to lr/25e4, the SGD momentum cycled "
        "from 0.95 to 0.85 and back)",
    )
    epochs: int = flagged(
        200,
        "--epochs",
        "number of epochs (the recipe's lr drops move along)",
        on_resume=True,
        commands=("reproduce",),
        gt=0,
        le=MAX_EPOCHS,
    )
    # 1-indexed epochs that already run at the lowered rate (the paper's recipe: epoch 60 runs at 0.02).
    milestones: list[int] = Field(
        default_factory=lambda: [60, 120, 160],
        description="1-indexed epochs of the lr drops, e.g. 60,120,160 (kept as given)",
        json_schema_extra=option("--milestones"),
    )
    # Where the milestones came from: a recipe's ("recipe": they move with the number of epochs) or the user's
    # ("given": kept as they are). Filled in by build_config.
    milestones_from: Literal["recipe", "given"] = "recipe"
    gamma: float = flagged(0.2, "--gamma", "lr factor at each milestone (0.2 in the paper)", gt=0.0, le=1.0)
    # The authors' code re-creates the optimizer at every drop, which clears the momentum buffers.
    reset_momentum: bool = flagged(
        True, "--reset-momentum", "clear momentum buffers at each lr drop, as the authors' code (default on)"
    )
    # Linear warm-up per step over round(warmup_epochs * steps per epoch) steps, then the schedule.
    warmup_epochs: float = flagged(
        0.0, "--warmup-epochs", "linear lr warm-up per step over this many epochs (0: none)", ge=0.0
    )

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(m < 2 for m in value):
            raise ValueError("milestones are 1-indexed epochs and must be >= 2")
        if any(m > MAX_EPOCHS for m in value):
            raise ValueError(f"milestones are epochs, at most {MAX_EPOCHS:,}")
        if sorted(set(value)) != value:
            raise ValueError("milestones must be strictly increasing")
        return value

    @model_validator(mode="after")
    def _warmup_inside_the_run(self) -> ScheduleSection:
        if self.name == "cosinew" and self.warmup_epochs:
            raise ValueError(
                "the cosinew schedule warms up by itself (2.5% of the epochs); leave --warmup-epochs out"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"--warmup-epochs {self.warmup_epochs:g} must be shorter than the run (--epochs {self.epochs}); "
                "give fewer warm-up epochs"
            )
        return self


class RunSection(Section):
    seed: int = flagged(0, "--seed", "random seed", how=True, ge=0, le=2**32 - 1)
    device: str = flagged("auto", "--device", "auto, cpu, cuda or cuda:N", how=True)
    amp: Literal["auto", "bf16", "fp16", "off"] = flagged(
        "auto",
        "--amp",
        "mixed precision of training (fp16: CUDA only, with a grad scaler; auto: bf16 on CUDA)",
        how=True,
    )
    # The test pass is the paper's measure and cheap: full precision unless asked otherwise.
    eval_amp: Literal["off", "bf16", "fp16"] = flagged(
        "off", "--eval-amp", "mixed precision of the test pass (default off: fp32)", how=True
    )
    compile: bool = flagged(False, "--compile", "torch.compile", how=True)
    # torch.compile's mode: "reduce-overhead" adds CUDA graphs; "max-autotune" also searches kernels.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        flagged(
            "default", "--compile-mode", "torch.compile's mode (reduce-overhead adds CUDA graphs)", how=True
        )
    )
    channels_last: bool | None = flagged(
        None, "--channels-last", "channels_last memory format (default on: CUDA and CPU)", how=True
    )
    sync_bn: bool = flagged(False, "--sync-bn", "SyncBatchNorm (DDP)", how=True)
    deterministic: bool = flagged(False, "--deterministic", "deterministic kernels", how=True)
    # Both set by --checkpoint-every (minutes, steps or off); at most one of them is set.
    checkpoint_every_minutes: float | None = flagged(
        10.0, None, "minutes between mid-epoch checkpoints", how=True, volatile=True, on_resume=True, gt=0
    )
    checkpoint_every_steps: int | None = flagged(
        None, None, "steps between mid-epoch checkpoints", how=True, volatile=True, on_resume=True, gt=0
    )
    log_every_steps: int = flagged(
        50, None, "steps between the NaN check and the per-step TensorBoard scalars (one host sync each)",
        how=True, gt=0,
    )  # fmt: skip
    progress: bool = flagged(
        True, "--progress", "a progress bar or progress lines", how=True, volatile=True, on_resume=True
    )
    # With an EMA of the weights: evaluate both, only the average, or only the plain model.
    eval_models: Literal["both", "ema", "model"] = flagged(
        "both", "--eval-models", "with --ema, which weights each epoch's test pass evaluates"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")
        return value


ObjectiveSection = objective_section()


class ProvenanceSection(Section):
    """What ran the run, and what it found that no option sets: the versions and the command, and the values
    that came from the machine and the data (the device with its index, the CPU threads, the processes, the
    image side, classes and channels the data gave). Written by ``wrn train`` into config.yaml; ignored when a
    config.yaml is reused, and never part of what a run computes."""

    wrn: str | None = None
    torch: str | None = None
    cuda: str | None = None
    python: str | None = None
    command: str | None = None
    device: str | None = None
    threads: int | None = None
    processes: int | None = None
    image_size: int | None = None
    num_classes: int | None = None
    in_channels: int | None = None


COMPILE_MODES = typing.get_args(RunSection.model_fields["compile_mode"].annotation)


class AdvSection(Section):
    """Adversarial training (``docs/robustness.md``): the method, and its attack's budget on pixels in [0, 1]
    (unset: the method's own, ``wrn.train.objectives.ADVERSARIES``, filled in by resolve)."""

    method: Literal[("none", *ADVERSARIES)] = flagged(
        "none",
        "--adv",
        "adversarial training: "
        + "; ".join(
            f"{k}: {a.summary} (defaults eps {a.eps:.4g}, {a.steps} steps of {a.step_size:.4g})"
            for k, a in ADVERSARIES.items()
        ),
        commands=("bench",),
    )
    eps: float | None = flagged(
        None,
        "--adv-eps",
        "the attack's L-inf radius on pixels in [0, 1] (8/255 is accepted)",
        gt=0.0,
        le=1.0,
        commands=("bench",),
    )
    steps: int | None = flagged(None, "--adv-steps", "the attack's steps", ge=1, le=1000, commands=("bench",))
    step_size: float | None = flagged(
        None,
        "--adv-step-size",
        "the attack's step on pixels in [0, 1] (2/255 is accepted)",
        gt=0.0,
        le=1.0,
        commands=("bench",),
    )
    trades_beta: float = flagged(
        6.0,
        "--trades-beta",
        "TRADES (trades, trades-gowal): the weight beta of the KL term (their 6.0)",
        ge=0.0,
        le=1e6,
        commands=("bench",),
    )
    # Adversarial weight perturbation (Wu, Xia, Wang, NeurIPS 2020; csdongxian/AWP): 0 is off.
    awp: float = flagged(
        0.0,
        "--awp",
        "adversarial weight perturbation (AWP, Wu et al. 2020): gamma, the size of each weight's perturbation "
        "relative to its norm; 0: off ("
        + ", ".join(f"their {a.awp_gamma:g} with --adv {k}" for k, a in ADVERSARIES.items() if a.awp_gamma)
        + ")",
        ge=0.0,
        le=1.0,
        commands=("bench",),
    )
    awp_warmup: int | None = flagged(
        None,
        "--awp-warmup",
        "AWP: the epochs trained without it before it turns on (unset: their script's, "
        + ", ".join(f"{a.awp_warmup} with --adv {k}" for k, a in ADVERSARIES.items() if a.awp_gamma)
        + ")",
        ge=0,
        le=100_000,
    )

    holdout: int = flagged(
        0,
        "--adv-holdout",
        "early stopping on robust accuracy (Rice et al. 2020): hold out N training images (their 1000, drawn as "
        "their generate_validation.py draws them), attack them after every epoch with PGD at the training "
        "attack's budget, and keep the weights of the best epoch in RUN/best/ (0: off)",
        ge=0,
        le=1_000_000,
    )

    # DM-Improves-AT's validation (train-wa.py lines 62-65, 121-127; watrain.py 40-41): the first 1,024 training
    # images, PGD-40 (4 x the training steps) on the CW margin loss, the best epoch the last of equal ones.
    # AT-AWP's CIFAR-100 selection (AT_AWP/train_cifar100.py lines 325-338, 364-372): the test set under PGD-20.
    holdout_rule: Literal["rice", "dm", "awp"] = flagged(
        "rice",
        "--adv-holdout-rule",
        "with --adv-holdout: Rice et al.'s early stopping (N training images drawn as their "
        "generate_validation.py draws them, PGD at the training attack's budget on the cross-entropy, ties keep "
        "the earlier epoch), DM-Improves-AT's (the first N training images, PGD of 4 x the training attack's "
        "steps on the CW margin loss, ties keep the later epoch) or AT-AWP's CIFAR-100 code's (the first N "
        "TEST images, none held out of training, PGD-20 on the cross-entropy, ties keep the earlier epoch: the "
        "best epoch is chosen on the test set, as that code chose the released one)",
    )

    @field_validator("eps", "step_size", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> Any:
        return fraction(value)


class SSLSection(Section):
    """Training on a few labelled images (``labels``), and semi-supervised training on the rest
    (``docs/semi-supervised.md``): the method (``wrn.train.objectives.SEMI_SUPERVISED``) and its settings."""

    method: Literal[("none", *SEMI_SUPERVISED)] = flagged(
        "none",
        "--ssl",
        "semi-supervised training on the unlabelled rest of the training set (needs --labels): "
        + "; ".join(f"{k}: {m.summary}" for k, m in SEMI_SUPERVISED.items()),
        commands=("bench",),
    )
    # FixMatch's scripts/create_split.py: per class in turn, as the class distribution says, from each class's
    # images shuffled with numpy's seed `fold` (0: in their order)
    labels: int | None = flagged(
        None,
        "--labels",
        "train on N labelled images in all, a multiple of the classes, chosen per class as FixMatch's "
        "create_split.py chooses them (unset: every training image, labelled); without --ssl the run is the "
        "supervised baseline on them",
        ge=1,
        le=10_000_000,
    )
    fold: int = flagged(
        1,
        "--fold",
        "with --labels: the seed of the labelled split (their create_split.py --seed; 0 keeps each class's "
        "images in order)",
        ge=0,
        le=2**32 - 1,
    )
    epoch_steps: int = flagged(
        1024,
        "--epoch-steps",
        "with --labels: the steps of an epoch, the interval of the test pass and its record (FixMatch: 64 "
        "kimg at batch 64, 1024 steps)",
        ge=1,
        le=10_000_000,
    )
    mu: int = flagged(
        7,
        "--mu",
        "with --ssl: the unlabelled batch is mu x --batch-size images (their uratio 7)",
        ge=1,
        le=1024,
        commands=("bench",),
    )
    threshold: float = flagged(
        0.95,
        "--threshold",
        "with --ssl fixmatch: the confidence a weak view's prediction needs to become a pseudo-label (their 0.95)",
        ge=0.0,
        le=1.0,
        commands=("bench",),
    )
    lambda_u: float = flagged(
        1.0,
        "--lambda-u",
        "with --ssl: the weight of the unlabelled loss (their wu 1)",
        ge=0.0,
        le=1e6,
        commands=("bench",),
    )
    strong_policy: Literal[STRONG_POLICIES] = flagged(
        "fixmatch-ra",
        "--strong-policy",
        "with --ssl fixmatch: the strong augmentation of the unlabelled images, after their weak flip and "
        "crop: FixMatch's RA (2 of their 14 operations, magnitudes 1..9, then a 16 px Cutout) or torchvision's "
        "RandAugment(2, --randaugment-m) then the same Cutout",
        commands=("bench",),
    )
    # wrn.data.fixmatch_batched: the whole batch as tensor ops on the training device, equal image for image
    # to the per-image PIL code (tested), about 10x cheaper per image on a CPU (docs/semi-supervised.md)
    strong_on: Literal["device", "workers"] = flagged(
        "device",
        "--strong-on",
        "with --ssl fixmatch: where the strong views are made: on the training device, the batch at once as "
        "tensor ops equal to their PIL code image for image (fixmatch-ra), or image by image with PIL in "
        "--workers processes",
        commands=("bench",),
    )


class TrainConfig(Section):
    preset: str | None = Field(default=None, json_schema_extra=option(how=True))
    description: str = Field(default="", json_schema_extra=option(how=True))
    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    adv: AdvSection = Field(default_factory=AdvSection)
    ssl: SSLSection = Field(default_factory=SSLSection)
    run: RunSection = Field(default_factory=RunSection)
    provenance: ProvenanceSection = Field(
        default_factory=ProvenanceSection, json_schema_extra=option(how=True, volatile=True)
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of str/int/float/bool/None/list: safe in YAML and in a weights_only checkpoint."""
        return self.model_dump(mode="json")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """Options that cannot train as asked, or that would do nothing, refused in one sentence."""
        problem = consistency_problem(self)
        if problem:
            raise ValueError(problem)
        return self


# --------------------------------------------------------------------------------------------- validation


def _error_sentence(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if err["type"] == "extra_forbidden":
        return f"unknown config key {where!r}{_closest_key(err['loc'])}; `wrn presets demo` shows every key"
    if err["type"] == "literal_error":
        return f"{where} = {err.get('input')!r} is not allowed: {msg}"
    if not err["loc"] or isinstance(err.get("input"), dict):  # a rule across fields: its own sentence
        return msg
    return f"{where} = {err.get('input')!r} is invalid: {msg}"


def _closest_key(loc: tuple) -> str:
    """`` (did you mean optim.lr?)`` for a misspelt key, by similarity among the keys of its section."""
    section: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        section = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {'.'.join(map(str, (*loc[:-1], close[0])))}?)" if close else ""


def validate(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict; a bad key or value raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(
            "a training config must be a YAML mapping of sections (model, dataset, optim, schedule, run)"
        )
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_error_sentence(exc)) from None


def replace(cfg: TrainConfig, **sections: dict[str, Any]) -> TrainConfig:
    """``cfg`` with some values of its sections changed, e.g. ``replace(cfg, run={"progress": False})``, for
    values the code derives from a valid config (the values are trusted, not validated again)."""
    return cfg.model_copy(
        update={
            name: getattr(cfg, name).model_copy(update=values) for name, values in sections.items() if values
        }
    )
