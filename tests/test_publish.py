"""Publishers on a full disk (issue #16 row 9), and the text line with several faces."""

import json
import os
import time

import pytest

from avemo_edge.publish import FanOut, JsonLinesPublisher, format_text


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


def test_text_line_names_each_tracked_face_when_there_are_several():
    step = {"t": 1.2, "label": "happy", "probs": {"happy": 0.61}, "face": True, "speech": True, "alpha": 0.5}
    step.update(beta=0.4, latency_ms=9.0, voice_face=3, faces=[{"id": 3, "label": "happy"}, {"id": 5, "label": "sad"}])
    assert format_text(step).endswith("9 ms  faces 3*:happy 5:sad")
    step["faces"] = step["faces"][:1]  # one face: the line of schema 1
    assert format_text(step).endswith("beta 0.40  9 ms")
