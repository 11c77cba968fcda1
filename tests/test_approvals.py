"""One-time approval tokens: each worth one click, one decision per incident, gone when expired."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest

from incident_detector.act.approvals import ApprovalTokens, Grant

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_a_token_is_consumed_exactly_once():
    tokens = ApprovalTokens(clock=Clock())
    token = tokens.issue("ns/app/uid/rev-2", "rollback")
    assert tokens.consume(token) == Grant("ns/app/uid/rev-2", "rollback")
    assert tokens.consume(token) is None
    incident_key, action = Grant("k", "a")  # a plain pair for whoever unpacks it
    assert (incident_key, action) == ("k", "a")


def test_tokens_are_unguessable_and_distinct():
    tokens = ApprovalTokens(clock=Clock())
    issued = {tokens.issue("k", "rollback") for _ in range(200)}
    assert len(issued) == 200
    assert all(len(t) >= 43 and "k" != t for t in issued)
    assert tokens.consume("k") is None and tokens.consume("") is None


def test_consuming_one_token_closes_the_incidents_question():
    tokens = ApprovalTokens(clock=Clock())
    approve, reject = tokens.issue("incident-a", "rollback"), tokens.issue("incident-a", "rollback")
    restart = tokens.issue("incident-a", "restart")
    other = tokens.issue("incident-b", "rollback")
    assert tokens.consume(reject) == Grant("incident-a", "rollback")
    assert tokens.consume(approve) is None and tokens.consume(restart) is None
    assert tokens.consume(other) == Grant("incident-b", "rollback")


def test_peek_does_not_consume():
    tokens = ApprovalTokens(clock=Clock())
    token = tokens.issue("k", "rollback")
    assert tokens.peek(token) == tokens.peek(token) == Grant("k", "rollback")
    assert tokens.consume(token) == Grant("k", "rollback")
    assert tokens.peek(token) is None


def test_tokens_expire():
    clock = Clock()
    tokens = ApprovalTokens(clock=clock, ttl=timedelta(minutes=30))
    token = tokens.issue("k", "rollback")
    clock.now += timedelta(minutes=29, seconds=59)
    assert tokens.peek(token) is not None
    clock.now += timedelta(seconds=1)
    assert tokens.peek(token) is None and tokens.consume(token) is None
    assert tokens.open_count() == 0


def test_expired_tokens_are_forgotten_when_new_ones_are_issued():
    clock = Clock()
    tokens = ApprovalTokens(clock=clock, ttl=timedelta(minutes=1))
    for n in range(10):
        tokens.issue(f"k{n}", "rollback")
    clock.now += timedelta(minutes=2)
    tokens.issue("fresh", "rollback")
    assert tokens.open_count() == 1


def test_close_withdraws_an_incidents_tokens():
    tokens = ApprovalTokens(clock=Clock())
    a, b = tokens.issue("k", "rollback"), tokens.issue("k", "restart")
    tokens.issue("other", "rollback")
    assert tokens.close("k") == 2
    assert tokens.consume(a) is None and tokens.consume(b) is None
    assert tokens.open_count() == 1


def test_only_the_digest_is_kept():
    tokens = ApprovalTokens(clock=Clock())
    token = tokens.issue("k", "rollback")
    assert token not in repr(vars(tokens))


def test_ttl_must_be_positive():
    with pytest.raises(ValueError):
        ApprovalTokens(clock=Clock(), ttl=timedelta(0))


def test_many_threads_racing_for_one_token_make_one_winner():
    tokens = ApprovalTokens(clock=Clock())
    for n in range(20):
        # A question of its own each round: an answered one cannot be asked again.
        token = tokens.issue(f"k{n}", "rollback")
        start = threading.Barrier(16)
        won: list[Grant] = []

        def click() -> None:
            start.wait()
            grant = tokens.consume(token)
            if grant is not None:
                won.append(grant)

        threads = [threading.Thread(target=click) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert won == [Grant(f"k{n}", "rollback")]


def test_concurrent_tasks_make_one_winner():
    tokens = ApprovalTokens(clock=Clock())
    token = tokens.issue("k", "rollback")

    async def click() -> Grant | None:
        await asyncio.sleep(0)
        return tokens.consume(token)

    async def race() -> list[Grant | None]:
        return await asyncio.gather(*(click() for _ in range(50)))

    results = asyncio.run(race())
    assert [r for r in results if r is not None] == [Grant("k", "rollback")]


def test_an_answered_question_is_not_reopened_by_issuing_again():
    # The dashboard issues a fresh pair each time the incident page is shown: a page rendered
    # after (or while) the question was answered must not bring it back.
    tokens = ApprovalTokens(clock=Clock())
    approve = tokens.issue("7", "approve")
    assert not tokens.is_closed("7")
    assert tokens.consume(approve) == Grant("7", "approve")
    assert tokens.is_closed("7")
    again, reject = tokens.issue("7", "approve"), tokens.issue("7", "reject")
    assert again != approve and len(again) >= 43  # looks like any token...
    assert tokens.peek(again) is None and tokens.consume(reject) is None  # ...but is spent
    assert tokens.open_count() == 0
    # Other questions are not affected.
    assert tokens.consume(tokens.issue("8", "approve")) == Grant("8", "approve")


def test_a_question_closed_elsewhere_is_not_reopened_either():
    tokens = ApprovalTokens(clock=Clock())
    tokens.issue("7", "approve")
    tokens.close("7")
    assert tokens.is_closed("7") and tokens.consume(tokens.issue("7", "approve")) is None


def test_closed_questions_are_forgotten_with_the_tokens_lifetime():
    clock = Clock()
    tokens = ApprovalTokens(clock=clock, ttl=timedelta(hours=1))
    tokens.consume(tokens.issue("7", "approve"))
    clock.now += timedelta(minutes=59)
    assert tokens.is_closed("7")
    clock.now += timedelta(minutes=1)
    assert not tokens.is_closed("7")
    # A day later the journal's state is what says the question was answered.
    assert tokens.consume(tokens.issue("7", "approve")) == Grant("7", "approve")


def test_a_token_may_live_shorter_than_the_default_but_not_longer():
    clock = Clock()
    tokens = ApprovalTokens(clock=clock, ttl=timedelta(hours=1))
    short = tokens.issue("a", "approve", ttl=timedelta(minutes=5))
    capped = tokens.issue("b", "approve", ttl=timedelta(days=3))
    clock.now += timedelta(minutes=5)
    assert tokens.peek(short) is None and tokens.peek(capped) is not None
    clock.now += timedelta(minutes=55)
    assert tokens.peek(capped) is None
    with pytest.raises(ValueError):
        tokens.issue("c", "approve", ttl=timedelta(0))


# --- kept in the store: across restarts, and across replicas on one database ------------------


def test_a_button_survives_a_restart_of_the_detector(store_target):
    from incident_detector.store.records import Store

    clock = Clock()
    first = Store(store_target)
    token = ApprovalTokens(clock=clock, db=first.connection).issue("12", "approve")
    first.close()
    again = Store(store_target)
    tokens = ApprovalTokens(clock=clock, db=again.connection)
    assert tokens.peek(token) == Grant("12", "approve")
    assert tokens.consume(token) == Grant("12", "approve")
    assert tokens.consume(token) is None
    # Only the digest is kept: the token itself is nowhere in the database.
    rows = again.connection.execute("SELECT digest, subject FROM approval_tokens").fetchall()
    assert all(token not in digest for digest, _ in rows)


def test_approve_on_one_replica_and_reject_on_another_make_one_winner(store_target):
    from incident_detector.store.records import Store

    clock = Clock()
    for n in range(10):
        replicas = [ApprovalTokens(clock=clock, db=Store(store_target).connection)
                    for _ in range(2)]
        approve = replicas[0].issue(f"q{n}", "approve")
        reject = replicas[0].issue(f"q{n}", "reject")
        start = threading.Barrier(2)
        won: list[Grant] = []

        def click(tokens: ApprovalTokens, token: str) -> None:
            start.wait()
            grant = tokens.consume(token)
            if grant is not None:
                won.append(grant)

        threads = [threading.Thread(target=click, args=(replicas[0], approve)),
                   threading.Thread(target=click, args=(replicas[1], reject))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1 and won[0].incident_key == f"q{n}"
        assert replicas[1].is_closed(f"q{n}") and replicas[0].is_closed(f"q{n}")
