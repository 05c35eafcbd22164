"""Label and field selectors behave like the apiserver's: grammar, messages, matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeballast.simulator.errors import ApiError
from kubeballast.simulator.selectors import (
    FieldSelector,
    LabelSelector,
    label_selector_from_object,
    parse_field_selector,
    parse_label_selector,
)

KEY_REGEX_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_REGEX_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@pytest.mark.parametrize(
    ("text", "canonical", "requirements"),
    [
        ("", "", ()),
        ("   ", "", ()),
        ("a=b", "a=b", (("a", "=", ("b",)),)),
        ("a==b", "a==b", (("a", "==", ("b",)),)),
        ("a!=b", "a!=b", (("a", "!=", ("b",)),)),
        ("a=", "a=", (("a", "=", ("",)),)),
        (
            "z=1,a in (y, x),m",
            "a in (x,y),m,z=1",
            (("a", "in", ("x", "y")), ("m", "exists", ()), ("z", "=", ("1",))),
        ),
        ("!h", "!h", (("h", "!", ()),)),
        ("f notin (z)", "f notin (z)", (("f", "notin", ("z",)),)),
        ("x in (foo,,baz)", "x in (,baz,foo)", (("x", "in", ("", "baz", "foo")),)),
        ("z notin ()", "z notin ()", (("z", "notin", ("",)),)),
        ("x in (in)", "x in (in)", (("x", "in", ("in",)),)),
        ("a>1,b<3", "a>1,b<3", (("a", "gt", ("1",)), ("b", "lt", ("3",)))),
        (
            "example.com/app=web,node-role.kubernetes.io/control-plane",
            "example.com/app=web,node-role.kubernetes.io/control-plane",
            (
                ("example.com/app", "=", ("web",)),
                ("node-role.kubernetes.io/control-plane", "exists", ()),
            ),
        ),
    ],
)
def test_parse_valid_label_selectors(
    text: str, canonical: str, requirements: tuple[tuple[str, str, tuple[str, ...]], ...]
) -> None:
    selector = parse_label_selector(text)
    assert selector.requirements == requirements
    assert str(selector) == canonical
    assert selector.empty == (not requirements)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        (
            "env IN (a)",
            "unable to parse requirement: found 'IN', expected: in, notin, =, ==, !=, gt, lt",
        ),
        ("a,", "found '', expected: identifier after ','"),
        ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("x in a", "unable to parse requirement: found 'a' expected: '('"),
        (
            "a:",
            f'unable to parse requirement: <nil>: Invalid value: "a:": name part {KEY_REGEX_MSG}',
        ),
        (
            "/a",
            'unable to parse requirement: <nil>: Invalid value: "/a": '
            "prefix part must be non-empty",
        ),
        (
            "k" * 64,
            f'unable to parse requirement: <nil>: Invalid value: "{"k" * 64}": '
            "name part must be no more than 63 bytes",
        ),
        (
            "a=b@c",
            f'unable to parse requirement: values[0][a]: Invalid value: "b@c": {VALUE_REGEX_MSG}',
        ),
        (
            "a>x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
    ],
)
def test_invalid_label_selectors_are_bad_requests_with_the_apiserver_message(
    text: str, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector(text)
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"
    assert caught.value.message == message


def test_several_invalid_values_are_reported_together_in_brackets() -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector("x in (a@,b@)")
    message = caught.value.message
    assert message.startswith('unable to parse requirement: [values[0][x]: Invalid value: "a@"')
    assert ', values[1][x]: Invalid value: "b@"' in message
    assert message.endswith("]")


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a!=b", {}, True),  # a missing label satisfies !=
        ("a!=b", {"a": "b"}, False),
        ("a in (x,y)", {"a": "y"}, True),
        ("a in (x,y)", {}, False),
        ("a notin (x,y)", {}, True),  # ... and notin
        ("a notin (x,y)", {"a": "x"}, False),
        ("a", {"a": ""}, True),
        ("a", {}, False),
        ("!a", {}, True),
        ("!a", {"a": "1"}, False),
        ("a=", {"a": ""}, True),
        ("a=", {}, False),
        ("a>5", {"a": "6"}, True),
        ("a>5", {"a": "5"}, False),
        ("a>5", {"a": "six"}, False),
        ("a<5", {}, False),
        ("a=b,c!=d,e in (x,y),f notin (z),g,!h", {"a": "b", "e": "x", "g": "1"}, True),
        ("a=b,c!=d,e in (x,y),f notin (z),g,!h", {"a": "b", "e": "x", "g": "1", "h": ""}, False),
    ],
)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_requires_exact_match_reports_the_single_required_value() -> None:
    selector = parse_label_selector("app=web,tier in (a,b),zone in (z1)")
    assert selector.requires_exact_match("app") == "web"
    assert selector.requires_exact_match("zone") == "z1"
    assert selector.requires_exact_match("tier") is None
    assert selector.requires_exact_match("other") is None


def test_absent_object_selector_matches_nothing_by_default_and_everything_when_asked() -> None:
    assert not label_selector_from_object(None).matches({})
    assert not label_selector_from_object(None).empty
    everything = label_selector_from_object(None, absent_matches_everything=True)
    assert everything.empty
    assert everything.matches({"any": "thing"})


def test_empty_object_selector_matches_everything() -> None:
    assert label_selector_from_object({}).matches({"a": "b"})
    assert label_selector_from_object({"matchLabels": {}, "matchExpressions": []}).empty


def test_object_selector_combines_match_labels_and_expressions() -> None:
    selector = label_selector_from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["z9"]},
                {"key": "team", "operator": "Exists"},
            ],
        }
    )
    assert str(selector) == "app=web,!canary,team,tier in (a,b),zone notin (z9)"
    assert selector.matches({"app": "web", "tier": "a", "team": "x"})
    assert not selector.matches({"app": "web", "tier": "a", "team": "x", "canary": "1"})
    assert not selector.matches({"app": "web", "tier": "c", "team": "x"})


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Bad"}]},
            '"Bad" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []string{}: "
            "for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchLabels": {"a": "b c"}},
            f'values[0][a]: Invalid value: "b c": {VALUE_REGEX_MSG}',
        ),
    ],
)
def test_invalid_object_selectors_are_rejected(selector: dict[str, object], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        label_selector_from_object(selector)
    assert caught.value.code == 400
    assert caught.value.message == message


# -- field selectors ----------------------------------------------------------------------

POD_FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")


def test_field_selector_parses_operators_and_exposes_requirements() -> None:
    selector = parse_field_selector("status.phase!=Running,spec.nodeName==node-1", POD_FIELDS)
    assert selector.requirements == (
        ("spec.nodeName", "=", "node-1"),
        ("status.phase", "!=", "Running"),
    )
    assert selector.requires_exact_match("spec.nodeName") == "node-1"
    assert selector.requires_exact_match("status.phase") is None
    assert selector.matches({"spec.nodeName": "node-1", "status.phase": "Pending"})
    assert not selector.matches({"spec.nodeName": "node-1", "status.phase": "Running"})
    assert not selector.matches({"spec.nodeName": "node-2", "status.phase": "Pending"})


def test_missing_fields_count_as_empty_strings() -> None:
    assert parse_field_selector("spec.nodeName=", POD_FIELDS).matches({})
    assert parse_field_selector("spec.nodeName!=node-1", POD_FIELDS).matches({})


def test_empty_field_selector_matches_everything() -> None:
    for text in ("", ","):
        selector = parse_field_selector(text, POD_FIELDS)
        assert selector.empty
        assert selector.matches({"spec.nodeName": "x"})
    assert FieldSelector().empty


def test_field_values_may_escape_commas_and_equals() -> None:
    selector = parse_field_selector(r"metadata.name=a\,b\=c\\d", POD_FIELDS)
    assert selector.requirements == (("metadata.name", "=", "a,b=c\\d"),)
    assert str(selector) == r"metadata.name=a\,b\=c\\d"


@pytest.mark.parametrize(
    ("text", "supported", "message"),
    [
        ("spec.foo=bar", POD_FIELDS, "field label not supported: spec.foo"),
        (
            "spec.foo=bar",
            ("metadata.name", "metadata.namespace"),
            '"spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
        ),
        ("abc", POD_FIELDS, "invalid selector: 'abc'; can't understand 'abc'"),
        ("a=b,c", POD_FIELDS, "invalid selector: 'a=b,c'; can't understand 'c'"),
        (r"metadata.name=a\x", POD_FIELDS, "invalid field selector: invalid escape sequence: \\x"),
        (
            "metadata.name=a=b",
            POD_FIELDS,
            "invalid field selector: unescaped character in value: 61",
        ),
    ],
)
def test_invalid_field_selectors_are_bad_requests(
    text: str, supported: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_field_selector(text, supported)
    assert caught.value.code == 400
    assert caught.value.message == message


# -- properties ---------------------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_name = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "-_.", max_size=10),
    st.sampled_from(_ALNUM),
) | st.sampled_from(list(_ALNUM))
_prefix = st.sampled_from(["", "example.com/", "node-role.kubernetes.io/", "a.b/"])
label_keys = st.builds(lambda prefix, name: prefix + name, _prefix, _name)
label_values = st.just("") | _name
_requirement = st.one_of(
    st.tuples(label_keys, st.sampled_from(["=", "==", "!="]), st.tuples(label_values)),
    st.tuples(
        label_keys,
        st.sampled_from(["in", "notin"]),
        st.lists(label_values, min_size=1, max_size=3, unique=True).map(lambda v: tuple(sorted(v))),
    ),
    st.tuples(label_keys, st.sampled_from(["exists", "!"]), st.just(())),
)
selectors = st.lists(_requirement, min_size=1, max_size=5).map(
    lambda reqs: LabelSelector(tuple(sorted(reqs, key=lambda r: r[0])))
)
label_sets = st.dictionaries(label_keys, label_values, max_size=5)


@given(selectors)
def test_rendered_selectors_parse_back_to_the_same_selector(selector: LabelSelector) -> None:
    reparsed = parse_label_selector(str(selector))
    assert reparsed == selector
    assert str(reparsed) == str(selector)


def _reference_match(requirement: tuple[str, str, tuple[str, ...]], labels: dict[str, str]) -> bool:
    # Requirement.Matches written out case by case, independent of the compiled form.
    key, op, values = requirement
    present = key in labels
    if op in ("=", "==", "in"):
        return present and labels[key] in values
    if op in ("!=", "notin"):
        return not present or labels[key] not in values
    if op == "exists":
        return present
    return not present


@given(selectors, label_sets)
def test_matching_follows_the_requirement_semantics(
    selector: LabelSelector, labels: dict[str, str]
) -> None:
    expected = all(_reference_match(r, labels) for r in selector.requirements)
    assert selector.matches(labels) is expected


@given(label_keys, label_values, label_sets)
def test_a_missing_label_satisfies_not_equals_and_notin(
    key: str, value: str, labels: dict[str, str]
) -> None:
    labels.pop(key, None)
    assert parse_label_selector(f"{key}!={value}").matches(labels)
    assert parse_label_selector(f"{key} notin ({value})").matches(labels)
    assert not parse_label_selector(f"{key}={value}").matches(labels)
    assert not parse_label_selector(f"{key} in ({value})").matches(labels)
