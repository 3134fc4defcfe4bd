"""``wrn data``: download, verify and list the data sets."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="download, verify and list the data sets",
        description="Fetch CIFAR-10/100 and SVHN into a data root (checking every md5), verify files already "
        "there, or list what each data set is.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("download", "fetch (if missing), extract and verify a data set's files"),
        ("verify", "check the md5 of every file of a data set already under the root"),
    ):
        a = actions.add_parser(action, help=text, description=text + ".")
        a.add_argument("name", choices=("cifar10", "cifar100", "svhn"), help="data set")
        a.add_argument("--root", required=True, help="data root (files go where torchvision puts them)")
        a.add_argument(
            "--split",
            action="append",
            choices=("train", "test", "extra"),
            help="SVHN only: just these files (repeatable; default all three)",
        )
        if action == "download":
            a.add_argument(
                "--no-verify",
                dest="verify",
                action="store_false",
                help="skip md5 checks (re-packed copies only)",
            )
        a.set_defaults(func=run, verify=True)
    info = actions.add_parser("list", help="list the data sets", description="List the data sets.")
    info.set_defaults(func=run_list)


def _first_missing(name: str, root, files):
    """The first file of ``name`` that is not under ``root`` (None if all are there)."""
    from wrn.data.registry import ARCHIVES, MEMBER_MD5, SVHN_FILES

    if name in ARCHIVES:
        wanted = [root / m for m in (files or MEMBER_MD5[name])]
    else:
        wanted = [root / SVHN_FILES[split].filename for split in (files or SVHN_FILES)]
    return next((path for path in wanted if not path.is_file()), None)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wrn.data import ensure_files
    from wrn.data.arrays import made_for_download
    from wrn.errors import ConfigError, DataError
    from wrn.paths import check_input_dir, check_output_dir

    if args.split and args.name != "svhn":
        raise ConfigError(f"--split applies to svhn only; {args.name} comes as one archive.")
    root = Path(args.root).expanduser()
    fetch = f"run `wrn data download {args.name} --root {root}` first"
    if args.action == "download":
        check_output_dir(root, "--root")
        with made_for_download(root):
            paths = ensure_files(args.name, root, download=True, verify=args.verify, files=args.split or None)
    else:
        check_input_dir(root, "--root", fetch)
        missing = _first_missing(args.name, root, args.split)
        if missing is not None:
            raise DataError(f"{missing} is missing: {fetch}, or put a hand-downloaded copy there")
        paths = ensure_files(args.name, root, download=False, verify=args.verify, files=args.split or None)
    state = "verified" if args.verify else "present (not verified)"
    for path in paths:
        print(f"{path}: {state}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from wrn.data import DATASETS

    print(
        f"{'name':<12} {'classes':>7} {'channels':>8} {'size':>5}  {'train':<12} {'test':<5} normalization  augment"
    )
    for info in DATASETS.values():
        classes = "folder" if info.num_classes is None else str(info.num_classes)
        size = "any" if info.image_size is None else str(info.image_size)
        print(
            f"{info.name:<12} {classes:>7} {info.in_channels:>8} {size:>5}  {info.train_split:<12} "
            f"{info.test_split:<5} {info.normalization:<14} {info.augment}"
        )
    return 0
