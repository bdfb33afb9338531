"""segment.progress: a tqdm bar on stderr only when stderr is a terminal; stdout lines always."""

from __future__ import annotations

import io

from segmentation.storage import META_SOURCE_GENERATION, mask_name

from segment import commands
from segment.progress import Progress
from segment.upload import Upload
from tests.fakes.terminal import Terminal
from tests.unit.segment.gcs_fake import FakeStorage


def test_no_bar_when_the_stream_is_not_a_terminal(capsys):
    stream = io.StringIO()
    with Progress("work", total=2, unit="thing", stream=stream) as progress:
        progress.say("one")
        progress.update()
    assert not progress.shown
    assert stream.getvalue() == ""
    assert capsys.readouterr().out == "one\n"


def test_a_bar_on_a_terminal_and_the_lines_on_stdout(capsys):
    stream = Terminal()
    with Progress("work", total=2, unit="thing", stream=stream) as progress:
        assert progress.shown
        progress.say("one")
        progress.update(2)
    drawn = stream.getvalue()
    assert "work:" in drawn and "/2 [" in drawn and "thing/s" in drawn  # (redraws are throttled)
    assert "one" not in drawn
    assert capsys.readouterr().out == "one\n"


def test_the_default_stream_is_stderr_and_pytest_capture_is_no_terminal(capsys):
    with Progress("work") as progress:
        progress.update()
    assert not progress.shown
    assert capsys.readouterr().err == ""


def _done(storage: FakeStorage, *names: str) -> list[Upload]:
    uploads = []
    for name in names:
        blob = storage.put("in", name)
        uploads.append(
            Upload(path=None, bucket="in", name=name, generation=blob.generation, blob=blob)
        )
    return uploads


def test_upload_wait_shows_a_bar_on_a_terminal_stderr(monkeypatch, capsys):
    storage = FakeStorage()
    done = _done(storage, "a.png", "b.png")
    for item in done:
        storage.put(
            "out",
            mask_name(item.name),
            b"png",
            {META_SOURCE_GENERATION: str(item.generation)},
        )
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    found = commands._wait(storage, "out", done, timeout=0)

    assert sorted(found) == ["a.png", "b.png"]
    assert "waiting for outputs:" in terminal.getvalue() and "/2 [" in terminal.getvalue()
    out = capsys.readouterr().out
    assert "a.png: mask masks/a.png.png" in out and "b.png: mask masks/b.png.png" in out


def test_upload_wait_draws_nothing_on_a_pipe(capsys):
    storage = FakeStorage()
    done = _done(storage, "a.png")
    assert commands._wait(storage, "out", done, timeout=0) == {}
    assert capsys.readouterr().err == ""
