import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def astronaut_bgr():
    """A real photo shipped with scikit-image (NASA's portrait of Eileen Collins), as BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def random_model(tmp_path_factory):
    """A checkpoint with random weights (no trained model exists yet): real inference, meaningless labels."""
    from avemo_edge.checkpoint import save_checkpoint
    from avemo_edge.model import AVEmotionNet, ModelDims

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random32.pt"
    save_checkpoint(path, AVEmotionNet(ModelDims(face_size=32)))
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory, astronaut_bgr):
    """Generated H.264 + AAC (48 kHz stereo) clips of a real face photo, made once per session."""
    from media import make_clip

    d = tmp_path_factory.mktemp("clips")
    return {
        # face all along, speech from 0.5 s to 2.5 s
        "av": make_clip(d / "av.mp4", astronaut_bgr, 3.0, speech=[(0.5, 2.5)]),
        # face gone from 1.0 s to 2.0 s
        "blink": make_clip(d / "blink.mp4", astronaut_bgr, 3.0, face_visible=lambda t: not 1.0 <= t < 2.0),
        "mute": make_clip(d / "mute.mp4", astronaut_bgr, 2.0, audio=False),
    }
