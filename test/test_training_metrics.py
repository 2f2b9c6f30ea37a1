"""Metric functions on hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from endoarss_ros.metrics import classification_metrics, segmentation_metrics
from endoarss_ros.metrics.tracker import MetricTracker, confusion_matrix, format_table


def test_confusion_matrix_rows_truth_columns_prediction_and_ignore():
    target = torch.tensor([0, 0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_classification_metrics_by_hand():
    cm = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 1]])
    m = classification_metrics(cm, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(6 / 10)
    # precision = diag / column sums, recall = diag / row sums
    assert [m["per_class"][n]["precision"] for n in "abc"] == pytest.approx([3 / 4, 2 / 3, 1 / 3])
    assert [m["per_class"][n]["recall"] for n in "abc"] == pytest.approx([3 / 4, 1 / 2, 1 / 2])
    f1 = [3 / 4, 4 / 7, 2 / 5]
    assert [m["per_class"][n]["f1"] for n in "abc"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert [m["per_class"][n]["support"] for n in "abc"] == [4, 4, 2]


def test_classification_empty_class_gives_zero_not_nan():
    m = classification_metrics(np.array([[2, 0], [0, 0]]))
    assert m["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(0.5)


def test_segmentation_metrics_by_hand_background_excluded_and_included():
    # truth 0,0,0,1,1,2 / prediction 0,0,1,1,1,0; class 3 never appears (no IoU, left out of means)
    cm = np.zeros((4, 4), int)
    cm[:3, :3] = [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    m = segmentation_metrics(cm, ["bg", "x", "y", "z"])
    assert m["iou"]["bg"] == pytest.approx(2 / 4)  # TP 2, FP 1, FN 1
    assert m["iou"]["x"] == pytest.approx(2 / 3)  # TP 2, FP 1, FN 0
    assert m["iou"]["y"] == 0.0
    assert m["iou"]["z"] is None and m["dice"]["z"] is None
    assert m["dice"]["bg"] == pytest.approx(4 / 6) and m["dice"]["x"] == pytest.approx(4 / 5)
    assert m["miou_fg"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["miou_all"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert m["mdice_fg"] == pytest.approx((4 / 5 + 0) / 2)
    assert m["mdice_all"] == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["background_class"] == "bg"


def test_tracker_matches_direct_computation_and_table_labels_background():
    torch.manual_seed(0)
    seg = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    act = torch.randn(2, 2)
    labels = torch.tensor([0, 1])
    tr = MetricTracker(3, 2)
    tr.update(seg, masks, act, labels)
    res = tr.result(["bg", "a", "b"], ["p", "q"])
    cm = confusion_matrix(seg.argmax(1), masks, 3)
    assert res["segmentation"]["confusion_matrix"] == cm.tolist()
    assert res["activity"]["count"] == 2
    table = format_table(res)
    assert "background excluded" in table and "included" in table
    assert not math.isnan(res["segmentation"]["miou_all"])
