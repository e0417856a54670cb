"""Pseudo-label quality against the target labels, and the paper's metric per task."""
import numpy as np
import pytest
import torch
from PIL import Image

from cosuda.paper_results import paper_metric
from cosuda.pseudo import score_pseudo_labels


class _Target:
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"label": self.labels[i], "name": f"city/img{i}_leftImg8bit.png"}


def test_coverage_accuracy_and_miou_of_written_pseudo_labels(tmp_path):
    label = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 1]])
    pseudo = np.array([[0, 255, 1, 0], [0, 0, 255, 1]], dtype=np.uint8)  # 5 of 7 labelled covered, 4 right
    (tmp_path / "city").mkdir()
    Image.fromarray(pseudo).save(tmp_path / "city" / "img0_leftImg8bit.png")
    q = score_pseudo_labels(tmp_path, _Target([label]), num_classes=2)
    assert q["coverage"] == pytest.approx(100 * 5 / 7)
    assert q["accuracy"] == pytest.approx(100 * 4 / 5)
    # class 0: tp 2, fp 1 (a 1 labelled 0); class 1: tp 2, fn 1 -> IoU 2/3 each
    assert q["miou19"] == pytest.approx(100 * 2 / 3)
    assert q["per_class_precision"] == [66.67, 100.0]  # rounded to 2 decimals


def test_a_missing_pseudo_label_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="img0"):
        score_pseudo_labels(tmp_path, _Target([torch.zeros(2, 2, dtype=torch.long)]))


def test_the_papers_metric_per_task():
    assert paper_metric("gta5") == "miou19"
    assert paper_metric("synthia", "deeplabv2") == "miou13" and paper_metric("synthia", "fcn8s") == "miou16"
    with pytest.raises(ValueError):
        paper_metric("kitti")
