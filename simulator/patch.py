"""The three PATCH body types the apiserver accepts, applied to plain JSON objects.

Why this module exists: the simulator stores objects as ``dict[str, Any]`` and must
answer PATCH like kube-apiserver, because the clients under test (controllers,
kubectl, kubernetes-asyncio) patch finalizers, conditions, taints and labels and rely
on the exact merge rules. It is pure: no storage, no clock; the request handler calls
:func:`apply_patch` with the stored object and the raw body and stores the result.

What it follows (kubernetes/kubernetes):

* dispatch and error mapping: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go
  (``applyJSPatch``, ``strategicPatchObject``, ``interpretStrategicMergePatchError``)
  with the default ``fieldValidation=Warn`` decoding (the server default when the client
  sends none): undecodable bodies are 400 BadRequest;
* JSON patch (RFC 6902): gopkg.in/evanphx/json-patch.v4 as vendored by Kubernetes,
  including its quirks (``replace`` of a missing object member adds it; ``test`` of a
  missing member against ``null`` passes); a failed operation is 422 Invalid with the
  generic "the server rejected our request due to an error in our request" message;
* JSON merge patch (RFC 7386): evanphx ``MergePatch``;
* strategic merge patch: staging/src/k8s.io/apimachinery/pkg/util/strategicpatch/patch.go
  (``mergeMap``, ``mergeSlice``, ``mergePatchIntoOriginal``, ``applyRetainKeysDirective``,
  ``removeDirectives``), driven by :data:`SCHEMAS`, a table of the ``patchStrategy`` /
  ``patchMergeKey`` struct tags of k8s.io/api core/v1, apps/v1 and flowcontrol/v1 for
  the fields the simulator's kinds have. Paths not in the table get the defaults the Go
  code gives a field without tags: maps merge, lists are replaced.

The caller's concerns, left alone here: the patched object may change
``metadata.name`` / ``namespace`` / ``resourceVersion`` / ``uid``; the apiserver
rejects or overrides those after patching (``checkName``, optimistic concurrency),
and so must the handler. Validation of the result (422) is also the caller's.

Strategic merge, decisions worth knowing:

* ``$setElementOrder/<list>`` is applied, with the Go ordering algorithm (items named
  in it come in its order; server-only items keep their place relative to them);
  without it, new list items are placed as the Go code places them, which is *before*
  unanchored server items (so an added condition goes first, not last).
* ``$patch: merge`` is an error on maps and lists, as in Go (500, reason Unknown).
* ``$retainKeys`` and ``$deleteFromPrimitiveList/<list>`` behave as in Go; a delete list
  applies whatever the list's strategy is.
* The Go code mutates maps while iterating in random order; here the patch is
  processed in its JSON key order on private copies, so inputs are never mutated.
* Keys starting with ``$`` that survive the merge (directives nested in replaced
  values) are dropped from the result: the real apiserver decodes the merged map into
  the typed object, which silently drops such unknown fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jsonpatch

from . import errors
from .errors import ApiError

JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"

MAX_JSON_PATCH_OPERATIONS: Final = 10000
"""handlers/patch.go maxJSONPatchOperations: more operations is 413."""

# -- the public entry point ---------------------------------------------------------------


def apply_patch(
    content_type: str, original: Mapping[str, Any], patch_body: bytes, kind: str
) -> dict[str, Any]:
    """Apply a PATCH request body to ``original`` (never mutated); return the new object.

    ``content_type`` is the request's Content-Type header (parameters such as
    ``; charset=utf-8`` are ignored, as in PatchResource); ``kind`` selects the
    strategic-merge schema. Raises ApiError: 415 for an unsupported type, 400 for an
    undecodable body, 422 for a JSON patch that does not apply, and the statuses
    ``interpretStrategicMergePatchError`` gives for strategic merge failures.
    """
    media_type = content_type.split(";", 1)[0].strip()
    if media_type == JSON_PATCH:
        ops = _decode_json_patch(patch_body)
        return _as_object(json_patch(original, ops))
    if media_type == MERGE_PATCH:
        patch = _decode(patch_body, prefix="error decoding patch: ")
        if patch is not None and not isinstance(patch, dict):
            # The strict decode into map[string]interface{} (fieldValidation=Warn) runs
            # before evanphx MergePatch and rejects arrays and scalars.
            raise errors.bad_request(
                f"error decoding patch: json: cannot unmarshal {_json_type(patch)} "
                "into Go value of type map[string]interface {}"
            )
        if patch is None:
            # evanphx MergePatch: a null patch document is ErrBadJSONPatch.
            raise errors.bad_request("Invalid JSON Patch")
        return _as_object(merge_patch(original, patch))
    if media_type == STRATEGIC_MERGE_PATCH:
        patch = _decode(patch_body, prefix="")
        if patch is None:
            # json.Unmarshal of null into a map leaves it empty: a no-op patch.
            patch = {}
        if not isinstance(patch, dict):
            raise errors.bad_request(
                f"json: cannot unmarshal {_json_type(patch)} "
                "into Go value of type map[string]interface {}"
            )
        return strategic_merge_patch(original, patch, kind)
    raise errors.unsupported_media_type(content_type)


def _as_object(result: Any) -> dict[str, Any]:
    # The patched JSON is decoded into the typed object; anything but an object fails
    # there, and the handler reports that as 422 Invalid on the field "patch".
    if isinstance(result, dict):
        return result
    rendered = json.dumps(result, separators=(",", ":"))
    raise errors.invalid(
        "",
        "",
        "",
        [
            (
                "patch",
                f"Invalid value: {json.dumps(rendered)}: json: cannot unmarshal "
                f"{_json_type(result)} into Go value of type map[string]interface {{}}",
            )
        ],
    )


# -- JSON decoding with Go-like messages ---------------------------------------------------


def _reject_constant(name: str) -> Any:
    # Go's encoding/json has no NaN / Infinity literals.
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _decode(body: bytes, *, prefix: str) -> Any:
    """Decode a JSON body; a failure is 400 with a message shaped like encoding/json's."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise errors.bad_request(prefix + _go_json_error(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(prefix + str(exc)) from None


def _go_json_error(exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc.rstrip()):
        return "unexpected end of JSON input"
    char = exc.doc[exc.pos]
    context = {
        "Expecting value": "looking for beginning of value",
        "Expecting property name enclosed in double quotes": (
            "looking for beginning of object key string"
        ),
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
        "Extra data": "after top-level value",
    }.get(exc.msg, "looking for beginning of value")
    return f"invalid character '{char}' {context}"


def _json_type(value: Any) -> str:
    # The JSON type names encoding/json's UnmarshalTypeError uses.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


# -- JSON patch (RFC 6902) ----------------------------------------------------------------


def _decode_json_patch(body: bytes) -> list[dict[str, Any]]:
    """The strict decode into []jsonPatchOp that applyJSPatch does first."""
    ops = _decode(body, prefix="error decoding patch: ")
    if not isinstance(ops, list):
        raise errors.bad_request(
            f"error decoding patch: json: cannot unmarshal {_json_type(ops)} "
            "into Go value of type []handlers.jsonPatchOp"
        )
    for op in ops:
        if not isinstance(op, dict):
            raise errors.bad_request(
                f"error decoding patch: json: cannot unmarshal {_json_type(op)} "
                "into Go value of type handlers.jsonPatchOp"
            )
        for name in ("op", "path", "from"):
            if name in op and op[name] is not None and not isinstance(op[name], str):
                raise errors.bad_request(
                    f"error decoding patch: json: cannot unmarshal {_json_type(op[name])} "
                    f"into Go struct field jsonPatchOp.{name} of type string"
                )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise ApiError(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: The allowed maximum operations in a JSON patch is "
            f"{MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}",
        )
    return ops


def json_patch(original: Any, ops: list[Any]) -> Any:
    """Apply RFC 6902 operations to a copy of ``original`` and return it.

    Uses the ``jsonpatch`` library one operation at a time, so the evanphx v4 quirks the
    apiserver has can be reproduced where they differ from the RFC. A failing operation
    raises 422 Invalid whose single cause carries an evanphx-style message.
    """
    doc: Any = _copy(original)
    for raw in ops:
        op = raw if isinstance(raw, dict) else {}
        kind = op.get("op")
        path = op.get("path")
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            raise _patch_failed(f"Unexpected kind: {kind if isinstance(kind, str) else ''}")
        if not isinstance(path, str):
            raise _patch_failed(f"{kind} operation failed to decode path: missing value")
        if kind in ("add", "replace") and "value" not in op:
            op = {**op, "value": None}  # evanphx v4 adds null for a missing value
        parent, key = _parent_of(doc, path)
        if kind == "replace" and isinstance(parent, dict) and key not in parent:
            # evanphx v4 partialDoc.get never fails, so replacing a missing member adds
            # it (a long-standing Kubernetes behaviour clients have come to rely on).
            op = {**op, "op": "add"}
        if kind == "test" and isinstance(parent, dict) and key not in parent:
            if op.get("value") is None:
                continue  # a missing member equals null in evanphx v4
            raise _patch_failed(f"testing value {path} failed: test failed")
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise _patch_failed(f"testing value {path} failed: test failed") from None
        except (
            jsonpatch.JsonPatchConflict,
            jsonpatch.InvalidJsonPatch,
            jsonpatch.JsonPointerException,
            KeyError,
            IndexError,
            TypeError,
        ):
            raise _patch_failed(_missing_message(kind, op)) from None
    return doc


def _parent_of(doc: Any, path: str) -> tuple[Any, str | None]:
    """The container a JSON pointer's last token lives in, and that token."""
    if not path:
        return None, None
    try:
        pointer = jsonpatch.JsonPointer(path)
    except jsonpatch.JsonPointerException:
        return None, None
    parts = pointer.parts
    try:
        parent = jsonpatch.JsonPointer.from_parts(parts[:-1]).resolve(doc)
    except (jsonpatch.JsonPointerException, KeyError, IndexError, TypeError):
        return None, None
    return parent, parts[-1]


def _missing_message(kind: str, op: Mapping[str, Any]) -> str:
    # The evanphx v4 wording for an operation whose path (or from) does not resolve.
    path = op.get("path")
    source = op.get("from")
    if kind in ("add", "remove"):
        return f'{kind} operation does not apply: doc is missing path: "{path}": missing value'
    if kind == "replace":
        return f"replace operation does not apply: doc is missing path: {path}: missing value"
    if kind in ("move", "copy"):
        return f"{kind} operation does not apply: doc is missing from path: {source}: missing value"
    return f"test operation does not apply: is missing path: {path}: missing value"


def _patch_failed(message: str) -> ApiError:
    # errors.NewGenericServerResponse(422, "", GroupResource{}, "", msg, 0, false).
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        details={"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


# -- JSON merge patch (RFC 7386) ----------------------------------------------------------


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386 merge of ``patch`` into a copy of ``original``.

    An object patch merges key by key (null deletes); any other patch replaces the
    target. Null values inside newly added objects are pruned, as evanphx does.
    :func:`apply_patch` additionally enforces the apiserver's rules on what a patch
    document may be.
    """
    if not isinstance(patch, dict):
        return _copy(patch)
    target: dict[str, Any] = _copy(original) if isinstance(original, dict) else {}
    _merge_docs(target, patch)
    return target


def _merge_docs(doc: dict[str, Any], patch: Mapping[str, Any]) -> None:
    # evanphx mergeDocs / merge with mergeMerge=false.
    for key, value in patch.items():
        if value is None:
            doc.pop(key, None)
            continue
        current = doc.get(key)
        if not isinstance(current, dict):  # absent, null or not an object
            doc[key] = _prune_nulls(_copy(value))
        elif not isinstance(value, dict):
            doc[key] = _copy(value)
        else:
            _merge_docs(current, value)


def _prune_nulls(value: Any) -> Any:
    # evanphx pruneNulls: drop null members of objects, also inside arrays (but keep
    # null array elements).
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for v in value.values():
            _prune_nulls(v)
    elif isinstance(value, list):
        for v in value:
            if v is not None:
                _prune_nulls(v)
    return value


# -- strategic merge patch: the schema ----------------------------------------------------

MERGE: Final = "merge"


@dataclass(frozen=True)
class PatchMeta:
    """One field's ``patchStrategy`` / ``patchMergeKey`` tags and its element schema.

    ``strategy`` is ``"merge"`` or ``""`` (none). Without a strategy a list is replaced
    and a map (struct or map[string]string) is merged, as in the Go code.
    """

    strategy: str = ""
    merge_key: str = ""
    fields: Mapping[str, PatchMeta] = field(default_factory=dict)


def _merge(key: str = "", fields: Mapping[str, PatchMeta] | None = None) -> PatchMeta:
    return PatchMeta(MERGE, key, fields or {})


def _struct(fields: Mapping[str, PatchMeta]) -> PatchMeta:
    return PatchMeta("", "", fields)


# Struct tags of k8s.io/api (core/v1, apps/v1, flowcontrol/v1 types.go). Fields with no
# tag (Node spec.taints, Pod spec.tolerations, status.containerStatuses, Lease spec,
# ValidatingAdmissionPolicy fields) are deliberately absent: they are replaced whole.
_OBJECT_META: Final = _struct(
    {
        "ownerReferences": _merge("uid"),
        "finalizers": _merge(),
    }
)
_CONTAINER: Final = {
    "ports": _merge("containerPort"),
    "env": _merge("name"),
    "volumeMounts": _merge("mountPath"),
    "volumeDevices": _merge("devicePath"),
}
_POD_SPEC: Final = _struct(
    {
        "volumes": _merge("name"),  # patchStrategy:"merge,retainKeys"
        "initContainers": _merge("name", _CONTAINER),
        "containers": _merge("name", _CONTAINER),
        "ephemeralContainers": _merge("name", _CONTAINER),
        "imagePullSecrets": _merge("name"),
        "hostAliases": _merge("ip"),
        "topologySpreadConstraints": _merge("topologyKey"),
        "schedulingGates": _merge("name"),
        "resourceClaims": _merge("name"),  # patchStrategy:"merge,retainKeys"
    }
)
_POD_STATUS: Final = _struct(
    {
        "conditions": _merge("type"),
        "podIPs": _merge("ip"),
        "hostIPs": _merge("ip"),
        "resourceClaimStatuses": _merge("name"),
    }
)
_POD_TEMPLATE: Final = _struct({"metadata": _OBJECT_META, "spec": _POD_SPEC})
_CONDITIONS_STATUS: Final = _struct({"conditions": _merge("type")})
_WORKLOAD: Final = _struct(
    {
        "metadata": _OBJECT_META,
        "spec": _struct({"template": _POD_TEMPLATE}),
        "status": _CONDITIONS_STATUS,
    }
)
_PLAIN: Final = _struct({"metadata": _OBJECT_META})

SCHEMAS: Final[Mapping[str, PatchMeta]] = {
    "Pod": _struct({"metadata": _OBJECT_META, "spec": _POD_SPEC, "status": _POD_STATUS}),
    "Node": _struct(
        {
            "metadata": _OBJECT_META,
            # NodeSpec.Taints has no patch strategy: a taints patch replaces the list.
            "spec": _struct({"podCIDRs": _merge()}),
            "status": _struct({"conditions": _merge("type"), "addresses": _merge("type")}),
        }
    ),
    "Namespace": _struct(
        {"metadata": _OBJECT_META, "status": _struct({"conditions": _merge("type")})}
    ),
    "Service": _struct(
        {
            "metadata": _OBJECT_META,
            "spec": _struct({"ports": _merge("port")}),
            "status": _struct({"conditions": _merge("type")}),
        }
    ),
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "StatefulSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "FlowSchema": _struct({"metadata": _OBJECT_META, "status": _CONDITIONS_STATUS}),
    "PriorityLevelConfiguration": _struct({"metadata": _OBJECT_META, "status": _CONDITIONS_STATUS}),
    "ConfigMap": _PLAIN,
    "Event": _PLAIN,
    "Endpoints": _PLAIN,
    "Lease": _PLAIN,
    "ValidatingAdmissionPolicy": _PLAIN,
    "ValidatingAdmissionPolicyBinding": _PLAIN,
}
"""Kind -> strategic merge schema. Unknown kinds get only the defaults."""

_NO_META: Final = PatchMeta()

# -- strategic merge patch: the algorithm --------------------------------------------------

_DIRECTIVE: Final = "$patch"
_DELETE: Final = "delete"
_REPLACE: Final = "replace"
_RETAIN_KEYS: Final = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER: Final = "$setElementOrder"


class _SmpError(Exception):
    """A strategicpatch error; ``code`` is the status interpretStrategicMergePatchError gives."""

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# The mergepatch sentinel errors and the statuses the handler maps them to.
def _bad_primitive_list() -> _SmpError:
    return _SmpError("invalid patch format of primitive list", 400)


def _bad_retain_keys() -> _SmpError:
    return _SmpError("invalid patch format of retainKeys", 400)


def _bad_set_element_order() -> _SmpError:
    return _SmpError("invalid patch format of setElementOrder list", 400)


def _no_list_of_lists() -> _SmpError:
    return _SmpError("lists of lists are not supported", 422)


def _no_merge_key(item: Any, key: str) -> _SmpError:
    return _SmpError(f"map: {_go_fmt(item)} does not contain declared merge key: {key}")


def _bad_arg_type(expected: str, actual: Any) -> _SmpError:
    return _SmpError(f"expected a {expected}, but received a {_go_type(actual)}")


def _bad_patch_type(directive: Any, item: Any) -> _SmpError:
    return _SmpError(f"unknown patch type: {_go_fmt(directive)} in map: {_go_fmt(item)}")


def strategic_merge_patch(
    original: Mapping[str, Any], patch: Mapping[str, Any], kind: str
) -> dict[str, Any]:
    """Apply a strategic merge patch (already decoded) to a copy of ``original``.

    ``kind`` picks the schema from :data:`SCHEMAS`. Failures raise ApiError with the
    status the apiserver gives: 400 for malformed directives, 422 for lists of lists
    and retainKeys mismatches, 500 (reason Unknown) for the rest, such as a list item
    without its merge key.
    """
    schema = SCHEMAS.get(kind, _NO_META)
    try:
        merged = _merge_map(_copy(original), _copy(patch), schema)
    except _SmpError as exc:
        if exc.code == 400:
            raise errors.bad_request(exc.message) from None
        if exc.code == 422:
            raise _patch_failed(exc.message) from None
        # Not a metav1.Status error: ErrorToAPIStatus answers 500 with reason "" and
        # the bare message.
        raise ApiError(500, "", exc.message) from None
    result = _strip_directives(merged)
    return result if isinstance(result, dict) else {}


def _child(schema: PatchMeta, key: str) -> PatchMeta:
    return schema.fields.get(key, _NO_META)


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], schema: PatchMeta
) -> dict[str, Any]:
    """mergeMap: both arguments are private copies and may be mutated."""
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive == _REPLACE:
            del patch[_DIRECTIVE]
            return patch
        if directive == _DELETE:
            return {}
        raise _bad_patch_type(directive, patch)

    _apply_retain_keys(original, patch)
    _merge_set_element_order(original, patch, schema)

    for raw_key, patch_value in list(patch.items()):
        key = raw_key
        is_delete_list = False
        if raw_key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            key = _extract_key(raw_key, _DELETE_FROM_PRIMITIVE_LIST)
            is_delete_list = True

        if patch_value is None:
            original.pop(key, None)
            continue  # IgnoreUnmatchedNulls: the server never keeps a null

        if key not in original or type(original[key]) is not type(patch_value):
            if not is_delete_list:
                _replace_with(original, key, patch_value)
            continue

        meta = _child(schema, key)
        current = original[key]
        if isinstance(current, dict):
            if meta.strategy == _REPLACE:
                original[key] = patch_value
            else:
                original[key] = _merge_map(current, patch_value, meta)
        elif isinstance(current, list):
            original[key] = _merge_slice_handler(current, patch_value, meta, is_delete_list)
        else:
            _replace_with(original, key, patch_value)
    return original


def _replace_with(original: dict[str, Any], key: str, value: Any) -> None:
    # A value that is not merged: nulls inside it are discarded and maps carrying a
    # $patch directive are dropped (discardNullValuesFromPatch + removeDirectives).
    _discard_nulls(value)
    kept, keep = _remove_directives(value)
    if keep:
        original[key] = kept
    else:
        original.pop(key, None)


def _discard_nulls(value: Any) -> None:
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for v in value.values():
            _discard_nulls(v)
    elif isinstance(value, list):
        for v in value:
            _discard_nulls(v)


def _remove_directives(value: Any) -> tuple[Any, bool]:
    """removeDirectives: (value to keep, whether to keep it at all)."""
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        for key in list(value):
            kept, keep = _remove_directives(value[key])
            if keep:
                value[key] = kept
            else:
                del value[key]
        return value, True
    if isinstance(value, list):
        out = []
        for item in value:
            kept, keep = _remove_directives(item)
            if keep:
                out.append(kept)
        return out, True
    return value, True


def _extract_key(key: str, prefix: str) -> str:
    head, sep, tail = key.partition("/")
    if not sep or head != prefix:
        if prefix == _DELETE_FROM_PRIMITIVE_LIST:
            raise _bad_primitive_list()
        raise _bad_set_element_order()
    return tail


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """applyRetainKeysDirective: clear the original's keys missing from the list."""
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise _bad_retain_keys()
    allowed = {v for v in retain if isinstance(v, str)}
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in allowed:
            raise _bad_retain_keys()
    for key in [k for k in original if k not in allowed]:
        del original[key]


def _merge_set_element_order(
    original: dict[str, Any], patch: dict[str, Any], schema: PatchMeta
) -> None:
    """mergePatchIntoOriginal: merge each list that has a $setElementOrder, then order it."""
    for directive_key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive_key)
        if not isinstance(order, list):
            raise _bad_arg_type("[]interface {}", order)
        key = _extract_key(directive_key, _SET_ELEMENT_ORDER)
        found_original = key in original
        found_patch = key in patch
        original_list: list[Any] = []
        patch_list: list[Any] = []
        if found_original:
            if not isinstance(original[key], list):
                raise _bad_arg_type("[]interface {}", original[key])
            original_list = original[key]
        if found_patch:
            if not isinstance(patch[key], list):
                raise _bad_arg_type("[]interface {}", patch[key])
            patch_list = patch[key]
        meta = _child(schema, key)
        merge_key = meta.merge_key
        _validate_set_order(patch_list, order, merge_key)

        server_order = list(original_list)  # before merging mutates anything
        if found_original and not found_patch:
            merged = original_list
        elif found_patch and not found_original:
            merged, _ = _remove_directives(patch_list)
        elif found_original and found_patch:
            merged = _merge_slice_handler(original_list, patch_list, meta, False)
        else:
            continue

        if merge_key:
            patch_items, server_only = _partition_maps(merged, order, merge_key)
        else:
            patch_items, server_only = _partition_primitives(merged, order)
        is_map = _element_kind(server_order, patch_list) == "map"
        original[key] = _normalize_element_order(
            patch_items, server_only, order, server_order, merge_key, is_map
        )
        patch.pop(key, None)


def _validate_set_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """validatePatchWithSetOrderList: the patch list must follow the order list."""
    if not order or not patch_list:
        return
    if merge_key:
        non_delete, _ = _extract_to_delete(patch_list)
    else:
        non_delete = patch_list
    p = s = 0
    while p < len(non_delete) and s < len(order):
        item = non_delete[p]
        if isinstance(item, dict) and _DIRECTIVE in item:
            p += 1
            continue
        if _merge_key_equal(item, order[s], merge_key):
            p += 1
        s += 1
    if p < len(non_delete) and s >= len(order):
        raise _SmpError(
            f"The order in patch list:\n{_go_fmt(patch_list)}\n doesn't match "
            f"{_SET_ELEMENT_ORDER} list:\n{_go_fmt(order)}\n"
        )


def _merge_key_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return bool(left == right)
    if not isinstance(left, dict):
        raise _bad_arg_type("map[string]interface {}", left)
    if not isinstance(right, dict):
        raise _bad_arg_type("map[string]interface {}", right)
    if merge_key not in left:
        raise _no_merge_key(left, merge_key)
    if merge_key not in right:
        raise _no_merge_key(right, merge_key)
    return bool(left[merge_key] == right[merge_key])


def _merge_slice_handler(
    original: list[Any], patch: Any, meta: PatchMeta, is_delete_list: bool
) -> list[Any]:
    if not isinstance(patch, list):
        raise _bad_arg_type("[]interface {}", patch)
    # Delete lists apply whatever the field's strategy is.
    if meta.strategy == MERGE or is_delete_list:
        return _merge_slice(original, patch, meta, is_delete_list)
    kept, _ = _remove_directives(patch)
    result: list[Any] = kept
    return result


def _element_kind(*lists: list[Any]) -> str:
    """sliceElementType: "map", "scalar"; mixed element types and lists of lists fail."""
    previous: type | None = None
    for values in lists:
        for value in values:
            current = type(value)
            if previous is None:
                previous = current
                if current is list:
                    raise _no_list_of_lists()
            elif current is not previous:
                raise _SmpError(
                    "list element types are not identical: " + _go_fmt([list(v) for v in lists])
                )
    if previous is None:
        raise _SmpError("no elements in any of the given slices")
    return "map" if previous is dict else "scalar"


def _merge_slice(
    original: list[Any], patch: list[Any], meta: PatchMeta, is_delete_list: bool
) -> list[Any]:
    """mergeSlice: merge by merge key (maps) or by value (scalars), then order."""
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    merge_key = meta.merge_key
    if kind != "map":
        if is_delete_list:
            # deleteFromSlice: drop every listed value, keep the order of the rest.
            return [v for v in original if not _contains(patch, v)]
        merged = _dedupe(original + patch)
    else:
        if not merge_key:
            raise _SmpError("cannot merge lists without merge key for type map")
        # After this, `original` has the deleted items removed (or is the replacement
        # list for `$patch: replace`, with an empty patch): Go orders by that list.
        original, patch = _merge_special_elements(original, patch, merge_key)
        merged = _merge_plain_elements(original, patch, merge_key, meta)
    server_order = original

    if merge_key:
        patch_items, server_only = _partition_maps(merged, patch, merge_key)
    else:
        patch_items, server_only = _partition_primitives(merged, patch)
    return _normalize_element_order(
        patch_items, server_only, patch, server_order, merge_key, kind == "map"
    )


def _contains(values: list[Any], value: Any) -> bool:
    return any(type(v) is type(value) and v == value for v in values)


def _dedupe(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if not _contains(out, value):
            out.append(value)
    return out


def _merge_special_elements(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """mergeSliceWithSpecialElements: apply `$patch: delete` / `replace` items."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        if _DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == _DELETE:
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            value = item[merge_key]
            original = [
                o
                for o in original
                if not (isinstance(o, dict) and o.get(merge_key, _ABSENT) == value)
            ]
        elif directive == _REPLACE:
            replace = True  # keep scanning to prune the other directive items
        elif directive == "merge":
            raise _SmpError("merging lists cannot yet be specified in the patch")
        else:
            raise _bad_patch_type(directive, item)
    if replace:
        return plain, []
    return original, plain


_ABSENT: Final = object()


def _merge_plain_elements(
    original: list[Any], patch: list[Any], merge_key: str, meta: PatchMeta
) -> list[Any]:
    """mergeSliceWithoutSpecialElements: merge items with equal keys, append the rest."""
    result = list(original)
    for item in patch:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        value = item[merge_key]
        for index, existing in enumerate(result):
            if not isinstance(existing, dict):
                raise _SmpError(f"value for key {index} is not a map.")
            if existing.get(merge_key, _ABSENT) == value:
                result[index] = _merge_map(existing, item, meta)
                break
        else:
            result.append(item)
    return result


def _key_of(item: Any, merge_key: str, is_map: bool) -> Any:
    if is_map:
        return item.get(merge_key) if isinstance(item, dict) else None
    return item


def _index(order: list[Any], item: Any, merge_key: str, is_map: bool) -> int:
    # index(): position of the first element with the same merge key value, or -1.
    wanted = _key_of(item, merge_key, is_map)
    for i, candidate in enumerate(order):
        if _key_of(candidate, merge_key, is_map) == wanted:
            return i
    return -1


def _partition_maps(
    merged: list[Any], by: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    in_patch: list[Any] = []
    server_only: list[Any] = []
    for item in merged:
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        value = item[merge_key]
        if any(isinstance(b, dict) and b.get(merge_key, _ABSENT) == value for b in by):
            in_patch.append(item)
        else:
            server_only.append(item)
    return in_patch, server_only


def _partition_primitives(merged: list[Any], by: list[Any]) -> tuple[list[Any], list[Any]]:
    in_patch = [v for v in merged if _contains(by, v)]
    server_only = [v for v in merged if not _contains(by, v)]
    return in_patch, server_only


def _extract_to_delete(items: list[Any]) -> tuple[list[Any], list[Any]]:
    keep: list[Any] = []
    delete: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        (delete if item.get(_DIRECTIVE) == _DELETE else keep).append(item)
    return keep, delete


def _normalize_slice_order(
    to_sort: list[Any], order: list[Any], merge_key: str, is_map: bool
) -> list[Any]:
    """normalizeSliceOrder: sort by position in ``order``; delete items go last.

    Go's comparator is only consistent when every item is in ``order``, which is always
    the case for the callers here; items not found sort after the others, stably.
    """
    to_delete: list[Any] = []
    if is_map:
        for item in (*to_sort, *order):
            if not isinstance(item, dict):
                raise _bad_arg_type("map[string]interface {}", item)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
        to_sort, to_delete = _extract_to_delete(to_sort)
    ranked = sorted(
        to_sort,
        key=lambda item: i if (i := _index(order, item, merge_key, is_map)) >= 0 else len(order),
    )
    return ranked + to_delete


def _normalize_element_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
    is_map: bool,
) -> list[Any]:
    """normalizeElementOrder + mergeSortedSlice.

    Patch items are put in patch order and server-only items in server order; then
    server-only items are woven in before a patch item only when both are in the live
    list and the server item comes first there. A patch item new to the list is
    therefore emitted as soon as it is reached.
    """
    right = _normalize_slice_order(patch_items, patch_order, merge_key, is_map)
    left = _normalize_slice_order(server_only, server_order, merge_key, is_map)
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], merge_key, is_map)
            ri = _index(server_order, right[j], merge_key, is_map)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _strip_directives(value: Any) -> Any:
    """Drop ``$``-prefixed keys left in the result, as decoding into the typed object does."""
    if isinstance(value, dict):
        for key in [k for k in value if isinstance(k, str) and k.startswith("$")]:
            del value[key]
        for v in value.values():
            _strip_directives(v)
    elif isinstance(value, list):
        for v in value:
            _strip_directives(v)
    return value


# -- helpers ------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    """Deep copy of a JSON value; several times faster than copy.deepcopy."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _go_type(value: Any) -> str:
    # reflect.TypeOf(...).String() for values decoded from JSON.
    names: Mapping[type, str] = {
        dict: "map[string]interface {}",
        list: "[]interface {}",
        str: "string",
        bool: "bool",
        int: "int64",
        float: "float64",
    }
    return names.get(type(value), "<nil>")


def _go_fmt(value: Any) -> str:
    """fmt's %v for decoded JSON: map[k:v] with sorted keys, [a b], <nil>, true."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_fmt(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_fmt(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "SCHEMAS",
    "STRATEGIC_MERGE_PATCH",
    "PatchMeta",
    "apply_patch",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]
