"""The apiserver's registry layer: what happens to an object between the HTTP handler
and storage.

The store only versions bytes. What clients observe of the real apiserver beyond that
is decided here, following the registry strategies in kubernetes/kubernetes
(``pkg/registry/*/strategy.go`` and ``staging/src/k8s.io/apiserver/pkg/registry/generic/
registry/store.go``):

- create: name or generateName, DNS-1123 name validation (422), namespace must exist
  (NamespaceLifecycle, 404/403), uid and creationTimestamp, generation 1, pod status
  reset to Pending and the DefaultTolerationSeconds tolerations added;
- update and patch: optimistic concurrency on metadata.resourceVersion (409), immutable
  uid/name/namespace/creationTimestamp, the status subresource changes only status and
  the main resource never does, generation bumped on spec changes;
- delete: preconditions, finalizers (deletionTimestamp, removed when the last finalizer
  goes), graceful pod deletion (a scheduled pod gets deletionTimestamp and
  deletionGracePeriodSeconds; its kubelet finishes the deletion with grace 0), and
  the body the real handler answers (the object for pods, a Status for most others);
- admission: every mutation passes the ValidatingAdmissionPolicies stored in the
  cluster before anything is written; dry-run runs admission and writes nothing;
- RBAC objects are validated as pkg/apis/rbac/validation does (422 naming the field),
  since the authorizer (:mod:`.rbac`) trusts what is stored; FlowSchemas and
  PriorityLevelConfigurations as pkg/apis/flowcontrol/validation does (:mod:`.apf`), since
  the classifier only digests what is stored.
"""

from __future__ import annotations

import copy
import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any

from . import apf, errors, rbac
from .admission import Admission, AdmissionRequest, UserInfo
from .clock import SimClock
from .patch import apply_patch
from .resources import FLOWCONTROL, NAMESPACES, PODS, RBAC, ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Entry, Store, decode, encode

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

RETURNS_DELETED_OBJECT = frozenset({("", "pods"), ("", "services")})
"""Resources whose DELETE answers with the object (``ReturnDeletedObject: true`` in their
registry); the others answer with a success Status."""

GENERATION_TRACKED = frozenset(
    {
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
        ("flowcontrol.apiserver.k8s.io", "flowschemas"),
        ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"),
        ("", "pods"),
    }
)
"""Resources whose metadata.generation counts spec changes."""

EMPTY_STATUS: dict[tuple[str, str], dict[str, int]] = {
    ("apps", "deployments"): {},
    ("apps", "replicasets"): {"replicas": 0},
    ("apps", "statefulsets"): {"replicas": 0, "availableReplicas": 0},
    ("apps", "daemonsets"): {
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    },
}
"""The status a workload has right after create: what the v1 types encode when empty."""

DEFAULT_TOLERATION_SECONDS = 300
_NOT_READY = "node.kubernetes.io/not-ready"
_UNREACHABLE = "node.kubernetes.io/unreachable"


def format_time(clock: SimClock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


class Registry:
    """Create, update, patch and delete with the real apiserver's semantics."""

    def __init__(
        self,
        store: Store,
        clock: SimClock,
        admission: Admission | None = None,
        *,
        default_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.admission = admission
        self.default_toleration_seconds = default_toleration_seconds
        self.warnings: list[str] = []

    # -- helpers -----------------------------------------------------------------

    def _admit(self, request: AdmissionRequest) -> list[str]:
        if self.admission is None:
            return []
        return self.admission.validate(request)

    def _existing(self, rt: ResourceType, namespace: str, name: str) -> Entry:
        entry = self.store.get(rt, namespace, name)
        if entry is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return entry

    def _check_namespace(self, rt: ResourceType, namespace: str, operation: str) -> None:
        if not rt.namespaced:
            return
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if operation == "CREATE" and ns.fields.get("status.phase") == "Terminating":
            raise errors.forbidden(
                f'{rt.plural} "" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated"
            )

    def _check_type(self, rt: ResourceType, body: Mapping[str, Any]) -> None:
        kind = body.get("kind")
        api_version = body.get("apiVersion")
        if kind not in (None, "", rt.kind) or api_version not in (None, "", rt.api_version):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})"
                if api_version not in (None, "", rt.api_version)
                else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )

    @staticmethod
    def _validate_name(rt: ResourceType, name: str) -> None:
        # Most kinds take DNS-1123 subdomains; namespaces and services take labels.
        label_only = rt.plural in ("namespaces", "services")
        pattern = _DNS1123_LABEL if label_only else _DNS1123_SUBDOMAIN
        limit = 63 if label_only else 253
        if not name:
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [("metadata.name", "Required value: name or generateName is required")],
            )
        if len(name) > limit or not pattern.match(name):
            what = "RFC 1123 label" if label_only else "RFC 1123 subdomain"
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase {what} must consist of lower '
                        "case alphanumeric characters, '-' or '.', and must start and end "
                        "with an alphanumeric character",
                    )
                ],
            )

    @staticmethod
    def _validate_rbac(
        rt: ResourceType, name: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> None:
        # RBAC objects are what the authorizer reads: invalid ones never get stored
        # (pkg/apis/rbac/validation), so the authorizer can trust what it finds.
        causes = rbac.validate_object(rt, obj, old)
        if causes:
            raise errors.invalid(rt.kind, rt.group, name, causes)

    @staticmethod
    def _validate_flowcontrol(rt: ResourceType, name: str, obj: Mapping[str, Any]) -> None:
        # FlowSchemas and priority levels are what the APF classifier digests: invalid ones
        # are refused as the registry strategies' Validate/ValidateUpdate refuse them
        # (pkg/apis/flowcontrol/validation; ValidateUpdate validates the new object).
        if rt.plural == "flowschemas":
            causes = apf.validate_flow_schema(obj)
        else:
            causes = apf.validate_priority_level(obj)
        if causes:
            raise errors.invalid_fields(rt.kind, rt.group, name, causes)

    def _apply_pod_defaults(self, pod: dict[str, Any]) -> None:
        spec = pod.setdefault("spec", {})
        tolerations = spec.setdefault("tolerations", [])
        present = {(t.get("key"), t.get("effect")) for t in tolerations if isinstance(t, dict)}
        # DefaultTolerationSeconds admission (plugin/pkg/admission/defaulttolerationseconds):
        # pods tolerate not-ready and unreachable NoExecute taints for 300 s unless they
        # already say something about them.
        for key in (_NOT_READY, _UNREACHABLE):
            if (key, "NoExecute") not in present and (key, None) not in present:
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": self.default_toleration_seconds,
                    }
                )
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("restartPolicy", "Always")
        pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    # -- create ------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: dict[str, Any],
        user: UserInfo,
        *,
        dry_run: bool = False,
    ) -> tuple[int, bytes]:
        self._check_type(rt, body)
        obj = copy.deepcopy(body)
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or body_ns or ""
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name", "")
        self._validate_name(rt, name)
        if rt.group == RBAC:
            self._validate_rbac(rt, name, obj, None)
        elif rt.group == FLOWCONTROL:
            self._validate_flowcontrol(rt, name, obj)
        self._check_namespace(rt, namespace, "CREATE")
        if self.store.get(rt, namespace, name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = format_time(self.clock)
        if rt.key in GENERATION_TRACKED:
            meta["generation"] = 1
        if rt is PODS:
            self._apply_pod_defaults(obj)
        elif rt is NAMESPACES:
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        elif rt.key in EMPTY_STATUS:
            # PrepareForCreate resets status; the v1 types serialise some zero fields
            # (no omitempty), and clients such as kubernetes-asyncio require them.
            obj["status"] = dict(EMPTY_STATUS[rt.key])
        self.warnings = self._admit(
            AdmissionRequest(
                operation="CREATE",
                resource=rt,
                subresource="",
                namespace=namespace,
                name=name,
                object=obj,
                old_object=None,
                user=user,
                dry_run=dry_run,
            )
        )
        if dry_run:
            return 201, encode(obj)
        entry = self.store.create(rt, obj)
        return 201, entry.raw

    # -- read --------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> bytes:
        return self._existing(rt, namespace, name).raw

    # -- update and patch ----------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: dict[str, Any],
        user: UserInfo,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> tuple[int, bytes]:
        self._check_type(rt, body)
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise errors.invalid(rt.kind, rt.group, name, [("metadata", "Required value")])
        if meta.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        expected: int | None = None
        raw_rv = meta.get("resourceVersion")
        if raw_rv not in (None, ""):
            try:
                expected = int(str(raw_rv))
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{raw_rv}"') from None
        return self._write(
            rt, namespace, name, copy.deepcopy(body), user, subresource, dry_run, expected
        )

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch_body: bytes,
        user: UserInfo,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> tuple[int, bytes]:
        old = self._existing(rt, namespace, name)
        original = old.obj()
        patched = apply_patch(content_type, original, patch_body, rt.kind)
        meta = patched.get("metadata")
        if not isinstance(meta, dict):
            raise errors.invalid(rt.kind, rt.group, name, [("metadata", "Required value")])
        # A patch that sets metadata.resourceVersion makes it a precondition (the real
        # patcher compares it); otherwise a patch applies to the latest version.
        raw_rv = meta.get("resourceVersion")
        expected = old.rv
        if raw_rv not in (None, "") and str(raw_rv) != str(old.rv):
            try:
                expected = int(str(raw_rv))
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{raw_rv}"') from None
        for key in ("name", "namespace"):
            old_value = (original.get("metadata") or {}).get(key)
            if meta.get(key) != old_value:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [(f"metadata.{key}", "Invalid value: field is immutable")],
                )
        return self._write(rt, namespace, name, patched, user, subresource, dry_run, expected)

    def _write(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: dict[str, Any],
        user: UserInfo,
        subresource: str,
        dry_run: bool,
        expected_rv: int | None,
    ) -> tuple[int, bytes]:
        if subresource not in ("", "status") or (
            subresource == "status" and not rt.status_subresource
        ):
            raise errors.not_found(f"{rt.plural}/{subresource}", rt.group, name)
        old_entry = self._existing(rt, namespace, name)
        if expected_rv is not None and expected_rv != old_entry.rv:
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        old = old_entry.obj()
        old_meta = old.get("metadata", {})
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        if subresource == "status":
            # The status subresource takes status only; everything else stays.
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            obj = new
        else:
            meta = obj.setdefault("metadata", {})
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = namespace
            if rt.status_subresource:
                if "status" in old:
                    obj["status"] = old["status"]
                else:
                    obj.pop("status", None)
            if rt.key in GENERATION_TRACKED and obj.get("spec") != old.get("spec"):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
            if rt is PODS:
                self._check_pod_update(old, obj, name)
            elif rt.group == RBAC:
                self._validate_rbac(rt, name, obj, old)
            elif rt.group == FLOWCONTROL:
                self._validate_flowcontrol(rt, name, obj)
        meta = obj["metadata"]
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        self.warnings = self._admit(
            AdmissionRequest(
                operation="UPDATE",
                resource=rt,
                subresource=subresource,
                namespace=namespace,
                name=name,
                object=obj,
                old_object=old,
                user=user,
                dry_run=dry_run,
            )
        )
        if dry_run:
            return 200, encode(obj)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the object goes away now.
            entry = self.store.delete(rt, namespace, name)
            return 200, entry.raw
        if obj == old:
            # A no-op update does not bump the revision, as in the real apiserver.
            return 200, old_entry.raw
        entry = self.store.update(rt, obj, expected_rv=old_entry.rv)
        return 200, entry.raw

    @staticmethod
    def _check_pod_update(old: Mapping[str, Any], new: Mapping[str, Any], name: str) -> None:
        old_spec = old.get("spec", {})
        new_spec = new.get("spec", {})
        # Pod spec is immutable apart from a few fields (pkg/apis/core/validation
        # ValidatePodUpdate): images, activeDeadlineSeconds, added tolerations.
        mutable = ("containers", "initContainers", "activeDeadlineSeconds", "tolerations")
        stripped_old = {k: v for k, v in old_spec.items() if k not in mutable}
        stripped_new = {k: v for k, v in new_spec.items() if k not in mutable}
        if stripped_old != stripped_new:
            raise errors.invalid(
                "Pod",
                "",
                name,
                [
                    (
                        "spec",
                        "Forbidden: pod updates may not change fields other than "
                        "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                        "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
                        "to existing tolerations)",
                    )
                ],
            )

    # -- delete ------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        user: UserInfo,
        *,
        options: Mapping[str, Any],
        dry_run: bool = False,
    ) -> tuple[int, bytes]:
        entry = self._existing(rt, namespace, name)
        obj = entry.obj()
        meta = obj.setdefault("metadata", {})
        preconditions = options.get("preconditions") or {}
        expected_uid = preconditions.get("uid")
        expected_rv_text = preconditions.get("resourceVersion")
        if expected_uid is not None and expected_uid != meta.get("uid"):
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {expected_uid}, UID in object "
                f"meta: {meta.get('uid')}",
            )
        if expected_rv_text is not None and str(expected_rv_text) != str(entry.rv):
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {expected_rv_text}, "
                f"ResourceVersion in object meta: {entry.rv}",
            )
        self.warnings = self._admit(
            AdmissionRequest(
                operation="DELETE",
                resource=rt,
                subresource="",
                namespace=namespace,
                name=name,
                object=None,
                old_object=obj,
                user=user,
                dry_run=dry_run,
            )
        )
        grace = self._grace_period(rt, obj, options)
        if dry_run:
            return 200, self._deleted_body(rt, obj)
        # The real handler answers 200 whether the object is gone or only terminating
        # (handlers/delete.go keeps 202 for orphanDependents=false only), with the
        # object itself while it still exists.
        if meta.get("finalizers") or grace > 0:
            current_grace = meta.get("deletionGracePeriodSeconds")
            if meta.get("deletionTimestamp") and (
                current_grace is None or grace >= int(current_grace)
            ):
                return 200, entry.raw  # already terminating, no sooner than asked
            meta["deletionTimestamp"] = _format_epoch(self.clock.time() + grace)
            meta["deletionGracePeriodSeconds"] = grace
            updated = self.store.update(rt, obj, expected_rv=entry.rv)
            return 200, updated.raw
        if rt is NAMESPACES:
            self._delete_namespace_contents(name)
        gone = self.store.delete(rt, namespace, name, expected_rv=entry.rv)
        return 200, self._deleted_body(rt, decode(gone.raw))

    def _grace_period(
        self, rt: ResourceType, obj: Mapping[str, Any], options: Mapping[str, Any]
    ) -> int:
        if rt is not PODS:
            return 0
        spec = obj.get("spec", {})
        status = obj.get("status", {})
        # pkg/registry/core/pod/strategy.go CheckGracefulDelete: unscheduled pods and
        # pods that already finished go at once; otherwise the requested grace period,
        # defaulting to the pod's terminationGracePeriodSeconds.
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        requested = options.get("gracePeriodSeconds")
        if requested is not None:
            return max(0, int(requested))
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _deleted_body(self, rt: ResourceType, obj: Mapping[str, Any]) -> bytes:
        if rt.key in RETURNS_DELETED_OBJECT:
            return encode(obj)
        meta = obj.get("metadata", {})
        return encode(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": meta.get("name", ""),
                    "group": rt.group,
                    "kind": rt.plural,
                    "uid": meta.get("uid", ""),
                },
            }
        )

    def _delete_namespace_contents(self, namespace: str) -> None:
        # The namespace controller's job, done at once: nothing survives its namespace.
        for table_rt in list(self.store.counts()):
            if not table_rt.namespaced:
                continue
            for entry in list(self.store.iter_current(table_rt, namespace)):
                self.store.delete(table_rt, namespace, entry.name)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str,
        user: UserInfo,
        *,
        labels: LabelSelector,
        fields: FieldSelector,
        options: Mapping[str, Any],
        dry_run: bool = False,
    ) -> tuple[int, bytes]:
        page = self.store.list(rt, namespace=namespace, labels=labels, fields=fields)
        items: list[Any] = []
        for raw in page.items:
            obj = decode(raw)
            meta = obj.get("metadata", {})
            _, body = self.delete(
                rt,
                meta.get("namespace", ""),
                meta.get("name", ""),
                user,
                options=options,
                dry_run=dry_run,
            )
            items.append(decode(body) if rt.key in RETURNS_DELETED_OBJECT else obj)
        return 200, encode(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": items,
            }
        )


def _format_epoch(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
