"""README.md tells the truth: its flags exist, its test command is the one CI runs."""

import functools
import re
import shlex
import subprocess
import sys

import pytest

import train_gpt2
from conftest import ROOT, SHAKESPEARE_TXT, require_shared_data

README = (ROOT / "README.md").read_text()
SCRIPTS = ("fineweb.py", "train_gpt2.py", "hellaswag.py", "gpt2.py", "hf_export.py", "bench.py")


@functools.cache
def help_text(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def flags_named_in_readme() -> set[tuple[str, str]]:
    """(script, flag) for every flag the README passes to one of the scripts."""
    text = README.replace("\\\n", " ")  # shell line continuations
    found = set()
    # commands: `python train_gpt2.py --max-steps 200 ...`,
    # `torchrun ... hellaswag.py --init-from ...`
    for line in text.splitlines():
        for match in re.finditer(r"\b(\w+\.py)\b([^`|&;]*)", line):  # up to the next command
            found |= {
                (match.group(1), flag)
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", match.group(2))
            }
    # the flags table is train_gpt2.py's; the paragraph under it names each script's flags after
    # "`script.py`:"
    section = text[text.index("## The flags that matter") : text.index("## What is written where")]
    table = [line for line in section.splitlines() if line.startswith("| `--")]
    found |= {
        ("train_gpt2.py", flag)
        for line in table
        for flag in re.findall(r"`(--[a-z][a-z0-9-]*)", line)
    }
    for script, names in re.findall(r"`(\w+\.py)`: (.*?)(?=`\w+\.py`:|\n\n)", section, flags=re.S):
        found |= {(script, flag) for flag in re.findall(r"`(--[a-z][a-z0-9-]*)", names)}
    return found


def test_the_readme_names_flags_of_every_script():
    scripts = {script for script, _ in flags_named_in_readme()}
    assert set(SCRIPTS) <= scripts
    assert len(flags_named_in_readme()) > 40


@pytest.mark.parametrize("script, flag", sorted(flags_named_in_readme()))
def test_each_flag_in_the_readme_exists(script, flag):
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(script)), (
        f"{script} has no {flag}"
    )


def test_the_readme_test_command_is_what_ci_runs():
    section = README[README.index("## The tests, in one command") :]
    command = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1).strip()
    assert command == "pip install -r requirements-dev.txt && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -r requirements-dev.txt" in ci
    assert [line for line in ci.splitlines() if line.strip()][-1] == "python -m pytest"


def test_the_readme_lists_every_file_of_the_repository():
    section = README[README.index("## The repository") : README.index("## Troubleshooting")]
    listed = set(re.findall(r"^\| `([\w./-]+)` \|", section, flags=re.M))
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    top_level = {name.split("/")[0] + ("/" if "/" in name else "") for name in tracked}
    expected = {
        name
        for name in top_level
        if not name.startswith(".") and not name.endswith((".md", ".txt", ".ini"))
    }
    assert expected <= listed and ".ci/run" in listed
    assert all((ROOT / name).exists() for name in listed)


def test_the_quick_start_works_as_written_without_the_hub(tmp_path):
    """The quick start's offline data command on 4 MB of real text, then its training command: the
    plan fits the data (one pass), and the first steps run (HellaSwag off, as offline machines
    must)."""
    shakespeare = require_shared_data(SHAKESPEARE_TXT).read_text(encoding="utf-8")
    (tmp_path / "my_texts").mkdir()
    for copy in range(4):  # 4 documents of 338K tokens
        (tmp_path / "my_texts" / f"part{copy}.txt").write_text(
            f"Copy {copy}.\n{shakespeare}", encoding="utf-8"
        )
    section = README[README.index("## Quick start") : README.index("## The full reproduction")]
    commands = [
        line
        for block in re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    data = next(line for line in commands if "fineweb.py" in line and "--data-files" in line)
    train = next(line for line in commands if "train_gpt2.py" in line)

    def run(command: str, *extra: str) -> str:
        _, script, *args = shlex.split(command)
        argv = [sys.executable, str(ROOT / script), *args, *extra]
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    assert "1,000,000 tokens" in run(data)
    plan = run(train, "--max-steps", "2", "--hellaswag-every", "0")
    assert (
        "\n2 steps of 4,096 tokens" in plan and (tmp_path / "log_mini" / "model_00002.pt").is_file()
    )
    config = train_gpt2.parse_config(shlex.split(train)[2:])
    # the 200 steps of the README read it once
    assert config.max_steps * config.total_batch_size <= 900_000
