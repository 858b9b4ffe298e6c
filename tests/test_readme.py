"""The README is true on a fresh clone: its Python examples run as written (those that need
no GPU or torch), its links resolve inside the repository, the files it names exist, and the
architecture document is the team's shared design."""
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README, re.S)
          if "torch" not in b and "cuda" not in b]


def test_readme_has_runnable_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    exec(compile(code, "README.md", "exec"), {})


ROOT = Path(__file__).resolve().parent.parent
SHARED_DESIGN = ROOT.parent / "shared" / "DESIGN.md"
DOCS = ["README.md", "docs/ARCHITECTURE.md", "bench/NOTES.md", "bench/RESULTS.md",
        "kernels/README.md"]


def _links(text: str) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z]+://|#|mailto:", target)]


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_resolves_inside_the_repository(doc):
    path = ROOT / doc
    for target in _links(path.read_text()):
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc} links outside the repository: {target}"
        assert resolved.exists(), f"{doc} links to {target}, which does not exist"


def test_every_path_the_readme_names_exists():
    named = re.findall(r"`([\w.*<>-]+(?:/[\w.*<>-]*)+)`", README)
    assert len(named) > 10
    for name in named:
        if name.startswith(("runs/", "~", "$")) or "=" in name:
            continue  # outputs and user paths, not files of the repository
        pattern = re.sub(r"<\w+>", "*", name).rstrip("/")
        assert list(ROOT.glob(pattern)), f"README names {name}, which matches no file"


def test_the_architecture_document_is_in_step_with_the_shared_design():
    if not SHARED_DESIGN.is_file():
        pytest.skip("no shared DESIGN.md beside this checkout")
    copy = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert copy.split("\n---\n\n", 1)[1] == SHARED_DESIGN.read_text()
