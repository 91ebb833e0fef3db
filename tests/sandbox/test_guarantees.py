"""wscore.sandbox.guarantees: the one delivery-guarantee policy."""

from __future__ import annotations

from wscore.sandbox.guarantees import BREACHES, Evidence, ReplyAccount, breaches, stray_replies


def test_clean_evidence_breaks_nothing() -> None:
    assert breaches(Evidence()) == {}


def test_every_field_is_a_named_breach_in_order() -> None:
    evidence = Evidence(**{name: i + 1 for i, name in enumerate(reversed(BREACHES))})
    assert list(breaches(evidence)) == list(BREACHES)


def test_late_replies_are_not_stray_but_second_replies_are() -> None:
    assert stray_replies(unmatched_replies=2, requests_given_up=2) == 0
    assert stray_replies(unmatched_replies=0, requests_given_up=5) == 0
    assert stray_replies(unmatched_replies=3, requests_given_up=1) == 2


def test_reply_account_only_grows() -> None:
    account = ReplyAccount()
    assert account.update(1) == 1  # a reply nothing gave up for: a duplicate
    account.gave_up()
    assert account.update(1) == 0  # a later timeout does not take it back
    assert account.update(2) == 0  # the timed-out request's late reply
    assert account.update(3) == 1
    assert account.stray == 2
