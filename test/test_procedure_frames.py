"""Frame-model training data from whole synthetic procedures (issue 26): what the demo plays, held-out sets refused."""
from __future__ import annotations

import numpy as np
import pytest


def test_procedure_frames_are_labelled_with_the_ongoing_activity_and_hold_out_the_temporal_sets():
    from endoarss_ros.data.procedures import ProcedureSettings, numbered_procedure
    from endoarss_ros.training.config import DataConfig, SyntheticConfig
    from endoarss_ros.training.data import TEMPORAL_PROCEDURE_SETS, ProcedureFrames, build_split

    ds = ProcedureFrames(500, 2, 6, (48, 48))
    assert len(ds) == 12 and ds.images.shape == (12, 48, 48, 3) and set(ds.activities) <= {0, 1, 2}
    # frame j of procedure 0 is its frame at the sampled time: the label is the timeline's activity there
    _, proc = numbered_procedure(500, 0, ProcedureSettings(size=(256, 320), ambiguity_rate=0.2))
    times = np.sort(np.random.default_rng([500, 0, 3]).uniform(0, proc.segments[-1].end, 6))
    assert ds.activities[:6] == [proc.activity_at(float(t)).activity for t in times]
    sample = ds[0]
    assert sample["image"].shape == (3, 48, 48) and int(sample["activity"]) == ds.activities[0]
    for held_out in TEMPORAL_PROCEDURE_SETS:
        with pytest.raises(ValueError, match="held out for the temporal model"):
            ProcedureFrames(held_out, 1, 1, (48, 48))

    cfg = DataConfig(synthetic=SyntheticConfig(train=3, val=3, test=3, render_size=64, procedures=2,
                                               val_procedures=1, per_procedure=2))
    train = build_split(cfg, "train", (48, 48))
    val = build_split(cfg, "val", (48, 48))
    test = build_split(cfg, "test", (48, 48))
    assert (len(train), len(val), len(test)) == (3 + 4, 3 + 2, 3)  # the test split stays single frames
    assert len(train.activities) == 7 and train[6]["path"].startswith("procedure:500:")
    assert val[4]["path"].startswith("procedure:501:")
