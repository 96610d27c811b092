"""The factory loads nothing executable by default (issue 12, class 9)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKER = "checkpoint-code-ran.txt"


def _calls(source: str, name: str) -> list[str]:
    """The text of every call `name(...)` in `source`, up to its matching parenthesis."""
    calls = []
    for match in re.finditer(re.escape(name) + r"\(", source):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(source)):
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            if depth == 0:
                break
        calls.append(source[match.start() : end + 1])
    return calls


def test_every_torch_load_in_the_factory_is_weights_only():
    found = 0
    for path in sorted((REPO / "export").rglob("*.py")):
        for call in _calls(path.read_text(encoding="utf-8"), "torch.load"):
            found += 1
            assert "weights_only=True" in call, f"{path.relative_to(REPO)}: {call}"
    assert found, "no torch.load call found: the scan is broken"


def test_checkpoint_code_runs_only_when_allowed(unipercept_tiny_checkpoint, tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    from export.unipercept.reference import TRUST_CODE_ENV, CheckpointCodeRefused, allow_checkpoint_code, load_internvl

    checkpoint = tmp_path / "with-code"
    shutil.copytree(unipercept_tiny_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    (checkpoint / "modeling_evil.py").write_text(f"open({str(tmp_path / MARKER)!r}, 'w').write('ran')\n")
    monkeypatch.delenv(TRUST_CODE_ENV, raising=False)
    with pytest.raises(CheckpointCodeRefused, match=r"modeling_evil\.py.*--trust-checkpoint-code"):
        load_internvl(checkpoint)
    assert not (tmp_path / MARKER).exists()

    from export.unipercept import reference as unipercept

    assert unipercept.main([str(checkpoint), str(tmp_path / "any.jpg")]) == 2
    assert "--trust-checkpoint-code" in capsys.readouterr().err
    assert not (tmp_path / MARKER).exists()

    # Allowed by the flag (or the variable): a message names the files that will run.
    allow_checkpoint_code(checkpoint, True)
    monkeypatch.setenv(TRUST_CODE_ENV, "1")
    allow_checkpoint_code(checkpoint, None)
    err = capsys.readouterr().err
    assert err.count("running the checkpoint's own modelling code") == 2 and "modeling_evil.py" in err
