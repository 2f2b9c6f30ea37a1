"""Class definitions: MTLESD ids, colours, activity->objects table, YAML round trip."""
import pytest

from endoarss_ros.data import classes as C
from endoarss_ros.data.classes import MTLESD, ClassSet, generic_class_set, load_class_set


def test_mtlesd_ids_follow_released_order():
    assert MTLESD.seg_classes == ("Background", "FPCW Forceps", "Mucosal Flaps", "FPCW Knife",
                                  "Electric Knife", "Incision Area", "Marking Area")
    assert MTLESD.activity_classes == ("Marking", "Circumferential Incision", "Submucosal Dissection")
    assert MTLESD.seg_classes[C.ELECTRIC_KNIFE] == "Electric Knife"
    assert MTLESD.activity_classes[C.SUBMUCOSAL_DISSECTION] == "Submucosal Dissection"


def test_activity_objects_table():
    assert MTLESD.activity_objects[C.MARKING] == {C.MARKING_AREA, C.ELECTRIC_KNIFE}
    assert MTLESD.activity_objects[C.CIRCUMFERENTIAL_INCISION] == {C.INCISION_AREA, C.MARKING_AREA,
                                                                   C.ELECTRIC_KNIFE}
    assert MTLESD.activity_objects[C.SUBMUCOSAL_DISSECTION] == {C.MUCOSAL_FLAPS, C.FPCW_FORCEPS, C.FPCW_KNIFE}


def test_colors_distinct_background_black():
    assert MTLESD.seg_colors[0] == (0, 0, 0)
    assert len(set(MTLESD.seg_colors)) == MTLESD.num_seg_classes
    assert len(MTLESD.palette()) == 3 * MTLESD.num_seg_classes


def test_yaml_round_trip(tmp_path):
    path = MTLESD.save_yaml(tmp_path / "classes.yaml")
    assert ClassSet.load_yaml(path) == MTLESD
    assert load_class_set(tmp_path) == MTLESD
    fallback = generic_class_set(3, 2)
    assert load_class_set(tmp_path / "missing.yaml", default=fallback) == fallback


def test_yaml_names_only_gets_default_colors(tmp_path):
    (tmp_path / "c.yaml").write_text("seg_classes: [bg, tool, tissue]\nactivity_classes: [a, b]\n")
    cs = ClassSet.load_yaml(tmp_path / "c.yaml")
    assert cs.num_seg_classes == 3 and cs.num_activities == 2
    assert cs.seg_colors[0] == (0, 0, 0) and len(set(cs.seg_colors)) == 3


def test_validation():
    with pytest.raises(ValueError):
        ClassSet(("a", "b"), ((0, 0, 0),), ("x",))
    with pytest.raises(ValueError):
        ClassSet(("a",), ((0, 0, 300),), ("x",))


def test_released_model_classes_get_the_mtlesd_overlay_colours():
    """A released checkpoint's classes (model layer) are the data layer's MTLESD names, so overlays use its colours."""
    import numpy as np

    from endoarss_ros.inference import class_colors
    from endoarss_ros.model import ModelConfig

    names = ModelConfig.official_mtlesd().seg_classes
    assert list(names) == list(MTLESD.seg_classes)
    np.testing.assert_array_equal(class_colors(names), np.asarray(MTLESD.seg_colors, np.uint8))
