"""The lookup enricher with an injected fetch and clock: cache, TTLs, on_miss, batching."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.enrich import Enrich, EnrichLookup
from processors.fused import FusedRun
from processors.lookup import (
    DynamoDBFetch,
    Fetched,
    Lookup,
    LookupFailed,
    LookupMiss,
    LookupUnavailable,
    TTLCache,
    plain_value,
)
from processors.registry import build_processor
from stream.aws import MAX_ATTEMPTS
from stream.exceptions import DecodeError
from stream.overlap import WAVE_WIDTH, overlapping
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from processors.lookup import KeyValue

STEP = "processors[0].enrich"


class Store:
    """A fetch over a dict that records every call (the keys it was asked for)."""

    def __init__(self, items: dict[Any, dict[str, Any]], fail: Exception | None = None) -> None:
        self.items = items
        self.calls: list[list[KeyValue]] = []
        self.fail = fail
        self.unprocessed: set[Any] = set()

    def __call__(self, keys: Sequence[KeyValue]) -> Fetched:
        self.calls.append(list(keys))
        if self.fail is not None:
            raise self.fail
        found = {
            k: dict(self.items[k]) for k in keys if k in self.items and k not in self.unprocessed
        }
        return Fetched(found, tuple(k for k in keys if k in self.unprocessed))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def users(n: int) -> dict[Any, dict[str, Any]]:
    return {f"u{i}": {"user_id": f"u{i}", "name": f"n{i}"} for i in range(n)}


def records(docs: Sequence[Any]) -> list[Record]:
    return [Record(orjson.dumps(d), f"k{i}", str(i + 1), index=i) for i, d in enumerate(docs)]


def lookup(store: Store, clock: Clock | None = None, **options: Any) -> Lookup:
    options.setdefault("table", "users")
    options.setdefault("key", "user_id")
    options.setdefault("into", "user")
    return Lookup(fetch=store, now=clock or Clock(), **options)


def run(step: Any, docs: Sequence[Any]) -> Any:
    return Chain([Step.of(STEP, step)]).run(records(docs))


class TestTTLCache:
    def test_a_value_lives_until_its_expiry_time(self):
        cache = TTLCache(10)
        cache.put("a", 1, expires=5.0)
        assert cache.get("a", 4.9) == 1
        assert cache.get("a", 5.0) is None
        assert "a" not in cache

    def test_the_least_recently_used_key_is_evicted_first(self):
        cache = TTLCache(2)
        cache.put("a", 1, 99)
        cache.put("b", 2, 99)
        assert cache.get("a", 0) == 1  # a is now the most recently used
        cache.put("c", 3, 99)
        assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
        assert len(cache) == 2


class TestCache:
    def test_a_warm_batch_is_served_from_the_cache_without_a_fetch(self):
        store, clock = Store(users(3)), Clock()
        step = lookup(store, clock)
        docs = [{"user_id": f"u{i % 4}"} for i in range(8)]  # u3 has no item
        run(step, docs)
        assert len(store.calls) == 1
        result = run(step, docs)
        assert len(store.calls) == 1
        assert [r.json.get("user", {}).get("name") for r in result.records[:4]] == [
            "n0",
            "n1",
            "n2",
            None,
        ]

    def test_items_expire_after_ttl_s_and_misses_after_the_shorter_miss_ttl(self):
        """Misses are kept min(ttl_s, 60) s by default: a missing item may appear soon."""
        store, clock = Store(users(1)), Clock()
        step = lookup(store, clock, ttl_s=300)
        assert step.miss_ttl_s == 60
        run(step, [{"user_id": "u0"}, {"user_id": "new"}])
        clock.t += 59.5
        run(step, [{"user_id": "u0"}, {"user_id": "new"}])
        assert store.calls == [["u0", "new"]]
        clock.t += 0.5  # the miss has expired, the item has not
        run(step, [{"user_id": "u0"}, {"user_id": "new"}])
        assert store.calls[-1] == ["new"]
        clock.t += 239.5  # 299.5 s after the item was fetched
        run(step, [{"user_id": "u0"}])
        assert len(store.calls) == 2
        clock.t += 0.5
        run(step, [{"user_id": "u0"}])
        assert store.calls[-1] == ["u0"]

    def test_a_miss_ttl_may_be_set_but_not_beyond_ttl_s(self):
        assert lookup(Store({}), ttl_s=30).miss_ttl_s == 30
        assert lookup(Store({}), ttl_s=600, miss_ttl_s=5).miss_ttl_s == 5
        with pytest.raises(ValueError, match="miss_ttl_s <= ttl_s"):
            lookup(Store({}), ttl_s=10, miss_ttl_s=20)

    def test_ttl_zero_caches_nothing_but_still_fetches_each_key_once_per_batch(self):
        store = Store(users(2))
        step = lookup(store, ttl_s=0)
        docs = [{"user_id": "u0"}, {"user_id": "u0"}, {"user_id": "u1"}]
        run(step, docs)
        run(step, docs)
        assert store.calls == [["u0", "u1"], ["u0", "u1"]]
        assert len(step.cache) == 0

    def test_the_cache_holds_at_most_max_entries_and_evicts_the_least_recently_used(self):
        store = Store(users(10))
        step = lookup(store, max_entries=3)
        run(step, [{"user_id": "u0"}, {"user_id": "u1"}, {"user_id": "u2"}])
        run(step, [{"user_id": "u0"}])  # u0 used again: u1 is now the oldest
        run(step, [{"user_id": "u3"}])
        assert len(step.cache) == 3
        assert "u1" not in step.cache
        run(step, [{"user_id": "u0"}, {"user_id": "u2"}, {"user_id": "u3"}])
        assert store.calls[-1] == ["u3"]  # the last call was the one for u3 itself

    def test_a_batch_with_more_keys_than_the_cache_holds_still_enriches_every_record(self):
        store = Store(users(50))
        result = run(lookup(store, max_entries=5), [{"user_id": f"u{i}"} for i in range(50)])
        assert [r.json["user"]["name"] for r in result.records] == [f"n{i}" for i in range(50)]

    def test_failures_are_not_cached(self):
        store = Store(users(1), fail=LookupUnavailable("throttled", "Throttling"))
        step = lookup(store)
        assert run(step, [{"user_id": "u0"}]).failures[0].retryable
        store.fail = None
        result = run(step, [{"user_id": "u0"}])
        assert result.records[0].json["user"]["name"] == "n0"
        assert len(store.calls) == 2


class TestOnMiss:
    def test_keep_passes_the_record_unchanged(self):
        result = run(lookup(Store({})), [{"user_id": "nobody", "x": 1}])
        (rec,) = result.records
        assert rec.data == b'{"user_id":"nobody","x":1}'
        assert not result.failures

    def test_drop_filters_the_record_out_and_counts_it(self):
        result = run(lookup(Store(users(1)), on_miss="drop"), [{"user_id": "u0"}, {"user_id": "x"}])
        assert [r.json["user_id"] for r in result.records] == ["u0"]
        assert result.dropped == {STEP: 1}

    def test_dead_letter_is_a_permanent_failure_naming_table_field_and_value(self):
        step = lookup(Store({}), on_miss="dead_letter", table_key="id")
        (failure,) = run(step, [{"user_id": "u9"}]).failures
        assert isinstance(failure.error, LookupMiss)
        assert not failure.retryable
        message = str(failure.error)
        assert "'users'" in message
        assert "'user_id'" in message
        assert "id='u9'" in message

    @pytest.mark.parametrize(
        ("doc", "why"),
        [
            ({"other": 1}, "has no field 'user_id'"),
            ({"user_id": None}, "is None, which cannot be a key"),
            ({"user_id": ""}, "is '', which cannot be a key"),
            ({"user_id": True}, "is True, which cannot be a key"),
            ({"user_id": {"a": 1}}, "which cannot be a key"),
            ({"user_id": "x" * 2049}, "which cannot be a key"),
            ({"user_id": 1e200}, "which cannot be a key"),  # beyond DynamoDB's range
        ],
    )
    def test_a_record_without_a_usable_key_is_a_miss_with_the_reason(self, doc, why):
        store = Store({})
        dead = run(lookup(store, on_miss="dead_letter"), [doc]).failures[0]
        assert why in str(dead.error)
        assert isinstance(dead.error, LookupMiss)
        assert run(lookup(store, on_miss="keep"), [doc]).records[0].json == doc
        assert run(lookup(store, on_miss="drop"), [doc]).dropped == {STEP: 1}
        assert store.calls == []  # never sent: DynamoDB would reject the whole call


class TestBatching:
    def test_distinct_keys_are_fetched_once_in_calls_of_at_most_100(self):
        store = Store(users(100))
        docs = [{"user_id": f"u{i % 120}"} for i in range(250)]
        result = run(lookup(store), docs)
        assert sorted(len(c) for c in store.calls) == [20, 100]  # at once (stream.overlap)
        assert len({k for c in store.calls for k in c}) == 120
        assert sum("user" in r.json for r in result.records) == sum(
            i % 120 < 100 for i in range(250)
        )

    def test_strings_and_numbers_are_separate_calls_and_equal_numbers_one_key(self):
        store = Store({"1": {"v": "s"}, Decimal(1): {"v": "n"}, Decimal("2.5"): {"v": "f"}})
        result = run(
            lookup(store), [{"user_id": "1"}, {"user_id": 1}, {"user_id": 1.0}, {"user_id": 2.5}]
        )
        assert store.calls == [["1"], [Decimal(1), Decimal("2.5")]]
        assert [r.json["user"]["v"] for r in result.records] == ["s", "n", "n", "f"]

    def test_only_the_records_of_unprocessed_keys_are_retryable(self):
        store = Store(users(3))
        store.unprocessed = {"u1"}
        result = run(lookup(store), [{"user_id": "u0"}, {"user_id": "u1"}, {"user_id": "u2"}])
        assert [r.json["user"]["name"] for r in result.records] == ["n0", "n2"]
        (failure,) = result.failures
        assert failure.retryable
        assert failure.record.index == 1
        assert "user_id" in str(failure.error)

    def test_a_failed_call_fails_only_the_records_of_its_keys(self):
        class FirstCallThrottled(Store):
            def __call__(self, keys: Sequence[KeyValue]) -> Fetched:
                if not self.calls:
                    self.calls.append(list(keys))
                    raise LookupUnavailable("lookup: throttled", "ProvisionedThroughputExceeded")
                return super().__call__(keys)

        store = FirstCallThrottled(users(150))
        with overlapping(False):  # "first" is the keys' order only when calls go in turn
            result = run(lookup(store), [{"user_id": f"u{i}"} for i in range(150)])
        assert len(result.records) == 50
        assert len(result.failures) == 100
        assert all(f.retryable and f.record.index < 100 for f in result.failures)
        assert "'u7'" in str(result.failures[7].error)

    def test_a_table_wide_failure_makes_no_further_calls_and_is_permanent_per_record(self):
        missing = LookupFailed(
            "lookup: table 'users' not found", "ResourceNotFoundException", table_wide=True
        )
        docs = [{"user_id": f"u{i}"} for i in range(150 + 100 * WAVE_WIDTH)]
        store = Store({}, fail=missing)
        with overlapping(False):
            result = run(lookup(store, on_miss="drop"), docs[:150])
        assert len(store.calls) == 1
        store = Store({}, fail=missing)  # at once: the calls of the first wave, no more
        run(lookup(store, on_miss="drop"), docs)
        assert len(store.calls) == WAVE_WIDTH
        assert len(result.failures) == 150
        assert not any(f.retryable for f in result.failures)
        assert all("not found" in str(f.error) for f in result.failures)
        assert not result.dropped

    def test_a_record_that_is_not_json_fails_alone_with_its_decode_error(self):
        recs = [Record(b"not json", "k", "1", index=0), *records([{"user_id": "u0"}])[:1]]
        recs[1].index = 1
        store = Store(users(1))
        result = Chain([Step.of(STEP, lookup(store))]).run(recs)
        (failure,) = result.failures
        assert isinstance(failure.error, DecodeError)
        assert result.records[0].json["user"]["name"] == "n0"

    def test_called_without_prepare_it_fetches_the_one_key(self):
        store = Store(users(1))
        step = lookup(store)
        (rec,) = records([{"user_id": "u0"}])
        assert step(rec).json["user"] == {"user_id": "u0", "name": "n0"}
        assert store.calls == [["u0"]]


class TestItems:
    @pytest.mark.parametrize("item", [{"name": "a"}, {"name": "a", "tags": ["x"], "m": {"k": 1}}])
    def test_each_record_gets_its_own_copy_of_the_item(self, item):
        store = Store({"u0": item})
        step = lookup(store)
        first, second = run(step, [{"user_id": "u0"}, {"user_id": "u0"}]).records
        first.json["user"]["name"] = "changed"
        assert second.json["user"] == item
        assert run(step, [{"user_id": "u0"}]).records[0].json["user"] == item

    def test_the_enriched_record_is_re_encoded(self):
        (rec,) = run(lookup(Store({"u0": {"n": 1}})), [{"user_id": "u0"}]).records
        assert orjson.loads(rec.data) == {"user_id": "u0", "user": {"n": 1}}


@given(
    batches=st.lists(
        st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3)), max_size=20),
        min_size=1,
        max_size=4,
    ),
    present=st.sets(st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3))),
    batch_size=st.integers(1, 3),
    max_entries=st.integers(1, 5),
    step_s=st.sampled_from([0.0, 30.0, 400.0]),
)
def test_whatever_the_cache_holds_each_record_gets_its_items_and_calls_stay_bounded(
    batches, present, batch_size, max_entries, step_s
):
    items = {k if isinstance(k, str) else Decimal(k): {"of": k} for k in present}
    store, clock = Store(items), Clock()
    step = lookup(store, clock, batch_size=batch_size, max_entries=max_entries)
    for keys in batches:
        before = len(store.calls)
        result = run(step, [{"user_id": k} for k in keys])
        assert [r.json.get("user") for r in result.records] == [
            {"of": k} if k in present else None for k in keys
        ]
        fetched = [k for call in store.calls[before:] for k in call]
        assert len(fetched) == len(set(fetched))
        assert all(0 < len(call) <= batch_size for call in store.calls[before:])
        assert all(len({type(k) for k in call}) == 1 for call in store.calls[before:])
        clock.t += step_s


class TestEnrichWithLookup:
    def test_enrich_with_a_lookup_is_an_enrich_lookup_and_without_one_exactly_enrich(self):
        assert type(Enrich(set={"a": 1})) is Enrich
        made = Enrich(set={"a": 1}, lookup={"table": "t", "key": "k", "into": "i"})
        assert type(made) is EnrichLookup
        assert made.lookup.table == "t"

    def test_lookup_runs_first_then_set_which_has_the_last_word(self):
        store = Store(users(1))
        step = Enrich(
            set={"user": "from-set", "p": 1},
            timestamp="at",
            lookup=lookup(store, into="profile", on_miss="drop"),
            now=lambda: 1767225600.0,
        )
        step2 = Enrich(set={"user": "static"}, lookup=lookup(Store(users(1))))
        result = run(step, [{"user_id": "u0"}, {"user_id": "gone"}])
        (rec,) = result.records
        assert rec.json["profile"]["name"] == "n0"
        assert rec.json["user"] == "from-set"
        assert rec.json["at"] == "2026-01-01T00:00:00.000Z"
        assert result.dropped == {STEP: 1}
        assert run(step2, [{"user_id": "u0"}]).records[0].json["user"] == "static"

    def test_a_lookup_only_enrich_needs_no_set(self):
        step = Enrich(lookup=lookup(Store(users(1))))
        assert run(step, [{"user_id": "u0"}]).records[0].json["user"]["name"] == "n0"

    def test_enrich_needs_something_to_do(self):
        with pytest.raises(ValueError, match="`lookup`"):
            Enrich()

    def test_a_step_with_a_lookup_is_not_fused_and_gives_the_unfused_result(self):
        def steps() -> list[Step]:
            return [
                Step.of("s", Enrich(set={"a": 1})),
                Step.of(STEP, Enrich(set={"b": 2}, lookup=lookup(Store(users(2))))),
                Step.of("t", Enrich(set={"c": 3})),
            ]

        fused = Chain(steps())
        assert not any(isinstance(s, FusedRun) and len(s.steps) > 1 for s in fused._segments)
        docs = [{"user_id": "u0"}, {"user_id": "u1"}, {"user_id": "x"}]
        got = [r.json for r in fused.run(records(docs)).records]
        assert got == [r.json for r in Chain(steps(), fuse=False).run(records(docs)).records]
        assert got[0] == {
            "user_id": "u0",
            "a": 1,
            "user": {"user_id": "u0", "name": "n0"},
            "b": 2,
            "c": 3,
        }

    def test_the_registry_builds_it_from_the_plan_form_with_its_batch_hook(self):
        entry = {
            "enrich": {
                "set": {"p": 1},
                "lookup": {
                    "table": "users",
                    "key": "user_id",
                    "into": "user",
                    "on_miss": "keep",
                    "ttl_s": None,
                },
            }
        }
        step = build_processor(2, entry)
        assert isinstance(step.processor, EnrichLookup)
        assert step.prepare is not None
        assert step.processor.lookup.ttl_s == 300
        assert step.name == "processors[2].enrich"

    def test_building_a_lookup_step_imports_no_client_library(self):
        code = (
            "import sys\n"
            "from processors.registry import build_processor\n"
            "build_processor(0, {'enrich': {'lookup': {'table': 't', 'key': 'k', 'into': 'i'}}})\n"
            "print('boto3' in sys.modules, 'botocore' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
        )
        assert out.stdout.split() == ["False", "False"]


class TestOptions:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"on_miss": "dead-letter"}, "lookup.on_miss: expected one of keep, drop, dead_letter"),
            ({"into": ""}, "lookup.into: expected a non-empty string"),
            ({"max_entries": 0}, "max_entries must be at least 1"),
            ({"batch_size": 101}, "batch_size between 1 and 100"),
        ],
    )
    def test_wrong_options_are_named(self, options, message):
        with pytest.raises(ValueError, match=message):
            lookup(Store({}), **options)


# --- the DynamoDB fetch, against a scripted client (no boto3 patching: an injected object) ---


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "BatchGetItem",
    )


class ScriptedClient:
    """Answers BatchGetItem from a table dict; ``script`` says what each call does first."""

    def __init__(self, items: dict[str, dict[str, Any]], script: list[Any] | None = None) -> None:
        self.items = items
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # boto3's name
        ((table, request),) = RequestItems.items()
        self.requests.append(request)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        keys = request["Keys"]
        defer = step if isinstance(step, int) else 0  # leave this many keys unprocessed
        answered, left = keys[: len(keys) - defer], keys[len(keys) - defer :]
        found = [self.items[k["id"].get("S")] for k in answered if k["id"].get("S") in self.items]
        out: dict[str, Any] = {"Responses": {table: found}, "UnprocessedKeys": {}}
        if left:
            out["UnprocessedKeys"] = {table: {"Keys": left}}
        return out


def ddb_items(n: int) -> dict[str, dict[str, Any]]:
    return {f"u{i}": {"id": {"S": f"u{i}"}, "n": {"N": str(i)}} for i in range(n)}


class TestDynamoDBFetch:
    def test_unprocessed_keys_are_retried_with_capped_full_jitter_backoff(self):
        sleeps: list[float] = []
        client = ScriptedClient(ddb_items(5), script=[3, 1, 0])
        fetch = DynamoDBFetch(
            "t", "id", client=client, sleep=sleeps.append, base_delay=0.4, max_delay=0.5
        )
        got = fetch([f"u{i}" for i in range(5)])
        assert sorted(got.items) == [f"u{i}" for i in range(5)]
        assert got.items["u3"] == {"id": "u3", "n": 3}
        assert got.unprocessed == ()
        assert [len(r["Keys"]) for r in client.requests] == [5, 3, 1]
        assert len(sleeps) == 2
        assert 0 <= sleeps[0] <= 0.4
        assert 0 <= sleeps[1] <= 0.5  # 0.8 capped

    def test_keys_still_unprocessed_after_the_budget_are_reported_not_raised(self):
        client = ScriptedClient(ddb_items(4), script=[2, 2, 2])
        fetch = DynamoDBFetch("t", "id", client=client, max_attempts=3, sleep=lambda _: None)
        got = fetch(["u0", "u1", "u2", "u3"])
        assert sorted(got.items) == ["u0", "u1"]
        assert got.unprocessed == ("u2", "u3")
        assert len(client.requests) == 3

    def test_throttling_of_the_whole_call_is_retried_then_unavailable(self):
        client = ScriptedClient(
            ddb_items(1), script=[client_error("ProvisionedThroughputExceededException")] * 9
        )
        fetch = DynamoDBFetch("t", "id", client=client, max_attempts=3, sleep=lambda _: None)
        with pytest.raises(LookupUnavailable) as caught:
            fetch(["u0"])
        assert not caught.value.table_wide
        assert len(client.requests) == 3

    def test_a_5xx_is_retryable_and_a_later_success_answers(self):
        client = ScriptedClient(ddb_items(1), script=[client_error("InternalFailure", 503)])
        got = DynamoDBFetch("t", "id", client=client, sleep=lambda _: None)(["u0"])
        assert "u0" in got.items

    @pytest.mark.parametrize("code", ["ResourceNotFoundException", "AccessDeniedException"])
    def test_a_missing_or_denied_table_is_unavailable_at_once_table_wide(self, code):
        # Not the records' fault: retryable, never dead-lettered (stream.faults, rule a).
        client = ScriptedClient({}, script=[client_error(code)])
        with pytest.raises(LookupUnavailable) as caught:
            DynamoDBFetch("users", "id", client=client, sleep=lambda _: None)(["u0"])
        assert caught.value.table_wide
        assert caught.value.code == code
        assert len(client.requests) == 1

    def test_a_missing_table_names_the_table_and_the_fix(self):
        client = ScriptedClient({}, script=[client_error("ResourceNotFoundException")])
        with pytest.raises(LookupUnavailable) as caught:
            DynamoDBFetch("users", "id", client=client, sleep=lambda _: None)(["u0"])
        assert "'users'" in str(caught.value)
        assert "create the table" in str(caught.value)
        assert len(client.requests) == 1

    def test_a_rejected_key_schema_fails_only_this_call(self):
        client = ScriptedClient({}, script=[client_error("ValidationException")])
        with pytest.raises(LookupFailed) as caught:
            DynamoDBFetch("users", "id", client=client)(["u0"])
        assert not caught.value.table_wide
        assert "table_key" in str(caught.value)

    def test_a_connection_error_is_retried_within_the_budget_then_is_table_wide(self):
        error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        client = ScriptedClient({}, script=[error] * MAX_ATTEMPTS)
        with pytest.raises(LookupUnavailable) as caught:
            DynamoDBFetch("users", "id", client=client, sleep=lambda _: None)(["u0"])
        assert caught.value.table_wide
        # the sinks' budget (issue 14): the shared client does not retry
        assert len(client.requests) == MAX_ATTEMPTS

    def test_number_keys_are_sent_as_plain_digits(self):
        client = ScriptedClient({})
        DynamoDBFetch("t", "id", client=client)([Decimal("1E+2"), Decimal("1.50")])
        assert client.requests[0]["Keys"] == [{"id": {"N": "100"}}, {"id": {"N": "1.5"}}]


class TestPlainValue:
    def test_every_attribute_type_becomes_plain_json(self):
        item = {
            "M": {
                "s": {"S": "x"},
                "i": {"N": "42"},
                "f": {"N": "0.1"},
                "e": {"N": "1E+2"},
                "big": {"N": "1" + "0" * 30},
                "t": {"BOOL": True},
                "z": {"NULL": True},
                "l": {"L": [{"N": "1"}, {"S": "a"}]},
                "ss": {"SS": ["b", "a"]},
                "ns": {"NS": ["10", "9.5"]},
                "b": {"B": b"\x00\x01"},
                "bs": {"BS": [b"b", b"a"]},
            }
        }
        assert plain_value(item) == {
            "s": "x",
            "i": 42,
            "f": 0.1,
            "e": 100,
            "big": 1e30,  # beyond 64 bits: orjson could not write it back as an integer
            "t": True,
            "z": None,
            "l": [1, "a"],
            "ss": ["a", "b"],
            "ns": [9.5, 10],
            "b": "AAE=",
            "bs": ["YQ==", "Yg=="],
        }
        assert orjson.loads(orjson.dumps(plain_value(item))) == plain_value(item)
