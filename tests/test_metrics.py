"""cosuda.metrics: confusion matrix, IoU, evaluation protocol, tables; cosuda.paper_results."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from cosuda.labels import CLASS_NAMES, SYNTHIA13, SYNTHIA16
from cosuda.metrics import (ConfusionMeter, confusion_matrix, evaluate, iou_markdown,
                            iou_table, mean_iou, per_class_iou)
from cosuda.paper_results import PAPER_RESULTS, paper_miou

torch.set_num_threads(2)


def test_confusion_matrix_hand_example_numpy_and_torch():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    expected = np.array([[1, 1, 0],   # rows: ground truth, columns: prediction
                         [0, 2, 0],
                         [1, 0, 0]])
    conf = confusion_matrix(pred, target, num_classes=3)
    assert conf.dtype == np.int64 and np.array_equal(conf, expected)
    assert np.array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8), 3),
                          expected)


def test_iou_on_the_hand_example_and_nan_safety():
    conf = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    iou = per_class_iou(conf)
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])  # class 3 in neither prediction nor ground truth
    assert mean_iou(conf) == pytest.approx(1 / 3)  # NaN ignored
    assert mean_iou(conf, classes=[0, 1]) == pytest.approx(0.5)
    assert math.isnan(mean_iou(np.zeros((2, 2), dtype=np.int64)))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 3)
    with pytest.raises(ValueError, match="target holds 7"):
        confusion_matrix(np.zeros(4, int), np.array([0, 1, 7, 255]), 3)
    with pytest.raises(ValueError, match="pred holds -1"):
        confusion_matrix(np.array([0, -1, 0, 0]), np.zeros(4, int), 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.zeros(4), np.zeros(4, int), 3)
    with pytest.raises(ValueError, match="square"):
        per_class_iou(np.zeros((2, 3)))


def test_meter_merge_equals_one_pass():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randint(0, 5, (6, 7), generator=g) for _ in range(4)]
    targets = [torch.randint(0, 6, (6, 7), generator=g) for _ in range(4)]
    for t in targets:
        t[t == 5] = 255  # some ignored pixels
    one, a, b = ConfusionMeter(5), ConfusionMeter(5), ConfusionMeter(5)
    for i, (p, t) in enumerate(zip(preds, targets)):
        one.update(p, t)
        (a if i % 2 else b).update(p, t)
    assert np.array_equal(a.merge(b).compute(), one.compute())
    whole = confusion_matrix(torch.stack(preds), torch.stack(targets), 5)
    assert np.array_equal(one.compute(), whole)
    one.reset()
    assert one.compute().sum() == 0


class CopyModel(nn.Module):
    """Predicts the class stored in the image's red channel, at half resolution."""

    def forward(self, x):
        cls = (x[:, 0] * 10).round().long()[:, ::2, ::2]
        logits = nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float() * 10
        return [logits], logits

    def upsample(self, logits, size):
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def test_evaluate_upsamples_to_the_label_resolution():
    classes = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 1, 1], [2, 2, 1, 1]]).repeat_interleave(2, 0) \
        .repeat_interleave(2, 1)                                         # (8, 8) blocks of 2x2 pixels
    image = torch.stack([classes / 10.0, torch.zeros(8, 8), torch.zeros(8, 8)])
    label = classes.repeat_interleave(2, 0).repeat_interleave(2, 1)    # labels at 16x16 > image size
    label[0, 0] = 255
    data = [{"image": image, "label": label, "name": "a.png"}] * 3 + \
           [{"image": image, "label": torch.full_like(label, 2), "name": "b.png"}]
    model = CopyModel().train()
    result = evaluate(model, data, progress=False, max_items=3)
    assert model.training  # mode restored
    conf = result["confusion"]
    assert conf.shape == (3, 3) and conf.sum() == 3 * (16 * 16 - 1)
    assert np.array_equal(np.diag(conf), conf.sum(1))  # every labelled pixel correct
    assert result["per_class_iou"].tolist() == [100.0, 100.0, 100.0]
    assert result["miou19"] == 100.0
    worse = evaluate(model, data, progress=False, batch_size=2)
    assert worse["miou19"] < 100.0 and worse["confusion"].sum() == 4 * 16 * 16 - 3


def test_iou_tables_are_laid_out_like_the_paper():
    r2 = PAPER_RESULTS["table2"]
    text = iou_table({"Ours (R)": r2["deeplabv2"]["per_class_iou"] | {"mIoU": r2["deeplabv2"]["mIoU"]},
                      "mine": np.full(19, np.nan)})
    header, ours, mine = text.splitlines()
    assert header.split() == ["road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign",
                              "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
                              "train", "motorbike", "bicycle", "mIoU"]
    assert ours.split()[-2:] == ["34.0", "49.7"]  # bicycle, then the published mIoU
    assert set(mine.split()[1:]) == {"-"}
    r3 = PAPER_RESULTS["table3"]
    text = iou_table({"Ours (V)": r3["fcn8s"]["per_class_iou"]}, classes=SYNTHIA16)
    header, row = text.splitlines()
    assert header.split()[-2:] == ["mIoU16", "mIoU13"] and len(header.split()) == 18
    assert "terrain" not in header and row.split()[-2] == "41.2"
    md = iou_markdown({"x": np.arange(19.0)})
    assert md.splitlines()[0].startswith("| | road |") and md.splitlines()[2].endswith("| 9.0 |")
    with pytest.raises(ValueError, match="19"):
        iou_table({"short": [1.0, 2.0]})


def test_paper_numbers_are_consistent():
    """The transcribed per-class values average to the published means."""
    for arch in ("deeplabv2", "fcn8s"):
        row = PAPER_RESULTS["table2"][arch]
        assert list(row["per_class_iou"]) == list(CLASS_NAMES)
        assert np.mean(list(row["per_class_iou"].values())) == pytest.approx(row["mIoU"], abs=0.06)
    r3 = PAPER_RESULTS["table3"]
    vals = r3["deeplabv2"]["per_class_iou"]
    assert np.mean([vals[CLASS_NAMES[c]] for c in SYNTHIA13]) == pytest.approx(r3["deeplabv2"]["mIoU13"], abs=0.06)
    vals = r3["fcn8s"]["per_class_iou"]
    assert np.mean([vals[CLASS_NAMES[c]] for c in SYNTHIA16]) == pytest.approx(r3["fcn8s"]["mIoU16"], abs=0.06)
    assert paper_miou("gta5", "deeplabv2", "ours") == 49.7
    assert paper_miou("synthia", "fcn8s", "ours11") == 36.5
    assert paper_miou("gta5", "deeplabv2", "source-only") is None
    assert PAPER_RESULTS["table6"]["t_cos"][0.6] == PAPER_RESULTS["table6"]["dict_size"][2500] == 49.7
