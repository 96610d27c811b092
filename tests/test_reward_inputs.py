"""What generators hand the reward: torch tensors, one array as a batch, the Flow-GRPO callable, failures as NaN.

Real torch tensors, the real bundled model and real photos; the truth is Scorer on the same uint8 pixels.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptlite import Scorer
from perceptlite.reward import DEFAULT_WEIGHTS, PerceptualReward

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "models" / "perceptlite-base"
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="module")
def arrays() -> list[np.ndarray]:
    """Three real photos cut to one size (a generator's batch has one size)."""
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is missing (CI places ../shared beside the clone)")
    paths = sorted((CORPUS / "bsds500" / "val").glob("*.jpg"))[:3]
    return [np.array(Image.open(path).convert("RGB").resize((320, 240)), dtype=np.uint8) for path in paths]


@pytest.fixture(scope="module")
def reward() -> PerceptualReward:
    return PerceptualReward(model=PACKAGE, device="cpu", threads=2)


@pytest.fixture(scope="module")
def expected(arrays) -> list[float]:
    """The default reward computed by hand: the mean of the three axis scores / 100."""
    scorer = Scorer(PACKAGE, device="cpu", threads=2)
    return [sum(getattr(scorer.score(array), axis) for axis in ("iaa", "iqa", "ista")) / 300.0 for array in arrays]


def test_default_weights_are_all_three_axes(reward) -> None:
    assert DEFAULT_WEIGHTS == {"iaa": 1.0, "iqa": 1.0, "ista": 1.0}
    assert reward.weights == pytest.approx({"iaa": 1 / 3, "iqa": 1 / 3, "ista": 1 / 3})


def test_nchw_float_tensor_is_a_batch(reward, arrays, expected) -> None:
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # what diffusers' "pt" output is
    assert tuple(batch.shape) == (3, 3, 240, 320)
    assert reward(batch) == pytest.approx(expected, abs=1e-5)  # x/255 rounds back to the same uint8 pixels
    assert reward([batch[0], batch[1]]) == pytest.approx(expected[:2], abs=1e-5)  # a list of CHW tensors


def test_nhwc_uint8_tensor_is_a_batch(reward, arrays, expected) -> None:
    batch = torch.from_numpy(np.stack(arrays))
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (3, 240, 320, 3)
    assert reward(batch) == pytest.approx(expected, abs=1e-5)


def test_one_hxwx3_array_is_one_image(reward, arrays, expected) -> None:
    rewards = reward(arrays[0])
    assert rewards.shape == (1,)  # not 240 images of 320x3
    assert rewards[0] == pytest.approx(expected[0], abs=1e-5)
    assert reward(torch.from_numpy(arrays[0]).permute(2, 0, 1).float() / 255.0) == pytest.approx(expected[:1], abs=1e-5)


def test_an_image_that_cannot_be_scored_is_nan_with_a_mask(reward, arrays, expected) -> None:
    empty = np.zeros((0, 10, 3), np.uint8)
    batch = reward.score([arrays[0], empty, arrays[1]])
    assert batch.ok.tolist() == [True, False, True]
    assert math.isnan(batch.rewards[1]) and batch.rewards[[0, 2]] == pytest.approx([expected[0], expected[1]], abs=1e-5)
    assert batch.errors[0] is None and "empty image" in batch.errors[1]
    assert all(math.isnan(batch.scores[axis][1]) for axis in ("iaa", "iqa", "ista"))
    zero = PerceptualReward(model=PACKAGE, device="cpu", threads=2, failed_reward=0.0)
    assert zero([empty]).tolist() == [0.0]  # the documented alternative


def test_flow_grpo_callable(reward, arrays, expected) -> None:
    fn = reward.flow_grpo()
    images = torch.from_numpy(np.stack(arrays[:2])).permute(0, 3, 1, 2).float() / 255.0
    scores, info = fn(images, ["a photo of a cat", "a city at night"], [{}, {}])
    assert scores.dtype == np.float32 and scores == pytest.approx(expected[:2], abs=1e-5)
    assert info["ok"].tolist() == [True, True] and info["errors"] == [None, None]
    assert set(info) == {"ok", "errors", "iaa", "iqa", "ista"} and all(0 <= s <= 100 for s in info["iaa"])


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf, 1e300, "1", True])
def test_bad_weights_are_refused(weight) -> None:
    with pytest.raises(ValueError, match="weight of iqa"):
        PerceptualReward({"iaa": 1.0, "iqa": weight}, PACKAGE)


def test_torch_is_imported_only_for_a_tensor() -> None:
    code = (
        "import sys, numpy as np\n"
        "from perceptlite.reward import PerceptualReward\n"
        f"reward = PerceptualReward(model={str(PACKAGE)!r}, device='cpu', threads=1)\n"
        "reward(np.full((64, 64, 3), 128, np.uint8))\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_tensor_of_the_wrong_shape_is_refused(reward) -> None:
    with pytest.raises(ValueError, match="NCHW"):
        reward(torch.zeros(2, 3, 4, 5, 6))
