"""Shared fixtures: a tiny synthetic benchmark in the real on-disk formats, made once per session."""

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_SETS = ["--set", "source_size=32x18", "--set", "target_size=32x16", "--set", "eval_size=32x16",
             "--set", "dict_size=20", "--set", "num_workers=0", "--set", "progress=false"]


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    from cosuda.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("tiny_benchmark")
    generate(root, seed=0, config=SyntheticConfig(
        gta5_count=6, synthia_count=4, cityscapes_train_count=6, cityscapes_val_count=3,
        gta5_size=(64, 36), synthia_size=(64, 38), cityscapes_size=(64, 32)), progress=False)
    return root
