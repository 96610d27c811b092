"""Stage 1 of export/train on the tiny checkpoint (CPU): mixed rating + question data, prompts, loss, kill and resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.train import data, train  # noqa: E402
from export.train.checkpoints import latest_step_folder, read_step_tensors  # noqa: E402
from export.train.engine import load_pixels  # noqa: E402
from export.train.policy import Policy, Prompts  # noqa: E402
from export.unipercept import reference as unipercept  # noqa: E402
from export.unipercept import tiny  # noqa: E402


@pytest.fixture(autouse=True)
def two_torch_threads():
    """In-process runs use the thread count of the subprocess runs they are compared with (OMP_NUM_THREADS=2),
    whatever an earlier test module left set: float sums differ between thread counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


REPO = Path(__file__).resolve().parents[2]
TARGETS = [10, 90, 15, 85]


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory) -> dict[str, Path]:
    return write_mixed_data(tmp_path_factory.mktemp("mixed"))


def write_mixed_data(root: Path) -> dict[str, Path]:
    """Four synthetic images with a rating file (1-5 scale), a multiple-choice file and a free-text file."""
    images = tiny.synthetic_images(root / "images", count=len(TARGETS), seed=3)
    rating = [{"image": p.name, "gt_score": 1 + 4 * t / 100} for p, t in zip(images, TARGETS)]
    choices = [
        {"image": p.name, "question": "How sharp is the image?\nA. very sharp\nB. sharp\nC. blurry\nD. very blurry", "answer": "AC"[i % 2]}
        for i, p in enumerate(images)
    ]
    free = [
        {"image": p.name, "question": "Describe the texture of the image.", "answer": ["flat", "rich stripes"][i % 2]}
        for i, p in enumerate(images)
    ]
    for name, records in (("vr.json", rating), ("mcq.json", choices), ("text.json", free)):
        (root / name).write_text(json.dumps(records), encoding="utf-8")
    return {"root": root, "images": root / "images", "vr": root / "vr.json", "mcq": root / "mcq.json", "text": root / "text.json"}


def dataset_args(d: dict[str, Path]) -> list[str]:
    return [
        "--dataset",
        f"json={d['vr']},images={d['images']},axis=iaa,min=1,max=5",
        "--dataset",
        f"json={d['mcq']},images={d['images']}",
        "--dataset",
        f"json={d['text']},images={d['images']},weight=0.5",
    ]


def all_samples(d: dict[str, Path]) -> list[data.Sample]:
    specs = [data.DatasetSpec.parse(text) for text in dataset_args(d)[1::2]]
    return [sample for spec in specs for sample in data.load_samples(spec)]


def mean_losses(checkpoint: Path, samples: list[data.Sample]) -> dict[str, float]:
    """The stage-1 loss of every sample under `checkpoint` (no training), averaged per task."""
    model = unipercept.load_internvl(checkpoint)
    prompts = Prompts(checkpoint, int(model.num_image_token))
    policy = Policy(model, prompts.img_context_id)
    with torch.no_grad():
        losses, _ = train.sample_losses(policy, prompts, samples, load_pixels(samples, 0), sigma=4.0)
    by_task: dict[str, list[float]] = {}
    for sample, loss in zip(samples, losses):
        by_task.setdefault(sample.task, []).append(float(loss))
    return {task: sum(values) / len(values) for task, values in by_task.items()}


def test_mixture_reads_three_kinds_and_weights_sources(mixed_data) -> None:
    samples = all_samples(mixed_data)
    assert [s.task for s in samples] == ["rating"] * 4 + ["mcq"] * 4 + ["text"] * 4
    assert [round(s.target, 6) for s in samples[:4]] == TARGETS
    specs = [data.DatasetSpec.parse(text) for text in dataset_args(mixed_data)[1::2]]
    mixture = data.Mixture(specs, seed=0)
    assert mixture.epoch_length == 4 + 4 + 2  # weight 0.5 -> half the free-text samples per epoch
    assert mixture.counts() == {"rating": 4, "mcq": 4, "text": 2}
    # The order is a function of (seed, step): the same step gives the same samples, across epochs too.
    assert mixture.step_samples(7, 4) == data.Mixture(specs, seed=0).step_samples(7, 4)
    assert len(mixture.step_samples(2, 4)) == 4  # step 2 crosses from epoch 0 into epoch 1
    with pytest.raises(ValueError, match="task must be one of"):
        data.DatasetSpec.parse(f"json={mixed_data['mcq']},images=x,task=essay")


def test_prompts_are_the_reference_scorers(unipercept_tiny_checkpoint: Path, mixed_data) -> None:
    from perceptlite import unipercept_prompts
    from perceptlite.backends import gguf as gguf_backend

    assert unipercept.VQA_TEMPLATE is unipercept_prompts.VQA_TEMPLATE is gguf_backend.VQA_INSTRUCTION
    assert unipercept.RATING_TEMPLATE is unipercept_prompts.RATING_TEMPLATE
    prompts = Prompts(unipercept_tiny_checkpoint, unipercept.NUM_IMAGE_TOKENS)
    scorer_tokenizer_ids = prompts.tokenizer.encode(
        unipercept.build_prompt(unipercept.system_message(unipercept_tiny_checkpoint), unipercept.rating_prompt("iqa")),
        add_special_tokens=False,
    )
    assert prompts.rating_ids["iqa"] == scorer_tokenizer_ids
    mcq, text = all_samples(mixed_data)[4], all_samples(mixed_data)[8]
    # What ReferenceScorer.ask / .reply put after the image: "\n" + question (VQA instruction for multiple choice).
    assert prompts.question_text(mcq) == "\n" + unipercept.vqa_prompt(mcq.question)
    assert prompts.question_text(text) == "\nDescribe the texture of the image."
    assert prompts.answer_ids("C")[-1] == prompts.im_end_id  # the loss covers the closing <|im_end|> too

    # Loss on answer tokens only: a question row scores exactly the positions that predict its answer tokens,
    # a rating row only its last prompt position.
    rating = all_samples(mixed_data)[0]
    rows, positions, answers = train.teacher_forced_rows(prompts, [rating, mcq])
    prompt = prompts.prompt_ids(mcq)
    assert rows[0] == prompts.rating_ids["iaa"] and positions[0] == [len(rows[0]) - 1] and answers[0] == []
    assert answers[1] == prompts.answer_ids(mcq.answer) and rows[1] == prompt + answers[1][:-1]
    assert positions[1] == [len(prompt) - 1 + k for k in range(len(answers[1]))]


def test_mixed_stage1_loss_falls(unipercept_tiny_checkpoint: Path, mixed_data, tmp_path: Path, capsys) -> None:
    status = train.main(
        [
            "--checkpoint",
            str(unipercept_tiny_checkpoint),
            "--output",
            str(tmp_path / "run"),
            *dataset_args(mixed_data),
            "--device",
            "cpu",
            "--train",
            "mlp1,llm-layers",
            "--lr",
            "3e-3",
            "--warmup",
            "1",
            "--batch-size",
            "5",
            "--grad-accum",
            "1",
            "--workers",
            "0",
            "--steps",
            "8",
            "--save-every",
            "0",
            "--log-every",
            "2",
            "--sigma",
            "4",
        ]
    )
    assert status == 0
    log = capsys.readouterr().err
    assert "step 8/8" in log and "answer_nll" in log and "rating_abs_error" in log
    samples = all_samples(mixed_data)
    before, after = mean_losses(unipercept_tiny_checkpoint, samples), mean_losses(tmp_path / "run", samples)
    print("stage-1 loss before", before, "after", after)
    for task in ("rating", "mcq", "text"):
        assert after[task] < before[task] * 0.9, (task, before, after)  # measured: 12.3->10.7, 12.6->2.2, 12.5->6.8
    # The output is a checkpoint the reference scorer loads (and hence the GGUF converter and the distiller).
    assert unipercept.ReferenceScorer(tmp_path / "run").rate(mixed_data["images"] / "synthetic_00.png").keys() == {"iaa", "iqa", "ista"}


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def run_training(args: list[str], threads: int = 2) -> str:
    """One stage-1 run in a process of its own, as the kill test's runs are; its log."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "export.train.train", *args], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def run_killed_after_first_checkpoint(command: list[str], output: Path, threads: int = 2) -> None:
    """Start a training run and SIGKILL it, and every process it started, once its first step checkpoint is
    complete. torchrun starts each worker in a session of its own, so the workers are killed one by one, first."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen([sys.executable, *command], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while process.poll() is None and latest_step_folder(output) is None:
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            for worker in children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
            os.killpg(process.pid, signal.SIGKILL)
        log = process.communicate()[1]
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{log}"


def test_resume_takes_the_newest_complete_step_checkpoint(tmp_path: Path) -> None:
    """A `.partial` folder (a killed save) or a folder without progress.json is never resumed from."""
    steps = tmp_path / "checkpoints"
    for name in ("step-0000002", "step-0000004", "step-0000006.partial", "step-0000008"):
        (steps / name).mkdir(parents=True)
    for name in ("step-0000002", "step-0000004", "step-0000006.partial"):
        (steps / name / "progress.json").write_text("{}")
    assert latest_step_folder(tmp_path) == steps / "step-0000004"
    assert latest_step_folder(tmp_path / "elsewhere") is None
    old = tmp_path / "old" / "checkpoints" / "step-0000500"
    old.mkdir(parents=True)
    (old / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="old whole-state format"):
        latest_step_folder(tmp_path / "old")


def test_step_metadata_that_names_other_code_is_refused(tmp_path: Path) -> None:
    """DCP's `.metadata` is a pickle: one that would call anything but the index classes is refused, not run."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    (tmp_path / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(pickle.UnpicklingError, match="not part of a checkpoint index"):
        read_step_tensors(tmp_path)
    assert not (tmp_path / "ran").exists()


def trained_tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    """The float32 trained parameters in a run's sharded step checkpoint, whole, under their parameter names."""
    tensors = read_step_tensors(run / "checkpoints" / f"step-{step:07d}")
    return {key.removeprefix("trained."): value for key, value in tensors.items() if key.startswith("trained.")}


def assert_same_trained_state(first: Path, second: Path, step: int, atol: float = 1e-5) -> None:
    """The float32 trained parameters of two runs at `step` agree (same run, however often interrupted)."""
    a, b = trained_tensors(first, step), trained_tensors(second, step)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=1e-4), key


def test_stage1_resumes_after_a_kill_and_continues_the_same_run(unipercept_tiny_checkpoint: Path, mixed_data, tmp_path: Path) -> None:
    args = [
        "--checkpoint",
        str(unipercept_tiny_checkpoint),
        *dataset_args(mixed_data),
        "--device",
        "cpu",
        "--train",
        "mlp1,llm-layers",
        "--lr",
        "3e-3",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--workers",
        "0",
        "--steps",
        "4",
        "--save-every",
        "1",
        "--keep-last",
        "1",
        "--log-every",
        "1",
    ]
    # Every run in a fresh process, as a user starts one: what earlier tests imported into this process
    # (torch.distributed.checkpoint moves CPU numerics by ~1e-4) must not decide the comparison.
    run_training([*args, "--output", str(tmp_path / "straight")])
    run_killed_after_first_checkpoint(["-m", "export.train.train", "--output", str(tmp_path / "killed"), *args], tmp_path / "killed")
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    log = run_training([*args, "--output", str(tmp_path / "killed"), "--resume"])
    assert "resumed from" in log and "step 4/4" in log and "step 1/4" not in log
    assert_same_trained_state(tmp_path / "straight", tmp_path / "killed", step=4)
    from safetensors.torch import load_file

    changed = load_file(str(tmp_path / "killed" / "model.safetensors"))["mlp1.1.weight"]
    assert not torch.equal(changed, load_file(str(unipercept_tiny_checkpoint / "model.safetensors"))["mlp1.1.weight"])
