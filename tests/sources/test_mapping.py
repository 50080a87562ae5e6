"""The mapping language (core/sources.py): each transform on the b25 samples, the id specs and
select, every kind of bad mapping (the error names the source and the field), and the b25 preset
chosen through load_config (env, flag, YAML) or a YAML list of sources."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from b25_samples import sample

from dashboard_server.config import ConfigError, load_config, source_specs
from dashboard_server.core.sources import (
    Op,
    Source,
    SourceError,
    item_id,
    load_preset,
    parse_sources,
    subjects_overlap,
)

SECTIONS = ("market_data", "orderbook", "orders", "positions", "balances", "pnl", "things")


def one(**fields: Any) -> Source:
    """One source with defaults filled in (redis-keys on ``thing:*`` into ``things``)."""
    raw = {"name": "s", "transport": "redis-keys", "pattern": "thing:*", "section": "things"}
    raw.update(fields)
    (source,) = parse_sources([raw], SECTIONS)
    return source


def ops(source: Source, key: str, message: Any) -> list[Op]:
    return [op for out in source.outputs for op in out.apply(key, message)]


def item(source: Source, key: str, message: Any) -> Any:
    (op,) = ops(source, key, message)
    return op.value


def b25(name: str) -> Source:
    sections, raw = load_preset("b25")
    assert sections is not None
    return next(s for s in parse_sources(raw, sections) if s.name == name)


# --- transforms on the samples ----------------------------------------------------------------


def test_decimals_on_a_position() -> None:
    source = one(transforms=[{"decimals": ["quantity", "entry_price", "current_price"]}])
    position = sample("http-account-account")["positions"]["ETHUSDT"]
    value = item(source, "ETHUSDT", position)
    assert value["quantity"] == -0.05
    assert value["entry_price"] == 3312.45
    assert value["current_price"] == 3305.1
    assert value["realized_pnl"] == "12.3041"  # not named: untouched
    assert position["quantity"] == "-0.05"  # the message itself is not changed


@pytest.mark.parametrize(
    ("text", "number"),
    [("0.003", 0.003), ("-0.05", -0.05), ("5000", 5000.0), ("1e-8", 1e-8), ("+2.5", 2.5)],
)
def test_decimal_strings(text: str, number: float) -> None:
    assert item(one(transforms=[{"decimals": "v"}]), "k", {"v": text}) == {"v": number}


def test_decimals_minus_zero_is_zero() -> None:
    value = item(one(transforms=[{"decimals": "v"}]), "k", {"v": "-0"})["v"]
    assert value == 0.0 and str(value) == "0.0"


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", "1_000", " 1", "0x10", "", "1e999"])
def test_decimals_refuse_what_is_not_a_decimal(bad: str) -> None:
    with pytest.raises(ValueError, match="transform decimals"):
        ops(one(transforms=[{"decimals": "v"}]), "k", {"v": bad})


def test_decimals_leave_numbers_and_absent_fields() -> None:
    source = one(transforms=[{"decimals": ["a", "b", "c"]}])
    assert item(source, "k", {"a": 1.5, "b": None}) == {"a": 1.5, "b": None}


def test_decimals_star_on_the_pnl() -> None:
    source = one(transforms=[{"decimals": "*"}])
    value = item(source, "k", sample("http-account-pnl"))
    assert value["net_pnl"] == 12.4232
    assert value["win_rate"] == 100.0
    assert value["total_trades"] == 1
    assert value["timestamp"] == "2025-01-15T10:30:07.418220931Z"  # a time stays a string


def test_book_sorts_price_keyed_sides_best_first() -> None:
    source = one(transforms=[{"book": {"depth": 20}}])
    value = item(source, "BTCUSDT", sample("redis-PUBLISH-orderbook"))
    assert value["bids"] == [
        [67421.3, 3.117],
        [67421.0, 2.5],
        [67420.8, 0.092],
        [67420.1, 1.204],
        [67419.6, 0.35],
        [67418.0, 4.211],
    ]
    assert value["asks"] == [
        [67421.4, 0.876],
        [67421.5, 0.01],
        [67422.0, 1.75],
        [67422.9, 0.4],
        [67423.6, 5.032],
        [67425.0, 12.0],
    ]
    assert value["last_update_id"] == 6543210987654


def test_book_is_trimmed_to_depth() -> None:
    source = one(transforms=[{"book": {"depth": 2}}])
    value = item(source, "BTCUSDT", sample("redis-PUBLISH-orderbook"))
    assert value["bids"] == [[67421.3, 3.117], [67421.0, 2.5]]
    assert value["asks"] == [[67421.4, 0.876], [67421.5, 0.01]]


def test_book_takes_levels_and_decimal_sizes() -> None:
    source = one(transforms=[{"book": {"bids": "b", "asks": "a", "depth": 5}}])
    value = item(source, "X", {"b": [["1", "2"], [3, 4]], "a": {"5": "0.5", "4.5": 1}})
    assert value == {"b": [[3.0, 4.0], [1.0, 2.0]], "a": [[4.5, 1.0], [5.0, 0.5]]}


@pytest.mark.parametrize(
    "side",
    [{"x": 1}, {"1": "big"}, {"1": None}, [[1]], [[1, 2, 3]], [1, 2], "levels", 7, {"1": True}],
)
def test_book_refuses_bad_sides(side: Any) -> None:
    with pytest.raises(ValueError, match="transform book"):
        ops(one(transforms=["book"]), "X", {"bids": side})


@pytest.mark.parametrize(
    ("quantity", "side"), [("0.003", "LONG"), ("-0.05", "SHORT"), ("0", "FLAT"), (-2, "SHORT")]
)
def test_side_from_sign(quantity: Any, side: str) -> None:
    source = one(transforms=[{"side_from_sign": {"field": "quantity", "to": "side"}}])
    assert item(source, "k", {"quantity": quantity})["side"] == side


def test_side_from_sign_labels_and_short_form() -> None:
    source = one(transforms=[{"side_from_sign": {"field": "q", "labels": ["B", "S", "-"]}}])
    assert item(source, "k", {"q": "-1"}) == {"q": "-1", "side": "S"}
    assert item(one(transforms=[{"side_from_sign": "q"}]), "k", {"q": 1})["side"] == "LONG"
    with pytest.raises(ValueError, match="transform side_from_sign"):
        ops(source, "k", {"q": "short"})


@pytest.mark.parametrize(
    ("unit", "value", "text"),
    [
        ("s", 1736937000, "2025-01-15T10:30:00.000Z"),
        ("s", 1736937000.25, "2025-01-15T10:30:00.250Z"),
        ("ms", 1736937000120, "2025-01-15T10:30:00.120Z"),
        ("us", 1736937000123456, "2025-01-15T10:30:00.123Z"),
        ("ns", 1736937000123456789, "2025-01-15T10:30:00.123Z"),
        ("s", 0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_unix_time(unit: str, value: float, text: str) -> None:
    source = one(transforms=[{"unix_time": {"fields": ["timestamp"], "unit": unit}}])
    assert item(source, "k", {"timestamp": value}) == {"timestamp": text}


def test_unix_time_on_the_samples() -> None:
    book = item(b25("orderbook"), "BTCUSDT", sample("redis-PUBLISH-orderbook"))
    assert book["timestamp"] == "2025-01-15T10:30:00.123Z"
    (trade,) = ops(b25("trades"), "BTCUSDT", sample("redis-PUBLISH-trades"))
    assert trade.value["timestamp"] == "2025-01-15T10:30:00.120Z"
    metrics = item(b25("risk_metrics"), "risk.metrics", sample("nats-risk.metrics"))
    assert metrics["timestamp"] == "2025-01-15T10:30:00.000Z"


def test_unix_time_leaves_text_and_refuses_impossible_times() -> None:
    source = one(transforms=[{"unix_time": {"fields": ["t"], "unit": "s"}}])
    assert item(source, "k", {"t": "2025-01-15T10:30:00Z"}) == {"t": "2025-01-15T10:30:00Z"}
    for bad in (-1, 10**20, 1e300):
        with pytest.raises(ValueError, match="transform unix_time"):
            ops(source, "k", {"t": bad})


def test_drop_rename_upper() -> None:
    source = one(
        transforms=[
            {"drop": ["trades", "absent"]},
            {"rename": {"fill_id": "id"}},
            {"upper": "side"},
        ]
    )
    value = item(source, "k", {"fill_id": "f1", "side": "buy", "trades": [1], "n": 1})
    assert value == {"id": "f1", "side": "BUY", "n": 1}
    assert item(one(transforms=[{"upper": ["side"]}]), "k", {"side": 3}) == {"side": 3}


def test_transforms_run_in_order() -> None:
    renamed_first = one(transforms=[{"rename": {"q": "quantity"}}, {"decimals": "quantity"}])
    assert item(renamed_first, "k", {"q": "1.5"}) == {"quantity": 1.5}
    decimals_first = one(transforms=[{"decimals": "quantity"}, {"rename": {"q": "quantity"}}])
    assert item(decimals_first, "k", {"q": "1.5"}) == {"quantity": "1.5"}


def test_b25_position_and_fills() -> None:
    position = item(
        b25("positions"), "ETHUSDT", sample("http-account-account")["positions"]["ETHUSDT"]
    )
    assert position["side"] == "SHORT" and position["quantity"] == -0.05
    assert "trades" not in position
    fills = b25("fills")
    (first,) = ops(fills, "trading.fills", sample("nats-trading.fills"))
    assert first.value["id"] == "fill-test-001" and first.value["price"] == 67400.0
    other = {"fill_id": "f-2", "order_id": "o", "symbol": "ETHUSDT", "side": "sell"}
    (second,) = ops(fills, "trading.fills", {**other, "price": "1", "quantity": "2", "fee": "0"})
    assert (second.value["id"], second.value["side"], second.value["quantity"]) == (
        "f-2",
        "SELL",
        2.0,
    )


# --- ids and select ----------------------------------------------------------------------------


def test_item_id_specs() -> None:
    assert item_id("key", "BTCUSDT", {}) == "BTCUSDT"
    assert item_id("token:2", "orders.updates.BTCUSDT", {}) == "BTCUSDT"
    assert item_id("token:-1", "risk.alerts.critical", {}) == "critical"
    assert item_id("field:order.order_id", "x", {"order": {"order_id": "o-1"}}) == "o-1"
    assert item_id("field:n", "x", {"n": 7}) == "7"
    assert item_id("const:account", "x", {}) == "account"
    for spec, value in (
        ("token:3", {}),
        ("field:order.order_id", {"order": {}}),
        ("field:n", {"n": None}),
        ("field:n", {"n": True}),
        ("field:n", {"n": ""}),
    ):
        with pytest.raises(ValueError):
            item_id(spec, "orders.updates.BTCUSDT", value)


def test_select_and_field_id_on_an_order_update() -> None:
    (op,) = ops(b25("order_updates"), "orders.updates.BTCUSDT", sample("nats-orders.updates"))
    assert op.kind == "replace"
    assert op.path == "/orders/3f2b6c1e-8a4d-4e2b-9c51-7d0e4a1b2c3d"
    assert op.value == sample("redis-SET-order")
    with pytest.raises(ValueError, match="no field 'order'"):
        ops(b25("order_updates"), "orders.updates.BTCUSDT", {"update_type": "NEW"})


def test_entries_and_two_outputs_of_the_account_response() -> None:
    result = ops(b25("account"), "/api/account", sample("http-account-account"))
    assert [op.path for op in result] == ["/pnl/account", "/balances/USDC", "/balances/USDT"]
    assert result[0].value["total_pnl"] == 12.6716
    assert result[2].value["free"] == 14873.21456789
    assert result[2].value["last_update"] == "2025-01-15T10:30:05.003117402Z"


def test_token_id_and_const_default() -> None:
    source = parse_sources(
        [
            {
                "name": "n",
                "transport": "nats",
                "pattern": "a.*.b",
                "section": "things",
                "id": "token:1",
            }
        ],
        SECTIONS,
    )[0]
    assert item(source, "a.X.b", {"v": 1}) == {"v": 1}
    assert ops(source, "a.X.b", {"v": 1})[0].path == "/things/X"
    default = parse_sources(
        [{"name": "m", "transport": "nats", "pattern": "m", "section": "things"}], SECTIONS
    )[0]
    assert ops(default, "m", {"v": 1})[0].path == "/things/m"  # const:{name}


def test_events_outputs_and_merge_mode() -> None:
    (event,) = ops(b25("risk_alerts"), "risk.alerts.critical", sample("nats-risk.alerts.critical"))
    assert (event.kind, event.channel) == ("event", "alerts")
    merged = one(mode="merge", transforms=[{"decimals": "v"}])
    assert ops(merged, "k", {"v": "1"}) == [Op("merge", "/things/k", {"v": 1.0})]
    assert one(mode="merge").raw is False  # merge is never the raw path
    assert one().raw is True
    assert one(transforms=["book"]).raw is False


def test_an_item_must_be_an_object() -> None:
    for bad in ([1], "x", 3, None):
        with pytest.raises(ValueError, match="must be an object"):
            ops(one(transforms=["book"]), "k", bad)
    with pytest.raises(ValueError, match="members are the items"):
        ops(b25("strategies"), "/api/service-info", {"strategies": [1]})


def test_two_outputs_of_one_message_do_not_share_their_changes() -> None:
    source = parse_sources(
        [
            {
                "name": "two",
                "transport": "nats",
                "pattern": "two",
                "outputs": [
                    {"section": "things", "transforms": [{"decimals": "v"}]},
                    {"section": "pnl", "transforms": [{"rename": {"v": "w"}}]},
                ],
            }
        ],
        SECTIONS,
    )[0]
    message = {"v": "1"}
    first, second = ops(source, "two", message)
    assert first.value == {"v": 1.0}
    assert second.value == {"w": "1"}
    assert message == {"v": "1"}


# --- bad mappings: the error names the source and the field ------------------------------------

GOOD: dict[str, Any] = {
    "name": "p",
    "transport": "redis-keys",
    "pattern": "p:*",
    "section": "things",
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"transport": "kafka"}, r"source 'p'\.transport: expected one of"),
        ({"pattern": "p"}, r"source 'p'\.pattern: a Redis pattern is PREFIX\*"),
        ({"pattern": "p:*:x*"}, r"source 'p'\.pattern"),
        ({"pattern": ""}, r"source 'p'\.pattern: required"),
        ({"transport": "nats", "pattern": "a..b"}, r"source 'p'\.pattern: a NATS subject"),
        ({"transport": "nats", "pattern": "a.>.b"}, r"source 'p'\.pattern: a NATS subject"),
        ({"transport": "nats", "pattern": "a.b*"}, r"source 'p'\.pattern: a NATS subject"),
        ({"transport": "nats", "pattern": "a b"}, r"source 'p'\.pattern: a NATS subject"),
        (
            {"transport": "http-poll", "pattern": "api", "endpoint": "account_monitor"},
            r"source 'p'\.pattern: an HTTP path",
        ),
        ({"transport": "http-poll", "pattern": "/api"}, r"source 'p'\.endpoint: required"),
        ({"endpoint": "mongo"}, r"source 'p'\.endpoint: expected one of"),
        ({"endpoint": "nats"}, r"source 'p'\.endpoint: redis-keys reads from redis"),
        ({"section": "trades"}, r"source 'p'\.section: 'trades' is not one of the sections"),
        ({"section": None, "events": "news"}, r"source 'p'\.events: 'news' is not an event"),
        ({"events": "fills"}, r"source 'p': give exactly one of section or events"),
        ({"transforms": ["rot13"]}, r"source 'p'\.transforms\[0\]: unknown transform 'rot13'"),
        ({"transforms": {"drop": "x"}}, r"source 'p'\.transforms: expected a list"),
        (
            {"transforms": [{"drop": "a", "upper": "b"}]},
            r"source 'p'\.transforms\[0\]: expected one",
        ),
        ({"transforms": [{"book": {"depth": 0}}]}, r"transforms\[0\]\.book: depth must be"),
        ({"transforms": [{"book": {"levels": 5}}]}, r"transforms\[0\]\.book: expected"),
        ({"transforms": [{"decimals": []}]}, r"transforms\[0\]\.decimals: expected a field"),
        ({"transforms": [{"decimals": 5}]}, r"transforms\[0\]\.decimals: expected a field"),
        ({"transforms": [{"unix_time": {"fields": "t", "unit": "h"}}]}, r"unix_time\.unit"),
        ({"transforms": [{"unix_time": "t"}]}, r"transforms\[0\]\.unix_time: expected"),
        ({"transforms": [{"rename": ["a"]}]}, r"transforms\[0\]\.rename: expected"),
        ({"transforms": [{"side_from_sign": {"to": "s"}}]}, r"side_from_sign: expected"),
        (
            {"transforms": [{"side_from_sign": {"field": "q", "labels": ["L"]}}]},
            r"side_from_sign\.labels",
        ),
        ({"id": "symbol"}, r"source 'p'\.id: expected key, entries"),
        ({"id": "field:"}, r"source 'p'\.id"),
        ({"id": "token:x"}, r"source 'p'\.id"),
        ({"select": "a..b"}, r"source 'p'\.select"),
        ({"select": 3}, r"source 'p'\.select"),
        ({"mode": "upsert"}, r"source 'p'\.mode: expected replace or merge"),
        ({"dedupe": "policy_id"}, r"source 'p'\.dedupe: a field name, for an events output"),
        ({"raw": True, "transforms": ["book"]}, r"source 'p'\.raw: a raw output"),
        ({"interval_s": 0}, r"source 'p'\.interval_s: must be a number > 0"),
        ({"interval_s": "5"}, r"source 'p'\.interval_s"),
        ({"bootstrap": "yes"}, r"source 'p'\.bootstrap: expected true or false"),
        ({"resync": "orders"}, r"source 'p'\.resync: expected a list"),
        ({"resync": ["ghost"]}, r"source 'p'\.resync: no source 'ghost'"),
        ({"resync": ["p"]}, r"source 'p'\.resync: a source cannot resync itself"),
        ({"colour": "red"}, r"source 'p': unknown field 'colour'"),
        ({"outputs": [], "section": None}, r"source 'p'\.outputs: expected a non-empty list"),
        ({"outputs": ["x"], "section": None}, r"source 'p'\.outputs\[0\]: expected a mapping"),
        ({"name": "a b"}, r"sources\[0\]\.name: expected 1-64"),
    ],
)
def test_bad_mappings_name_the_source_and_the_field(change: dict[str, Any], named: str) -> None:
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(SourceError, match=named):
        parse_sources([raw], SECTIONS)


def test_bad_output_inside_outputs_names_it() -> None:
    raw = {
        "name": "a",
        "transport": "http-poll",
        "endpoint": "account_monitor",
        "pattern": "/api/account",
        "outputs": [{"section": "pnl"}, {"section": "pnl", "transforms": ["nope"]}],
    }
    with pytest.raises(SourceError, match=r"source 'a'\.outputs\[1\]\.transforms\[0\]: unknown"):
        parse_sources([raw], SECTIONS)
    with pytest.raises(SourceError, match=r"source 'a': give the output fields inside outputs"):
        parse_sources([{**raw, "section": "pnl"}], SECTIONS)


def test_duplicate_names() -> None:
    with pytest.raises(SourceError, match=r"source 'p': name given more than once"):
        parse_sources([GOOD, {**GOOD, "pattern": "q:*"}], SECTIONS)


def test_resync_target_must_have_a_bootstrap() -> None:
    nats = {"name": "n", "transport": "nats", "pattern": "n", "section": "things"}
    with pytest.raises(SourceError, match=r"source 'm'\.resync: source 'n' has nothing to reload"):
        parse_sources([nats, {**nats, "name": "m", "pattern": "m", "resync": ["n"]}], SECTIONS)
    assert parse_sources([GOOD, {**nats, "resync": ["p"]}], SECTIONS)[1].resync == ("p",)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"pattern": "order:*"}, {"pattern": "order:open:*"}),
        ({"pattern": "order:open:*"}, {"pattern": "order:*"}),
        ({"pattern": "*"}, {"pattern": "order:*"}),  # an empty prefix overlaps everything
        ({"pattern": "o:*"}, {"pattern": "o:*", "transport": "redis-pubsub"}),  # both read keys
        (
            {"pattern": "o:*", "transport": "redis-pubsub", "bootstrap": False},
            {"pattern": "o:*", "transport": "redis-pubsub", "bootstrap": False},
        ),
        (
            {"transport": "nats", "pattern": "risk.>"},
            {"transport": "nats", "pattern": "risk.alerts"},
        ),
        ({"transport": "nats", "pattern": "a.*.c"}, {"transport": "nats", "pattern": "a.b.*"}),
    ],
)
def test_overlapping_patterns(first: dict[str, Any], second: dict[str, Any]) -> None:
    a = {**GOOD, "name": "a", **first}
    b = {**GOOD, "name": "b", "section": "orders", **second}
    with pytest.raises(SourceError, match=r"source 'b'\.pattern: .* overlaps the pattern .* 'a'"):
        parse_sources([a, b], SECTIONS)


def test_patterns_that_do_not_overlap() -> None:
    keys = {**GOOD, "name": "a", "pattern": "o:*"}
    channel = {
        **GOOD,
        "name": "b",
        "pattern": "o:*",
        "transport": "redis-pubsub",
        "bootstrap": False,
    }
    assert len(parse_sources([keys, channel], SECTIONS)) == 2  # keys and channels: apart
    assert not subjects_overlap("risk.metrics", "risk.alerts.>")
    assert not subjects_overlap("a.>", "a")
    assert subjects_overlap("a.>", "a.b.c")
    assert not subjects_overlap("a.*", "a.b.c")
    sections, raw = load_preset("b25")
    assert sections is not None and len(parse_sources(raw, sections)) == 14


# --- load_config ----------------------------------------------------------------------------------

B25_SECTIONS = (
    "market_data",
    "orderbook",
    "orders",
    "positions",
    "balances",
    "pnl",
    "strategies",
    "strategy_engine",
    "risk",
)


def test_b25_from_env_flag_and_yaml(tmp_path: Path) -> None:
    env = {"DASHBOARD_SOURCES": "b25", "DASHBOARD_REDIS_URL": "redis://127.0.0.1:1/0"}
    from_env = load_config(env=env)
    file = tmp_path / "c.yaml"
    file.write_text("sources: b25\nnats_url: 127.0.0.1:4222\n")
    from_yaml = load_config(env={}, config_file=file)
    from_flag = load_config(env={}, cli={"sources": "b25", "strategy_engine_url": "http://h:9092"})
    for config in (from_env, from_yaml, from_flag):
        assert config.sources == "b25"
        assert config.sections == B25_SECTIONS
        names = [s.name for s in source_specs(config)]
        assert names[:3] == ["market_data", "orderbook", "trades"] and len(names) == 14
    assert from_yaml.nats_url == "127.0.0.1:4222"


def test_sections_given_win_over_the_preset() -> None:
    more = ",".join((*B25_SECTIONS, "notes"))
    config = load_config(env={"DASHBOARD_SOURCES": "b25", "DASHBOARD_SECTIONS": more})
    assert config.sections == (*B25_SECTIONS, "notes")
    with pytest.raises(
        ConfigError, match=r"^DASHBOARD_SOURCES: source 'strategies'\.section: 'strategies' is not"
    ):
        load_config(env={"DASHBOARD_SOURCES": "b25", "DASHBOARD_SECTIONS": ",".join(SECTIONS)})


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match=r"^DASHBOARD_SOURCES: sources: unknown preset 'b26'"):
        load_config(env={"DASHBOARD_SOURCES": "b26"})


def test_yaml_list_of_sources(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(
        """
sections: [positions, risk]
redis_url: redis://127.0.0.1:1/0
sources:
  - name: positions
    transport: redis-keys
    pattern: "position:*"
    interval_s: 0.5
    section: positions
    transforms:
      - decimals: [quantity]
      - side_from_sign: quantity
  - name: risk
    transport: nats
    pattern: risk.metrics
    id: const:metrics
    section: risk
"""
    )
    config = load_config(env={}, config_file=file)
    positions, risk = source_specs(config)
    assert (positions.name, positions.interval_s, risk.pattern) == (
        "positions",
        0.5,
        "risk.metrics",
    )
    assert item(positions, "BTCUSDT", sample("redis-SET-position"))["side"] == "LONG"


@pytest.mark.parametrize(
    ("yaml_sources", "named"),
    [
        (
            "  - {name: positions, transport: redis-keys, pattern: 'position:*', section: nope}",
            r"source 'positions'\.section: 'nope' is not one of the sections",
        ),
        (
            "  - {name: positions, transport: redis-keys, pattern: 'position:*',"
            " section: positions, transforms: [{book: {depth: -1}}]}",
            r"source 'positions'\.transforms\[0\]\.book: depth",
        ),
        (
            "  - {name: x, transport: smoke, pattern: 'a:*', section: positions}",
            r"source 'x'\.transport",
        ),
        ("  - just a string", r"sources\[0\]: expected a mapping"),
    ],
)
def test_bad_yaml_mapping_stops_load_config(tmp_path: Path, yaml_sources: str, named: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(f"sections: [positions]\nsources:\n{yaml_sources}\n")
    with pytest.raises(ConfigError, match=rf"^sources in {file}: {named}"):
        load_config(env={}, config_file=file)


def test_preset_data_is_not_shared_between_loads() -> None:
    _, first = load_preset("b25")
    pristine = copy.deepcopy(first)
    first[0]["pattern"] = "changed:*"
    _, second = load_preset("b25")
    assert second == pristine
