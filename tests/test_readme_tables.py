"""README.md's results tables are generated from benchmarks/results (issue #13): they must match."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_readme_tables_match_the_results() -> None:
    mod = _module()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(mod.BLOCK.findall(text)) == len(mod.TABLES)
    _, stale = mod.render(text)
    assert not stale, f"stale README tables {stale}: run python benchmarks/readme_tables.py"


def test_a_stale_table_is_found_and_rewritten(tmp_path: Path) -> None:
    mod = _module()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:demo (generated) -->\n| old |\n<!-- /table:demo -->\nend\n", encoding="utf-8")
    assert mod.main(["--check", "--readme", str(readme)]) == 1
    assert mod.main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert "| old |" not in text and "| MNI T1 template |" in text and text.endswith("end\n")
    assert mod.main(["--check", "--readme", str(readme)]) == 0
