"""examples/demo.py: the main job is the open-set glyph benchmark where CJK fonts exist, the
digits demo otherwise (a fresh machine with only Python and pip)."""

import importlib.util
import pathlib

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "demo.py"
spec = importlib.util.spec_from_file_location("demo", _PATH)
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)


def _script(cmd):
    return pathlib.Path(cmd[1]).name


def test_with_cjk_fonts_the_main_job_is_the_open_set_quick_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "font_designs", lambda: 10)
    cmd = demo.command([])
    assert _script(cmd) == "open_set.py" and "--quick" in cmd
    assert cmd[cmd.index("--out") + 1].endswith("open_set_quick.md")
    cmd = demo.command(["--out", "x.md", "--seeds", "1"])  # the user's arguments win and pass on
    assert cmd.count("--out") == 1 and cmd[-4:] == ["--out", "x.md", "--seeds", "1"]


def test_without_fonts_it_says_so_and_runs_the_digits(monkeypatch, capsys):
    monkeypatch.setattr(demo, "font_designs", lambda: 1)
    cmd = demo.command(["--epochs", "3"])
    assert _script(cmd) == "train_digits.py" and cmd[-2:] == ["--epochs", "3"]
    assert "make fonts" in capsys.readouterr().err
    monkeypatch.setattr(demo, "font_designs", lambda: 10)
    cmd = demo.command(["--digits"])  # forced fallback
    assert _script(cmd) == "train_digits.py" and "--digits" not in cmd


def test_font_designs_counts_this_machines_fonts():
    from keras_facemargin.data.glyphs import find_cjk_fonts

    assert demo.font_designs() == len(find_cjk_fonts())
