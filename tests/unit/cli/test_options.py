"""Each option is declared once, on the field it sets (melpipe.parameters): the commands'
click options are made from the declarations, and docs/cli.md's table says the same."""

import re

import click
import pytest

from melpipe.analysis.config import SpectrogramConfig
from melpipe.cli import options
from melpipe.cli.app import main
from melpipe.parameters import options_of
from tests.helpers import REPO

CLI_DOC = REPO / "docs" / "cli.md"


def documented_options() -> dict[str, tuple[tuple[str, ...], str]]:
    """docs/cli.md's table of preprocess's options: each row's flags and default."""
    text = CLI_DOC.read_text().split("## `melpipe preprocess INPUT OUTPUT`", 1)[1]
    table = text.split("| option | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        flags_cell, default, _ = (c.strip() for c in line.strip("|").split("|", 2))
        flags = tuple(re.findall(r"--[a-z0-9-]+", flags_cell))
        rows[flags[0]] = (flags, default.replace("`", ""))
    return rows


def command(name: str) -> click.Command:
    return main.commands[name]


def test_the_docs_table_is_preprocess_s_options_with_their_defaults():
    documented = documented_options()
    declared = {options.DECLARED[n].flag: options.DECLARED[n] for n in options.PREPROCESS}
    assert sorted(documented) == sorted(declared)
    for flag, (flags, default) in documented.items():
        option = declared[flag]
        assert flags == option.flags, flag
        assert default == option.shown, flag


def test_each_command_s_options_are_made_from_the_declarations():
    for name, names in (("preprocess", options.PREPROCESS), ("scan", options.SCAN)):
        params = {p.name: p for p in command(name).params if isinstance(p, click.Option)}
        for key in names:
            declared, made = options.DECLARED[key], params[key]
            assert tuple(made.opts + made.secondary_opts) == declared.flags, key
            assert made.help == options.help_of(declared), key


def test_preprocess_and_scan_share_one_declaration_of_each_option():
    shared = set(options.PREPROCESS) & set(options.SCAN)
    assert {"sample_rate", "hop_length", "duration", "frames", "preset"} <= shared
    helps = [{p.name: p.help for p in command(c).params} for c in ("preprocess", "scan")]
    assert all(helps[0][key] == helps[1][key] for key in shared)


def test_every_config_field_is_declared_with_a_default_or_derived():
    names = {o.name for o in options_of(SpectrogramConfig)}
    # The clip's length is given as seconds or frames, never as samples.
    assert {"duration", "frames"} <= names and "n_samples" not in names
    config = SpectrogramConfig()
    for option in options_of(SpectrogramConfig):
        assert option.help.endswith("."), option.name  # a sentence, as --help prints it
        if option.name in ("sample_rate", "hop_length", "preset", "segments", "log"):
            assert option.shown == str(getattr(config, option.name)), option.name


@pytest.mark.parametrize("name", ["preprocess", "scan"])
def test_help_shows_each_declared_default(name):
    text = main.commands[name].get_help(click.Context(main.commands[name]))
    flat = " ".join(text.split())
    assert "[default: 22050]" in flat
    assert "Hz every file is resampled to." in flat
