"""The one parser of ``maildispatch``: what it accepts, and what it passes on."""

from __future__ import annotations

import pytest

from producers.cli import build_parser, main


def parsed(*argv: str) -> tuple[dict[str, object], list[str]]:
    args, unknown = build_parser().parse_known_args(list(argv))
    return vars(args), unknown


def test_worker_options_are_its_own_wherever_they_stand_the_rest_go_to_celery() -> None:
    for argv in (
        ("worker", "msc", "--processes", "2", "-l", "DEBUG"),
        ("worker", "--processes", "2", "msc", "--", "-l", "DEBUG"),
    ):
        args, unknown = parsed(*argv)
        assert (args["channel"], args["processes"]) == ("msc", 2)
        assert [a for a in unknown if a != "--"] == ["-l", "DEBUG"]


def test_every_table_channel_is_a_worker_and_send_choice() -> None:
    from config.channels import CHANNELS

    for channel in CHANNELS:
        assert parsed("worker", channel)[0]["channel"] == channel
        send = ("send", "--owner", "o", "--from", "a@example.com", "--to", "b@example.org")
        assert parsed(*send, "--channel", channel)[0]["channel"] == channel


def test_an_unknown_option_of_other_commands_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["status", "some-job", "--verbose"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --verbose" in capsys.readouterr().err


def test_every_command_and_subcommand_has_a_help_line() -> None:
    import argparse

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                for name, sub in action.choices.items():
                    if name not in helped:
                        missing.append(f"{path} {name}")
                    missing += walk(sub, f"{path} {name}")
        return missing

    assert walk(build_parser(), "maildispatch") == []
