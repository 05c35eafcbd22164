"""ValidatingAdmissionPolicy enforcement: the simulated apiserver's admission step.

Why it exists: the product ships ValidatingAdmissionPolicies (the eviction guard that
stops the node-lifecycle controller from mass-deleting pods during a control-plane
partition), and the simulator is where they are exercised against 5000-node storms. For
that the simulator must admit and deny exactly as kube-apiserver does: the same
matching rules, the same CEL inputs, the same failure policy, the same status code and
message in the denial. How it fits: the registry calls :meth:`Admission.validate` for
every CREATE, UPDATE (including patches and ``/status``) and DELETE after it has built
the object(s) and before it writes; a denial is an :class:`~.errors.ApiError` the server
renders, warnings go into ``Warning`` headers. It is pure logic over a
:class:`PolicyStore`: no HTTP, no clock, no I/O.

What follows the real plugin (kubernetes/kubernetes,
staging/src/k8s.io/apiserver/pkg/admission/plugin/):

- policy/generic/policy_source.go: only policies with at least one binding are active,
  bindings refer to policies by ``spec.policyName``, a policy is compiled once per
  resourceVersion;
- policy/validating/dispatcher.go: policy match, then binding match, then params, then
  the namespace object, then evaluation once per param; ``validationActions``; the
  first denial wins and is reported as ``<resource> "<name>" is forbidden:
  ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <msg>``
  with the validation's reason and the matching HTTP code;
- policy/validating/validator.go: matchConditions, validations, messageExpression and
  message fallbacks, failurePolicy for evaluation errors;
- policy/matching/matching.go and webhook/predicates/{rules,namespace,object}: the
  match rules;
- policy/generic/policy_dispatcher.go ``CollectParams``: params by name or selector,
  namespaces, ``parameterNotFoundAction``;
- cel/activation.go and cel/composition.go: the CEL variables, lazily evaluated
  ``variables``, the error texts.

Known differences, all documented where they arise:

- CEL is the ``common-expression-language`` package (cel-rust), not cel-go with the
  Kubernetes libraries. There is no static type check, so errors that cel-go reports at
  compile time surface at evaluation, with the same failurePolicy consequence: a
  validation or matchCondition that yields a non-bool is reported with cel-go's
  "must evaluate to bool" text, a reference to ``params`` without ``paramKind`` is caught
  when compiling, but an undeclared name or a misspelt field of ``request`` fails as an
  evaluation error ("no such key"). The Kubernetes CEL libraries (quantity, url, ip,
  regex ``find``) are absent; the cel-go extension functions that ``cel.stdlib``
  provides (``split``, ``join``, ``lowerAscii`` ...) are there.
- ``authorizer`` is not provided: an expression that uses it fails to evaluate.
- No cost budget.
- ``matchPolicy: Equivalent`` finds no other equivalent resource, because the simulator
  serves every resource in a single version; it therefore behaves as ``Exact``.
- Audit annotations are evaluated only so that an error in one fails the request under
  ``failurePolicy: Fail``, as in the real plugin; their values are dropped, as is the
  ``Audit`` validation action.

Cost: a request no policy can match costs two store listings and a dict lookup (a few
microseconds); the index of candidate policies per (resource, subresource, operation,
scope) is rebuilt only when a policy or binding changes. A matched request pays mostly
for converting the objects an expression reads into CEL values (~200 us for a pod), once
per request, and only when an expression that reads them runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

import cel
from cel.stdlib import STDLIB_FUNCTIONS

from .errors import ApiError, not_found
from .resources import BY_KIND, NAMESPACES, VAP_BINDINGS, VAPS, ResourceType

JSON = Mapping[str, Any]

# --------------------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """The authenticated user of a request (authentication/v1 UserInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class AdmissionRequest:
    """One mutating request, as admission sees it (``admission.Attributes``)."""

    operation: str
    """``CREATE``, ``UPDATE`` or ``DELETE``."""
    resource: ResourceType
    subresource: str
    """``""`` or ``"status"``."""
    namespace: str
    """``""`` for cluster-scoped resources (and for namespaces themselves)."""
    name: str
    object: JSON | None
    """The object to be written; None for DELETE, as in the real apiserver."""
    old_object: JSON | None
    """The stored object; None for CREATE."""
    user: UserInfo
    dry_run: bool = False
    options: JSON | None = None
    """``request.options`` (CreateOptions, UpdateOptions or DeleteOptions as sent);
    None gives an empty options object of the right kind."""


class PolicyStore(Protocol):
    """Read access to the cluster state admission needs: policies, bindings, params and
    namespaces. Both calls run on every admitted request that reaches them, so they must
    be cheap (no deep copies)."""

    def list_objects(self, rt: ResourceType) -> Iterable[JSON]:
        """Current objects of a kind, in all namespaces."""
        ...

    def get_object(self, rt: ResourceType, namespace: str, name: str) -> JSON | None:
        """One current object, or None."""
        ...


class VersionedPolicyStore(PolicyStore, Protocol):
    """A store that can also say cheaply (without decoding objects) which versions of a
    kind exist. Optional: when the store has it, :class:`Admission` calls it on every
    request for policies and bindings and lists them only when the answer changes, so a
    request that matches nothing costs no decoding at all."""

    def resource_versions(self, rt: ResourceType) -> Iterable[Hashable]:
        """One hashable per current object that changes whenever the object does, e.g.
        ``(key, resourceVersion)``; deterministic order."""
        ...


class AdmissionDeniedError(ApiError):
    """A request denied by a policy. Rendered like any ApiError; it also carries the
    warnings collected before the denial, which the real apiserver still sends in
    ``Warning`` headers with the failure."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any],
        warnings: Sequence[str] = (),
    ) -> None:
        super().__init__(code, reason, message, details=details)
        self.warnings = list(warnings)


# --------------------------------------------------------------------------------------
# Constants from the real plugin
# --------------------------------------------------------------------------------------

ADMISSION_GROUP: Final = "admissionregistration.k8s.io"

# policy/generic/plugin.go: API-defined policies never apply to the admission
# configuration resources themselves (a broken policy could otherwise lock itself in).
_EXEMPT_RESOURCES: Final = frozenset(
    {
        (ADMISSION_GROUP, "validatingadmissionpolicies"),
        (ADMISSION_GROUP, "validatingadmissionpolicybindings"),
        (ADMISSION_GROUP, "mutatingadmissionpolicies"),
        (ADMISSION_GROUP, "mutatingadmissionpolicybindings"),
    }
)

# policy/validating/policy_decision.go reasonToCode.
_REASON_CODES: Final = {
    "Forbidden": 403,
    "Unauthorized": 401,
    "RequestEntityTooLarge": 413,
    "Invalid": 422,
}

# apis/cel/config.go MaxEvaluatedMessageExpressionSizeBytes.
_MAX_MESSAGE_BYTES: Final = 5 * 1024

_FAIL: Final = "Fail"
_IGNORE: Final = "Ignore"

# --------------------------------------------------------------------------------------
# Label selectors (metav1.LabelSelector, as LabelSelectorAsSelector reads it)
# --------------------------------------------------------------------------------------


class _ConfigError(Exception):
    """A policy or binding that cannot be applied as written; handled by failurePolicy."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            # labels.Requirement: a missing key satisfies NotIn.
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present  # DoesNotExist


@dataclass(frozen=True)
class _LabelSelector:
    requirements: tuple[_Requirement, ...]

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


_EVERYTHING = _LabelSelector(())


def _parse_selector(raw: Any) -> _LabelSelector:
    """metav1.LabelSelectorAsSelector: matchLabels and matchExpressions, ANDed. A missing
    or empty selector selects everything (the API defaults both selectors to {})."""
    if raw is None:
        return _EVERYTHING
    if not isinstance(raw, Mapping):
        raise _ConfigError(f"invalid label selector: {raw!r}")
    reqs: list[_Requirement] = []
    for key, value in dict(raw.get("matchLabels") or {}).items():
        reqs.append(_Requirement(str(key), "In", frozenset({str(value)})))
    for expr in raw.get("matchExpressions") or ():
        key = str(expr.get("key", ""))
        op = str(expr.get("operator", ""))
        values = frozenset(str(v) for v in expr.get("values") or ())
        if op in ("In", "NotIn"):
            if not values:
                raise _ConfigError(
                    "values: Invalid value: []: for 'in', 'notin' operators, "
                    "values set can't be empty"
                )
        elif op in ("Exists", "DoesNotExist"):
            if values:
                raise _ConfigError(
                    "values: Invalid value: "
                    f"{sorted(values)}: values set must be empty for exists and does not exist"
                )
        else:
            raise _ConfigError(f'"{op}" is not a valid label selector operator')
        reqs.append(_Requirement(key, op, values))
    return _LabelSelector(tuple(reqs))


def _labels_of(obj: JSON | None) -> Mapping[str, str] | None:
    if obj is None:
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    labels = meta.get("labels")
    return labels if isinstance(labels, Mapping) else {}


# --------------------------------------------------------------------------------------
# Match rules (admissionregistration/v1 MatchResources)
# --------------------------------------------------------------------------------------


class _RequestKey(NamedTuple):
    """What the static part of a rule looks at; the index is keyed on it. A tuple, so
    that building and hashing one per request costs next to nothing."""

    group: str
    version: str
    plural: str
    subresource: str
    operation: str
    namespaced: bool
    """True when the request has a namespace (rules' ``scope``)."""


@dataclass(frozen=True)
class _Rule:
    api_groups: frozenset[str]
    api_versions: frozenset[str]
    operations: frozenset[str]
    resources: tuple[tuple[str, str], ...]
    resource_names: frozenset[str]
    scope: str

    @classmethod
    def parse(cls, raw: JSON) -> _Rule:
        resources = []
        for res in raw.get("resources") or ():
            # webhook/predicates/rules/rules.go splitResource: "pods/status" is a
            # subresource, "pods/*" every subresource and "*/*" everything.
            main, _, sub = str(res).partition("/")
            resources.append((main, sub))
        return cls(
            api_groups=frozenset(str(g) for g in raw.get("apiGroups") or ()),
            api_versions=frozenset(str(v) for v in raw.get("apiVersions") or ()),
            operations=frozenset(str(o) for o in raw.get("operations") or ()),
            resources=tuple(resources),
            resource_names=frozenset(str(n) for n in raw.get("resourceNames") or ()),
            scope=str(raw.get("scope") or "*"),
        )

    def matches_static(self, key: _RequestKey) -> bool:
        """rules.Matcher.Matches: scope, operation, group, version and resource."""
        is_namespace = key.group == "" and key.plural == "namespaces"
        if self.scope == "Namespaced":
            # Namespace objects are cluster-scoped even though their requests carry
            # a namespace.
            if is_namespace or not key.namespaced:
                return False
        elif self.scope == "Cluster":
            if not (is_namespace or not key.namespaced):
                return False
        elif self.scope != "*":
            return False
        return (
            _exact_or_wildcard(self.operations, key.operation)
            and _exact_or_wildcard(self.api_groups, key.group)
            and _exact_or_wildcard(self.api_versions, key.version)
            and any(
                (res == "*" or res == key.plural) and (sub == "*" or sub == key.subresource)
                for res, sub in self.resources
            )
        )

    def matches(self, key: _RequestKey, name: str) -> bool:
        # An empty resourceNames list matches every name (matching.go).
        return self.matches_static(key) and (not self.resource_names or name in self.resource_names)


def _exact_or_wildcard(items: frozenset[str], requested: str) -> bool:
    return "*" in items or requested in items


@dataclass(frozen=True)
class _MatchResources:
    namespace_selector: _LabelSelector | _ConfigError
    object_selector: _LabelSelector | _ConfigError
    resource_rules: tuple[_Rule, ...]
    exclude_rules: tuple[_Rule, ...]

    @classmethod
    def parse(cls, raw: JSON) -> _MatchResources:
        return cls(
            namespace_selector=_parse_or_error(raw.get("namespaceSelector")),
            object_selector=_parse_or_error(raw.get("objectSelector")),
            resource_rules=tuple(_Rule.parse(r) for r in raw.get("resourceRules") or ()),
            exclude_rules=tuple(_Rule.parse(r) for r in raw.get("excludeResourceRules") or ()),
        )

    def could_match(self, key: _RequestKey) -> bool:
        """Whether some request with this key may match; used to build the index."""
        return not self.resource_rules or any(r.matches_static(key) for r in self.resource_rules)


def _parse_or_error(raw: Any) -> _LabelSelector | _ConfigError:
    # Selector errors are reported only for requests that the rules match
    # (matching.go), so they are kept rather than raised at parse time.
    try:
        return _parse_selector(raw)
    except _ConfigError as err:
        return err


# --------------------------------------------------------------------------------------
# CEL
# --------------------------------------------------------------------------------------

_VAR_REF = re.compile(r"\bvariables\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_VAR_WORD = re.compile(r"\bvariables\b")
_MACRO_BINDS_PARAMS = re.compile(r"\(\s*params\s*,")
_INPUTS: Final = frozenset({"object", "oldObject", "request", "namespaceObject", "params"})

# cel.stdlib's functions by the name a program reports for them: "math.greatest(x)"
# is reported as "greatest". Registering only the ones used saves ~20 us a request.
_STDLIB_BY_SHORT_NAME: Final[dict[str, tuple[str, ...]]] = {}
for _name in STDLIB_FUNCTIONS:
    _short = _name.rsplit(".", 1)[-1]
    _STDLIB_BY_SHORT_NAME[_short] = (*_STDLIB_BY_SHORT_NAME.get(_short, ()), _name)


@dataclass(frozen=True)
class _Expr:
    """One compiled CEL expression, or the reason it did not compile."""

    source: str
    program: cel.Program | None
    error: str | None
    variable_refs: tuple[str, ...] | None
    """Names read from ``variables``; None when the expression may read any of them."""
    inputs: frozenset[str] = frozenset()
    """The request inputs (``object``, ``oldObject`` ...) the expression reads."""
    functions: frozenset[str] = frozenset()
    """The ``cel.stdlib`` extension functions the expression may call."""


def _compile(source: str, *, params_declared: bool) -> _Expr:
    try:
        program = cel.compile(source)
    except Exception as exc:  # the binding raises ValueError; any failure is a compile error
        # Keep cel's "ERROR: <input>:1:4: ..." text, as cel-go reports it, without the
        # binding's "Failed to parse expression '<source>': " prefix.
        text = str(exc).removeprefix(f"Failed to parse expression '{source}': ")
        return _Expr(source, None, f"compilation failed: {text}", ())
    # cel-go declares ``params`` only when the policy has a paramKind, so a reference
    # without one fails to compile. A comprehension variable named ``params`` is the one
    # legitimate use the static name list cannot tell apart.
    if (
        not params_declared
        and "params" in program.variables()
        and not _MACRO_BINDS_PARAMS.search(source)
    ):
        message = (
            "compilation failed: ERROR: <input>: undeclared reference to 'params' (in container '')"
        )
        return _Expr(source, None, message, ())
    refs: tuple[str, ...] | None = tuple(dict.fromkeys(_VAR_REF.findall(source)))
    if len(_VAR_WORD.findall(source)) > len(_VAR_REF.findall(source)):
        refs = None  # ``variables`` used as a whole (or indexed): evaluate them all
    inputs = frozenset(program.variables()) & _INPUTS
    functions = frozenset(
        name for short in program.functions() for name in _STDLIB_BY_SHORT_NAME.get(short, ())
    )
    return _Expr(source, program, None, refs, inputs, functions)


def _describe(exc: Exception) -> str:
    """cel-rust's exception as a one-line message close to cel-go's."""
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else ''}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("No such overload"):
        return "no such overload"
    # Drop the library's advice ("... Check that the variable is defined ...").
    head, sep, _ = text.partition(". ")
    return head if sep else text


@dataclass(frozen=True)
class _Validation:
    expr: _Expr
    message: str
    message_expr: _Expr | None
    reason: str


@dataclass(frozen=True)
class _Policy:
    """A policy compiled once per resourceVersion."""

    name: str
    failure_policy: str
    match: _MatchResources | None
    param_kind: JSON | None
    param_rt: ResourceType | None
    configuration_error: str | None
    """policy_source.go's ConfigurationError (an unknown paramKind)."""
    match_conditions: tuple[tuple[str, _Expr], ...]
    validations: tuple[_Validation, ...]
    audit_annotations: tuple[tuple[str, _Expr], ...]
    variable_names: tuple[str, ...]
    variable_exprs: Mapping[str, tuple[_Expr, tuple[str, ...]]]
    """name -> (expression, the earlier variables it reads). cel-go declares variables in
    order, so a variable can only read those declared before it."""

    @classmethod
    def compile(cls, raw: JSON) -> _Policy:
        meta = raw.get("metadata") or {}
        spec = raw.get("spec") or {}
        param_kind = spec.get("paramKind")
        param_rt: ResourceType | None = None
        configuration_error = None
        if param_kind is not None:
            param_rt, configuration_error = _resolve_param_kind(param_kind)
        declared = param_kind is not None

        def compiled(source: Any) -> _Expr:
            return _compile(str(source or ""), params_declared=declared)

        validations = []
        for v in spec.get("validations") or ():
            msg_expr = v.get("messageExpression")
            validations.append(
                _Validation(
                    expr=compiled(v.get("expression")),
                    message=str(v.get("message") or ""),
                    message_expr=compiled(msg_expr) if msg_expr else None,
                    reason=str(v.get("reason") or "Invalid"),
                )
            )
        variables = tuple(
            (str(v.get("name", "")), compiled(v.get("expression")))
            for v in spec.get("variables") or ()
        )
        variable_exprs: dict[str, tuple[_Expr, tuple[str, ...]]] = {}
        for index, (var_name, expr) in enumerate(variables):
            earlier = [n for n, _ in variables[:index]]
            refs = expr.variable_refs
            deps = earlier if refs is None else [n for n in refs if n in earlier]
            variable_exprs.setdefault(var_name, (expr, tuple(deps)))
        constraints = spec.get("matchConstraints")
        return cls(
            name=str(meta.get("name", "")),
            failure_policy=str(spec.get("failurePolicy") or _FAIL),
            match=_MatchResources.parse(constraints) if constraints is not None else None,
            param_kind=param_kind,
            param_rt=param_rt,
            configuration_error=configuration_error,
            match_conditions=tuple(
                (str(c.get("name", "")), compiled(c.get("expression")))
                for c in spec.get("matchConditions") or ()
            ),
            validations=tuple(validations),
            audit_annotations=tuple(
                (str(a.get("key", "")), compiled(a.get("valueExpression")))
                for a in spec.get("auditAnnotations") or ()
            ),
            variable_names=tuple(variable_exprs),
            variable_exprs=variable_exprs,
        )

    def could_match(self, key: _RequestKey) -> bool:
        # No matchConstraints is an error reported to every request (policy_matcher.go).
        return self.match is None or self.match.could_match(key)


def _resolve_param_kind(param_kind: Any) -> tuple[ResourceType | None, str | None]:
    api_version = str(param_kind.get("apiVersion", "")) if isinstance(param_kind, Mapping) else ""
    kind = str(param_kind.get("kind", "")) if isinstance(param_kind, Mapping) else ""
    group, _, version = api_version.rpartition("/")
    rt = BY_KIND.get((group, kind))
    if rt is None or rt.version != version:
        # schema.GroupVersionKind.String(): "<group>/<version>, Kind=<kind>".
        return None, (
            f"failed to find resource referenced by paramKind: '{group}/{version}, Kind={kind}'"
        )
    return rt, None


@dataclass(frozen=True)
class _Binding:
    name: str
    match: _MatchResources | None
    param_ref: JSON | None
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, raw: JSON) -> _Binding:
        spec = raw.get("spec") or {}
        match = spec.get("matchResources")
        return cls(
            name=str((raw.get("metadata") or {}).get("name", "")),
            match=_MatchResources.parse(match) if match is not None else None,
            param_ref=spec.get("paramRef"),
            actions=tuple(str(a) for a in spec.get("validationActions") or ()),
        )


@dataclass(frozen=True)
class _Hook:
    policy: _Policy
    bindings: tuple[_Binding, ...]


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decision:
    policy: str
    binding: str | None
    message: str
    reason: str = ""
    actions: tuple[str, ...] | None = None
    """The binding's validationActions; None for configuration errors, which deny
    whatever the actions say (dispatcher.go addConfigError)."""


class _Activation:
    """The CEL inputs of one request.

    cel-rust converts a Python variable into CEL values when it is added to a context
    and keeps the conversion until that variable is replaced; a pod costs ~200 us to
    convert, the rest of a request's evaluation a few tens. So one context is shared by
    every policy evaluated for the request, each input is added only when the first
    expression that reads it runs (a matchCondition on the user name that is false
    never pays for the pod), and only ``params`` and ``variables`` change between
    evaluations. Nothing is built for a request that no policy reaches.
    """

    def __init__(self, inputs: dict[str, Any]) -> None:
        self._ctx = cel.Context(variables={"variables": {}})
        self._functions: set[str] = set()
        self._pending = dict(inputs)
        """Inputs not yet converted into the context."""
        self._params: Any = inputs.get("params")
        self._policy: _Policy | None = None
        self._results: dict[str, tuple[bool, Any]] = {}
        """Variables evaluated so far in this evaluation: (ok, value or error)."""
        self._published: dict[str, Any] = {}
        """What ``variables`` holds in the context: the successfully evaluated ones."""

    def start(self, policy: _Policy, params: Any) -> None:
        """Begin an evaluation of ``policy`` with ``params``: variables start unevaluated."""
        if params is not self._params:
            self._pending["params"] = params
            self._params = params
        self._policy = policy
        self._results = {}
        if self._published:
            # Values depend on params, so nothing carries over from the last evaluation.
            self._ctx.add_variable("variables", {})
            self._published = {}

    def run(self, expr: _Expr) -> tuple[bool, Any]:
        """(True, value) or (False, error message), with activation.go's texts."""
        if expr.program is None:
            return False, f"compilation error: {expr.error}"
        assert self._policy is not None
        names = self._policy.variable_names if expr.variable_refs is None else expr.variable_refs
        failed = None
        for name in names:
            ok, value = self._variable(name)
            if not ok and failed is None:
                failed = value
        self._publish()
        try:
            return True, self._execute(expr)
        except Exception as exc:  # any evaluation failure is data, handled by failurePolicy
            # An unevaluable variable is absent from the map, so an expression that needs
            # it fails; report the variable's own error, as cel-go's lazy map does. One
            # that short-circuits past it succeeds above, as in cel-go.
            cause = failed or _describe(exc)
            return False, f"expression '{expr.source}' resulted in error: {cause}"

    def run_bool(self, expr: _Expr) -> tuple[bool, Any]:
        """:meth:`run` for an expression that must yield a bool (validations and match
        conditions). cel-go rejects any other result type when compiling (cel/compile.go
        "must evaluate to bool"); without a type checker the simulator finds out here,
        and reports it the same way, so failurePolicy applies as it would."""
        ok, value = self.run(expr)
        if ok and not isinstance(value, bool):
            return (
                False,
                f"compilation error: must evaluate to bool but got {_cel_type_name(value)}",
            )
        return ok, value

    def _variable(self, name: str) -> tuple[bool, Any]:
        """composition.go variableAccessor: evaluated on first use, then remembered."""
        known = self._results.get(name)
        if known is not None:
            return known
        assert self._policy is not None
        declared = self._policy.variable_exprs.get(name)
        if declared is None:
            # Not a declared variable: the expression fails with "no such key" itself.
            return True, None
        expr, deps = declared
        self._results[name] = (False, f'composited variable "{name}" is cyclic')
        for dep in deps:
            self._variable(dep)
        if expr.program is None:
            result: tuple[bool, Any] = (
                False,
                f'composited variable "{name}" fails to compile: {expr.error}',
            )
        else:
            self._publish()
            try:
                result = (True, self._execute(expr))
            except Exception as exc:  # evaluation failure, reported where it is used
                result = (
                    False,
                    f'composited variable "{name}" fails to evaluate: {_describe(exc)}',
                )
        self._results[name] = result
        return result

    def _execute(self, expr: _Expr) -> Any:
        assert expr.program is not None
        for name in expr.inputs & self._pending.keys():
            self._ctx.add_variable(name, self._pending.pop(name))
        for name in expr.functions - self._functions:
            self._ctx.add_function(name, STDLIB_FUNCTIONS[name])
            self._functions.add(name)
        return expr.program.execute(self._ctx)

    def _publish(self) -> None:
        """Put the evaluated variables into the context if new ones were evaluated (within
        one evaluation a variable's value never changes)."""
        current = {name: value for name, (ok, value) in self._results.items() if ok}
        if current.keys() != self._published.keys():
            self._ctx.add_variable("variables", current)
            self._published = current


def _aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message, or "[a, b]" deduplicated."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --------------------------------------------------------------------------------------
# The admission plugin
# --------------------------------------------------------------------------------------


class Admission:
    """Enforces the ValidatingAdmissionPolicies and bindings found in ``store``.

    Policies and bindings are read from the store on every call (only their versions,
    when the store is a :class:`VersionedPolicyStore`); what is derived from them
    (compiled CEL, the per-resource index of candidate policies) is rebuilt only when
    one of them changes, detected by their resourceVersions.
    """

    def __init__(self, store: PolicyStore) -> None:
        self._store = store
        self._fingerprint: Hashable = None
        self._versions: Callable[[ResourceType], Iterable[Hashable]] | None = getattr(
            store, "resource_versions", None
        )
        self._hooks: tuple[_Hook, ...] = ()
        self._compiled: dict[tuple[str, str], _Policy] = {}
        self._bindings: dict[tuple[str, str], _Binding] = {}
        self._index: dict[_RequestKey, tuple[_Hook, ...]] = {}
        self.compilations = 0
        """Policies compiled so far (one per policy resourceVersion)."""

    # -- policy set ------------------------------------------------------------------

    @property
    def cached_policies(self) -> int:
        """Compiled policies currently cached."""
        return len(self._compiled)

    def _refresh(self) -> None:
        fingerprint: Hashable
        if self._versions is not None:
            # The store can tell versions without decoding objects: list only on change.
            fingerprint = (tuple(self._versions(VAPS)), tuple(self._versions(VAP_BINDINGS)))
            if fingerprint == self._fingerprint:
                return
            policies = list(self._store.list_objects(VAPS))
            bindings = list(self._store.list_objects(VAP_BINDINGS))
        else:
            policies = list(self._store.list_objects(VAPS))
            bindings = list(self._store.list_objects(VAP_BINDINGS))
            fingerprint = (
                tuple(_version_key(o) for o in policies),
                tuple(_version_key(o) for o in bindings),
            )
            if fingerprint == self._fingerprint:
                return
        by_policy: dict[str, list[_Binding]] = {}
        parsed_bindings: dict[tuple[str, str], _Binding] = {}
        for raw in bindings:
            key = _cache_key(raw)
            binding = self._bindings.get(key) or _Binding.parse(raw)
            parsed_bindings[key] = binding
            policy_name = str((raw.get("spec") or {}).get("policyName", ""))
            by_policy.setdefault(policy_name, []).append(binding)
        compiled: dict[tuple[str, str], _Policy] = {}
        hooks = []
        # The real source iterates a map; a stable order keeps "first denial wins"
        # reproducible.
        for raw in sorted(policies, key=lambda o: str((o.get("metadata") or {}).get("name"))):
            name = str((raw.get("metadata") or {}).get("name", ""))
            if name not in by_policy:
                continue  # a policy without bindings is inactive (policy_source.go)
            key = _cache_key(raw)
            policy = self._compiled.get(key)
            if policy is None:
                policy = _Policy.compile(raw)
                self.compilations += 1
            compiled[key] = policy
            hooks.append(_Hook(policy, tuple(sorted(by_policy[name], key=lambda b: b.name))))
        self._compiled = compiled
        self._bindings = parsed_bindings
        self._hooks = tuple(hooks)
        self._index = {}
        self._fingerprint = fingerprint

    def _candidates(self, key: _RequestKey) -> tuple[_Hook, ...]:
        hooks = self._index.get(key)
        if hooks is None:
            hooks = tuple(h for h in self._hooks if h.policy.could_match(key))
            self._index[key] = hooks
        return hooks

    # -- request path ----------------------------------------------------------------

    def validate(self, request: AdmissionRequest) -> list[str]:
        """Admit ``request``, returning the warnings to send (``Warn`` actions).

        Raises :class:`AdmissionDeniedError` when a policy denies it (the first denial,
        as the real dispatcher reports), and the lister's 404 when a policy needs the
        request's namespace and it does not exist (validating/dispatcher.go).
        """
        rt = request.resource
        if rt.key in _EXEMPT_RESOURCES:
            return []
        self._refresh()
        if not self._hooks:
            return []
        namespace = _attr_namespace(request)
        key = _RequestKey(
            rt.group,
            rt.version,
            rt.plural,
            request.subresource,
            request.operation,
            bool(namespace),
        )
        hooks = self._candidates(key)
        if not hooks:
            return []
        return _Dispatch(self._store, request, key, namespace).run(hooks)


def _version_key(obj: JSON) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    rv = str(meta.get("resourceVersion") or "")
    if not rv:
        # Without a resourceVersion only the content tells a change apart.
        rv = "content:" + repr(obj.get("spec"))
    return (str(meta.get("name", "")), str(meta.get("uid") or ""), rv)


def _cache_key(obj: JSON) -> tuple[str, str]:
    name, uid, rv = _version_key(obj)
    return (uid or name, rv)


def _attr_namespace(request: AdmissionRequest) -> str:
    # For namespace objects the apiserver's attributes carry the namespace's own name
    # (request/requestinfo.go); the registry may pass "", so fill it in.
    if request.resource is NAMESPACES and not request.namespace:
        return request.name
    return request.namespace


class _Dispatch:
    """One request through the active hooks (validating/dispatcher.go Dispatch)."""

    def __init__(
        self, store: PolicyStore, request: AdmissionRequest, key: _RequestKey, namespace: str
    ) -> None:
        self.store = store
        self.request = request
        self.key = key
        self.namespace = namespace
        self.denied: list[_Decision] = []
        self.warnings: list[str] = []
        self._activation: _Activation | None = None
        self._namespace_obj: JSON | _Missing | None = _UNSET

    def run(self, hooks: Iterable[_Hook]) -> list[str]:
        for hook in hooks:
            self._hook(hook)
        warnings = list(dict.fromkeys(self.warnings))
        if self.denied:
            raise self._denial(self.denied[0], warnings)
        return warnings

    # -- matching ----------------------------------------------------------------------

    def _hook(self, hook: _Hook) -> None:
        policy = hook.policy
        try:
            if policy.match is None:
                raise _ConfigError("policy contained no match constraints, a required field")
            if not self._matches(policy.match):
                return
            if policy.configuration_error is not None:
                raise _ConfigError(policy.configuration_error)
        except _ConfigError as err:
            self._config_error(policy, None, f"failed to configure policy: {err}")
            return
        for binding in hook.bindings:
            try:
                if binding.match is not None and not self._matches(binding.match):
                    continue
                params = self._params(policy, binding)
            except _ConfigError as err:
                self._config_error(policy, binding, f"failed to configure binding: {err}")
                continue
            namespace_obj = self._namespace_object()
            for param in params:
                self._evaluate(policy, binding, param, namespace_obj)

    def _matches(self, match: _MatchResources) -> bool:
        """matching.go Matches: selectors first, errors only once the rules match."""
        ns_ok, ns_err = self._match_namespace(match.namespace_selector)
        if not ns_ok and ns_err is None:
            return False
        obj_ok, obj_err = self._match_object(match.object_selector)
        if not obj_ok and obj_err is None:
            return False
        name = self.request.name
        if any(r.matches(self.key, name) for r in match.exclude_rules):
            return False
        if match.resource_rules and not any(
            r.matches(self.key, name) for r in match.resource_rules
        ):
            return False
        if ns_err is not None:
            raise ns_err
        if obj_err is not None:
            raise obj_err
        return True

    def _match_namespace(
        self, selector: _LabelSelector | _ConfigError
    ) -> tuple[bool, _ConfigError | None]:
        """webhook/predicates/namespace/matcher.go MatchNamespaceSelector."""
        is_namespace = self.key.group == "" and self.key.plural == "namespaces"
        if not self.namespace and not is_namespace:
            return True, None  # cluster-scoped resources are never exempted
        if isinstance(selector, _ConfigError):
            return False, _ConfigError(f"Internal error occurred: {selector}")
        if selector.empty:
            return True, None
        if (
            is_namespace
            and not self.request.subresource
            and self.request.operation in ("CREATE", "UPDATE")
        ):
            # The namespace being written is not stored yet: use its new labels.
            labels = _labels_of(self.request.object) or {}
        else:
            ns = self.store.get_object(NAMESPACES, "", self.namespace)
            if ns is None:
                return False, _ConfigError(f'namespaces "{self.namespace}" not found')
            labels = _labels_of(ns) or {}
        return selector.matches(labels), None

    def _match_object(
        self, selector: _LabelSelector | _ConfigError
    ) -> tuple[bool, _ConfigError | None]:
        """webhook/predicates/object/matcher.go: labels of the object or the old object."""
        if isinstance(selector, _ConfigError):
            return False, _ConfigError(f"Internal error occurred: {selector}")
        if selector.empty:
            return True, None
        for obj in (self.request.object, self.request.old_object):
            labels = _labels_of(obj)
            if labels is not None and selector.matches(labels):
                return True, None
        return False, None

    # -- params --------------------------------------------------------------------------

    def _params(self, policy: _Policy, binding: _Binding) -> list[Any]:
        """policy_dispatcher.go CollectParams."""
        ref = binding.param_ref
        if policy.param_kind is None or ref is None:
            return [None]  # no params: evaluate once, ``params`` is null
        rt = policy.param_rt
        assert rt is not None  # an unknown paramKind is a policy configuration error
        ref_ns = str(ref.get("namespace") or "")
        ns = ""
        if rt.namespaced:
            ns = ref_ns or self.namespace
            if not ns:
                raise _ConfigError(
                    "cannot use namespaced paramRef in policy binding that matches "
                    "cluster-scoped resources"
                )
        elif ref_ns:
            raise _ConfigError(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
            )
        name = str(ref.get("name") or "")
        selector_raw = ref.get("selector")
        found: list[JSON]
        if name:
            if selector_raw is not None:
                raise _ConfigError("paramRef.name and paramRef.selector are mutually exclusive")
            obj = self.store.get_object(rt, ns, name)
            found = [obj] if obj is not None else []
        elif selector_raw is not None:
            selector = _parse_selector(selector_raw)
            found = sorted(
                (
                    o
                    for o in self.store.list_objects(rt)
                    if (not rt.namespaced or (o.get("metadata") or {}).get("namespace") == ns)
                    and selector.matches(_labels_of(o) or {})
                ),
                key=lambda o: (
                    str((o.get("metadata") or {}).get("namespace", "")),
                    str((o.get("metadata") or {}).get("name", "")),
                ),
            )
        else:
            raise _ConfigError("one of name or selector must be provided")
        # parameterNotFoundAction is required in admissionregistration/v1 (validation.go
        # validateParamRef) and defaulted to Deny in v1alpha1; a binding stored without it
        # is treated as Deny, the fail-closed reading.
        action = str(ref.get("parameterNotFoundAction") or "Deny")
        if not found and action == "Deny":
            raise _ConfigError(
                "no params found for policy binding with `Deny` parameterNotFoundAction"
            )
        return [_with_type_meta(o, policy.param_kind) for o in found]

    # -- namespace object ------------------------------------------------------------------

    def _namespace_object(self) -> JSON | None:
        """dispatcher.go: the request's Namespace, trimmed by cel.CreateNamespaceObject;
        null for cluster-scoped requests and for namespaces themselves. A namespace that
        does not exist fails the request with the lister's NotFound, as there."""
        if isinstance(self._namespace_obj, _Missing):
            if not self.namespace or self.request.resource is NAMESPACES:
                self._namespace_obj = None
            else:
                ns = self.store.get_object(NAMESPACES, "", self.namespace)
                if ns is None:
                    raise not_found("namespaces", "", self.namespace)
                self._namespace_obj = _trim_namespace(ns)
        return self._namespace_obj

    # -- evaluation ------------------------------------------------------------------------

    def _activation_for(self, namespace_obj: JSON | None) -> _Activation:
        if self._activation is None:
            self._activation = _Activation(
                {
                    "object": self.request.object,
                    "oldObject": self.request.old_object,
                    "request": _request_value(self.request, self.namespace),
                    "namespaceObject": namespace_obj,
                    "params": None,
                    "variables": {},
                }
            )
        return self._activation

    def _evaluate(
        self, policy: _Policy, binding: _Binding, param: Any, namespace_obj: JSON | None
    ) -> None:
        """validator.go Validate for one (policy, binding, param)."""
        act = self._activation_for(namespace_obj)
        act.start(policy, param)
        fail = policy.failure_policy != _IGNORE

        def decide(message: str, reason: str = "") -> None:
            self._decision(_Decision(policy.name, binding.name, message, reason, binding.actions))

        if policy.match_conditions:
            errors = []
            for _name, expr in policy.match_conditions:
                ok, value = act.run_bool(expr)
                if not ok:
                    errors.append(value)
                elif value is False:
                    return  # any false condition: the policy does not apply
            if errors:
                if fail:
                    decide(_aggregate(errors))
                return
        for validation in policy.validations:
            ok, value = act.run_bool(validation.expr)
            if not ok:
                if fail:
                    decide(value)
            elif not value:
                decide(self._message(act, validation), validation.reason)
        for _key, expr in policy.audit_annotations:
            ok, value = act.run(expr)
            if ok and value is not None and not isinstance(value, str):
                ok, value = (
                    False,
                    f"valueExpression '{expr.source}' resulted in unsupported return type: "
                    f"{_cel_type_name(value)}. Return type must be either string or null.",
                )
            if not ok and fail:
                # Audit annotation errors deny regardless of validationActions.
                self._decision(_Decision(policy.name, binding.name, value))

    def _message(self, act: _Activation, validation: _Validation) -> str:
        """The message fallbacks of validator.go: messageExpression, message, expression."""
        message = ""
        if validation.message_expr is not None:
            ok, value = act.run(validation.message_expr)
            # Errors and non-string results fall back silently (the real plugin logs).
            if ok and isinstance(value, str):
                message = value.strip()
                if len(message.encode()) > _MAX_MESSAGE_BYTES or "\n" in message:
                    message = ""
        if not message and validation.message:
            message = validation.message.strip()
        if not message:
            message = f"failed expression: {validation.expr.source.strip()}"
        return message

    # -- decisions --------------------------------------------------------------------------

    def _config_error(self, policy: _Policy, binding: _Binding | None, message: str) -> None:
        """dispatcher.go addConfigError: failurePolicy decides, validationActions do not."""
        if policy.failure_policy == _IGNORE:
            return
        if policy.failure_policy != _FAIL:
            message = f"unrecognized failure policy: '{policy.failure_policy}'"
        self.denied.append(_Decision(policy.name, binding.name if binding else None, message))

    def _decision(self, decision: _Decision) -> None:
        if decision.actions is None:
            self.denied.append(decision)
            return
        for action in decision.actions:
            if action == "Deny":
                self.denied.append(decision)
            elif action == "Warn":
                self.warnings.append(
                    f"Validation failed for ValidatingAdmissionPolicy '{decision.policy}' "
                    f"with binding '{decision.binding}': {decision.message}"
                )
            # Audit only annotates the audit event, which the simulator does not keep.

    def _denial(self, decision: _Decision, warnings: list[str]) -> AdmissionDeniedError:
        if decision.binding is not None:
            message = (
                f"ValidatingAdmissionPolicy '{decision.policy}' with binding "
                f"'{decision.binding}' denied request: {decision.message}"
            )
        else:
            message = (
                f"ValidatingAdmissionPolicy '{decision.policy}' denied request: {decision.message}"
            )
        rt = self.request.resource
        # admission.NewForbidden builds the text and details; the dispatcher then swaps
        # in the decision's reason and code (Invalid/422 when none was given).
        name = _forbidden_name(self.request)
        resource = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        reason = decision.reason or "Invalid"
        details: dict[str, Any] = {"name": name, "kind": rt.plural}
        if rt.group:
            details["group"] = rt.group
        details["causes"] = [{"message": message}]
        return AdmissionDeniedError(
            _REASON_CODES.get(reason, 422),
            reason,
            f'{resource} "{name}" is forbidden: {message}',
            details=details,
            warnings=warnings,
        )


class _Missing:
    """Marker type for "not looked up yet" (None is a valid namespaceObject)."""


_UNSET: Final = _Missing()


def _forbidden_name(request: AdmissionRequest) -> str:
    """admission/errors.go extractResourceName."""
    if request.name:
        return request.name
    meta = (request.object or {}).get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "Unknown")


def _with_type_meta(obj: JSON, param_kind: JSON | None) -> JSON:
    """dispatcher.go wrappedParam: params always carry apiVersion and kind."""
    if param_kind is None or ("apiVersion" in obj and "kind" in obj):
        return obj
    return {**obj, "apiVersion": param_kind.get("apiVersion"), "kind": param_kind.get("kind")}


_NAMESPACE_META_FIELDS: Final = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "finalizers",
)


def _trim_namespace(ns: JSON) -> JSON:
    """cel/condition.go CreateNamespaceObject: spec, status and some metadata only."""
    meta = ns.get("metadata") or {}
    out: dict[str, Any] = {
        "metadata": {k: meta[k] for k in _NAMESPACE_META_FIELDS if k in meta},
    }
    for part in ("spec", "status"):
        if part in ns:
            out[part] = ns[part]
    return out


_OPTIONS_KIND: Final = {
    "CREATE": "CreateOptions",
    "UPDATE": "UpdateOptions",
    "DELETE": "DeleteOptions",
}


def _request_value(request: AdmissionRequest, namespace: str) -> dict[str, Any]:
    """cel/condition.go CreateAdmissionRequest as CEL sees it (admission/v1
    AdmissionRequest without object/oldObject). The matched kind and resource equal the
    requested ones, the simulator serving one version of everything."""
    rt = request.resource
    kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    resource = {"group": rt.group, "version": rt.version, "resource": rt.plural}
    options = request.options
    if options is None:
        options = {"kind": _OPTIONS_KIND.get(request.operation, ""), "apiVersion": "meta.k8s.io/v1"}
    user = request.user
    return {
        "uid": "",
        "kind": kind,
        "resource": resource,
        "subResource": request.subresource,
        "requestKind": kind,
        "requestResource": resource,
        "requestSubResource": request.subresource,
        "name": request.name,
        "namespace": namespace,
        "operation": request.operation,
        "userInfo": {
            "username": user.username,
            "uid": user.uid,
            "groups": list(user.groups),
            "extra": {k: list(v) for k, v in user.extra.items()},
        },
        "dryRun": request.dry_run,
        "options": options,
    }


_CEL_TYPE_NAMES: Final[tuple[tuple[type, str], ...]] = (
    (type(None), "null_type"),
    (bool, "bool"),
    (int, "int"),
    (float, "double"),
    (str, "string"),
    (bytes, "bytes"),
    (list, "list"),
    (dict, "map"),
)


def _cel_type_name(value: Any) -> str:
    for py_type, name in _CEL_TYPE_NAMES:
        if isinstance(value, py_type):
            return name
    return type(value).__name__


__all__ = [
    "Admission",
    "AdmissionDeniedError",
    "AdmissionRequest",
    "PolicyStore",
    "UserInfo",
    "VersionedPolicyStore",
]
