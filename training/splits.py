"""Speaker-independent splits of RAVDESS, and the guard that keeps them so.

- The paper's fixed split (3.1.1): train actors 1-15, validation 16-20, test 21-24.
- The 5-fold actor cross-validation of Luna-Jimenez et al. 2022: each fold's test actors below;
  the remaining 19-20 actors are split into train and validation by `cv_split`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from avemo_edge.errors import AvemoError

PAPER_SPLIT = {"train": tuple(range(1, 16)), "val": tuple(range(16, 21)), "test": tuple(range(21, 25))}
CV_TEST_FOLDS = ((2, 5, 14, 15, 16), (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22))


class SplitError(AvemoError):
    """A split that would let a speaker or a performance leak between parts."""


def cv_split(fold: int, n_val: int = 4) -> dict[str, tuple[int, ...]]:
    """Fold `fold` (0-4): its test actors, and the other actors as train plus `n_val` for validation.

    Validation takes the next fold's first actors, half male (odd) and half female (even), so the
    choice is fixed and gender-balanced.
    """
    if not 0 <= fold < len(CV_TEST_FOLDS):
        raise SplitError(f"cross-validation fold {fold} does not exist; choose 0-{len(CV_TEST_FOLDS) - 1}")
    test = CV_TEST_FOLDS[fold]
    rest = [a for a in range(1, 25) if a not in test]
    nxt = CV_TEST_FOLDS[(fold + 1) % len(CV_TEST_FOLDS)]
    odd = [a for a in nxt if a % 2 and a in rest][: n_val // 2]
    even = [a for a in nxt if not a % 2 and a in rest][: n_val - len(odd)]
    val = tuple(sorted(odd + even))
    return {"train": tuple(a for a in rest if a not in val), "val": val, "test": tuple(test)}


def actor_split(scheme: str) -> dict[str, tuple[int, ...]]:
    """'paper' or 'cv0'..'cv4' -> {'train', 'val', 'test'} actor lists (checked to be disjoint)."""
    if scheme == "paper":
        parts = PAPER_SPLIT
    elif scheme.startswith("cv") and scheme[2:].isdigit():
        parts = cv_split(int(scheme[2:]))
    else:
        raise SplitError(f"unknown split {scheme!r}; choose 'paper' or 'cv0'-'cv4'")
    check_actors(parts)
    return dict(parts)


def check_actors(parts: Mapping[str, Iterable[int]]) -> None:
    """Fail loudly if one actor is in two parts."""
    seen: dict[int, str] = {}
    for name, actors in parts.items():
        for a in actors:
            if a in seen and seen[a] != name:
                raise SplitError(f"actor {a} is in both the {seen[a]!r} and the {name!r} split")
            seen[a] = name


def check_items(parts: Mapping[str, Iterable[tuple[int, str]]]) -> None:
    """Items are (actor, performance key): fail if an actor or a performance spans two parts.

    The performance key is shared by the audio-video, video-only and audio-only files of one take,
    so copies of one take can never land on both sides of a split.
    """
    actor_part: dict[int, str] = {}
    perf_part: dict[str, str] = {}
    for name, items in parts.items():
        for actor, key in items:
            for table, k, what in ((actor_part, actor, "actor"), (perf_part, key, "performance")):
                if k in table and table[k] != name:
                    raise SplitError(f"{what} {k} is in both the {table[k]!r} and the {name!r} split")
                table[k] = name
