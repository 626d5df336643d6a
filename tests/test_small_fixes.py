"""Small fixes from the issue tracker: each case failed before its fix."""
from __future__ import annotations

import pytest

from worklab.config import PredictSchedule
from worklab.errors import UserError


def test_predict_without_run_or_model_asks_for_one_of_them():
    with pytest.raises(UserError, match="needs one of schedule.run=RUN") as refused:
        PredictSchedule(images="images.json")
    assert "not both" not in str(refused.value) and "neither" in str(refused.value)
    with pytest.raises(UserError, match="schedule.run=a or schedule.model=b, not both"):
        PredictSchedule(images="images.json", run="a", model="b")
