"""``orchard-data`` / ``python -m orchard.data``: datasets for sites without internet.

Three commands, one per step of provisioning a machine that cannot download:

* ``fetch [DIR]`` -- on a machine with internet, download the official files
  (every one checked against its published checksum) into ``DIR`` in the
  cache layout the clients read;
* ``import SOURCE [DIR]`` -- on the offline machine, check the files in
  ``SOURCE`` (the official checksums, or their format for synthetic ones)
  and copy them into the clients' cache ``DIR`` (in the compose stack: the
  ``datasets`` volume);
* ``synth [DIR]`` -- write synthetic files in the official formats, marked
  ``SYNTHETIC-<dataset>.txt``, for smoke tests (:mod:`orchard.data.synth`).

``DIR`` defaults to ``$ORCHARD_DATA_DIR`` (``/data`` in the images). Problems
a user can fix end with one line naming the file and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from orchard.data.cifar10 import BATCHES_DIR, CIFAR10_BINARY, TEST_FILES, TRAIN_FILES, read_batch
from orchard.data.download import DownloadError, default_data_dir, fetch
from orchard.data.errors import DatasetError
from orchard.data.idx import IdxFormatError
from orchard.data.mnist import VARIANTS, load_mnist
from orchard.data.synth import SYNTHETIC_DATASETS, is_synthetic, synthetic_marker, write_synthetic
from orchard.files import atomic_write

__all__ = ["DATASET_NAMES", "build_parser", "fetch_dataset", "import_dataset", "main"]

log = logging.getLogger("orchard.data")

#: Every dataset the commands handle, in the order they are processed.
DATASET_NAMES: tuple[str, ...] = ("cifar10", "mnist", "fashion-mnist")

_COPY_CHUNK = 1 << 20


def fetch_dataset(dataset: str, data_dir: Path, *, mirror: str | None = None) -> list[Path]:
    """Download ``dataset``'s official files into the cache root ``data_dir``; their paths.

    Files already there with the right checksum are kept; a synthetic
    dataset's marker is removed once its official files are in place.
    """
    if dataset == "cifar10":
        paths = [fetch(CIFAR10_BINARY, data_dir, mirror=mirror)]
        stale = data_dir / BATCHES_DIR
        if is_synthetic(data_dir, dataset) and stale.is_dir():
            shutil.rmtree(stale)  # extracted from the synthetic tarball
    else:
        variant = VARIANTS[dataset]
        paths = [
            fetch(idx.resource, data_dir / variant.name, mirror=mirror)
            for split in ("train", "test")
            for idx in variant.files(split)
        ]
    synthetic_marker(data_dir, dataset).unlink(missing_ok=True)
    return paths


def _copy(source: Path, target: Path) -> None:
    """Copy one file atomically (a reader never sees half of it), readable by every user."""

    def write(out: BinaryIO) -> None:
        with open(source, "rb") as stream:
            shutil.copyfileobj(stream, out, _COPY_CHUNK)

    atomic_write(target, write, mode=0o644)


def _present(source: Path, dataset: str) -> bool:
    """Whether ``source`` holds files of ``dataset`` in the cache layout."""
    if dataset == "cifar10":
        return (source / CIFAR10_BINARY.filename).is_file() or (source / BATCHES_DIR).is_dir()
    return (source / dataset).is_dir()


def _import_cifar10(source: Path, data_dir: Path, verify: bool) -> list[Path]:
    tarball = source / CIFAR10_BINARY.filename
    if tarball.is_file():
        if verify and not CIFAR10_BINARY.parsed_checksum.matches_file(tarball):
            raise DatasetError(
                f"{tarball} does not have the official checksum {CIFAR10_BINARY.checksum}; "
                "fetch it again (orchard-data fetch), or import with --no-verify to use it anyway"
            )
        target = data_dir / CIFAR10_BINARY.filename
        _copy(tarball, target)
        # Batches extracted from an earlier tarball would shadow the new one.
        stale = data_dir / BATCHES_DIR
        if stale.is_dir():
            shutil.rmtree(stale)
        return [target]
    batches = source / BATCHES_DIR
    written = []
    for name in TRAIN_FILES + TEST_FILES:
        if not (batches / name).is_file():
            raise DatasetError(
                f"{source}: neither {CIFAR10_BINARY.filename} nor {BATCHES_DIR}/{name} exists"
            )
        read_batch(batches / name)  # refuses a truncated or foreign file
    for name in TRAIN_FILES + TEST_FILES:
        _copy(batches / name, data_dir / BATCHES_DIR / name)
        written.append(data_dir / BATCHES_DIR / name)
    return written


def _import_mnist(source: Path, data_dir: Path, dataset: str, verify: bool) -> list[Path]:
    variant = VARIANTS[dataset]
    for split in ("train", "test"):
        # Reads and checks all four files exactly as a client will.
        load_mnist(source, variant=variant, split=split, download=False, verify=verify)
    written = []
    for split in ("train", "test"):
        for idx in variant.files(split):
            found = next(
                (
                    directory / name
                    for directory in (source, source / variant.name)
                    for name in idx.candidate_names()
                    if (directory / name).is_file()
                ),
                None,
            )
            if found is None:  # pragma: no cover - load_mnist found it a moment ago
                raise DatasetError(f"{source}: {idx.resource.filename} vanished while importing")
            target = data_dir / variant.name / found.name
            _copy(found, target)
            written.append(target)
    return written


def import_dataset(
    source: Path, data_dir: Path, dataset: str, *, verify: bool = True
) -> tuple[list[Path], bool]:
    """Check ``dataset``'s files in ``source`` and copy them into the cache root ``data_dir``.

    ``source`` has the layout ``fetch`` and ``synth`` write (or, for one
    MNIST-format dataset, the four IDX files directly in it). Official files
    must pass the official checksums unless ``verify`` is false; a dataset
    ``source`` marks synthetic is checked for its format only and stays marked
    synthetic in ``data_dir``. Returns the paths written and whether the
    dataset is synthetic. Nothing is copied unless every file passed.
    """
    synthetic = is_synthetic(source, dataset)
    verify = verify and not synthetic
    data_dir.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        written = _import_cifar10(source, data_dir, verify)
    else:
        written = _import_mnist(source, data_dir, dataset, verify)
    marker = synthetic_marker(data_dir, dataset)
    if synthetic:
        _copy(synthetic_marker(source, dataset), marker)
        written.append(marker)
    else:
        marker.unlink(missing_ok=True)
    return written, synthetic


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``orchard-data``."""
    parser = argparse.ArgumentParser(
        prog="orchard-data",
        description="Provision datasets for Orchard's clients, also on machines without "
        "internet: fetch (online), import (offline), synth (smoke tests).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_dir_help = "the clients' dataset cache (default: $ORCHARD_DATA_DIR, else ~/.cache)"

    def datasets_option(p: argparse.ArgumentParser, choices: Sequence[str], what: str) -> None:
        p.add_argument(
            "--dataset",
            action="append",
            choices=list(choices),
            help=f"{what} (repeatable; default: {', '.join(choices)})",
        )

    f = commands.add_parser("fetch", help="download the official files (checksummed) into DIR")
    f.add_argument("data_dir", nargs="?", type=Path, metavar="DIR", help=data_dir_help)
    datasets_option(f, DATASET_NAMES, "dataset to download")
    f.add_argument(
        "--mirror",
        default=None,
        help="base URL serving the files instead of their official sites "
        "(default: $ORCHARD_DATASET_MIRROR)",
    )
    i = commands.add_parser("import", help="check the files of SOURCE and copy them into DIR")
    i.add_argument("source", type=Path, metavar="SOURCE", help="a folder fetch or synth wrote")
    i.add_argument("data_dir", nargs="?", type=Path, metavar="DIR", help=data_dir_help)
    datasets_option(i, DATASET_NAMES, "dataset to import (default: those SOURCE holds)")
    i.add_argument(
        "--no-verify",
        action="store_true",
        help="accept official-format files whose checksums differ (re-packed copies)",
    )
    s = commands.add_parser("synth", help="write SYNTHETIC official-format files for smoke tests")
    s.add_argument("data_dir", nargs="?", type=Path, metavar="DIR", help=data_dir_help)
    datasets_option(s, SYNTHETIC_DATASETS, "dataset to generate")
    s.add_argument("--train", type=int, default=2000, help="training examples (default 2000)")
    s.add_argument("--test", type=int, default=500, help="test examples (default 500)")
    s.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    return parser


def _run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or default_data_dir()
    if args.command == "fetch":
        for dataset in args.dataset or DATASET_NAMES:
            paths = fetch_dataset(dataset, data_dir, mirror=args.mirror)
            print(f"{dataset}: {len(paths)} official file(s), checksums verified, in {data_dir}")
        return 0
    if args.command == "synth":
        for dataset in args.dataset or SYNTHETIC_DATASETS:
            paths = write_synthetic(
                data_dir, dataset, n_train=args.train, n_test=args.test, seed=args.seed
            )
            print(
                f"{dataset}: SYNTHETIC data ({len(paths) - 1} file(s), seed {args.seed}) in "
                f"{data_dir}, marked {paths[-1].name}: for smoke tests only"
            )
        return 0
    source: Path = args.source
    if not source.is_dir():
        raise DatasetError(f"{source}: no such folder")
    datasets = args.dataset or [d for d in DATASET_NAMES if _present(source, d)]
    if not datasets:
        raise DatasetError(
            f"{source} holds no dataset in the layout orchard-data writes "
            f"({CIFAR10_BINARY.filename}, {BATCHES_DIR}/, mnist/, fashion-mnist/); "
            "for a folder of IDX files name the dataset with --dataset"
        )
    for dataset in datasets:
        paths, synthetic = import_dataset(source, data_dir, dataset, verify=not args.no_verify)
        how = (
            "SYNTHETIC (format checked; for smoke tests only)"
            if synthetic
            else ("official checksums verified" if not args.no_verify else "NOT verified")
        )
        print(f"{dataset}: imported {len(paths)} file(s) into {data_dir}: {how}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command; the exit status (2: a problem the user can fix)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return _run(args)
    except (DatasetError, DownloadError, IdxFormatError, ValueError, OSError) as exc:
        print(f"orchard-data {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
