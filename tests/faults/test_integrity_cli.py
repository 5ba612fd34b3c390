"""The CLI's last line of defence: an error's text is printed as text, whatever characters it holds."""

from __future__ import annotations

from _faults import assert_user_error, cli


def test_error_text_with_brackets_is_printed_verbatim(tmp_path, capsys):
    # rich would read "[bold red]" in a path as markup (and "[/x]" as a closing tag error): print it as typed
    odd = tmp_path / "[bold red]data[/x]" / "m.csv"
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{odd}", "--dry-run")
    assert_user_error(rc, err, "[bold red]data[/x]")
