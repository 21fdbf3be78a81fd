"""`--store` on the lens and attribute commands, `python -m core results list|show|export`, the command line
of stored settings (parsed back by the real parser) and bundles."""

import io
import json
import shlex
import subprocess
import sys
import zipfile

import pandas as pd
import pytest

from core import export
from core.cli import _command_index, build_parser, main
from core.results.bundle import write_bundle
from core.results.commandline import cli_command
from tests.results.real import results

LIST_KEYS = {"id", "analysis", "model", "settings", "created", "seconds", "pinned", "title", "link"}



@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAYERSCOPE_HISTORY", raising=False)
    return tmp_path / "home"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_store_keeps_the_result_and_results_list_show_export_give_it_back(tiny_folder, home, tmp_path, capsys):
    lens = ["lens", "--model", tiny_folder, "--prompt", "The capital of France is", "--top-k", "3", "--track", " Paris",
            "--json"]
    code, plain, _ = run_cli(capsys, *lens)
    assert code == 0 and not (home / "results").exists()  # without --store nothing is kept
    code, out, err = run_cli(capsys, *lens, "--store")
    assert code == 0 and out == plain  # stdout: the same JSON only
    id = err.split("stored as ")[1].split()[0]
    code, out, err = run_cli(capsys, "attribute", "--model", tiny_folder, "--prompt", "The capital of France is",
                             "--target", " capital", "--versus", " is", "--store", "--json")
    attribution = json.loads(out)
    other = err.split("stored as ")[1].split()[0]

    code, out, _ = run_cli(capsys, "results", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and list(listed) == ["results"] and [r["id"] for r in listed["results"]] == [other, id]
    first = listed["results"][1]
    assert set(first) == LIST_KEYS and first["analysis"] == "lens" and first["model"] == tiny_folder
    assert first["settings"]["track"] == [" Paris"] and first["settings"]["all_positions"] is False
    assert first["pinned"] is False and first["created"].endswith("Z") and first["seconds"] > 0
    code, out, _ = run_cli(capsys, "results", "list", "--analysis", "attribute", "--json")
    assert [r["id"] for r in json.loads(out)["results"]] == [other]

    code, out, _ = run_cli(capsys, "results", "show", id, "--json")
    assert code == 0 and out == plain
    code, out, _ = run_cli(capsys, "results", "show", other, "--json")
    assert json.loads(out) == attribution

    zip_path = tmp_path / "out" / "lens.zip"
    code, out, _ = run_cli(capsys, "results", "export", id, str(zip_path), "--no-charts", "--json")
    assert code == 0 and json.loads(out)["path"] == str(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["command.txt", "result.json", "settings.json", "tables/lens.csv",
                                              "tables/tracked.csv"]
        assert json.loads(archive.read("result.json")) == json.loads(plain)
        command = archive.read("command.txt").decode().strip()
        header = json.loads(archive.read("settings.json"))
    assert header["analysis"] == "lens" and header["id"] == id and header["settings"]["top_k"] == 3
    assert command == (f"python -m core lens --model {tiny_folder} --prompt 'The capital of France is' --top-k 3 "
                       "--track ' Paris'")
    code, out, _ = run_cli(capsys, *shlex.split(command)[3:], "--json")  # the command line recomputes it
    assert out == plain


@pytest.mark.parametrize("argv, message", [
    (["results", "show", "nope"], "no stored result 'nope'"),
    (["results", "export", "nope", "x.zip"], "no stored result 'nope'"),
    (["results", "show"], "usage: python -m core results show ID"),
    (["results", "list", "extra"], "usage: python -m core results list"),
])
def test_a_bad_id_or_usage_is_one_line_and_exit_2(home, capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_results_is_found_in_core_commands_and_lists_without_torch(home):
    info = _command_index()["results"]
    assert info["module"] == "core.commands.results" and info["NAME"] == "results" and not info["loads_model"]
    assert _command_index()["lens"]["module"] == "core.analyses.lens.command"
    assert "results" in build_parser().format_help()
    code = ("import sys; from core.cli import main; main(['results', 'list', '--json']); "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'core.analyses.lens') if m in sys.modules))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.splitlines() == ['{"results": []}', "[]"]


@pytest.mark.parametrize("name", ["lens", "attribute", "attribute-gpt2", "sequences"])
def test_the_command_line_parses_back_to_the_same_settings(name):
    analysis, settings, _ = results()[name]
    line = cli_command(analysis, settings, "gemma-3-270m", {"dtype": "bfloat16", "device": "auto"})
    assert "#" not in line and " --dtype bfloat16 " in line and "--device" not in line
    args = build_parser().parse_args(shlex.split(line)[3:])
    assert args.model == "gemma-3-270m"
    for field in ("prompt", "top_k", "position", "track", "resolution", "target", "versus", "method", "ablation"):
        if hasattr(settings, field):
            value = getattr(args, field)
            assert (tuple(value) if isinstance(value, list) else value) == getattr(settings, field), field


def test_a_field_no_option_says_is_named_in_a_comment():
    _, settings, _ = results()["translation"]  # an in-memory word list: the CLI takes a file instead
    line = cli_command("translation", settings, "m")
    assert line == "python -m core translation --model m --target hi --shots 1 --batch-size 2  # not said by any option: energy, words"
    lens = results()["lens"][1]
    assert "#" not in cli_command("lens", lens, "m")  # all_positions changes nothing the command prints


@pytest.mark.parametrize("name", ["lens", "lens-sublayer", "attribute", "translation", "sequences"])
def test_every_registered_analysis_has_its_charts(name):
    from core.results.figures import figures

    analysis, _, result = results()[name]
    charts = figures(analysis, result)
    expected = {"lens": {"grid", "grid_tracked_0", "grid_tracked_1"}, "lens-sublayer": {"grid"},
                "attribute": {"heads", "layers"}, "translation": {"curves", "energy"},
                "sequences": {"ablation_heads", "ablation_mlps", "attribution_heads", "attribution_mlps", "methods"}}
    assert set(charts) == expected[name] and all(json.loads(c.to_json())["$schema"] for c in charts.values())
    assert figures("no-such-analysis", result) == {}


@pytest.mark.skipif(not export.can_render(), reason="vl-convert is not installed")
def test_a_bundle_holds_settings_json_tables_charts_and_command(tmp_path):
    analysis, settings, result = results()["attribute"]
    out = tmp_path / "attribution.zip"
    names = write_bundle(out, analysis, settings, result, "tiny-llama", command="python -m core attribute …")
    assert sorted(names) == sorted(["settings.json", "result.json", "tables/components.csv", "tables/heads.csv",
                                    "tables/layers.csv", "charts/heads.png", "charts/heads.svg", "charts/layers.png",
                                    "charts/layers.svg", "command.txt"])
    with zipfile.ZipFile(out) as archive:
        assert archive.read("charts/heads.png")[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in archive.read("charts/layers.svg")[:200]
        table = pd.read_csv(io.BytesIO(archive.read("tables/components.csv")))
        assert table["value"].sum() == pytest.approx(result.total, abs=1e-4)
        assert archive.read("command.txt") == "python -m core attribute …\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["attribution.zip"]  # no temporary file left


def test_a_bundle_that_fails_leaves_nothing(tmp_path):
    analysis, settings, result = results()["lens"]
    out = tmp_path / "lens.zip"
    out.write_bytes(b"an older bundle")

    class Broken:
        def to_json(self):
            return result.to_json()

        def frames(self):
            raise RuntimeError("a table failed")

    with pytest.raises(RuntimeError):
        write_bundle(out, analysis, settings, Broken(), "m")
    assert out.read_bytes() == b"an older bundle" and [p.name for p in tmp_path.iterdir()] == ["lens.zip"]
