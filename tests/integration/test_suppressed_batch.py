"""repo.suppressed_by_owner: a whole batch's suppressions in one query, same answers as per job."""

from __future__ import annotations

from worker.store import Store, repo


def test_one_query_answers_like_one_query_per_owner(store: Store) -> None:
    with store.session() as s:
        repo.suppress(s, "o1", ["gone@example.org"], "userunknown", "job-1")
        repo.suppress(s, "o2", ["full@example.org"], "mailboxfull", "job-2")
        repo.suppress(s, repo.OPERATOR, ["trap@example.net"], "complaint")
    wanted = {
        "o1": {"Gone@Example.org", "gone@example.org", "ok@example.org", "trap@example.net"},
        "o2": {"gone@example.org", "full@example.org"},
        "o3": {"ok@example.org"},
    }
    with store.session() as s:
        found = repo.suppressed_by_owner(s, wanted, chunk=2)  # several chunks
        one_by_one = {o: repo.suppressed(s, o, sorted(a)) for o, a in wanted.items()}
    assert found["o1"] == {
        "Gone@Example.org": "userunknown",
        "gone@example.org": "userunknown",
        "trap@example.net": "complaint",
    }
    assert found["o2"] == {"full@example.org": "mailboxfull"}
    assert "o3" not in found
    for owner, addresses in one_by_one.items():
        assert set(addresses) <= set(found.get(owner, {}))
    # the delivery path runs it on a plain connection: the same answer
    with store.engine.connect() as connection:
        assert repo.suppressed_by_owner(connection, wanted, chunk=2) == found


def test_without_bounces_only_what_follows_the_person(store: Store) -> None:
    with store.session() as s:
        repo.suppress(s, "o1", ["bounced@example.org"], "userunknown", "job-1")
        repo.suppress(s, "o1", ["left@example.org"], "unsubscribe", "job-2")
        repo.suppress(s, "o1", ["angry@example.org"], "complaint:abuse", "job-3")
        repo.suppress(s, "o1", ["asked@example.org"], "manual")
    wanted = {
        "o1": {"bounced@example.org", "left@example.org", "angry@example.org", "asked@example.org"}
    }
    with store.engine.connect() as connection:
        every = repo.suppressed_by_owner(connection, wanted)
        elsewhere = repo.suppressed_by_owner(connection, wanted, bounces=False)
    assert set(every["o1"]) == wanted["o1"]
    assert set(elsewhere["o1"]) == wanted["o1"] - {"bounced@example.org"}
