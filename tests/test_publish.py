"""Publishers on a full disk (issue #16 row 9)."""

import json
import os
import time

import pytest

from avemo_edge.publish import FanOut, JsonLinesPublisher


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is absent")
def test_full_disk_is_counted_and_the_other_publishers_still_stop(tmp_path, caplog):
    full = JsonLinesPublisher("/dev/full")
    good = JsonLinesPublisher(tmp_path / "out.jsonl")
    fan = FanOut([full, good])
    for i in range(5):
        fan.publish("state", {"step": i})
    deadline = time.monotonic() + 5
    while (full.dropped + full.sent < 5 or good.sent < 5) and time.monotonic() < deadline:
        time.sleep(0.02)
    fan.stop()  # raised OSError (ENOSPC) at close before, and the publishers after it were not stopped
    assert full.dropped == 5 and full.sent == 0
    assert [json.loads(line)["step"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == list(range(5))
    said = [r.getMessage() for r in caplog.records if "/dev/full" in r.getMessage()]
    assert said and all("No space left on device" in m for m in said)
