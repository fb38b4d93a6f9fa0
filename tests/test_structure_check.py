"""scripts/structure_check.py on a tiny made-up checkout: each kind of finding, the counting, the allow-list."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "structure_check.py"
spec = importlib.util.spec_from_file_location("structure_check", SCRIPT)
structure_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = structure_check  # dataclasses look their module up there
spec.loader.exec_module(structure_check)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def body(n: int) -> str:
    """``n`` lines of a function body."""
    return "".join(f"    x{i} = {i}\n" for i in range(n))


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    write(tmp_path, "safeseek_tl/__init__.py", "")
    write(tmp_path, "safeseek_tl/_io.py", "def read_json():\n    return 1\n")
    # 61 lines of its own (def + 60) is one too many; 60 is allowed
    long = "def long():\n" + body(60)
    fits = "def fits():\n" + body(59)
    # 71 lines in all, 11 of them a nested function measured on its own: 60 lines of its own
    nested = "def outer():\n" + body(49) + "    def inner():\n" + textwrap.indent(body(10), "    ") + body(10)
    method = "class Box:\n    def big(self):\n" + textwrap.indent(body(60), "    ")
    write(tmp_path, "safeseek_tl/sizes.py", "\n".join([long, fits, nested, method]))
    write(tmp_path, "safeseek_tl/big.py", "x = 1\n" * 401)
    write(tmp_path, "safeseek_tl/small.py", "x = 1\n" * 400)
    write(
        tmp_path,
        "safeseek_tl/a.py",
        """\
        def _helper():
            return 1


        class Thing:
            def _own(self):
                return self._own


        def uses_own():
            return Thing()._own()
        """,
    )
    write(
        tmp_path,
        "tests/test_a.py",
        """\
        import safeseek_tl.a as alias
        from safeseek_tl import a
        from safeseek_tl._io import read_json
        from safeseek_tl.a import Thing, _helper


        def test(monkeypatch, thing):
            a._helper()
            monkeypatch.setattr(alias, "_helper", 1)
            monkeypatch.setattr("safeseek_tl.a._helper", 2)
            thing._own()
            read_json()
            monkeypatch.setattr(Thing, "_own", 3)
        """,
    )
    return tmp_path


def keys(found: list) -> dict[str, str]:
    return {f"{f.kind} {f.key}": f.detail for f in found}


def test_findings_of_each_kind(checkout: Path) -> None:
    assert keys(structure_check.findings(checkout)) == {
        "module safeseek_tl/big.py": "401 lines",
        "function safeseek_tl/sizes.py:long": "line 1, 61 lines",
        "function safeseek_tl/sizes.py:Box.big": "line 197, 61 lines",
        "private tests/test_a.py:safeseek_tl.a._helper": "line 4, 8, 9, 10",
        "private tests/test_a.py:safeseek_tl.a.Thing._own": "line 11, 13",
    }


def test_allow_list_suppresses_and_reports_stale_entries(checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    allow = tmp_path / "allow.txt"
    run = ["--allow", str(allow), "--root", str(checkout)]
    assert structure_check.main(run) == 1
    allow.write_text(
        "# exceptions\n"
        "module safeseek_tl/big.py  # generated table\n"
        "function safeseek_tl/sizes.py:long  # one flat spec\n"
        "function safeseek_tl/sizes.py:Box.big  # the same\n"
        "private tests/test_a.py:safeseek_tl.a._helper  # pins the helper\n"
        "private tests/test_a.py:safeseek_tl.a.Thing._own  # pins the method\n",
        encoding="utf-8",
    )
    assert structure_check.main(run) == 0
    assert "0 modules over 400 lines, 0 functions over 60 lines, 0 private names" in capsys.readouterr().out
    with allow.open("a", encoding="utf-8") as file:
        file.write("function safeseek_tl/sizes.py:gone  # was split\n")
    assert structure_check.main(run) == 1
    assert "stale allow-list entry function safeseek_tl/sizes.py:gone" in capsys.readouterr().out
    allow.write_text("module safeseek_tl/big.py\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="allow.txt:1: 'module safeseek_tl/big.py' has no reason"):
        structure_check.main(run)
