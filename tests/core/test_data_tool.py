"""orchard-data: synth, import and fetch as a person on an offline site uses them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchard.data.client_data import DataSettings, load_split
from orchard.data.synth import is_synthetic, write_synthetic
from orchard.data.tool import main

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_synth_then_import_gives_a_cache_the_clients_read_and_label_synthetic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    source, cache = tmp_path / "carry", tmp_path / "cache"
    assert main(["synth", str(source), "--train", "100", "--test", "20"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["import", str(source), str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.count("SYNTHETIC") == 3, out
    for dataset in ("cifar10", "mnist", "fashion-mnist"):
        assert is_synthetic(cache, dataset)
        with caplog.at_level(logging.WARNING):
            images, labels = load_split(DataSettings(dataset=dataset, data_dir=cache), "train")
        assert len(images) == len(labels) >= 100
        assert f"{dataset} in {cache} is SYNTHETIC" in caplog.text


def test_import_refuses_files_that_are_not_official_and_copies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, cache = tmp_path / "carry", tmp_path / "cache"
    write_synthetic(source, "mnist", n_train=50, n_test=20)
    (source / "SYNTHETIC-mnist.txt").unlink()  # now it claims to be the real MNIST
    assert main(["import", str(source), str(cache)]) == 2
    assert "not the official" in capsys.readouterr().err
    assert not (cache / "mnist").exists()


def test_import_of_official_files_replaces_a_synthetic_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{FASHION}: Debian's dataset-fashion-mnist is not installed")
    cache = tmp_path / "cache"
    write_synthetic(cache, "fashion-mnist", n_train=50, n_test=20)
    assert main(["import", str(FASHION), str(cache), "--dataset", "fashion-mnist"]) == 0
    assert "official checksums verified" in capsys.readouterr().out
    assert not is_synthetic(cache, "fashion-mnist")
    _, labels = load_split(DataSettings(dataset="fashion-mnist", data_dir=cache), "test")
    assert len(labels) == 10_000


def test_fetch_failure_names_the_url_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = "http://127.0.0.1:9/nothing"
    assert main(["fetch", str(tmp_path), "--dataset", "mnist", "--mirror", mirror]) == 2
    err = capsys.readouterr().err
    assert f"{mirror}/train-images-idx3-ubyte.gz" in err and "ORCHARD_DATASET_MIRROR" in err
    assert not list(tmp_path.rglob("*.gz"))


def test_import_of_an_empty_folder_says_what_it_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path), str(tmp_path / "cache")]) == 2
    assert "--dataset" in capsys.readouterr().err
