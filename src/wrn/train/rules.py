"""The rules across the fields of a training config (``TrainConfig`` validates with them, so that ``wrn train
--print-config`` refuses what ``wrn train`` refuses): options that cannot train together, and options given a
value that would change nothing. Each broken rule is one sentence naming the options and the fix."""

from __future__ import annotations


def consistency_problem(cfg) -> str | None:
    """The first combination of options that cannot train as asked, as one sentence; None if there is none."""
    optim, run = cfg.optim, cfg.run
    if optim.sam_rho and run.amp == "fp16":
        return (
            "--sam does not run under --amp fp16 (the grad scaler would have to unscale its ascent gradient "
            "too); use --amp bf16 or --amp off with SAM"
        )
    if optim.ema_warmup and not optim.ema_decay:
        return "--ema-warmup warms up an average of the weights, which is off; add --ema DECAY (e.g. 0.999)"
    if optim.ema_warmup_rule != "timm" and not optim.ema_warmup:
        return (
            f"--ema-warmup-rule {optim.ema_warmup_rule} is the rule of a warm-up of the average of the weights, "
            "which is off; add --ema-warmup (and --ema DECAY) or leave --ema-warmup-rule out"
        )
    if optim.ema_buffers != "average" and not optim.ema_decay:
        return (
            f"--ema-buffers {optim.ema_buffers} sets what an average of the weights does with the BN statistics, "
            "and the average is off; add --ema DECAY (e.g. 0.999) or leave --ema-buffers out"
        )
    if run.eval_models != "both" and not optim.ema_decay:
        return (
            f"--eval-models {run.eval_models} needs an average of the weights to choose from; "
            "add --ema DECAY (e.g. 0.999) or leave --eval-models out"
        )
    if optim.replica_batch and optim.batch_size % optim.replica_batch:
        return (
            f"--replica-batch {optim.replica_batch} does not divide the batch of {optim.batch_size} into equal "
            "slices; give a divisor of --batch-size (e.g. 32 of 256) or leave --replica-batch out"
        )
    problem = (
        _unused_option(cfg)
        or _rotation_problem(cfg)
        or _adversarial_problem(cfg)
        or _semi_supervised_problem(cfg)
    )
    if problem:
        return problem
    for key in type(cfg.objective).model_fields:
        options = getattr(cfg.objective, key)
        if key != "name" and key != cfg.objective.name.replace("-", "_") and options != type(options)():
            return (
                f"objective.{key} is set but the objective is {cfg.objective.name}; add --objective "
                f"{key.replace('_', '-')} or leave its options out"
            )
    return None


def _adversarial_problem(cfg) -> str | None:
    """Options of adversarial training without it, or beside what its attack cannot take."""
    adv, data = cfg.adv, cfg.dataset
    if adv.holdout_rule != "rice" and not adv.holdout:
        return (
            f"--adv-holdout-rule {adv.holdout_rule} chooses how held-out images pick the best epoch, and none "
            "are held out; add --adv-holdout N (DM-Improves-AT's 1024) or leave the rule out"
        )
    if adv.method == "none":
        given = [f for f, v in (("--adv-eps", adv.eps), ("--adv-steps", adv.steps), ("--adv-step-size",
                 adv.step_size)) if v is not None]  # fmt: skip
        given += ["--adv-holdout"] if adv.holdout else []
        if given or adv.trades_beta != type(adv)().trades_beta:
            return (
                f"{', '.join(given or ['--trades-beta'])} set the attack of adversarial training, which is off; "
                "add --adv pgd or --adv trades, or leave them out"
            )
        if adv.awp or adv.awp_warmup is not None:
            return (
                f"{'--awp' if adv.awp else '--awp-warmup'} perturbs the weights against the loss of adversarial "
                "training, which is off; add --adv pgd or --adv trades, or leave it out"
            )
        return None
    if not adv.method.startswith("trades") and adv.trades_beta != type(adv)().trades_beta:
        return f"--trades-beta weights TRADES' KL term, but --adv is {adv.method}; add --adv trades or leave it out"
    problem = _awp_problem(cfg)
    if problem:
        return problem
    if data.mixup or data.cutmix:
        return (
            f"--adv {adv.method} attacks the images of the batch and their labels; mixup and CutMix mix both: "
            "leave --mixup / --cutmix out with --adv"
        )
    if data.normalization == "zca":
        return (
            f"--adv {adv.method} attacks pixels through a per-channel normalisation, and ZCA whitening is not "
            "one; use another --normalization with --adv"
        )
    return None


def _semi_supervised_problem(cfg) -> str | None:
    """Options of a labelled split or of semi-supervised training without them, or beside what they cannot
    take."""
    from wrn.data.registry import STRONG_ON_DEVICE, dataset_info

    ssl, data, optim = cfg.ssl, cfg.dataset, cfg.optim
    defaults = type(ssl)()
    if ssl.labels is None:
        if ssl.method != "none":
            return (
                f"--ssl {ssl.method} trains on the unlabelled rest of a labelled split; add --labels N (e.g. 250: "
                "25 images of each of CIFAR-10's classes)"
            )
        given = [flag for flag, key in (("--fold", "fold"), ("--epoch-steps", "epoch_steps"))
                 if getattr(ssl, key) != getattr(defaults, key)]  # fmt: skip
        if given:
            return f"{given[0]} sets the labelled split, which is off; add --labels N or leave {given[0]} out"
    if ssl.method == "none":
        given = [flag for flag, key in (("--mu", "mu"), ("--threshold", "threshold"), ("--lambda-u", "lambda_u"),
                 ("--strong-policy", "strong_policy"), ("--strong-on", "strong_on"))
                 if getattr(ssl, key) != getattr(defaults, key)]  # fmt: skip
        if given:
            return (
                f"{given[0]} sets semi-supervised training, which is off; add --ssl fixmatch (with --labels N) or "
                f"leave {given[0]} out"
            )
    if ssl.method != "none" and ssl.strong_on == "device" and ssl.strong_policy not in STRONG_ON_DEVICE:
        return (
            f"--strong-policy {ssl.strong_policy} runs image by image in worker processes, not on the device; add "
            "--strong-on workers, or use --strong-policy fixmatch-ra"
        )
    if ssl.labels is None:
        return None
    classes = dataset_info(data.name).num_classes
    if classes and ssl.labels % classes:
        return (
            f"--labels {ssl.labels} is not a multiple of {data.name}'s {classes} classes; give a multiple (e.g. "
            f"{classes * max(1, round(ssl.labels / classes))}), the same number of labels for each class"
        )
    if cfg.adv.method != "none":
        return f"--labels and --adv {cfg.adv.method}: no method's code trains adversarially on a labelled split; choose one"
    if data.aux_data is not None:
        return "--labels draws the batches from a labelled split, and --aux-data mixes generated images into them; choose one"
    if ssl.method != "none" and (data.mixup or data.cutmix):
        return (
            f"--ssl {ssl.method} takes the labelled batch as it is, and mixup / CutMix would mix it; leave --mixup / "
            "--cutmix out with --ssl"
        )
    if ssl.method != "none" and optim.replica_batch:
        return (
            f"--ssl {ssl.method} passes the labelled and unlabelled batches through the network together, which "
            "--replica-batch would cut into slices; leave --replica-batch out with --ssl"
        )
    if ssl.method != "none" and data.normalization == "zca":
        return (
            f"--ssl {ssl.method} augments the unlabelled images' pixels, which ZCA whitening replaces; use another "
            "--normalization with --ssl"
        )
    return None


def _awp_problem(cfg) -> str | None:
    """AWP's warm-up without AWP, or AWP beside another change of the gradient it cannot be combined with."""
    adv, optim = cfg.adv, cfg.optim
    if not adv.awp:
        if adv.awp_warmup is not None:
            return "--awp-warmup delays AWP, which is off; add --awp GAMMA (e.g. 0.005) or leave it out"
        return None
    from wrn.train.objectives import ADVERSARIES

    if ADVERSARIES[adv.method].awp_gamma is None:
        return (
            f"--awp perturbs the weights as csdongxian/AWP's scripts do, and none of them trains --adv "
            f"{adv.method}; use --adv pgd or --adv trades with --awp, or leave it out"
        )
    if optim.sam_rho:
        return (
            "--awp and --sam both perturb the weights the gradient is taken at, and no method's code combines "
            "them; choose one"
        )
    if optim.replica_batch:
        return (
            "--awp takes its perturbation from the whole batch, and --replica-batch would take the gradient "
            "slice by slice at it, which AWP's code never does; leave --replica-batch out with --awp"
        )
    if cfg.run.amp == "fp16":
        return (
            "--awp does not run under --amp fp16 (its proxy's ascent gradient would need a loss scaling of its "
            "own); use --amp bf16 or --amp off with AWP"
        )
    return None


def _rotation_problem(cfg) -> str | None:
    """``--rotate`` turns the images after the crop and flip of the small data sets' loaders (and the folders'
    RandomRotation after theirs)."""
    from wrn.data.registry import dataset_info

    data = cfg.dataset
    augment = data.augment or dataset_info(data.name).augment
    if data.rotate and augment not in ("none", "crop", "flip-crop"):
        return (
            f"--rotate {data.rotate:g} turns the image after the crop and flip of augment none, crop or "
            f"flip-crop, not with augment {augment}; use --augment flip-crop or leave --rotate out"
        )
    if data.rotate and data.crop_padding == "mean":
        return (
            f"--rotate {data.rotate:g} would move the mean-colour border that --crop-padding mean sets after "
            "the normalisation; use --crop-padding reflect or zeros with it"
        )
    if data.rotate and cfg.ssl.method != "none":
        return (
            f"--rotate {data.rotate:g} would turn the labelled batches but not the unlabelled weak and strong "
            "views (FixMatch's code rotates neither); leave --rotate out with --ssl"
        )
    return None


def _unused_option(cfg) -> str | None:
    """An option given a value that would change nothing (one rule for all: refused, not ignored)."""
    from wrn.data.registry import dataset_info

    data, run, schedule = cfg.dataset, cfg.run, cfg.schedule
    info = dataset_info(data.name)
    augment = data.augment or info.augment
    defaults = type(data)()  # the dataset section's defaults
    strong_randaugment = cfg.ssl.method != "none" and cfg.ssl.strong_policy == "randaugment"
    if (
        data.policy != "randaugment"
        and not strong_randaugment
        and (data.randaugment_n, data.randaugment_m)
        != (
            defaults.randaugment_n,
            defaults.randaugment_m,
        )
    ):
        return (
            f"--randaugment-n and --randaugment-m set RandAugment, but the policy is {data.policy}; add "
            "--policy randaugment or leave them out"
        )
    if data.crop_padding != defaults.crop_padding and augment not in ("crop", "flip-crop"):
        return (
            f"--crop-padding {data.crop_padding} fills the border of the training crop, but augment {augment} "
            f"has no such crop; use --augment crop or flip-crop, or leave --crop-padding out"
        )
    if data.cutout_per != defaults.cutout_per and not data.cutout:
        return (
            f"--cutout-per {data.cutout_per} places Cutout's holes, which are off; add --cutout L (e.g. 16)"
        )
    if run.compile_mode != "default" and not run.compile:
        return f"--compile-mode {run.compile_mode} is a mode of torch.compile, which is off; add --compile"
    if schedule.name != "multistep" and schedule.milestones_from == "given":
        return (
            f"--milestones are the lr drops of the multistep schedule; the {schedule.name} schedule has none: "
            "leave them out"
        )
    if (
        data.image_size is not None
        and info.name not in ("imagenet", "imagefolder")
        and data.image_size != info.image_size
    ):
        return (
            f"--image-size {data.image_size} applies to image folders and ImageNet; the {data.name} images are "
            f"{info.image_size}x{info.image_size}: leave it out"
        )
    if (
        data.train_split is not None
        and info.name != "imagefolder"
        and (data.train_split not in info.splits or data.train_split == info.test_split)
    ):
        choices = [s for s in info.splits if s != info.test_split]
        return (
            f"--train-split {data.train_split} is not a training split of {data.name}; choose one of "
            f"{', '.join(choices)}"
        )
    problem = _generated_problem(data, info, augment, cfg.optim.batch_size)
    if problem:
        return problem
    if data.policy != "none" and data.normalization == "zca":
        return (
            f"--policy {data.policy} works on the images' pixels, which ZCA whitening replaces; use another "
            "--normalization or leave --policy out"
        )
    return None


def _generated_problem(data, info, augment: str, batch_size: int) -> str | None:
    """``--aux-fraction`` without generated data, or generated data beside what cannot take them."""
    from wrn.data.generated import GENERATED_DATASETS, generated_per_batch

    if data.aux_data is None:
        if data.aux_fraction != type(data)().aux_fraction:
            return "--aux-fraction sets the share of generated images in a batch, which are off; add --aux-data FILE.npz or leave it out"
        return None
    if info.name not in GENERATED_DATASETS:
        return (
            f"--aux-data mixes generated images into the batches of {', '.join(GENERATED_DATASETS)}, not of "
            f"{info.name}: leave --aux-data out or train on one of those"
        )
    if data.policy != "none" or data.random_erasing or augment == "imagenet":
        what = f"--policy {data.policy}" if data.policy != "none" else (
            "--random-erasing" if data.random_erasing else "--augment imagenet")  # fmt: skip
        return (
            f"--aux-data mixes generated images into batches that are flipped and cropped on the device, "
            f"which {what} is not: leave {what.split()[0]} out with --aux-data"
        )
    if data.normalization == "zca":
        return (
            "--aux-data mixes generated pixels into the batch, which ZCA whitening would have to whiten too; "
            "use another --normalization with --aux-data"
        )
    share = generated_per_batch(batch_size, data.aux_fraction)
    if not 0 < share < batch_size:
        return (
            f"--aux-fraction {data.aux_fraction:g} of a batch of {batch_size} is {share} generated images: "
            "give a fraction that leaves at least one generated and one real image"
        )
    return None
