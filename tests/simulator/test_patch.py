"""PATCH bodies apply as on the real apiserver: JSON patch, merge patch, strategic merge."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubeballast.simulator.errors import ApiError
from kubeballast.simulator.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- RFC 7386 ----------------------------------------------------------------------------

RFC7386_EXAMPLES = [  # RFC 7386 appendix A, in order
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc7386(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == before


def test_merge_patch_request_merges_labels_and_deletes_with_null() -> None:
    original = {"metadata": {"name": "n", "labels": {"a": "1", "b": "2"}}}
    patched = apply_patch(
        MERGE_PATCH, original, _body({"metadata": {"labels": {"a": None, "c": "3"}}}), "Node"
    )
    assert patched == {"metadata": {"name": "n", "labels": {"b": "2", "c": "3"}}}
    assert original["metadata"]["labels"] == {"a": "1", "b": "2"}


def test_merge_patch_replaces_lists_even_for_merge_lists() -> None:
    original = {"status": {"conditions": [{"type": "Ready"}, {"type": "Other"}]}}
    patched = apply_patch(
        MERGE_PATCH, original, _body({"status": {"conditions": [{"type": "New"}]}}), "Pod"
    )
    assert patched["status"]["conditions"] == [{"type": "New"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"null", "Invalid JSON Patch"),
        (
            b"[1]",
            "error decoding patch: json: cannot unmarshal array into Go value of type "
            "map[string]interface {}",
        ),
        (
            b'"x"',
            "error decoding patch: json: cannot unmarshal string into Go value of type "
            "map[string]interface {}",
        ),
        (b"{", "error decoding patch: unexpected end of JSON input"),
        (
            b"{x}",
            "error decoding patch: invalid character 'x' "
            "looking for beginning of object key string",
        ),
    ],
)
def test_undecodable_merge_patches_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        apply_patch(MERGE_PATCH, {"a": 1}, body, "Pod")
    assert (caught.value.code, caught.value.reason) == (400, "BadRequest")
    assert caught.value.message == message


# -- RFC 6902 ----------------------------------------------------------------------------

RFC6902_EXAMPLES = [  # RFC 6902 appendix A
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    (
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    (
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
    ),
    (
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": 1}, "c": {"b": 1}}),
]


@pytest.mark.parametrize(("doc", "ops", "expected"), RFC6902_EXAMPLES)
def test_json_patch_follows_rfc6902(doc: Any, ops: list[Any], expected: Any) -> None:
    before = copy.deepcopy(doc)
    assert json_patch(doc, ops) == expected
    assert doc == before


@pytest.mark.parametrize(
    ("doc", "ops", "cause"),
    [
        (
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            "testing value /baz failed: test failed",
        ),
        (
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": "10"}],
            "testing value /~01 failed: test failed",
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            'add operation does not apply: doc is missing path: "/baz/bat": missing value',
        ),
        (
            {"foo": "bar"},
            [{"op": "remove", "path": "/nope"}],
            'remove operation does not apply: doc is missing path: "/nope": missing value',
        ),
        ({"foo": "bar"}, [{"op": "frobnicate", "path": "/foo"}], "Unexpected kind: frobnicate"),
    ],
)
def test_failed_json_patches_are_422_invalid(doc: Any, ops: list[Any], cause: str) -> None:
    with pytest.raises(ApiError) as caught:
        apply_patch(JSON_PATCH, doc, _body(ops), "Pod")
    assert caught.value.code == 422
    assert caught.value.reason == "Invalid"
    assert caught.value.message == "the server rejected our request due to an error in our request"
    assert caught.value.details == {
        "causes": [{"reason": "UnexpectedServerResponse", "message": cause}]
    }


def test_json_patch_replace_of_a_missing_member_adds_it_like_evanphx_v4() -> None:
    patched = json_patch({"metadata": {}}, [{"op": "replace", "path": "/metadata/x", "value": 1}])
    assert patched == {"metadata": {"x": 1}}


def test_json_patch_test_of_a_missing_member_against_null_passes_like_evanphx_v4() -> None:
    assert json_patch({"a": 1}, [{"op": "test", "path": "/b", "value": None}]) == {"a": 1}


def test_json_patch_request_edits_a_label() -> None:
    original = {"metadata": {"name": "p", "labels": {"a": "1"}}}
    ops = [
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
    ]
    patched = apply_patch(JSON_PATCH, original, _body(ops), "Pod")
    assert patched["metadata"]["labels"] == {"a": "2"}
    assert original["metadata"]["labels"] == {"a": "1"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{}",
            "error decoding patch: json: cannot unmarshal object into Go value of type "
            "[]handlers.jsonPatchOp",
        ),
        (b"[", "error decoding patch: unexpected end of JSON input"),
        (
            b'[{"op": "add", "path": 1}]',
            "error decoding patch: json: cannot unmarshal number into Go struct field "
            "jsonPatchOp.path of type string",
        ),
    ],
)
def test_undecodable_json_patches_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        apply_patch(JSON_PATCH, {}, body, "Pod")
    assert (caught.value.code, caught.value.message) == (400, message)


def test_json_patch_with_too_many_operations_is_413() -> None:
    ops = [{"op": "test", "path": "/a", "value": 1}] * 10001
    with pytest.raises(ApiError) as caught:
        apply_patch(JSON_PATCH, {"a": 1}, _body(ops), "Pod")
    assert caught.value.code == 413
    assert caught.value.reason == "RequestEntityTooLarge"


def test_json_patch_replacing_the_root_with_a_non_object_is_422() -> None:
    with pytest.raises(ApiError) as caught:
        apply_patch(
            JSON_PATCH, {"a": 1}, _body([{"op": "replace", "path": "", "value": [1]}]), "Pod"
        )
    assert caught.value.code == 422
    assert caught.value.message.startswith(' "" is invalid: patch: Invalid value:')


# -- strategic merge patch ----------------------------------------------------------------


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "default",
            "labels": {"app": "web", "tier": "front"},
            "finalizers": ["a", "b", "c"],
            "ownerReferences": [
                {"uid": "u1", "kind": "ReplicaSet", "name": "rs1"},
                {"uid": "u2", "kind": "Job", "name": "j2"},
            ],
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                },
                {"name": "sidecar", "image": "side:1"},
            ],
            "tolerations": [{"key": "k1", "operator": "Exists"}],
            "volumes": [{"name": "v1", "emptyDir": {}}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "Initialized", "status": "True"},
            ],
            "containerStatuses": [
                {"name": "app", "ready": False},
                {"name": "sidecar", "ready": True},
            ],
        },
    }


def _node() -> dict[str, Any]:
    return {
        "metadata": {"name": "node-1"},
        "spec": {
            "taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}]
        },
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "False"},
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "Hostname", "address": "node-1"},
            ],
        },
    }


def _smp(original: dict[str, Any], patch: Any, kind: str = "Pod") -> dict[str, Any]:
    return apply_patch(STRATEGIC_MERGE_PATCH, original, _body(patch), kind)


def test_updating_one_condition_by_type_keeps_the_others_in_place() -> None:
    patched = _smp(
        _pod(), {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": None}]}}
    )
    assert patched["status"]["conditions"] == [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True"},
        {"type": "Initialized", "status": "True"},
    ]


def test_a_new_condition_without_set_element_order_goes_first_as_in_go() -> None:
    patched = _smp(
        _pod(), {"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}
    )
    assert [c["type"] for c in patched["status"]["conditions"]] == [
        "DisruptionTarget",
        "PodScheduled",
        "Ready",
        "Initialized",
    ]


def test_node_conditions_and_addresses_merge_on_type() -> None:
    patched = _smp(
        _node(),
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "Unknown"}],
                "addresses": [{"type": "Hostname", "address": "renamed"}],
            }
        },
        "Node",
    )
    assert patched["status"]["conditions"] == [
        {"type": "Ready", "status": "Unknown"},
        {"type": "MemoryPressure", "status": "False"},
    ]
    assert patched["status"]["addresses"][1] == {"type": "Hostname", "address": "renamed"}


def test_node_taints_have_no_patch_strategy_so_a_patch_replaces_them() -> None:
    patched = _smp(_node(), {"spec": {"taints": [{"key": "c", "effect": "NoExecute"}]}}, "Node")
    assert patched["spec"]["taints"] == [{"key": "c", "effect": "NoExecute"}]


def test_tolerations_and_container_statuses_are_replaced() -> None:
    patched = _smp(
        _pod(),
        {
            "spec": {"tolerations": [{"key": "k2"}]},
            "status": {"containerStatuses": [{"name": "app", "ready": True}]},
        },
    )
    assert patched["spec"]["tolerations"] == [{"key": "k2"}]
    assert patched["status"]["containerStatuses"] == [{"name": "app", "ready": True}]


def test_finalizers_merge_as_a_set_and_delete_from_primitive_list() -> None:
    added = _smp(_pod(), {"metadata": {"finalizers": ["b", "d"]}})
    assert added["metadata"]["finalizers"] == ["a", "b", "d", "c"]
    removed = _smp(_pod(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}})
    assert removed["metadata"]["finalizers"] == ["a", "c"]


def test_set_element_order_orders_patch_items_after_server_only_items() -> None:
    patched = _smp(
        _pod(),
        {"metadata": {"$setElementOrder/finalizers": ["c", "a", "d"], "finalizers": ["d"]}},
    )
    assert patched["metadata"]["finalizers"] == ["b", "c", "a", "d"]


def test_owner_references_merge_on_uid() -> None:
    patched = _smp(
        _pod(),
        {
            "metadata": {
                "ownerReferences": [
                    {"uid": "u2", "controller": True},
                    {"uid": "u1", "$patch": "delete"},
                ]
            }
        },
    )
    assert patched["metadata"]["ownerReferences"] == [
        {"uid": "u2", "kind": "Job", "name": "j2", "controller": True}
    ]


def test_containers_merge_by_name_and_their_env_and_ports_by_key() -> None:
    patched = _smp(
        _pod(),
        {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:2",
                        "env": [{"name": "B", "value": "20"}],
                        "ports": [{"containerPort": 80, "name": "http"}],
                    }
                ]
            }
        },
    )
    app, sidecar = patched["spec"]["containers"]
    assert app["image"] == "app:2"
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert sidecar == {"name": "sidecar", "image": "side:1"}


def test_patch_delete_on_a_list_item_removes_it_by_merge_key() -> None:
    patched = _smp(_pod(), {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}})
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app"]


def test_patch_replace_item_in_a_list_replaces_the_whole_list() -> None:
    patched = _smp(
        _pod(),
        {"status": {"conditions": [{"$patch": "replace"}, {"type": "Ready", "status": "True"}]}},
    )
    assert patched["status"]["conditions"] == [{"type": "Ready", "status": "True"}]


def test_patch_replace_on_a_map_replaces_it() -> None:
    patched = _smp(_pod(), {"metadata": {"labels": {"$patch": "replace", "new": "1"}}})
    assert patched["metadata"]["labels"] == {"new": "1"}


def test_patch_delete_on_a_map_empties_it() -> None:
    patched = _smp(_pod(), {"metadata": {"labels": {"$patch": "delete"}}})
    assert patched["metadata"]["labels"] == {}


def test_null_deletes_a_key_and_labels_merge() -> None:
    patched = _smp(
        _pod(), {"metadata": {"labels": {"tier": None, "zone": "z1"}}, "spec": {"nodeName": None}}
    )
    assert patched["metadata"]["labels"] == {"app": "web", "zone": "z1"}
    assert "nodeName" not in patched["spec"]


def test_retain_keys_clears_fields_not_listed() -> None:
    deployment = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patched = _smp(
        deployment,
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        "Deployment",
    )
    assert patched["spec"]["strategy"] == {"type": "Recreate"}


def test_deployment_pod_template_uses_the_pod_spec_strategies() -> None:
    deployment = {
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
                },
            }
        }
    }
    patched = _smp(
        deployment,
        {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}},
        "Deployment",
    )
    assert patched["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:2"},
    ]


def test_lists_of_kinds_without_a_strategy_are_replaced() -> None:
    lease = {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 40}}
    patched = _smp(lease, {"spec": {"holderIdentity": "b"}}, "Lease")
    assert patched == {"spec": {"holderIdentity": "b", "leaseDurationSeconds": 40}}
    unknown = _smp({"items": [{"name": "a"}]}, {"items": [{"name": "b"}]}, "Unknown")
    assert unknown == {"items": [{"name": "b"}]}


def test_directives_in_new_values_do_not_reach_the_result() -> None:
    patched = _smp(
        {"metadata": {"name": "x"}},
        {
            "metadata": {
                "annotations": {"a": "1", "gone": None},
                "ownerReferences": [{"uid": "u1", "$patch": "delete"}, {"uid": "u2"}],
                "$setElementOrder/finalizers": ["f"],
                "finalizers": ["f"],
            }
        },
    )
    assert patched == {
        "metadata": {
            "name": "x",
            "annotations": {"a": "1"},
            "ownerReferences": [{"uid": "u2"}],
            "finalizers": ["f"],
        }
    }


def test_null_body_is_a_no_op_and_inputs_are_never_mutated() -> None:
    pod = _pod()
    before = copy.deepcopy(pod)
    assert _smp(pod, None) == before
    strategic_merge_patch(
        pod, {"metadata": {"labels": {"app": None}}, "status": {"conditions": []}}, "Pod"
    )
    assert pod == before


@pytest.mark.parametrize(
    ("patch", "code", "reason", "message"),
    [
        (
            {"spec": {"containers": [{"image": "x"}]}},
            500,
            "",
            "map: map[image:x] does not contain declared merge key: name",
        ),
        (
            {"metadata": {"labels": {"$patch": "merge"}}},
            500,
            "",
            "unknown patch type: merge in map: map[$patch:merge]",
        ),
        (
            {"status": {"conditions": [{"type": "Ready", "$patch": "merge"}]}},
            500,
            "",
            "merging lists cannot yet be specified in the patch",
        ),
        (
            {"metadata": {"$retainKeys": "labels"}},
            400,
            "BadRequest",
            "invalid patch format of retainKeys",
        ),
        (
            {"metadata": {"$retainKeys": ["name"], "labels": {"a": "b"}}},
            400,
            "BadRequest",
            "invalid patch format of retainKeys",
        ),
        (
            {"metadata": {"$setElementOrderfinalizers": ["a"]}},
            400,
            "BadRequest",
            "invalid patch format of setElementOrder list",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList": ["a"]}},
            400,
            "BadRequest",
            "invalid patch format of primitive list",
        ),
    ],
)
def test_strategic_merge_errors_have_the_apiserver_status(
    patch: dict[str, Any], code: int, reason: str, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        _smp(_pod(), patch)
    assert (caught.value.code, caught.value.reason, caught.value.message) == (code, reason, message)


def test_lists_of_lists_are_422() -> None:
    with pytest.raises(ApiError) as caught:
        _smp({"metadata": {"finalizers": [["a"]]}}, {"metadata": {"finalizers": [["b"]]}})
    assert caught.value.code == 422
    assert caught.value.details == {
        "causes": [
            {"reason": "UnexpectedServerResponse", "message": "lists of lists are not supported"}
        ]
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
        (b"{", "unexpected end of JSON input"),
        (b"nope", "invalid character 'n' looking for beginning of value"),
        (b'{"a": NaN}', "invalid character 'N' looking for beginning of value"),
    ],
)
def test_undecodable_strategic_merge_patches_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        apply_patch(STRATEGIC_MERGE_PATCH, _pod(), body, "Pod")
    assert (caught.value.code, caught.value.message) == (400, message)


# -- content types ------------------------------------------------------------------------


def test_content_type_parameters_are_ignored() -> None:
    patched = apply_patch(
        "application/merge-patch+json; charset=utf-8", {"a": 1}, b'{"b": 2}', "ConfigMap"
    )
    assert patched == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/apply-patch+yaml", "text/plain", ""]
)
def test_unsupported_content_types_are_415(content_type: str) -> None:
    with pytest.raises(ApiError) as caught:
        apply_patch(content_type, {}, b"{}", "Pod")
    assert caught.value.code == 415
    assert caught.value.reason == "UnsupportedMediaType"
