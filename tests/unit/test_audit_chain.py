"""Hash chain: any single edit, deletion, insertion or reordering is detected and named."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from governance.audit.chain import GENESIS, StoredEntry, canonical, entry_hash, verify_chain

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


def build(payloads: list[str]) -> list[StoredEntry]:
    out, prev = [], GENESIS
    for i, text in enumerate(payloads, start=1):
        body = canonical({"seq": i, "prev_hash": prev, "action": "query", "query_text": text})
        digest = entry_hash(prev, body)
        out.append(StoredEntry(i, body, prev, digest))
        prev = digest
    return out


@given(st.lists(texts, min_size=1, max_size=30))
def test_an_untouched_chain_verifies(payloads):
    chain = build(payloads)
    count, head, broken = verify_chain(chain)
    assert broken is None and count == len(chain) and head == chain[-1].hash


@given(st.lists(texts, min_size=2, max_size=30), st.data())
def test_an_edited_entry_is_named(payloads, data):
    chain = build(payloads)
    i = data.draw(st.integers(0, len(chain) - 1))
    new_text = data.draw(texts.filter(lambda t: t != payloads[i]))
    body = json.loads(chain[i].body)
    body["query_text"] = new_text
    chain[i] = StoredEntry(chain[i].seq, canonical(body), chain[i].prev_hash, chain[i].hash)
    _, _, broken = verify_chain(chain)
    assert broken is not None and broken.seq == i + 1


@given(st.lists(texts, min_size=3, max_size=30), st.data())
def test_a_deleted_entry_is_named(payloads, data):
    chain = build(payloads)
    i = data.draw(st.integers(0, len(chain) - 2))  # the last one is the head's job
    del chain[i]
    _, _, broken = verify_chain(chain)
    assert broken is not None and broken.seq == i + 1


@given(st.lists(texts, min_size=2, max_size=30), st.data())
def test_a_swapped_pair_is_detected(payloads, data):
    chain = build(payloads)
    i = data.draw(st.integers(0, len(chain) - 2))
    chain[i], chain[i + 1] = chain[i + 1], chain[i]
    _, _, broken = verify_chain(chain)
    assert broken is not None and broken.seq == i + 1


@given(st.lists(texts, min_size=2, max_size=30), st.data())
def test_an_inserted_entry_is_detected_even_with_a_consistent_hash(payloads, data):
    chain = build(payloads)
    i = data.draw(st.integers(1, len(chain) - 1))
    prev = chain[i - 1].hash
    forged_body = canonical({"seq": i + 1, "prev_hash": prev, "action": "forged"})
    forged = StoredEntry(i + 1, forged_body, prev, entry_hash(prev, forged_body))
    chain.insert(i, forged)
    _, _, broken = verify_chain(chain)
    # the forgery itself fits; the genuine entry it displaced no longer does
    assert broken is not None and broken.seq == i + 2


@settings(max_examples=200)
@given(texts)
def test_no_query_text_can_look_like_two_entries(text):
    body = canonical({"seq": 1, "query_text": text})
    assert "\n" not in body and "\r" not in body and body.isascii()
    assert json.loads(body)["query_text"] == text
