"""Every ```python block of README.md and docs/*.md runs as written.

Per file, the blocks are joined in order into one script, which runs in a fresh
interpreter from an empty directory: a block may use what an earlier block of
the same file defined, nothing else.  Blocks that start worker processes carry
the ``if __name__ == "__main__":`` guard a script needs.  A block that cannot
run anywhere (a remote scheduler's address, certificate files) uses another
fence, e.g. ```{code-block} python, with a sentence saying why.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# an opening ```python fence (possibly indented, e.g. in a list item), its body, and
# the closing fence at the same indentation
FENCE = re.compile(r"^(?P<indent>[ ]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)


def python_blocks(text):
    """The ```python blocks of a Markdown text, in order: ``(line, code)`` with the
    fence's indentation removed."""
    blocks = []
    for m in FENCE.finditer(text):
        indent = len(m["indent"])
        code = "\n".join(line[indent:] for line in m["body"].splitlines())
        blocks.append((text.count("\n", 0, m.start()) + 1, code + "\n"))
    return blocks


def script_of(path):
    """The file's blocks as one script, each headed by where it comes from."""
    parts = [f"# {path.name}, line {line}\n{code}"
             for line, code in python_blocks(path.read_text(encoding="utf-8"))]
    return "\n".join(parts)


def test_blocks_are_found_with_their_indentation():
    text = ("x\n```python\na = 1\n```\n- item:\n\n  ```python\n  if a:\n      b = 2\n  ```\n"
            "```{code-block} python\nnot run\n```\n```text\nnot run\n```\n")
    assert python_blocks(text) == [(2, "a = 1\n"), (7, "if a:\n    b = 2\n")]
    assert python_blocks((ROOT / "README.md").read_text())  # the README has some


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_as_one_script(path, tmp_path):
    script = script_of(path)
    if not script:
        pytest.skip(f"{path.name} has no ```python block")
    file = tmp_path / f"snippets_{path.stem}.py"
    file.write_text(script, encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, str(file)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=480)
    numbered = "\n".join(f"{i:4d}  {line}" for i, line in enumerate(script.splitlines(), 1))
    assert proc.returncode == 0, (
        f"the ```python blocks of {path.name} failed as one script "
        f"(rc {proc.returncode}):\n{proc.stderr[-6000:]}\n--- script ---\n{numbered}")
