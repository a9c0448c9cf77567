"""ClaimInfo: the typed keys of ``info`` that claims and jobs fold from the log."""

from __future__ import annotations

from flows.engine.leases import ClaimBook, ClaimInfo
from schedulers import SegmentStarted
from schedulers.events import event_from_record, event_to_payload


def test_reads_the_keys_every_existing_log_holds() -> None:
    stored = {"bracket": 1, "rung": 0, "source": "job_api", "owner": "h/1/abc"}
    assert ClaimInfo.of(stored) == ClaimInfo("job_api", "h/1/abc")
    assert ClaimInfo.of({"rung": 0}) == ClaimInfo()
    assert ClaimInfo.of(None) == ClaimInfo()


def test_stamp_keeps_other_keys_and_their_order() -> None:
    decision = {"bracket": 2, "rung": 1}
    stamped = ClaimInfo(owner="h/1/abc").stamp(decision)
    assert stamped == {"bracket": 2, "rung": 1, "owner": "h/1/abc"}
    assert list(stamped) == ["bracket", "rung", "owner"]
    assert decision == {"bracket": 2, "rung": 1}  # not modified
    # The job API's payload, byte for byte what it always wrote.
    assert list(ClaimInfo("job_api", "h/2/x").stamp()) == ["source", "owner"]


def test_claim_book_folds_the_owner_through_the_codec() -> None:
    event = SegmentStarted("t0000", 0, 1, {"x": 1}, info=ClaimInfo(owner="h/1/a").stamp())
    again = event_from_record(event.kind, "t0000", event_to_payload(event))
    book = ClaimBook()
    book.fold(again, 5)
    assert book.open["t0000"].owner == "h/1/a" and book.open["t0000"].seq == 5
