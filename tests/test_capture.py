"""Live OpenCV sources against a real stalling stream (an MJPEG-over-HTTP server on loopback); file frames to BGR."""

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

# Run in a child process: before the fix a stalled stream's reopen crashed the interpreter (SIGSEGV).
STALLING_STREAM = textwrap.dedent(
    """
    import http.server, socketserver, threading, time
    import cv2, numpy as np
    from avemo_edge.capture import OpenCVSource, SourceWorker

    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
    hold = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # five JPEG parts, then the connection stays open and silent
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for _ in range(5):
                head = b"--frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(jpeg)
                self.wfile.write(head + jpeg + b"\\r\\n")
                self.wfile.flush()
                time.sleep(0.04)
            hold.wait(60)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = Server(("127.0.0.1", 0), Stalling)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    events = []
    src = OpenCVSource(f"http://127.0.0.1:{srv.server_address[1]}/stream.mjpg")
    worker = SourceWorker(src, lambda item: events.append("item"), lambda uri, state, detail: events.append(state),
                          lost_after=0.5, retry_min=0.1, retry_max=0.1)
    worker.start()
    time.sleep(6)
    print(events.count("open"), events.count("lost"), events.count("item"), src.abandoned, flush=True)
    """
)


def test_stalled_http_stream_is_reopened_without_crashing():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", STALLING_STREAM], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    opens, lost, items, abandoned = map(int, r.stdout.split())
    assert opens >= 2 and lost >= 1 and items >= 2  # frames came, the stall was noticed and the stream reopened
    assert abandoned >= 1  # the reader blocked in the stalled read was left with its own capture


# --- issue #16 rows 13 and 14 -------------------------------------------------------------------
REFUSED_STREAM = textwrap.dedent(
    """
    import logging, socket, sys, time
    from avemo_edge.capture import OpenCVSource, SourceWorker

    logging.basicConfig(level=logging.INFO, format="LOG %(message)s", stream=sys.stderr)
    log = logging.getLogger("avemo_edge")
    with socket.socket() as s:  # a loopback port nobody listens on: every open is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    states = []

    def on_state(uri, state, detail):
        states.append(state)
        if state == "lost":
            log.warning("source %s lost: %s", uri, detail)  # the daemon's one line per retry

    worker = SourceWorker(OpenCVSource(f"http://127.0.0.1:{port}/x.mjpg"), print, on_state,
                          retry_min=0.1, retry_max=0.1)
    worker.start()
    time.sleep(1.0)
    worker.stop()
    print(states.count("lost"), flush=True)
    """
)


def test_camera_retry_is_one_log_line_without_opencv_noise():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", REFUSED_STREAM], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    retries = int(r.stdout.split()[-1])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert retries >= 2
    # before the fix each retry added OpenCV's "[ WARN:0@...] global cap.cpp ..." and FFmpeg's "[tcp @ ...]"
    assert all(line.startswith("LOG source ") for line in lines), "\n".join(lines[:12])
    assert len(lines) == retries


def test_file_uris_are_percent_decoded_and_accept_localhost(tmp_path):
    from avemo_edge.capture import file_uri_path, open_sources

    spaced = tmp_path / "my clip #1.mp4"
    spaced.write_bytes(b"")
    assert file_uri_path(f"file://{tmp_path}/my%20clip%20%231.mp4") == spaced
    assert file_uri_path(f"file://localhost{tmp_path}/my%20clip%20%231.mp4") == spaced
    assert file_uri_path(f"file://{spaced}") == spaced  # already decoded: kept
    literal = tmp_path / "50%25.mp4"  # a name that really holds "%25"
    literal.write_bytes(b"")
    assert file_uri_path(f"file://{literal}") == literal
    assert file_uri_path("file://clip.mp4") == Path("clip.mp4")  # relative to the working folder, as before
    (source,) = open_sources(f"file://localhost{tmp_path}/my%20clip%20%231.mp4", "none")
    assert source.path == spaced


def test_a_directory_is_a_directory_not_missing(tmp_path):
    import pytest

    from avemo_edge.capture import SourceError, file_source

    for name in ("folder.mp4", "folder.png"):  # FileSource and ImageSource
        (tmp_path / name).mkdir()
        with pytest.raises(SourceError, match=rf"file {tmp_path}/{name} is a directory, not a file"):
            file_source(tmp_path / name).open()
    with pytest.raises(SourceError, match="does not exist"):
        file_source(tmp_path / "missing.mp4").open()


def test_bgr_converter_gives_pyav_s_own_pixels_and_the_file_source_uses_it(tmp_path, astronaut_bgr):
    """One swscale context for all frames (media.BGRConverter) gives what each frame's own
    `to_ndarray(format="bgr24")` gives, across clips of different sizes through one converter;
    the daemon's file source delivers exactly those frames."""
    import av
    import numpy as np
    from media import make_clip

    from avemo_edge.capture import SAMPLE_CLIP, EndOfStream, FileSource, Frame
    from avemo_edge.media import BGRConverter

    small = make_clip(tmp_path / "small.mp4", astronaut_bgr[::3, ::3].copy(), 1.0, audio=False)
    to_bgr, compared = BGRConverter(), 0
    for clip in (SAMPLE_CLIP, small, SAMPLE_CLIP):
        with av.open(str(clip)) as c:
            for frame in c.decode(c.streams.video[0]):
                got = to_bgr(frame)
                assert got.dtype == np.uint8 and got.shape == (frame.height, frame.width, 3)
                assert np.array_equal(got, frame.to_ndarray(format="bgr24"))
                compared += 1
    assert compared > 100
    with av.open(str(SAMPLE_CLIP)) as c:
        want = [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0]) if f.pts is not None]
    src = FileSource(SAMPLE_CLIP, realtime=False, audio=False)
    src.open()
    got = []
    with contextlib.suppress(EndOfStream):
        while True:
            item = src.read(1.0)
            if isinstance(item, Frame):
                got.append(item.image)
    src.close()
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
