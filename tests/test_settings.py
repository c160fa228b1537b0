"""The settings file: option defaults per command, below flags and environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from facecluster.cli import cli
from facecluster.errors import ConfigError
from facecluster.paths import config_path
from facecluster.settings import load_settings


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default settings file location (under the test's own XDG_CONFIG_HOME), not yet written."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "config" / "facecluster" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- reading the file -----------------------------------------------------------------------------------------


def test_config_path_follows_xdg_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "facecluster" / "config.toml"
    monkeypatch.setenv("FACECLUSTER_CONFIG", str(tmp_path / "mine.toml"))
    assert config_path() == tmp_path / "mine.toml"
    monkeypatch.setenv("FACECLUSTER_CONFIG", "")  # empty: no settings file at all
    assert config_path() is None


def test_an_absent_default_file_is_no_settings_but_an_absent_named_one_is_an_error(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "config.toml", required=False) == {}
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "config.toml", required=True)


@pytest.mark.parametrize("content, message", [
    (b"[cluster\n", r"not valid TOML: .*line 1"),
    (b"threshold = 0.9\nthreshold = 1.0\n", "not valid TOML"),
    (b"db = '\xe9'\n", "not UTF-8"),
])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path, required=False)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_fifo_or_a_folder_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)  # a plain read would wait for a writer for ever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(fifo, required=False)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(tmp_path, required=False)


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    with open(path, "wb") as handle:
        handle.truncate(2 << 20)
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_settings(path, required=False)


# -- precedence: flag > environment variable > settings file > default ------------------------------------------


def test_db_from_the_settings_file_below_the_variable_and_the_flag(settings: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings.write_text('db = "~/from-settings.db"\n')
    # `people` on a catalog that does not exist names the catalog it looked for: which one was chosen.
    assert str(tmp_path / "home" / "from-settings.db") in one_line_error(invoke("people"))
    monkeypatch.setenv("FACECLUSTER_DB", str(tmp_path / "from-env.db"))
    assert "from-env.db" in one_line_error(invoke("people"))
    assert "from-flag.db" in one_line_error(invoke("--db", str(tmp_path / "from-flag.db"), "people"))
    monkeypatch.delenv("FACECLUSTER_DB")
    monkeypatch.setenv("FACECLUSTER_CONFIG", "")  # and no settings file: the built-in default
    assert "from-settings.db" not in one_line_error(invoke("people"))


def test_options_of_a_subcommand_of_a_group_come_from_its_nested_table(settings: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("")
    # Without settings, `evaluate lfw` needs --images and --pairs (exit 2); with them it reads the pairs file.
    assert invoke("evaluate", "lfw").exit_code == 2
    settings.write_text(f'[evaluate.lfw]\nimages = "{tmp_path}"\npairs = "{pairs}"\n')
    assert "pairs" in one_line_error(invoke("evaluate", "lfw"))
    assert invoke("evaluate", "lfw", "--help").exit_code == 0


def test_a_named_settings_file_is_used_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    named = tmp_path / "mine.toml"
    named.write_text(f'db = "{tmp_path / "named.db"}"\n')
    assert "named.db" in one_line_error(invoke("people", env={"FACECLUSTER_CONFIG": str(named)}))
    message = one_line_error(invoke("people", env={"FACECLUSTER_CONFIG": str(tmp_path / "none.toml")}))
    assert "none.toml" in message and "not found" in message


# -- what the file may say -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, args, message", [
    ("[cluster]\nwieghts = 'x.pt'\n", ["cluster"], "[cluster] has no option 'wieghts' (options: checksum, "),
    ("[cluster]\nthreshold = 9\n", ["cluster"], "[cluster] threshold: 9.0 is not in the range 0<=x<=4"),
    ("[cluster]\nmethod = 'kmeans'\n", ["cluster"], "[cluster] method: 'kmeans' is not one of"),
    ("[nosuch]\nx = 1\n", ["people"], "[nosuch] is not a facecluster command"),
    ("[evaluate.lfw]\nno-flip = true\n", ["evaluate", "lfw"], "write 'flip = false' for --no-flip"),
    ("[evaluate.lfw]\nmargin = 'wide'\n", ["evaluate", "lfw"], "[evaluate.lfw] margin: 'wide' is not a valid"),
    ("[forget]\nyes = true\n", ["forget", "Ada"], "[forget] yes: --yes has no off switch"),
    ("[people]\njson = true\n", ["people"], "[people] json: --json has no off switch"),
    ("[train]\nforce = true\n", ["train"], "[train] force: --force has no off switch"),
    ("[label]\nrename = ['Ada', 'Bob']\n", ["label", "1", "Ada"], "[label] rename: --rename is an action"),
    ("[label]\nignore-face = 3\n", ["label", "1", "Ada"], "[label] ignore-face: --ignore-face is an action"),
    ("wieghts = 1\n", ["people"], "the top level has no option 'wieghts' (options: db)"),
    # Only options the file may set are offered: not --json, -q, --force or --full, which it refuses.
    ("[cluster]\nwieghts = 'x.pt'\n", ["cluster"], "(options: checksum, device, method, min-cluster-size, "
                                                   "min-face-size, min-probability, min-samples, model, threshold, "
                                                   "weights)"),
    ("[people]\nsort = 1\n", ["people"], "[people] has no option 'sort' (none of its options can be set here)"),
    ("[label]\nrenme = 1\n", ["label", "1", "Ada"], "[label] has no option 'renme' (none of its options can be set here)"),
])
def test_a_wrong_key_or_value_stops_the_command_with_one_line(settings: Path, content: str, args: list[str],
                                                             message: str) -> None:
    settings.write_text(content)
    line = one_line_error(invoke(*args))
    assert message in line and str(settings) in line


def test_a_typo_in_one_commands_table_does_not_stop_another_command(settings: Path, tmp_path: Path) -> None:
    settings.write_text("[evaluate.lfw]\nmargn = 3\n[cluster]\nthreshold = 'x'\n")
    assert "no catalog" in one_line_error(invoke("--db", str(tmp_path / "c.db"), "people"))
    assert "[evaluate.lfw] has no option 'margn'" in one_line_error(invoke("evaluate", "lfw"))


def test_keys_may_use_dashes_or_underscores(settings: Path) -> None:
    settings.write_text("[evaluate.lfw]\nsubtract_mean = 'maybe'\n")
    assert "[evaluate.lfw] subtract_mean: 'maybe' is not a valid boolean" in one_line_error(invoke("evaluate", "lfw"))


def test_help_and_version_work_with_a_broken_settings_file(settings: Path) -> None:
    settings.write_text("[cluster\n")
    assert invoke("--help").exit_code == 0 and invoke("--version").exit_code == 0
    assert "not valid TOML" in one_line_error(invoke("people"))


def _help_of(option: str, output: str) -> str:
    """The help text of ``option`` in a --help page, its wrapped lines joined."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    text = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip().startswith("-") or not line.startswith(" " * 10):
            break
        text.append(line)
    return " ".join(" ".join(text).split())


def test_help_says_what_the_settings_file_sets(settings: Path) -> None:
    settings.write_text("db = '~/photos.db'\n[cluster]\nthreshold = 0.9\n[evaluate.lfw]\nflip = false\nmargin = 20\n")
    assert "[default: 1.1]. [settings file: 0.9]" in _help_of("--threshold", invoke("cluster", "--help").stdout)
    assert "[settings file:" not in _help_of("--min-cluster-size", invoke("cluster", "--help").stdout)
    page = invoke("evaluate", "lfw", "--help").stdout  # Click shows a default_map value as the default: not here
    assert "[settings file: --no-flip; default: --flip]" in _help_of("--flip", page)
    assert "[settings file: 20; default: 32]" in _help_of("--margin", page)
    assert f"[settings file: {Path.home() / 'photos.db'}]" in _help_of("--db", invoke("--help").stdout)
    settings.unlink()
    assert "settings file" not in invoke("cluster", "--help").stdout
    assert "[default: 32; 0<=x<=120]" in _help_of("--margin", invoke("evaluate", "lfw", "--help").stdout)
