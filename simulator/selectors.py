"""Label and field selectors, parsed and matched the way the real kube-apiserver does it.

Why this module exists: every LIST and WATCH the simulator serves may carry
``labelSelector=`` and ``fieldSelector=`` query parameters, and objects such as
ValidatingAdmissionPolicyBindings, Deployments and pods carry ``metav1.LabelSelector``
objects (``matchLabels`` / ``matchExpressions``). Clients depend on the exact
semantics (a missing label satisfies ``!=`` and ``notin``) and on the error bodies
(kubectl and client libraries show the apiserver's message verbatim), so both follow
the Go code:

* label selector grammar, validation and matching:
  staging/src/k8s.io/apimachinery/pkg/labels/selector.go (lexer, parser,
  ``NewRequirement``, ``Requirement.Matches``);
* label key / value rules and their messages:
  staging/src/k8s.io/apimachinery/pkg/api/validate/content/kube.go, dns.go, errors.go;
* ``metav1.LabelSelectorAsSelector``:
  staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go;
* field selector grammar (``=``, ``==``, ``!=``, backslash escapes):
  staging/src/k8s.io/apimachinery/pkg/fields/selector.go;
* unsupported field labels: the per-kind ``AddFieldLabelConversionFunc`` functions
  (pkg/apis/core/v1/conversion.go, "field label not supported: x") and
  ``runtime.DefaultMetaV1FieldSelectorConversion`` for kinds that only support the
  metadata fields.

The apiserver answers a bad selector with 400 BadRequest carrying the parser's message
(handlers/get.go wraps the ListOptions conversion error in ``errors.NewBadRequest``), so
every failure here is an :class:`~kubeballast.simulator.errors.ApiError` from
``errors.bad_request``.

Speed matters: ``matches`` runs once per object in a LIST of up to 150 000 pods, so
parsing compiles each selector into flat tuples grouped by operator, the empty selector
short-circuits, and matching does only dict lookups and set membership tests.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from . import errors

# -- operators ----------------------------------------------------------------------------

# The selection.Operator strings of k8s.io/apimachinery/pkg/selection/operator.go. They
# appear in messages ("expected: in, notin, =, ==, !=, gt, lt") and in ``requirements``.
OP_IN: Final = "in"
OP_NOT_IN: Final = "notin"
OP_EQUALS: Final = "="
OP_DOUBLE_EQUALS: Final = "=="
OP_NOT_EQUALS: Final = "!="
OP_EXISTS: Final = "exists"
OP_DOES_NOT_EXIST: Final = "!"
OP_GT: Final = "gt"
OP_LT: Final = "lt"

_BINARY_OPERATORS: Final = (
    OP_IN,
    OP_NOT_IN,
    OP_EQUALS,
    OP_DOUBLE_EQUALS,
    OP_NOT_EQUALS,
    OP_GT,
    OP_LT,
)

Requirement = tuple[str, str, tuple[str, ...]]
"""(key, operator, values): values are sorted and de-duplicated, empty for exists / !."""

# -- label key / value validation (content/kube.go, dns.go, errors.go) -------------------

_LABEL_KEY_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE: Final = re.compile(_LABEL_KEY_FMT)
_LABEL_KEY_ERR: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT: Final = "(" + _LABEL_KEY_FMT + ")?"
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_ERR: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_ERR: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_MAX_NAME: Final = 63
_MAX_SUBDOMAIN: Final = 253


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # content.RegexError, including its double space after each "'example', ".
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            out += " or "
        out += f"'{example}', "
    return out + f"regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} bytes"


def _byte_len(value: str) -> int:
    # Go measures string length in UTF-8 bytes.
    return len(value.encode("utf-8", "surrogatepass"))


def label_key_errors(key: str) -> list[str]:
    """content.IsLabelKey: the reasons ``key`` is not a valid label key (empty if valid).

    A key is an optional DNS-1123 subdomain prefix and '/', then a name of at most 63
    characters.
    """
    errs: list[str] = []
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if _byte_len(prefix) > _MAX_SUBDOMAIN:
                errs.append("prefix part " + _max_len_error(_MAX_SUBDOMAIN))
            # fullmatch, not match + "$": Python's "$" also matches before a trailing
            # newline, Go's does not.
            if not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
                errs.append(
                    "prefix part "
                    + _regex_error(_DNS1123_SUBDOMAIN_ERR, _DNS1123_SUBDOMAIN_FMT, "example.com")
                )
    else:
        return [
            "a valid label key "
            + _regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _byte_len(name) > _MAX_NAME:
        errs.append("name part " + _max_len_error(_MAX_NAME))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append(
            "name part "
            + _regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    """content.IsLabelValue: the reasons ``value`` is not a valid label value."""
    errs: list[str] = []
    if _byte_len(value) > _MAX_NAME:
        errs.append(_max_len_error(_MAX_NAME))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_ERR, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def _go_quote(value: str) -> str:
    """strconv.Quote, which field.Error uses to print the bad value."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _field_invalid(path: str, value: str, detail: str) -> str:
    # field.Invalid(...).Error(). The parser passes a nil *field.Path, which prints as
    # "<nil>", hence messages like `<nil>: Invalid value: "a:": name part must ...`.
    return f"{path}: Invalid value: {_go_quote(value)}: {detail}"


def _aggregate(messages: list[str]) -> str | None:
    # utilerrors.Aggregate.Error(): one message as is, several de-duplicated in brackets.
    unique = list(dict.fromkeys(messages))
    if not unique:
        return None
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


class _RequirementError(Exception):
    """A requirement that labels.NewRequirement rejects; the text is Go's message."""


def _new_requirement(key: str, op: str, values: list[str], path: str = "") -> Requirement:
    """labels.NewRequirement: validate one requirement and normalise its values.

    ``path`` is the field path the caller gives (empty for the query-string parser);
    the key is validated by the caller where the parser does it earlier.
    """
    msgs: list[str] = []
    key_path = f"{path}.key" if path else "key"
    key_errs = label_key_errors(key)
    if key_errs:
        msgs.append(_field_invalid(key_path, key, "; ".join(key_errs)))
    values_path = f"{path}.values" if path else "values"
    if op in (OP_IN, OP_NOT_IN):
        if not values:
            msgs.append(
                f"{values_path}: Invalid value: {_go_list(values)}: "
                "for 'in', 'notin' operators, values set can't be empty"
            )
    elif op in (OP_EQUALS, OP_DOUBLE_EQUALS, OP_NOT_EQUALS):
        if len(values) != 1:
            msgs.append(
                f"{values_path}: Invalid value: {_go_list(values)}: "
                "exact-match compatibility requires one single value"
            )
    elif op in (OP_EXISTS, OP_DOES_NOT_EXIST):
        if values:
            msgs.append(
                f"{values_path}: Invalid value: {_go_list(values)}: "
                "values set must be empty for exists and does not exist"
            )
    elif op in (OP_GT, OP_LT):
        if len(values) != 1:
            msgs.append(
                f"{values_path}: Invalid value: {_go_list(values)}: "
                "for 'Gt', 'Lt' operators, exactly one value is required"
            )
        for i, value in enumerate(values):
            if _parse_int64(value) is None:
                msgs.append(
                    _field_invalid(
                        f"{values_path}[{i}]",
                        value,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    )
                )
    else:
        supported = ", ".join(_go_quote(o) for o in (*_BINARY_OPERATORS, OP_EXISTS, "!"))
        operator_path = f"{path}.operator" if path else "operator"
        msgs.append(
            f"{operator_path}: Unsupported value: {_go_quote(op)}: supported values: {supported}"
        )
    for i, value in enumerate(values):
        value_errs = label_value_errors(value)
        if value_errs:
            msgs.append(_field_invalid(f"{values_path}[{i}][{key}]", value, "; ".join(value_errs)))
    message = _aggregate(msgs)
    if message is not None:
        raise _RequirementError(message)
    return (key, op, tuple(values))


def _go_list(values: list[str]) -> str:
    # %#v-free approximation of how field.Error prints a []string bad value.
    return "[]string{" + ", ".join(_go_quote(v) for v in values) + "}"


_INT64_RE: Final = re.compile(r"[+-]?[0-9]+")


def _parse_int64(text: str) -> int | None:
    # strconv.ParseInt(text, 10, 64): optional sign, decimal digits, 64-bit range.
    if not _INT64_RE.fullmatch(text):
        return None
    number = int(text)
    if not -(2**63) <= number < 2**63:
        return None
    return number


# -- the label selector -------------------------------------------------------------------


class LabelSelector:
    """A parsed label selector: an AND of requirements, compiled for fast matching.

    Immutable by convention (no public setters). Build one with
    :func:`parse_label_selector`, :func:`label_selector_from_object` or the class
    constants :data:`EVERYTHING` / :data:`NOTHING`.
    """

    __slots__ = (
        "_absent",
        "_eq",
        "_exists",
        "_in",
        "_ne",
        "_nothing",
        "_notin",
        "_numeric",
        "empty",
        "requirements",
    )

    empty: bool
    """True when the selector does not restrict anything (``labels.Everything()``)."""
    requirements: tuple[Requirement, ...]
    """The requirements sorted by key, as the Go parser leaves them."""

    def __init__(self, requirements: tuple[Requirement, ...] = (), *, nothing: bool = False):
        self.requirements = requirements
        self._nothing = nothing
        self.empty = not requirements and not nothing
        # Group by operator into flat tuples: matching is then a few tight loops of
        # dict lookups, with no per-requirement dispatch. = and == with one value are
        # the overwhelmingly common case and get their own plain-equality group.
        eq: list[tuple[str, str]] = []
        ne: list[tuple[str, str]] = []
        in_: list[tuple[str, frozenset[str]]] = []
        notin: list[tuple[str, frozenset[str]]] = []
        exists: list[str] = []
        absent: list[str] = []
        numeric: list[tuple[str, bool, int]] = []
        for key, op, values in requirements:
            if op in (OP_EQUALS, OP_DOUBLE_EQUALS) and len(values) == 1:
                eq.append((key, values[0]))
            elif op == OP_NOT_EQUALS and len(values) == 1:
                ne.append((key, values[0]))
            elif op in (OP_IN, OP_EQUALS, OP_DOUBLE_EQUALS):
                in_.append((key, frozenset(values)))
            elif op in (OP_NOT_IN, OP_NOT_EQUALS):
                notin.append((key, frozenset(values)))
            elif op == OP_EXISTS:
                exists.append(key)
            elif op == OP_DOES_NOT_EXIST:
                absent.append(key)
            else:  # gt / lt: NewRequirement guaranteed one integer value
                numeric.append((key, op == OP_GT, int(values[0])))
        self._eq = tuple(eq)
        self._ne = tuple(ne)
        self._in = tuple(in_)
        self._notin = tuple(notin)
        self._exists = tuple(exists)
        self._absent = tuple(absent)
        self._numeric = tuple(numeric)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement (Requirement.Matches).

        A missing label fails =, ==, in, exists, gt and lt, and satisfies !=, notin and
        ``!key``.
        """
        if self.empty:
            return True
        if self._nothing:
            return False
        get = labels.get
        # get() returns None for a missing key; None never equals a str and is never in
        # a set of str, which gives exactly the Go semantics for missing labels.
        for key, value in self._eq:
            if get(key) != value:
                return False
        for key, value in self._ne:
            if get(key) == value:
                return False
        for key, values in self._in:
            if get(key) not in values:
                return False
        for key, values in self._notin:
            if get(key) in values:
                return False
        for key in self._exists:
            if key not in labels:
                return False
        for key in self._absent:
            if key in labels:
                return False
        for key, greater, bound in self._numeric:
            found = get(key)
            number = None if found is None else _parse_int64(found)
            if number is None or (number <= bound if greater else number >= bound):
                return False
        return True

    def requires_exact_match(self, key: str) -> str | None:
        """The single value ``key`` must have, or None (Selector.RequiresExactMatch).

        Lets a caller answer ``app=x`` from an index instead of a scan.
        """
        for req_key, op, values in self.requirements:
            if req_key == key:
                if op in (OP_EQUALS, OP_DOUBLE_EQUALS, OP_IN) and len(values) == 1:
                    return values[0]
                return None
        return None

    def __str__(self) -> str:
        """The canonical text (internalSelector.String); parses back to an equal selector."""
        return ",".join(_render_requirement(r) for r in self.requirements)

    def __repr__(self) -> str:
        if self._nothing:
            return "LabelSelector.NOTHING"
        return f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return self.requirements == other.requirements and self._nothing == other._nothing

    __hash__ = None  # type: ignore[assignment]  # equality by value, not meant as a key

    EVERYTHING: LabelSelector
    NOTHING: LabelSelector


LabelSelector.EVERYTHING = LabelSelector()
LabelSelector.NOTHING = LabelSelector(nothing=True)


def _render_requirement(req: Requirement) -> str:
    key, op, values = req
    if op == OP_EXISTS:
        return key
    if op == OP_DOES_NOT_EXIST:
        return "!" + key
    joined = ",".join(sorted(values))
    if op == OP_IN:
        return f"{key} in ({joined})"
    if op == OP_NOT_IN:
        return f"{key} notin ({joined})"
    symbol = {OP_GT: ">", OP_LT: "<"}.get(op, op)
    return f"{key}{symbol}{joined}"


# -- the label selector parser (labels/selector.go Lexer and Parser) ----------------------

_TOK_ERROR: Final = 0
_TOK_EOS: Final = 1
_TOK_CLOSE: Final = 2
_TOK_COMMA: Final = 3
_TOK_NOT: Final = 4
_TOK_DOUBLE_EQ: Final = 5
_TOK_EQ: Final = 6
_TOK_GT: Final = 7
_TOK_ID: Final = 8
_TOK_IN: Final = 9
_TOK_LT: Final = 10
_TOK_NE: Final = 11
_TOK_NOTIN: Final = 12
_TOK_OPEN: Final = 13

_STRING_TO_TOKEN: Final = {
    ")": _TOK_CLOSE,
    ",": _TOK_COMMA,
    "!": _TOK_NOT,
    "==": _TOK_DOUBLE_EQ,
    "=": _TOK_EQ,
    ">": _TOK_GT,
    "in": _TOK_IN,
    "<": _TOK_LT,
    "!=": _TOK_NE,
    "notin": _TOK_NOTIN,
    "(": _TOK_OPEN,
}
_SPECIAL: Final = frozenset("=!(),><")
_WHITESPACE: Final = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[int, str]]:
    """Tokenise like labels.Lexer: identifiers end at whitespace or a special symbol,
    and a run of special symbols is split greedily into the longest known operators."""
    tokens: list[tuple[int, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= end:
            tokens.append((_TOK_EOS, ""))
            return tokens
        if text[pos] in _SPECIAL:
            # scanSpecialSymbol: extend while the buffer is still a known token. Every
            # single special character is a token, so this never yields ErrorToken.
            buffer = text[pos]
            last = (_STRING_TO_TOKEN[buffer], buffer)
            pos += 1
            while pos < end and text[pos] in _SPECIAL:
                candidate = buffer + text[pos]
                if candidate not in _STRING_TO_TOKEN:
                    break
                buffer = candidate
                last = (_STRING_TO_TOKEN[buffer], buffer)
                pos += 1
            tokens.append(last)
        else:
            start = pos
            while pos < end and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
                pos += 1
            word = text[start:pos]
            tokens.append((_STRING_TO_TOKEN.get(word, _TOK_ID), word))


class _Parser:
    """labels.Parser: a recursive-descent parser over the token list.

    In the "values" context the keywords ``in`` / ``notin`` are plain identifiers, so
    ``x in (in)`` parses; in the "key and operator" context they are operators.
    """

    def __init__(self, text: str) -> None:
        self._items = _lex(text)
        self._pos = 0

    def _lookahead(self, values_context: bool = True) -> tuple[int, str]:
        tok, lit = self._items[self._pos]
        if values_context and tok in (_TOK_IN, _TOK_NOTIN):
            tok = _TOK_ID
        return tok, lit

    def _consume(self, values_context: bool = True) -> tuple[int, str]:
        item = self._lookahead(values_context)
        self._pos += 1
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self._lookahead()
            if tok in (_TOK_ID, _TOK_NOT):
                try:
                    requirements.append(self._parse_requirement())
                except _RequirementError as exc:
                    raise _RequirementError(f"unable to parse requirement: {exc}") from None
                tok, lit = self._consume()
                if tok == _TOK_EOS:
                    return requirements
                if tok == _TOK_COMMA:
                    tok2, lit2 = self._lookahead()
                    if tok2 not in (_TOK_ID, _TOK_NOT):
                        raise _RequirementError(f"found '{lit2}', expected: identifier after ','")
                else:
                    raise _RequirementError(f"found '{lit}', expected: ',' or 'end of string'")
            elif tok == _TOK_EOS:
                return requirements
            else:
                raise _RequirementError(
                    f"found '{lit}', expected: !, identifier, or 'end of string'"
                )

    def _parse_requirement(self) -> Requirement:
        key, operator = self._parse_key_and_infer_operator()
        if operator in (OP_EXISTS, OP_DOES_NOT_EXIST):
            return _new_requirement(key, operator, [])
        operator = self._parse_operator()
        if operator in (OP_IN, OP_NOT_IN):
            values = self._parse_values()
        else:
            values = self._parse_exact_value()
        # sets.String.List(): sorted and de-duplicated.
        return _new_requirement(key, operator, sorted(values))

    def _parse_key_and_infer_operator(self) -> tuple[str, str]:
        operator = ""
        tok, literal = self._consume()
        if tok == _TOK_NOT:
            operator = OP_DOES_NOT_EXIST
            tok, literal = self._consume()
        if tok != _TOK_ID:
            raise _RequirementError(f"found '{literal}', expected: identifier")
        key_errs = label_key_errors(literal)
        if key_errs:
            raise _RequirementError(_field_invalid("<nil>", literal, "; ".join(key_errs)))
        tok, _ = self._lookahead()
        if tok in (_TOK_EOS, _TOK_COMMA) and operator != OP_DOES_NOT_EXIST:
            operator = OP_EXISTS
        return literal, operator

    def _parse_operator(self) -> str:
        tok, lit = self._consume(values_context=False)
        operator = {
            _TOK_IN: OP_IN,
            _TOK_EQ: OP_EQUALS,
            _TOK_DOUBLE_EQ: OP_DOUBLE_EQUALS,
            _TOK_GT: OP_GT,
            _TOK_LT: OP_LT,
            _TOK_NOTIN: OP_NOT_IN,
            _TOK_NE: OP_NOT_EQUALS,
        }.get(tok)
        if operator is None:
            raise _RequirementError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        return operator

    def _parse_values(self) -> set[str]:
        tok, lit = self._consume()
        if tok != _TOK_OPEN:
            raise _RequirementError(f"found '{lit}' expected: '('")
        tok, lit = self._lookahead()
        if tok in (_TOK_ID, _TOK_COMMA):
            values = self._parse_identifiers_list()
            self._consume()  # the ')' that ended the list
            return values
        if tok == _TOK_CLOSE:  # "()" is the set holding the empty string
            self._consume()
            return {""}
        raise _RequirementError(f"found '{lit}', expected: ',', ')' or identifier")

    def _parse_identifiers_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self._consume()
            if tok == _TOK_ID:
                values.add(lit)
                tok2, lit2 = self._lookahead()
                if tok2 == _TOK_COMMA:
                    continue
                if tok2 == _TOK_CLOSE:
                    return values
                raise _RequirementError(f"found '{lit2}', expected: ',' or ')'")
            if tok == _TOK_COMMA:
                # Empty members: "(,a", "a,)" and "a,,b" all hold the empty string.
                if not values:
                    values.add("")
                tok2, _ = self._lookahead()
                if tok2 == _TOK_CLOSE:
                    values.add("")
                    return values
                if tok2 == _TOK_COMMA:
                    values.add("")
            else:
                raise _RequirementError(f"found '{lit}', expected: ',', or identifier")

    def _parse_exact_value(self) -> set[str]:
        tok, _ = self._lookahead()
        if tok in (_TOK_EOS, _TOK_COMMA):
            return {""}
        tok, lit = self._consume()
        if tok == _TOK_ID:
            return {lit}
        raise _RequirementError(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a ``labelSelector=`` query value (labels.Parse).

    Grammar: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``,
    ``!a``, ``a>1``, ``a<1``, joined by commas. The empty string selects everything.
    Invalid text raises ApiError 400 BadRequest with the apiserver's message.
    """
    if not text.strip():
        return LabelSelector.EVERYTHING
    try:
        requirements = _Parser(text).parse()
    except _RequirementError as exc:
        raise errors.bad_request(str(exc)) from None
    # sort.Sort(ByKey): deterministic order; Python's sort is stable.
    requirements.sort(key=lambda r: r[0])
    return LabelSelector(tuple(requirements)) if requirements else LabelSelector.EVERYTHING


_OBJECT_OPERATORS: Final = {
    "In": OP_IN,
    "NotIn": OP_NOT_IN,
    "Exists": OP_EXISTS,
    "DoesNotExist": OP_DOES_NOT_EXIST,
}


def label_selector_from_object(
    selector: Mapping[str, Any] | None, *, absent_matches_everything: bool = False
) -> LabelSelector:
    """Convert a ``metav1.LabelSelector`` (matchLabels / matchExpressions).

    Follows ``metav1.LabelSelectorAsSelector``: an empty selector ``{}`` matches
    everything, and an absent (None) selector matches nothing. Callers choose what an
    absent selector means, because the API differs by field:

    * ``absent_matches_everything=False`` (the Go default): Deployment / ReplicaSet /
      StatefulSet / DaemonSet ``spec.selector``, ``topologySpreadConstraints[].labelSelector``
      and pod (anti-)affinity terms — a nil selector there selects no pods.
    * ``absent_matches_everything=True``: ValidatingAdmissionPolicy(Binding)
      ``matchResources.namespaceSelector`` / ``objectSelector``, which the apiserver
      defaults to ``{}`` when absent, so in effect they match every object.

    An invalid selector raises ApiError 400 with NewRequirement's message (for example
    ``"Bad" is not a valid label selector operator``); object validation on create may
    prefer to re-raise it as 422 Invalid with its own field path.
    """
    if selector is None:
        return LabelSelector.EVERYTHING if absent_matches_everything else LabelSelector.NOTHING
    match_labels = selector.get("matchLabels") or {}
    match_expressions = selector.get("matchExpressions") or []
    if not match_labels and not match_expressions:
        return LabelSelector.EVERYTHING
    requirements: list[Requirement] = []
    try:
        for key, value in match_labels.items():
            requirements.append(_new_requirement(str(key), OP_EQUALS, [str(value)]))
        for expression in match_expressions:
            raw_op = expression.get("operator", "")
            op = _OBJECT_OPERATORS.get(raw_op)
            if op is None:
                raise _RequirementError(
                    f"{_go_quote(str(raw_op))} is not a valid label selector operator"
                )
            values = [str(v) for v in expression.get("values") or []]
            # NewRequirement keeps the values in the order given; matching does not care
            # and sorting gives a canonical string.
            requirements.append(
                _new_requirement(str(expression.get("key", "")), op, sorted(values))
            )
    except _RequirementError as exc:
        raise errors.bad_request(str(exc)) from None
    requirements.sort(key=lambda r: r[0])
    return LabelSelector(tuple(requirements))


# -- field selectors (fields/selector.go) -------------------------------------------------

FieldRequirement = tuple[str, str, str]
"""(field, operator "=" or "!=", value)."""


class FieldSelector:
    """A parsed field selector: an AND of ``field=value`` / ``field!=value`` terms.

    Fields missing from the mapping given to :meth:`matches` count as the empty string,
    as ``fields.Set.Get`` does.
    """

    __slots__ = ("_eq", "_ne", "empty", "requirements")

    empty: bool
    requirements: tuple[FieldRequirement, ...]
    """The terms, ``==`` normalised to ``=``; usable to pick an index (spec.nodeName=x)."""

    def __init__(self, requirements: tuple[FieldRequirement, ...] = ()) -> None:
        self.requirements = requirements
        self.empty = not requirements
        self._eq = tuple((f, v) for f, op, v in requirements if op == "=")
        self._ne = tuple((f, v) for f, op, v in requirements if op == "!=")

    def matches(self, fields: Mapping[str, str]) -> bool:
        if self.empty:
            return True
        get = fields.get
        for name, value in self._eq:
            if get(name, "") != value:
                return False
        # Plain loops rather than all(...): no generator frame per object in a big LIST.
        for name, value in self._ne:  # noqa: SIM110
            if get(name, "") == value:
                return False
        return True

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must equal, or None (Selector.RequiresExactMatch)."""
        for name, op, value in self.requirements:
            if name == field and op == "=":
                return value
        return None

    def __str__(self) -> str:
        return ",".join(f"{f}{op}{_escape_field_value(v)}" for f, op, v in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self.requirements == other.requirements

    __hash__ = None  # type: ignore[assignment]


def _escape_field_value(value: str) -> str:
    # fields.EscapeValue: backslash first, then ',' and '='.
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(value: str) -> str:
    """fields.UnescapeValue, with its error messages."""
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise errors.bad_request(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            # Go prints the rune with %v, i.e. its code point number.
            raise errors.bad_request(
                f"invalid field selector: unescaped character in value: {ord(ch)}"
            )
        else:
            out.append(ch)
    if in_slash:
        raise errors.bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    # splitTerms: commas split terms unless backslash-escaped.
    terms: list[str] = []
    start = 0
    in_slash = False
    for i, ch in enumerate(text):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # splitTerm: the first position where "!=", "==" or "=" starts (in that order).
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


_METADATA_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})


def parse_field_selector(text: str, supported: Collection[str]) -> FieldSelector:
    """Parse a ``fieldSelector=`` query value for a resource supporting ``supported``.

    Invalid syntax and unsupported fields raise ApiError 400 BadRequest with the
    apiserver's messages. The unsupported-field message depends, as in the real server,
    on whether the kind registers its own field label conversion: kinds that support
    only metadata.name / metadata.namespace use DefaultMetaV1FieldSelectorConversion's
    message, the others "field label not supported: <field>".
    """
    parts = sorted(_split_terms(text)) if text else []
    requirements: list[FieldRequirement] = []
    for part in parts:
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, raw_value = split
        requirements.append((name, "!=" if op == "!=" else "=", _unescape_field_value(raw_value)))
    # Transform (the field label conversion) runs after parsing, term by term.
    supported_set = frozenset(supported)
    for name, _, _ in requirements:
        if name not in supported_set:
            if supported_set <= _METADATA_FIELDS:
                raise errors.bad_request(
                    f'"{name}" is not a known field selector: only "metadata.name", '
                    '"metadata.namespace"'
                )
            raise errors.bad_request(f"field label not supported: {name}")
    return FieldSelector(tuple(requirements))
