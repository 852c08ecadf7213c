"""Tests of the channel classification table and its TOML file."""

from pathlib import Path

import pytest

from stream.errors import ConfigError
from stream.ingest.channels import ChannelClass, load_channel_table, normalize_channel

CHANNELS_FILE = Path(__file__).resolve().parents[3] / "config" / "channels.toml"


def write_table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("knowledge_base", ChannelClass.SELF_SERVICE),
        ("faq", ChannelClass.SELF_SERVICE),
        ("chatbot", ChannelClass.SELF_SERVICE),
        ("community", ChannelClass.SELF_SERVICE),
        ("email", ChannelClass.ASSISTED),
        ("phone", ChannelClass.ASSISTED),
        ("live_chat", ChannelClass.ASSISTED),
        ("ticket", ChannelClass.ASSISTED),
        ("internal", ChannelClass.EXCLUDED),
        ("Live Chat", ChannelClass.ASSISTED),
        ("KNOWLEDGE-BASE", ChannelClass.SELF_SERVICE),
        ("Web Self Service", ChannelClass.SELF_SERVICE),
        ("e-mail In", ChannelClass.ASSISTED),
    ],
)
def test_load_channel_table_default_file(channel: str, expected: ChannelClass) -> None:
    table = load_channel_table(CHANNELS_FILE)

    assert table.classify(channel) == expected


def test_load_channel_table_unknown_channel() -> None:
    table = load_channel_table(CHANNELS_FILE)

    assert table.classify("fax_machine") is None
    assert table.classify("") is None


def test_normalize_channel() -> None:
    assert normalize_channel("Live Chat") == "live_chat"
    assert normalize_channel("  e-mail  In ") == "e_mail_in"
    assert normalize_channel("faq") == "faq"


def test_load_channel_table_normalises_file_entries(tmp_path: Path) -> None:
    path = write_table(tmp_path, '[self_service]\nchannels = ["Help Center"]\n')

    table = load_channel_table(path)

    assert table.classes == {"help_center": ChannelClass.SELF_SERVICE}
    assert table.classify("help-center") == ChannelClass.SELF_SERVICE


def test_load_channel_table_repeat_in_same_class(tmp_path: Path) -> None:
    path = write_table(tmp_path, '[assisted]\nchannels = ["phone", "Phone"]\n')

    assert load_channel_table(path).classes == {"phone": ChannelClass.ASSISTED}


def test_load_channel_table_unknown_section(tmp_path: Path) -> None:
    path = write_table(
        tmp_path, '[self_service]\nchannels = ["faq"]\n\n[selfservice]\nchannels = ["chatbot"]\n'
    )

    with pytest.raises(ConfigError, match=r"unknown sections \['selfservice'\]") as raised:
        load_channel_table(path)

    assert str(path) in str(raised.value)


def test_load_channel_table_channel_in_two_classes(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        '[self_service]\nchannels = ["faq", "Live Chat"]\n\n[assisted]\nchannels = ["live_chat"]\n',
    )

    message = r"'live_chat' is listed as both self_service and assisted"
    with pytest.raises(ConfigError, match=message):
        load_channel_table(path)


@pytest.mark.parametrize(
    "text",
    [
        '[assisted]\nchannels = "phone"\n',
        "[assisted]\nchannels = 7\n",
        '[assisted]\nchannels = ["phone", 7]\n',
        '[assisted]\nchannels = [["phone"]]\n',
    ],
)
def test_load_channel_table_channels_not_list(tmp_path: Path, text: str) -> None:
    path = write_table(tmp_path, text)

    with pytest.raises(ConfigError, match=r"\[assisted\] channels must be a list of strings"):
        load_channel_table(path)


def test_load_channel_table_section_not_table(tmp_path: Path) -> None:
    path = write_table(tmp_path, 'assisted = ["phone"]\n')

    with pytest.raises(ConfigError, match=r"assisted"):
        load_channel_table(path)


def test_load_channel_table_unknown_key(tmp_path: Path) -> None:
    path = write_table(
        tmp_path, '[self_service]\nchannels = ["faq"]\n\n[assisted]\nchanels = ["phone"]\n'
    )

    with pytest.raises(ConfigError, match=r"chanels"):
        load_channel_table(path)


def test_load_channel_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found: set channels_file"):
        load_channel_table(tmp_path / "absent.toml")


def test_load_channel_table_invalid_toml(tmp_path: Path) -> None:
    path = write_table(tmp_path, "[assisted\nchannels = [\n")

    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_channel_table(path)


def test_load_channel_table_empty(tmp_path: Path) -> None:
    path = write_table(tmp_path, "[assisted]\nchannels = []\n")

    with pytest.raises(ConfigError, match=r"lists no channels"):
        load_channel_table(path)
