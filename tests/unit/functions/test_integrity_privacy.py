"""Issue "Integrity, privacy and supply chain", findings 1-4, through the pipeline (fake store,
tiny model):

1. output names are injective, and an output that names another source is never overwritten,
   deleted or compared with (it is a conflict; our output goes to the conflict name);
2. a duplicate delivery finishes the cleanup a fault interrupted;
3. OBJECT_DELETE / OBJECT_ARCHIVE remove the outputs of the removed generation (and no newer);
4. INPUT_BUCKET: other buckets are ignored; a download never reads more than MAX_IMAGE_BYTES + 1.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from segmentation import storage
from segmentation.errors import StorageUnavailableError
from segmentation.model import SegmentationModel
from segmentation.pipeline import handle_cloud_event
from segmentation.results import Outcome, Result
from segmentation.settings import Settings

from tests.fakes import notifications
from tests.fakes.images import halves_png
from tests.fakes.notifications import INPUT_BUCKET, OUTPUT_BUCKET
from tests.fakes.storage import FakeObjectStore

NAME = "uploads/cat.png"
MASK = storage.mask_name(NAME)
ERROR = storage.error_name(NAME)
JUNK = b"<html>not an image</html>"


class Harness:
    def __init__(self, store: FakeObjectStore, model: Any, settings: Settings, capsys: Any) -> None:
        self.store, self.model, self.settings, self.capsys = store, model, settings, capsys

    def upload(self, data: bytes, name: str = NAME, bucket: str = INPUT_BUCKET) -> int:
        return self.store.put(bucket, name, data).generation

    def remove(self, name: str = NAME, bucket: str = INPUT_BUCKET) -> int:
        """Deletes the input object (as a user would); returns the generation it had."""
        return self.store.objects.pop((bucket, name)).info.generation

    def deliver(
        self, name: str = NAME, generation: int | None = None, bucket: str = INPUT_BUCKET, **kw: Any
    ) -> Result:
        stored = self.store.get(bucket, name)
        if generation is None:
            generation = stored.info.generation
        kw.setdefault("size", stored.info.size if stored else 100)
        message = notifications.message(bucket, name, generation, **kw)
        return handle_cloud_event(
            notifications.eventarc_event(message),
            store=self.store,
            model=self.model,
            settings=self.settings,
        )

    def delete_event(
        self, generation: int, event_type: str = "OBJECT_DELETE", name: str = NAME, **kw: Any
    ) -> Result:
        return self.deliver(name, generation, event_type=event_type, **kw)

    def output(self, name: str) -> Any:
        return self.store.get(OUTPUT_BUCKET, name)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.capsys.readouterr().out.splitlines() if line]


@pytest.fixture
def h(
    store: FakeObjectStore, tiny_model: SegmentationModel, settings: Settings, capsys: Any
) -> Harness:
    return Harness(store, tiny_model, settings, capsys)


def _source_meta(name: str, generation: int, bucket: str = INPUT_BUCKET) -> dict[str, str]:
    return {
        storage.META_SOURCE_BUCKET: bucket,
        storage.META_SOURCE_NAME: name,
        storage.META_SOURCE_GENERATION: str(generation),
    }


def _middle(output: str, prefix: str = "masks/", suffix: str = ".png") -> str:
    assert output.startswith(prefix) and output.endswith(suffix)
    return output[len(prefix) : -len(suffix)]


# --- 1. injective names, outputs of other sources --------------------------------------------


@pytest.mark.parametrize("victim", ["a/../victim.png", "dir/" + "é" * 510 + ".jpg"])
@pytest.mark.parametrize("attack", [JUNK, halves_png()])
def test_an_upload_named_like_a_fallback_cannot_touch_that_uploads_outputs(
    h: Harness, victim: str, attack: bytes
) -> None:
    h.upload(halves_png(), name=victim)
    assert h.deliver(victim).outcome is Outcome.MASK_WRITTEN
    victim_mask = h.output(storage.mask_name(victim))
    attacker = _middle(storage.mask_name(victim))  # a legal object name: the fallback string
    h.upload(attack, name=attacker)
    assert h.deliver(attacker).outcome in (Outcome.MASK_WRITTEN, Outcome.ERROR_RECORDED)
    assert h.output(storage.mask_name(victim)) == victim_mask  # neither replaced nor deleted
    assert h.output(storage.error_name(victim)) is None
    for make in (storage.mask_name, storage.error_name):
        assert make(attacker) != make(victim)
    written = [n for n in h.store.names(OUTPUT_BUCKET) if n != storage.mask_name(victim)]
    assert [h.output(n).info.metadata["source-name"] for n in written] == [attacker]


def test_plain_names_that_end_like_a_derived_name_take_the_fallback_form() -> None:
    digest = "0123456789abcdef" * 2
    for source in (f"x~{digest}", f"x~{digest * 2}", f"a/b.png~{digest}"):
        name = storage.mask_name(source)
        assert name != f"masks/{source}.png"
        assert storage.FALLBACK_TAIL.search(_middle(name))
    # Anything else that merely looks similar keeps its plain name (no rename).
    for source in (f"x~{digest.upper()}", f"x~{digest[:-1]}", f"x{digest}", "x~", "100%.png"):
        assert storage.mask_name(source) == f"masks/{source}.png"


_names = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=60),
    st.lists(
        st.sampled_from([".", "..", "a", "é", "~", "%2E", "x.png"]), min_size=1, max_size=6
    ).map("/".join),
    st.text(max_size=20).map(lambda s: s + "é" * 600),
)


@given(_names)
def test_no_name_maps_onto_another_names_output(source: str) -> None:
    """Whatever a derived name of `source` is, uploading under that string (or under anything
    else) gives other outputs: plain, fallback and conflict names never meet."""
    names = {
        storage.mask_name(source),
        storage.mask_conflict_name(source),
    }
    assert len(names) == 2
    for derived in names:
        attacker = _middle(derived)
        if attacker != source:
            assert storage.mask_name(attacker) not in names
            assert storage.mask_conflict_name(attacker) not in names


def test_another_sources_output_is_never_replaced_compared_or_deleted(h: Harness) -> None:
    held_mask = h.store.put(
        OUTPUT_BUCKET, MASK, b"theirs", metadata=_source_meta("legacy~name", 10**15)
    )
    held_error = h.store.put(
        OUTPUT_BUCKET, ERROR, b"{}", metadata=_source_meta(NAME, 1, bucket="another-input")
    )
    generation = h.upload(halves_png())
    result = h.deliver()
    # Not "superseded" by the other source's newer generation: written under the conflict name.
    assert result.outcome is Outcome.MASK_WRITTEN
    assert result.output_uri == f"gs://{OUTPUT_BUCKET}/{storage.mask_conflict_name(NAME)}"
    ours = h.output(storage.mask_conflict_name(NAME))
    assert ours.info.metadata["source-generation"] == str(generation)
    assert h.output(MASK).info == held_mask and h.output(ERROR).info == held_error
    conflicts = [line for line in h.lines() if line.get("event") == "output_conflict"]
    assert {c["held_by"]["output"] for c in conflicts} == {
        f"gs://{OUTPUT_BUCKET}/{MASK}",
        f"gs://{OUTPUT_BUCKET}/{ERROR}",
    }
    assert all(c["severity"] == "WARNING" for c in conflicts)
    # The redelivery finds our output at the conflict name: a duplicate, nothing written.
    mutations = list(h.store.mutations)
    assert h.deliver().outcome is Outcome.DUPLICATE
    assert h.store.mutations == mutations
    # A broken re-upload records its error under the error's conflict name, removes our mask,
    # and still leaves both outputs of the other sources alone.
    h.upload(JUNK)
    assert h.deliver().outcome is Outcome.ERROR_RECORDED
    assert h.output(storage.mask_conflict_name(NAME)) is None
    assert h.output(storage.error_conflict_name(NAME)) is not None
    assert h.output(MASK).info == held_mask and h.output(ERROR).info == held_error
    # Deleting the upload deletes only what is ours.
    removed = h.remove()
    assert h.delete_event(removed).outcome is Outcome.OUTPUTS_DELETED
    assert h.store.names(OUTPUT_BUCKET) == sorted([MASK, ERROR])


def test_a_write_race_against_another_source_never_replaces_its_output(h: Harness) -> None:
    h.upload(halves_png())
    h.store.before_write = lambda bucket, name: h.store.put(
        bucket, name, b"theirs", metadata=_source_meta("other.png", 1)
    )
    with pytest.raises(Exception, match="belongs to"):
        h.deliver()
    assert h.output(MASK).data == b"theirs"
    assert h.deliver().outcome is Outcome.MASK_WRITTEN  # redelivered: to the conflict name
    assert h.output(MASK).data == b"theirs"
    assert h.output(storage.mask_conflict_name(NAME)) is not None


def test_both_names_held_by_other_sources_is_rejected_without_writing(h: Harness) -> None:
    for name in (MASK, storage.mask_conflict_name(NAME)):
        h.store.put(OUTPUT_BUCKET, name, b"theirs", metadata=_source_meta("other.png", 1))
    h.upload(halves_png())
    mutations = list(h.store.mutations)
    result = h.deliver()
    assert result.outcome is Outcome.REJECTED and result.reason == "output_conflict"
    assert h.store.mutations == mutations


# --- 2. a duplicate finishes the job ---------------------------------------------------------


@pytest.mark.parametrize("operation", ["stat", "delete"])
def test_a_duplicate_finishes_the_cleanup_a_fault_interrupted(h: Harness, operation: str) -> None:
    h.upload(JUNK)
    assert h.deliver().outcome is Outcome.ERROR_RECORDED
    generation = h.upload(halves_png())
    # The mask write succeeds; the next stat / delete (the old error record's) hits a 503.
    h.store.before_write = lambda bucket, name: h.store.fail_next(
        operation, StorageUnavailableError("503")
    )
    with pytest.raises(StorageUnavailableError):
        h.deliver()
    assert h.output(MASK).info.metadata["source-generation"] == str(generation)
    assert h.output(ERROR) is not None  # the stale record survived the fault...
    assert h.deliver().outcome is Outcome.DUPLICATE
    assert h.output(ERROR) is None  # ...and the redelivery removed it
    assert h.output(MASK).info.metadata["source-generation"] == str(generation)


def test_a_duplicate_keeps_a_newer_other_output(h: Harness) -> None:
    generation = h.upload(halves_png())
    assert h.deliver().outcome is Outcome.MASK_WRITTEN
    h.store.put(OUTPUT_BUCKET, ERROR, b"{}", metadata=_source_meta(NAME, generation + 1))
    assert h.deliver().outcome is Outcome.SUPERSEDED
    assert h.output(ERROR) is not None


# --- 3. deleted uploads lose their outputs ---------------------------------------------------


@pytest.mark.parametrize("event_type", ["OBJECT_DELETE", "OBJECT_ARCHIVE"])
@pytest.mark.parametrize("data", [halves_png(), JUNK])
def test_deleting_an_upload_deletes_its_outputs(h: Harness, event_type: str, data: bytes) -> None:
    h.upload(data)
    h.deliver()
    assert h.store.names(OUTPUT_BUCKET)
    generation = h.remove()
    result = h.delete_event(generation, event_type)
    assert result.outcome is Outcome.OUTPUTS_DELETED
    assert h.store.names(OUTPUT_BUCKET) == []
    summary = h.lines()[-1]
    assert summary["outcome"] == "outputs_deleted" and summary["severity"] == "INFO"
    assert summary["event_type"] == event_type
    # Redelivered: nothing left to delete.
    assert h.delete_event(generation, event_type).reason == "no_outputs"


def test_an_overwrite_deletes_nothing_of_the_newer_generation(h: Harness) -> None:
    first = h.upload(halves_png())
    h.deliver()
    second = h.upload(JUNK)
    assert h.deliver().outcome is Outcome.ERROR_RECORDED
    attributes = {"overwrittenByGeneration": str(second)}
    result = h.delete_event(first, "OBJECT_ARCHIVE", attributes=attributes)
    assert result.outcome is Outcome.IGNORED and result.reason == "no_outputs"
    assert h.output(ERROR).info.metadata["source-generation"] == str(second)


def test_an_overwrite_processed_first_removes_only_the_older_output(h: Harness) -> None:
    first = h.upload(halves_png())
    h.deliver()
    second = h.upload(halves_png(10, 10))  # its own event is still on its way
    attributes = {"overwrittenByGeneration": str(second)}
    assert h.delete_event(first, "OBJECT_ARCHIVE", attributes=attributes).outcome is (
        Outcome.OUTPUTS_DELETED
    )
    assert h.deliver().outcome is Outcome.MASK_WRITTEN
    assert h.output(MASK).info.metadata["source-generation"] == str(second)


def test_deleting_an_older_generation_keeps_the_newer_output(h: Harness) -> None:
    first = h.upload(halves_png())
    h.upload(halves_png(10, 10))
    h.deliver()
    h.remove()
    assert h.delete_event(first).reason == "no_outputs"
    assert h.output(MASK) is not None


def test_a_deletion_event_for_the_live_generation_deletes_nothing(h: Harness) -> None:
    generation = h.upload(halves_png())
    h.deliver()
    result = h.delete_event(generation)  # replayed or forged: the object is still there
    assert result.outcome is Outcome.IGNORED and result.reason == "still_live"
    assert h.output(MASK) is not None


def test_deletion_is_off_when_the_setting_is(h: Harness) -> None:
    h.settings = dataclasses.replace(h.settings, delete_outputs_on_delete=False)
    h.upload(halves_png())
    h.deliver()
    generation = h.remove()
    result = h.delete_event(generation)
    assert result.outcome is Outcome.IGNORED and result.reason == "delete_outputs_off"
    assert h.output(MASK) is not None


def test_an_upload_deleted_while_it_is_processed_keeps_no_mask(h: Harness) -> None:
    generation = h.upload(halves_png())
    # The deletion happens (and its event finds nothing yet) while the mask is being made.
    h.store.before_write = lambda bucket, name: h.remove()
    result = h.deliver(generation=generation, size=len(halves_png()))
    assert result.outcome is Outcome.OBJECT_GONE
    assert h.store.names(OUTPUT_BUCKET) == []


def test_a_deletion_from_another_bucket_deletes_nothing(h: Harness) -> None:
    h.upload(halves_png())
    h.deliver()
    h.upload(halves_png(), bucket="demo-seg-other")
    generation = h.remove(bucket="demo-seg-other")
    result = h.delete_event(generation, bucket="demo-seg-other")
    assert result.reason == "no_outputs"  # the mask names INPUT_BUCKET
    assert h.output(MASK) is not None


# --- 4. INPUT_BUCKET and bounded downloads ---------------------------------------------------


def test_events_of_other_buckets_are_ignored_with_a_reason(h: Harness) -> None:
    h.settings = dataclasses.replace(h.settings, input_bucket=INPUT_BUCKET)
    h.upload(halves_png(), bucket="readable-but-not-ours")
    result = h.deliver(bucket="readable-but-not-ours")
    assert result.outcome is Outcome.IGNORED and result.reason == "not_input_bucket"
    assert h.store.log == [] and h.store.names(OUTPUT_BUCKET) == []
    summary = h.lines()[-1]
    assert summary["outcome"] == "ignored" and summary["reason"] == "not_input_bucket"
    h.upload(halves_png())
    assert h.deliver().outcome is Outcome.MASK_WRITTEN  # INPUT_BUCKET itself is processed


@pytest.mark.parametrize("payload_format", ["JSON_API_V1", "NONE"])
def test_a_lying_size_gives_too_large_without_a_big_download(
    h: Harness, payload_format: str
) -> None:
    limit = h.settings.max_image_bytes
    h.upload(b"\x89PNG" + b"x" * (3 * limit))
    # The notification (JSON_API_V1) or the object's metadata (NONE) claims 100 bytes.
    stored = h.store.get(INPUT_BUCKET, NAME)
    h.store.objects[(INPUT_BUCKET, NAME)] = dataclasses.replace(
        stored, info=dataclasses.replace(stored.info, size=100)
    )
    result = h.deliver(size=100, attributes={"payloadFormat": payload_format})
    assert result.outcome is Outcome.ERROR_RECORDED and result.reason == "image_too_large"
    assert h.store.bytes_read <= limit + 1
