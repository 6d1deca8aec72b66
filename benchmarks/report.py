"""Write one benchmark's section of ``docs/benchmarks.md`` without touching the others.

Each benchmark script owns the text between its markers
``<!-- <name> start -->`` and ``<!-- <name> end -->``; a missing section is
appended at the end of the file.
"""

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(name, text, path=DOC):
    """Replace (or append) the section ``name`` of ``path`` with ``text``."""
    start, end = f"<!-- {name} start -->", f"<!-- {name} end -->"
    body = f"{start}\n{text.strip()}\n{end}\n"
    path = Path(path)
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + body + doc[doc.index(end) + len(end) + 1:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + body
    path.write_text(doc)
