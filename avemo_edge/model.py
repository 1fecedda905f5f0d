"""The audio-visual emotion network of the paper (section 3.2), in torch only, with no I/O.

    face (B, C, S, S) --ResNet-18--> v (B, 128), L2-normalised
    log-mel slice (B, 64, N) --3 conv--> (B, 512) --2-layer LSTM--> (B, 128) = a
    z = [v; a];  alpha = sigmoid(W_a z + b_a);  beta = sigmoid(W_b z + b_b)
    f = alpha v + beta a  --128 -> 64 (ReLU, dropout) -> 7--> logits

Streaming state is explicit: `step(face, audio, state)` returns `(logits, alpha, beta, state)`,
and `forward` over a whole clip gives the same numbers as stepping through it (for the
unidirectional model). A missing modality is a mask: its embedding is zeroed, its gate is
forced to 0, and when audio is missing the LSTM state passes through unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .audio import STEP_SECONDS

# neutral and calm are merged (paper 3.1); the order is the model's output order.
EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")

# LSTM (h, c), each (rows, B, hidden): the LSTM's layers * directions rows, then, when the audio
# branch pools (`ModelDims.audio_pool_s`), POOL_ROWS more that hold the pooled statistics.
State = tuple[torch.Tensor, torch.Tensor]
POOL_ROWS = 2


@dataclass(frozen=True)
class ModelDims:
    """Everything needed to rebuild the network; saved inside every checkpoint."""

    face_size: int = 48
    face_channels: int = 1
    # "imagenet": 7x7/2 conv + 3x3/2 max-pool, for the paper's 224 px faces;
    # "small": one 3x3/2 conv and no max-pool, for 48-96 px: a 48 px face reaches layer4 at 3x3,
    # the same path a 96 px face takes through the ImageNet stem;
    # "full": one 3x3/1 conv, no max-pool (as CIFAR ResNets): layer1 sees the face at full
    # resolution and a 48 px face reaches layer4 at 6x6, for 4x the compute of "small".
    face_stem: str = "small"
    # channels of ResNet-18's first stage (64 in He et al.); each later stage doubles them. A
    # narrower network keeps the paper's depth and block structure at a fraction of the cost.
    face_width: int = 64
    # True: the face and its mirror image go through the ResNet together and their pooled features
    # are averaged, so the branch cannot tell a face from its mirror (left/right is no emotion);
    # twice the face stage's compute, the same weights (a checkpoint can be switched either way)
    face_mirror: bool = False
    n_mels: int = 64
    # Time constant (s) of the causal per-band mean normalisation of the log-mel stream that
    # the runtime applies before this network (`audio.LevelNormalizer`); 0: none (older models).
    audio_norm_s: float = 0.0
    # what it subtracts: "band" (each band's running mean) or "level" (the running level alone)
    audio_norm: str = "band"
    slice_frames: int = 10
    embed_dim: int = 128
    lstm_hidden: int = 128
    lstm_layers: int = 2
    bidirectional: bool = False
    # Time constant (s) of the audio branch's causal statistics pooling; 0: none (older models).
    # When set, each step's embedding also sees a leaky, learned-weight running mean and standard
    # deviation of its CNN features over the last seconds (docs/DESIGN.md, "Pooled statistics"),
    # carried in POOL_ROWS extra rows of the (h, c) state, so the exported graphs keep their inputs.
    audio_pool_s: float = 0.0
    fusion_hidden: int = 64
    n_classes: int = len(EMOTIONS)
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if self.audio_norm not in ("band", "level"):
            raise ValueError(f"audio_norm must be 'band' or 'level', not {self.audio_norm!r}")
        if self.face_stem not in ("imagenet", "small", "full"):
            raise ValueError(f"face_stem must be 'imagenet', 'small' or 'full', not {self.face_stem!r}")
        if self.face_width < 8 or self.face_width % 8:
            raise ValueError(f"face_width must be a positive multiple of 8, not {self.face_width}")
        if self.face_channels not in (1, 3):
            raise ValueError(f"face_channels must be 1 (grey) or 3 (RGB), not {self.face_channels}")
        min_size = 32 if self.face_stem == "imagenet" else 16
        if self.face_size < min_size:
            raise ValueError(
                f"face_size {self.face_size} is too small for the {self.face_stem!r} stem (min {min_size})"
            )
        if self.n_mels % 8:
            raise ValueError(f"n_mels must be a multiple of 8 (three 2x frequency poolings), not {self.n_mels}")
        if self.slice_frames < 1 or self.lstm_layers < 1:
            raise ValueError("slice_frames and lstm_layers must be at least 1")
        if self.audio_pool_s < 0:
            raise ValueError(f"audio_pool_s must be 0 (off) or a time constant in seconds, not {self.audio_pool_s}")

    @property
    def lstm_rows(self) -> int:
        return self.lstm_layers * (2 if self.bidirectional else 1)

    def state_shape(self, batch: int = 1) -> tuple[int, int, int]:
        """The shape of each of h and c: the LSTM's rows, then the pooled statistics' rows."""
        return (self.lstm_rows + (POOL_ROWS if self.audio_pool_s else 0), batch, self.lstm_hidden)


PAPER_DIMS = ModelDims(face_size=224, face_channels=3, face_stem="imagenet")


# --- visual branch: ResNet-18 (He et al. 2016), as torchvision's resnet.py -----------------
def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class VisualEncoder(nn.Module):
    """ResNet-18 (BasicBlock x [2, 2, 2, 2]) without its 1000-way head, projected to 128-D."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        c, w = dims.face_channels, dims.face_width
        if dims.face_stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(c, w, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )  # fmt: skip
        else:
            stride = 1 if dims.face_stem == "full" else 2
            self.stem = nn.Sequential(conv3x3(c, w, stride=stride), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.layer1 = self._make_layer(w, w, stride=1)
        self.layer2 = self._make_layer(w, 2 * w, stride=2)
        self.layer3 = self._make_layer(2 * w, 4 * w, stride=2)
        self.layer4 = self._make_layer(4 * w, 8 * w, stride=2)
        self.proj = nn.Linear(8 * w, dims.embed_dim)
        self.mirror = dims.face_mirror
        # the columns reversed, as a gather (ONNX Gather runs on every backend; no negative-step slice)
        self.register_buffer("_reverse", torch.arange(dims.face_size - 1, -1, -1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _make_layer(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.mirror:
            x = torch.cat([x, x.index_select(-1, self._reverse)])  # (2B, C, S, S): faces, then mirrors
        x = self.stem(x)  # (B, W, S/4, S/4) imagenet stem, (B, W, S/2, S/2) small, (B, W, S, S) full
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8W, s, s)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 8W)
        if self.mirror:
            x = 0.5 * (x[:n] + x[n:])
        return F.normalize(self.proj(x), dim=-1)  # (B, 128), unit length (paper 3.2)


# --- audio branch: 3 conv layers + stateful LSTM ----------------------------------------------
def _conv_bn_lrelu_pool(cin: int, cout: int, k: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01, inplace=True),
        nn.MaxPool2d(pool),
    )  # fmt: skip


class AudioEncoder(nn.Module):
    """Per-step CNN on a (64, N) log-mel slice, then an LSTM across steps, projected to 128-D.

    The paper's strides (2, 2, 2 plus a 2x2 max-pool after each conv) would shrink a 10-frame
    slice to nothing along time after the first layer. Here the convolutions keep stride 1 and
    only the pooling reduces: 2x2 after the first conv, then 2x1 (frequency only) after the
    second and third, and the remaining time axis is averaged. A (64, 10) slice becomes
    (32, 64, 5) -> (32, 32, 5) -> (64, 8, 5) -> 64 x 8 = 512 features per step.
    """

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        # Per-band normalisation statistics from the training set (paper 3.1.3), set by training.
        self.register_buffer("mel_mean", torch.zeros(dims.n_mels))
        self.register_buffer("mel_std", torch.ones(dims.n_mels))
        self.cnn = nn.Sequential(
            _conv_bn_lrelu_pool(1, 32, 5, (2, 2)),
            _conv_bn_lrelu_pool(32, 32, 3, (2, 1)),
            _conv_bn_lrelu_pool(32, 64, 3, (2, 1)),
        )
        self.n_features = 64 * (dims.n_mels // 8)
        self.lstm = nn.LSTM(
            self.n_features, dims.lstm_hidden, dims.lstm_layers, batch_first=True,
            dropout=dims.dropout if dims.lstm_layers > 1 else 0.0, bidirectional=dims.bidirectional,
        )  # fmt: skip
        self.drop = nn.Dropout(dims.dropout)  # after the last LSTM layer too (paper: after each)
        width = dims.lstm_hidden * (2 if dims.bidirectional else 1)
        self.pool = StatsPool(self.n_features, dims.lstm_hidden, dims.audio_pool_s) if dims.audio_pool_s else None
        self.proj = nn.Linear(width + (2 * dims.lstm_hidden if self.pool else 0), dims.embed_dim)

    def slice_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 64, N) log-mel -> (B, T, 512) per-step features."""
        b, t, m, n = x.shape
        x = (x - self.mel_mean[:, None]) / self.mel_std[:, None]
        x = self.cnn(x.reshape(b * t, 1, m, n))  # (B*T, 64, 8, N/2)
        return x.mean(dim=-1).reshape(b, t, self.n_features)  # (B, T, 512)

    def _split(self, state: State) -> tuple[State, State]:
        """(h, c) -> the LSTM's rows and the pool's rows (empty when the branch does not pool)."""
        r = self.dims.lstm_rows
        return (state[0][:r], state[1][:r]), (state[0][r:], state[1][r:])

    def _head(
        self, feats: torch.Tensor, out: torch.Tensor, lstm: State, pool: State, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, State]:
        if self.pool is not None:
            stats, pool = self.pool(feats, pool, valid)
            out = torch.cat([out, stats.to(out.dtype)], dim=-1)
            lstm = (torch.cat([lstm[0], pool[0].to(lstm[0].dtype)]), torch.cat([lstm[1], pool[1].to(lstm[1].dtype)]))
        return self.proj(self.drop(out)), lstm

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """(B, T, 64, N) and (h, c) -> embeddings (B, T, 128) and the state after step T."""
        lstm, pool = self._split(state)
        feats = self.slice_features(x)
        out, lstm = self.lstm(feats, lstm)  # (B, T, H * directions)
        return self._head(feats, out, lstm, pool, None)

    def forward_padded(self, x: torch.Tensor, lengths: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """A batch of streams of different lengths, each padded at its end: (B, T, 64, N), lengths (B,) >= 1.

        The same numbers as running each stream alone for its own length (the state returned is
        each stream's state after its last real step), with two consequences for training: the
        CNN's batch normalisation sees only real slices (padding would distort its batch
        statistics), and the whole batch goes through the CNN and the LSTM in one call.
        """
        b, t = x.shape[:2]
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        feats = x.new_zeros(b, t, self.n_features)
        feats[valid] = self.slice_features(x[valid][None])[0].to(feats.dtype)
        lstm, pool = self._split(state)
        packed = nn.utils.rnn.pack_padded_sequence(feats, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, lstm = self.lstm(packed, lstm)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)
        return self._head(feats, out, lstm, pool, valid)


class StatsPool(nn.Module):
    """Causal statistics pooling: a leaky running mean and standard deviation of projected step features.

    Each step's 512 CNN features are projected to H numbers p_t and given a learned weight
    w_t in (0, 1) (silence can learn a weight near 0). With the decay d = exp(-0.1 s / tau):

        W_t = d W_{t-1} + w_t,   r_t = w_t / W_t
        m_t = m_{t-1} + r_t (p_t - m_{t-1}),   q_t = q_{t-1} + r_t (p_t^2 - q_{t-1})

    so m_t and q_t are the w-weighted means of p and p^2 over roughly the last tau seconds (over
    a clip shorter than tau, nearly its whole past), and the step emits [m_t, sqrt(q_t - m_t^2)].
    It is the network's own form of the clip statistics a baseline SVM sees, but causal and
    forgetting, so a device that listens for months stays on the present. State rows: h holds
    (m, W broadcast), c holds (q, 0).
    """

    def __init__(self, n_features: int, hidden: int, tau_s: float) -> None:
        super().__init__()
        self.value = nn.Linear(n_features, hidden)
        self.weight = nn.Linear(n_features, 1)
        self.decay = math.exp(-STEP_SECONDS / tau_s)

    def forward(self, feats: torch.Tensor, state: State, valid: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        """feats (B, T, F), state rows (2, B, H) each, valid (B, T) or None -> stats (B, T, 2H), new rows."""
        p = self.value(feats).float()  # (B, T, H)
        w = torch.sigmoid(self.weight(feats).float())  # (B, T, 1)
        d = torch.full_like(w, self.decay)
        if valid is not None:  # a padded step leaves the statistics alone
            w = w * valid[..., None].to(w.dtype)
            d = torch.where(valid[..., None], d, torch.ones_like(d))
        m, big_w = state[0][0].float(), state[0][1].float()  # (B, H), (B, H): W in every column
        q = state[1][0].float()
        outs = []
        for t in range(p.shape[1]):
            big_w = d[:, t] * big_w + w[:, t]
            r = w[:, t] / big_w.clamp_min(1e-6)
            m = m + r * (p[:, t] - m)
            q = q + r * (p[:, t] * p[:, t] - q)
            outs.append(torch.cat([m, torch.sqrt(F.relu(q - m * m) + 1e-5)], dim=-1))
        rows = (torch.stack([m, big_w]), torch.stack([q, torch.zeros_like(q)]))
        return torch.stack(outs, dim=1), rows


# --- fusion -------------------------------------------------------------------------------
class FusionHead(nn.Module):
    """Sigmoid gates alpha (visual) and beta (audio) from z = [v; a], then a 128 -> 64 -> 7 MLP."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.gate_v = nn.Linear(2 * dims.embed_dim, 1)  # W_alpha, b_alpha (paper eq. 1)
        self.gate_a = nn.Linear(2 * dims.embed_dim, 1)  # W_beta, b_beta
        self.classifier = nn.Sequential(
            nn.Linear(dims.embed_dim, dims.fusion_hidden), nn.ReLU(inplace=True), nn.Dropout(dims.dropout),
            nn.Linear(dims.fusion_hidden, dims.n_classes),
        )  # fmt: skip

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, face_mask: torch.Tensor, audio_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """v, a (..., 128); masks (...) bool -> logits (..., 7), alpha (...), beta (...)."""
        mv = face_mask.unsqueeze(-1).to(v.dtype)
        ma = audio_mask.unsqueeze(-1).to(a.dtype)
        v, a = v * mv, a * ma
        z = torch.cat([v, a], dim=-1)  # (..., 256)
        alpha = torch.sigmoid(self.gate_v(z)) * mv  # (..., 1), 0 when the face is missing
        beta = torch.sigmoid(self.gate_a(z)) * ma
        f = alpha * v + beta * a  # (..., 128), paper eq. 2
        return self.classifier(f), alpha.squeeze(-1), beta.squeeze(-1)


class AVEmotionNet(nn.Module):
    def __init__(self, dims: ModelDims | None = None) -> None:
        super().__init__()
        self.dims = dims or ModelDims()
        self.visual = VisualEncoder(self.dims)
        self.audio = AudioEncoder(self.dims)
        self.fusion = FusionHead(self.dims)

    def init_state(self, batch: int = 1) -> State:
        p = next(self.parameters())
        shape = self.dims.state_shape(batch)
        return torch.zeros(shape, device=p.device, dtype=p.dtype), torch.zeros(shape, device=p.device, dtype=p.dtype)

    def encode_faces(self, faces: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C, S, S) faces -> (B, T, 128); only the present faces go through the ResNet."""
        b, t = mask.shape
        v = faces.new_zeros(b, t, self.dims.embed_dim)
        if mask.any():
            v[mask] = self.visual(faces[mask]).to(v.dtype)
        return v

    def encode_audio(self, audio: torch.Tensor, mask: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """(B, T, 64, N) -> (B, T, 128) and the new state; a masked step leaves the state alone."""
        if bool(mask.all()):
            return self.audio(audio, state)
        lengths = mask.sum(1)
        steps = torch.arange(mask.shape[1], device=mask.device)[None, :]
        if bool((mask == (steps < lengths[:, None])).all()):  # each stream present, then padding (or absent)
            a = audio.new_zeros(*mask.shape, self.dims.embed_dim)
            h, c = state[0].clone(), state[1].clone()
            rows = lengths > 0
            if bool(rows.any()):
                sub = (state[0][:, rows].contiguous(), state[1][:, rows].contiguous())
                a_rows, (h_rows, c_rows) = self.audio.forward_padded(audio[rows], lengths[rows], sub)
                a[rows] = a_rows.to(a.dtype)
                h[:, rows], c[:, rows] = h_rows.to(h.dtype), c_rows.to(c.dtype)
            return a, (h, c)
        outs = []  # gaps inside a stream: step through so that the gaps do not touch the state
        for i in range(audio.shape[1]):
            a, (h, c) = self.audio(audio[:, i : i + 1], state)
            keep = mask[:, i].view(1, -1, 1)
            state = (torch.where(keep, h, state[0]), torch.where(keep, c, state[1]))
            outs.append(a)
        return torch.cat(outs, dim=1), state

    def forward(
        self,
        faces: torch.Tensor | None,
        audio: torch.Tensor | None,
        face_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        state: State | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """A clip of T steps.

        faces (B, T, C, S, S) in [0, 1] or None; audio (B, T, 64, N) log-mel or None; masks
        (B, T) bool, True where the modality is present (default: present when given).
        Returns logits (B, T, 7), alpha (B, T), beta (B, T) and the LSTM state after step T.
        """
        ref = faces if faces is not None else audio
        if ref is None:
            raise ValueError("a step needs a face, audio, or both; both were None")
        b, t = ref.shape[:2]
        if face_mask is None:
            face_mask = torch.full((b, t), faces is not None, dtype=torch.bool, device=ref.device)
        if audio_mask is None:
            audio_mask = torch.full((b, t), audio is not None, dtype=torch.bool, device=ref.device)
        if state is None:
            state = self.init_state(b)
        e = self.dims.embed_dim
        v = self.encode_faces(faces, face_mask) if faces is not None else ref.new_zeros(b, t, e)
        if audio is not None:
            a, state = self.encode_audio(audio, audio_mask, state)
        else:
            a = ref.new_zeros(b, t, e)
        logits, alpha, beta = self.fusion(v, a, face_mask, audio_mask)
        return logits, alpha, beta, state

    def step(
        self,
        face: torch.Tensor | None,
        audio: torch.Tensor | None,
        state: State | None = None,
        face_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """One 100 ms step: face (B, C, S, S) or None, audio (B, 64, N) or None, (h, c) or None.

        Returns logits (B, 7), alpha (B,), beta (B,) and the new state.
        """
        if self.dims.bidirectional:
            raise ValueError("a bidirectional model sees the future and cannot stream; train a unidirectional one")
        unsq = lambda x: None if x is None else x.unsqueeze(1)  # noqa: E731
        logits, alpha, beta, state = self.forward(unsq(face), unsq(audio), unsq(face_mask), unsq(audio_mask), state)
        return logits[:, 0], alpha[:, 0], beta[:, 0], state


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
