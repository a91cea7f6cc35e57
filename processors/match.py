"""Lambda / EventBridge content-filter patterns, validated once and compiled to closures.

Why: ``filter: {match: ...}`` is evaluated twice: by AWS, once the pattern is pushed down as the
event source mapping's ``FilterCriteria`` (Kinesis patterns wrapped as ``{"data": pattern}``), and
here, in tests, local runs, replays and for records AWS cannot filter. Both must agree, so this
follows the documented AWS syntax (Lambda "Filter rule syntax"; EventBridge "Event patterns",
"Content filtering", "Arrays", "Null values and empty strings"; the aws/event-ruler engine they
describe) rather than a home-made dialect, and reports every invalid spot by path at config time.

Semantics, with the choices made where the docs are thin:

* All fields of a pattern must match (AND); the list under a field is an OR of matchers.
* A document value is a *leaf* if it is a string, number, boolean or null; arrays contribute each
  element (flattened); objects are not leaves, so ``{"exists": true}`` is false on an object
  ("exists matching only works on leaf nodes") and ``{"exists": false}`` true.
* Exact numbers compare numerically (``5`` matches ``5.0``): the guide says numbers match by text,
  but event-ruler adds a numeric-equality matcher for every number in a pattern, and documents
  arrive parsed here anyway. Booleans are not numbers (``[1]`` never matches ``true``).
  ``[null]`` matches a present null and ``[""]`` an empty string; they are not interchangeable.
* ``numeric``: ``=``, ``<``, ``<=`` alone, or ``>``/``>=`` optionally followed by ``<``/``<=``,
  with bounds in [-5e11, 5e11] and at most six decimal places (current event-ruler's
  ``ComparableNumber``, which rejects other bounds); a document number outside that range or
  with more than six decimal places has no numeric form there and never matches ``numeric``.
* ``anything-but`` needs a present leaf and matches every leaf not excluded, of any type
  (``{"anything-but": "x"}`` matches ``5`` and ``null``). Its prefix/suffix/equals-ignore-case/
  wildcard forms are event-bus only ("Pipe support: No"); a Lambda push-down may reject them.
* A nested pattern on an array matches if one object element matches all of it (event-ruler's
  array-consistent matching); on a missing field or a non-object it is evaluated against ``{}``,
  so only ``{"exists": false}`` can hold.
* ``$or`` takes a list of at least two patterns, at any level, ANDed with its siblings.
* Empty objects and lists are errors as in event-ruler, so ``{}`` is rejected rather than read as
  "match all"; drop the filter instead. A document that is not a JSON object never matches.
* Dotted keys are joined as event-ruler joins them: ``{"state.status": [...]}`` and
  ``{"state": {"status": [...]}}`` name the same field, in a pattern and in a document (a
  document's ``"state.status"`` key is read as ``state`` -> ``status``). A pattern that names one
  field twice that way is rejected. One difference is kept for speed: when the document also has
  a real ``"state"`` object, its ``"state.status"`` sibling is not read (looking for dotted
  siblings costs a scan of the keys, about 250 ns, on every nested lookup; event-ruler itself
  documents the joining as "should not be relied upon").
* ``equals-ignore-case`` (alone, under ``prefix``/``suffix`` or ``anything-but``) compares as
  event-ruler does: each character of the pattern stands for its Java ``toLowerCase`` or
  ``toUpperCase`` (root locale) form, so ``"straße"`` matches ``"STRASSE"`` but ``"STRASSE"``
  does not match ``"straße"`` (no ``casefold``). Characters outside the BMP match only themselves.
* ``wildcard``'s ``*`` is any run, ``\\*`` and ``\\\\`` are literals and ``**`` is rejected; the
  wildcards of one field are rejected when too complex (:mod:`processors.match_complexity`).
* ``cidr`` is as strict as event-ruler: exactly one ``/``, an integer mask below 32 (IPv4) or 128
  (IPv6), no bare address; the block runs from the address as written to the address with all
  host bits set (``10.0.0.5/24`` is ``10.0.0.5``-``10.0.0.255``), and a document value matches
  when it is an address of the same family inside it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from functools import cache, partial

from processors.errors import ProcessorError

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, Final

    Pred = Callable[[Any], bool]
    Check = Callable[[dict[str, Any]], bool]

__all__ = [
    "PatternError",
    "cidr_block",
    "compile_pattern",
    "ignore_case",
    "join_dotted_keys",
    "validate_pattern",
]

_MISSING: Final = object()
_LIMIT: Final = 5.0e11  # current event-ruler's numeric range (ComparableNumber)
_DECIMALS: Final = 6  # ... and its precision: more decimal places have no numeric form
_TOO_COMPLEX: Final = (
    "Rule is too complex - try using fewer wildcard characters or fewer repeating character "
    "sequences after a wildcard character (AWS rejects it)"
)
_BUT_FORMS: Final = ("equals-ignore-case", "prefix", "suffix", "wildcard")
_OPERATORS: Final = tuple(sorted({"anything-but", "cidr", "exists", "numeric", *_BUT_FORMS}))
_LOWER: Final = {">": operator.gt, ">=": operator.ge}
_UPPER: Final = {"<": operator.lt, "<=": operator.le}
_SINGLE: Final = {"=": operator.eq, **_LOWER, **_UPPER}
_RANGE_SHAPE: Final = "write [op, n] or [> or >=, low, < or <=, high], e.g. ['>', 0, '<=', 5]"


class PatternError(ProcessorError, ValueError):
    """An invalid filter pattern.

    Attributes:
        path: Where the problem is, relative to the pattern root, e.g. ``amount[0].numeric``;
            empty for the root itself.
        message: What was expected and how to fix it.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def compile_pattern(pattern: Mapping[str, Any]) -> Callable[[Any], bool]:
    """Validate a pattern once and compile it into a predicate over JSON documents.

    Args:
        pattern: The filter pattern, e.g. ``{"event_type": ["click"], "amount":
            [{"numeric": [">", 0]}]}``.

    Returns:
        ``matches(doc) -> bool``. It never raises: documents of unexpected shape or type
        simply do not match.

    Raises:
        PatternError: The first problem found; any others are attached as notes. Use
            :func:`validate_pattern` to get them all as a list.
    """
    compiler = _Compiler()
    check = compiler.mapping(pattern, "")
    if compiler.errors:
        first, *rest = compiler.errors
        for other in rest:
            first.add_note(str(other))
        raise first

    def matches(doc: Any) -> bool:
        return isinstance(doc, dict) and check(doc)

    return matches


def validate_pattern(pattern: Any) -> list[PatternError]:
    """Return every problem in a pattern, in document order; an empty list when it is valid.

    Args:
        pattern: Anything read from config; a non-mapping is reported, not raised.
    """
    compiler = _Compiler()
    compiler.mapping(pattern, "")
    return compiler.errors


def _never(_: Any) -> bool:
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _six_decimals(value: Any) -> bool:
    """At most six decimal places, as event-ruler's ``ComparableNumber`` requires.

    For a float, ``round(x, 6) == x`` exactly when its shortest decimal form has at most six
    decimal places (``round`` is correctly rounded), which is the form JSON carried.
    """
    return isinstance(value, int) or round(value, _DECIMALS) == value


def _in_range(value: Any) -> bool:
    return _is_number(value) and -_LIMIT <= value <= _LIMIT and _six_decimals(value)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and (not isinstance(value, float) or math.isfinite(value))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _leaves(value: Any) -> Iterator[Any]:
    """Yield a document value's leaves: arrays are flattened, objects are not leaves."""
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif not isinstance(value, dict):
        yield value


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Yield the objects in a document value, looking through (nested) arrays."""
    if isinstance(value, dict):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


def _wildcard(text: str) -> re.Pattern[str] | str:
    """Translate a wildcard into a regex for ``fullmatch``, or return why it is invalid."""
    out: list[str] = []
    i, star = 0, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            if text[i + 1 : i + 2] not in ("*", "\\"):
                return "a backslash may only escape '*' or '\\'; write '\\\\' for a backslash"
            out.append(re.escape(text[i + 1]))
            i, star = i + 2, False
            continue
        if char == "*" and star:
            return "consecutive '*' are not allowed; a single '*' already matches any run"
        out.append(".*" if char == "*" else re.escape(char))
        i, star = i + 1, char == "*"
    return re.compile("".join(out), re.DOTALL)


def _numeric(
    low: Callable[[Any, Any], bool], a: float, high: Callable[[Any, Any], bool], b: float
) -> Pred:
    def pred(x: Any) -> bool:
        kind = type(x)
        if kind is not int and kind is not float and not _is_number(x):
            return False
        return (
            -_LIMIT <= x <= _LIMIT
            and (kind is int or round(x, _DECIMALS) == x)
            and low(x, a)
            and high(x, b)
        )

    return pred


def join_dotted_keys(pattern: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    """One level of a pattern with dotted keys split as event-ruler joins them.

    ``{"a.b": X}`` becomes ``{"a": {"b": X}}``, merged with a sibling ``"a"`` object. Returns the
    pattern (the same object when no key has a dot) and the keys that name a field already
    named (a clash, rejected by validation). Deeper levels are joined when they are compiled.

    >>> join_dotted_keys({"state.status": ["on"], "state": {"code": [1]}})
    ({'state': {'status': ['on'], 'code': [1]}}, [])
    """
    if not any(isinstance(key, str) and "." in key and key != "$or" for key in pattern):
        return pattern, []
    out: dict[str, Any] = {}
    clashes: list[str] = []
    for key, given in pattern.items():
        parts = key.split(".") if isinstance(key, str) and key != "$or" else [key]
        spec = given
        for part in reversed(parts[1:]):
            spec = {part: spec}
        head = parts[0]
        if head not in out:
            out[head] = spec
            continue
        merged = _merge_specs(out[head], spec)
        if merged is None:
            clashes.append(key)
        else:
            out[head] = merged
    return out, clashes


def _merge_specs(a: Any, b: Any) -> Any:
    """Two specs for one field, merged when both are objects naming different fields."""
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return None
    a, clashes_a = join_dotted_keys(a)
    b, clashes_b = join_dotted_keys(b)
    if clashes_a or clashes_b:
        return None
    merged = dict(a)
    for key, spec in b.items():
        if key not in merged:
            merged[key] = spec
        elif key == "$or" or (sub := _merge_specs(merged[key], spec)) is None:
            return None
        else:
            merged[key] = sub
    return merged


def _has_dotted_key(node: dict[Any, Any]) -> bool:
    try:
        return "." in "".join(node)
    except TypeError:  # a key that is not a string (not from JSON)
        return any(isinstance(key, str) and "." in key for key in node)


def _child(node: dict[Any, Any], key: str) -> Any:
    """``node[key]`` for a nested pattern, with the document's dotted keys joined.

    A document key ``"key.rest"`` is the field ``key`` -> ``rest`` to event-ruler, so it is
    read as part of the object at ``key`` (added to it, or making it up when it is missing).
    """
    value = node.get(key, _MISSING)
    if type(value) is dict or not _has_dotted_key(node):  # a real object: see the module doc
        return value
    prefix = f"{key}."
    extra = {
        name[len(prefix) :]: item
        for name, item in node.items()
        if isinstance(name, str) and name.startswith(prefix)
    }
    if not extra:
        return value
    if isinstance(value, dict):  # a dict subclass (not from JSON)
        return _with(value, extra)
    if isinstance(value, list) and any(isinstance(e, dict) for e in value):
        return [_with(e, extra) if isinstance(e, dict) else e for e in value]
    return extra


def _with(obj: dict[Any, Any], extra: dict[str, Any]) -> dict[Any, Any]:
    merged = dict(obj)
    for name, item in extra.items():
        merged[name] = [merged[name], item] if name in merged else item
    return merged


def _case_forms(char: str) -> list[str]:
    """What one pattern character stands for under equals-ignore-case: event-ruler takes
    Java's ``toLowerCase``/``toUpperCase`` of each UTF-16 unit (root locale), whose full
    mappings Python's ``lower``/``upper`` share (``ß`` -> ``SS``); a character outside the BMP
    (two units in Java) is left as it is."""
    if ord(char) > 0xFFFF:
        return [char]
    return sorted({char.lower(), char.upper()}, key=len, reverse=True)


def ignore_case(text: str, mode: str) -> Pred:
    """A predicate: ``mode`` ``equals``, ``prefix`` or ``suffix`` of ``text``, ignoring case as
    event-ruler does (see :func:`_case_forms`); false for anything but a string."""
    n = len(text)
    if text.isascii():  # each character stands for itself in either case, and only ASCII
        low = text.lower()
        if mode == "equals":
            return lambda x: isinstance(x, str) and x.isascii() and x.lower() == low
        if mode == "prefix":
            return lambda x: isinstance(x, str) and (h := x[:n]).isascii() and h.lower() == low
        return lambda x: (
            isinstance(x, str) and len(x) >= n and (t := x[len(x) - n :]).isascii()
            and t.lower() == low
        )  # fmt: skip
    body = "".join("(?:" + "|".join(map(re.escape, _case_forms(c))) + ")" for c in text)
    if mode == "equals":
        full = re.compile(body, re.DOTALL).fullmatch
        return lambda x: isinstance(x, str) and full(x) is not None
    if mode == "prefix":
        start = re.compile(body, re.DOTALL).match
        return lambda x: isinstance(x, str) and start(x) is not None
    end = re.compile(f"(?:{body})\\Z", re.DOTALL).search
    return lambda x: isinstance(x, str) and end(x) is not None


@cache
def _shapes() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """event-ruler's IPv4 and IPv6 address shapes and what Java's ``Integer.parseInt`` reads.

    Compiled on first use, by ``cidr`` only: at import they were a fifth of this module's
    instructions, on every cold start.
    """
    return (
        re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"),
        re.compile(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*"),
        re.compile(r"[+-]?[0-9]+"),
    )


def _address(text: str) -> tuple[int, int] | None:
    """(version, value) of an IP address as event-ruler reads one, or None."""
    ipv4, ipv6, _ = _shapes()
    if ipv4.fullmatch(text):
        octets = [int(part) for part in text.split(".")]
        if max(octets) > 255:
            return None
        return 4, int.from_bytes(bytes(octets), "big")
    if ipv6.fullmatch(text):
        import ipaddress  # noqa: PLC0415  # a millisecond at cold start, for cidr only

        try:
            return 6, int(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    return None


def cidr_block(text: str) -> tuple[int, int, int] | str:
    """(version, lowest, highest) of a ``cidr`` block as event-ruler builds it, or why not.

    event-ruler splits on ``/`` (Java's ``split``, which drops trailing empty parts) and wants
    exactly two parts, an integer mask from 0 to 31 (IPv4) or 127 (IPv6), and an address; the
    block starts at the address as written and ends with all its host bits set.

    >>> cidr_block("10.0.0.0/24") == (4, 0x0A000000, 0x0A0000FF)
    True
    >>> cidr_block("10.0.0.1")
    "malformed CIDR: exactly one '/' is required"
    """
    parts = text.split("/")
    while parts and not parts[-1]:
        parts.pop()
    if len(parts) != 2:
        return "malformed CIDR: exactly one '/' is required"
    if not _shapes()[2].fullmatch(parts[1]):
        return "malformed CIDR: the mask bits must be an integer"
    mask = int(parts[1])
    if mask < 0:
        return "malformed CIDR: the mask bits must not be negative"
    address = _address(parts[0])
    if address is None:
        return f"invalid IP address {parts[0]!r}"
    version, value = address
    bits = 32 if version == 4 else 128
    if mask >= bits:
        return f"IPv{version} mask bits must be below {bits}"
    return version, value, value | ((1 << (bits - mask)) - 1)


def _scalar_pred(values: frozenset[Any], bools: frozenset[bool], null: bool) -> Pred:
    def pred(x: Any) -> bool:
        if isinstance(x, bool):  # first: True == 1 and hash(True) == hash(1)
            return x in bools
        if isinstance(x, str | int | float):
            return x in values
        return null and x is None

    return pred


def _scalar_field(key: str, values: frozenset[Any], bools: frozenset[bool], null: bool) -> Check:
    """Fast path for a list of plain values: one dict lookup and one set membership."""
    pred = _scalar_pred(values, bools, null)

    def check(node: dict[str, Any]) -> bool:
        value = node.get(key, _MISSING)
        kind = type(value)
        if kind is str or kind is int or kind is float:
            return value in values
        if kind is not list:
            return pred(value)  # bool or None; _MISSING and objects have no leaf, so False
        for x in _leaves(value):  # noqa: SIM110  # any(genexpr) costs ~1 µs per call
            if pred(x):
                return True
        return False

    return check


def _field(key: str, preds: tuple[Pred, ...], exists: bool, absent: bool) -> Check:
    """A list of matchers; loops, not generators, since this runs once per record and field."""
    only = preds[0] if len(preds) == 1 and not exists else None

    def check(node: dict[str, Any]) -> bool:
        value = node.get(key, _MISSING)
        if value is _MISSING or isinstance(value, dict):
            return absent
        if not isinstance(value, list):
            if only is not None:
                return only(value)
            leaves: tuple[Any, ...] = (value,)
        else:
            leaves = tuple(_leaves(value))
            if not leaves:
                return absent
        if exists:
            return True
        for x in leaves:
            for pred in preds:
                if pred(x):
                    return True
        return False

    return check


def _all_of(checks: tuple[Check, ...]) -> Check:
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda node: first(node) and second(node)

    def check(node: dict[str, Any]) -> bool:
        for each in checks:  # noqa: SIM110  # all(genexpr) costs ~1 µs per call
            if not each(node):
                return False
        return True

    return check


class _Compiler:
    """Walks a pattern once, building closures and collecting every error on the way."""

    def __init__(self) -> None:
        self.errors: list[PatternError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(PatternError(path, message))

    def text(self, arg: Any, path: str) -> str | None:
        if isinstance(arg, str):
            return arg
        self.fail(path, f"expected a string, got {_describe(arg)}")
        return None

    def mapping(self, pattern: Any, path: str) -> Check:
        if not isinstance(pattern, Mapping):
            self.fail(path, f"expected an object of field patterns, got {_describe(pattern)}")
            return _never
        if not pattern:
            hint = (
                "name a field" if path else "name a field, or drop the filter to keep all records"
            )
            self.fail(path, f"empty objects are not allowed (AWS rejects them); {hint}")
            return _never
        checks: list[Check] = []
        pattern, clashes = join_dotted_keys(pattern)
        for key in clashes:
            self.fail(
                f"{path}.{key}" if path else key,
                "names a field this pattern already names (AWS joins dotted keys: 'a.b' is the "
                "field b inside a); write it once",
            )
        for key, spec in pattern.items():
            at = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.fail(at, f"field names must be strings, got {_describe(key)}; quote it")
            elif key == "$or":
                checks.append(self.any_of(spec, at))
            elif isinstance(spec, Mapping):
                checks.append(self.nested(key, spec, at))
            elif isinstance(spec, list):
                checks.append(self.field(key, spec, at))
            else:
                self.fail(at, f"expected a list, got {_describe(spec)}; wrap it: [{spec!r}]")
        return _all_of(tuple(checks)) if checks else _never

    def any_of(self, spec: Any, path: str) -> Check:
        if not isinstance(spec, list) or len(spec) < 2:
            self.fail(path, "expected a list of at least two patterns, e.g. [{a: [1]}, {b: [2]}]")
            return _never
        alternatives = tuple(self.mapping(alt, f"{path}[{i}]") for i, alt in enumerate(spec))

        def check(node: dict[str, Any]) -> bool:
            for alternative in alternatives:  # noqa: SIM110  # any(genexpr) is slower
                if alternative(node):
                    return True
            return False

        return check

    def nested(self, key: str, spec: Mapping[str, Any], path: str) -> Check:
        sub = self.mapping(spec, path)
        if_absent = sub({})  # a missing or non-object field: only absence patterns hold

        def check(node: dict[str, Any]) -> bool:
            value = _child(node, key)
            if isinstance(value, dict):
                return sub(value)
            if isinstance(value, list):
                seen = False
                for obj in _objects(value):
                    if sub(obj):
                        return True
                    seen = True
                if seen:
                    return False
            return if_absent

        return check

    def field(self, key: str, items: list[Any], path: str) -> Check:
        if not items:
            self.fail(path, "empty lists are not allowed (they match nothing); add a matcher")
            return _never
        values: set[Any] = set()
        bools: set[bool] = set()
        exists: set[bool] = set()
        preds: list[Pred] = []
        null = False
        for i, item in enumerate(items):
            at = f"{path}[{i}]"
            if item is None:
                null = True
            elif isinstance(item, bool):
                bools.add(item)
            elif isinstance(item, str) or _is_finite(item):
                values.add(item)
            elif isinstance(item, Mapping) and list(item) == ["exists"]:
                if isinstance(item["exists"], bool):
                    exists.add(item["exists"])
                else:
                    self.fail(f"{at}.exists", f"expected true or false, got {item['exists']!r}")
            elif isinstance(item, Mapping):
                pred = self.matcher(item, at)
                if pred is not None:
                    preds.append(pred)
            elif isinstance(item, list):
                self.fail(at, "nested lists are not allowed; list the values in the field's list")
            else:
                what = "a finite number" if _is_number(item) else "a string, number, bool, null"
                self.fail(at, f"expected {what} or an operator object, got {_describe(item)}")
        wildcards = _wildcards(items)
        if wildcards and not any(e.path.startswith(f"{path}[") for e in self.errors):
            from processors.match_complexity import too_complex  # noqa: PLC0415  # rare

            if too_complex(wildcards):
                self.fail(path, _TOO_COMPLEX)
        if values or bools or null:
            if not preds and not exists:
                return _scalar_field(key, frozenset(values), frozenset(bools), null)
            preds.insert(0, _scalar_pred(frozenset(values), frozenset(bools), null))
        return _field(key, tuple(preds), True in exists, False in exists)

    def matcher(self, item: Mapping[Any, Any], path: str) -> Pred | None:
        if len(item) != 1:
            keys = ", ".join(map(str, item))
            self.fail(path, f"an operator object takes exactly one key, got {keys}; split it up")
            return None
        ((name, arg),) = item.items()
        at = f"{path}.{name}"
        build = _BUILDERS.get(name)
        if build is None:
            import difflib  # noqa: PLC0415  # only to word a validation error

            close = difflib.get_close_matches(str(name), _OPERATORS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.fail(at, f"unknown operator {name!r}; {hint}known: {', '.join(_OPERATORS)}")
            return None
        return build(self, arg, at)

    def affix(self, arg: Any, path: str, test: Callable[[str, str], bool]) -> Pred | None:
        fold = isinstance(arg, Mapping) and list(arg) == ["equals-ignore-case"]
        if fold:
            arg, path = arg["equals-ignore-case"], f"{path}.equals-ignore-case"
        elif isinstance(arg, Mapping):
            self.fail(path, f"expected a string or {{equals-ignore-case: string}}, got {arg!r}")
            return None
        text = self.text(arg, path)
        if text is None:
            return None
        if fold:
            return ignore_case(text, "prefix" if test is str.startswith else "suffix")
        return lambda x: isinstance(x, str) and test(x, text)

    def prefix(self, arg: Any, path: str) -> Pred | None:
        return self.affix(arg, path, str.startswith)

    def suffix(self, arg: Any, path: str) -> Pred | None:
        return self.affix(arg, path, str.endswith)

    def equals_ignore_case(self, arg: Any, path: str) -> Pred | None:
        text = self.text(arg, path)
        return None if text is None else ignore_case(text, "equals")

    def wildcard(self, arg: Any, path: str) -> Pred | None:
        text = self.text(arg, path)
        regex = None if text is None else _wildcard(text)
        if isinstance(regex, str):
            self.fail(path, regex)
            return None
        return None if regex is None else lambda x: isinstance(x, str) and bool(regex.fullmatch(x))

    def cidr(self, arg: Any, path: str) -> Pred | None:
        text = self.text(arg, path)
        if text is None:
            return None
        block = cidr_block(text)
        if isinstance(block, str):
            self.fail(path, f"{block}; write a block like '10.0.0.0/24' or '2001:db8::/32'")
            return None
        return partial(_in_block, block)

    def numeric(self, arg: Any, path: str) -> Pred | None:
        if not isinstance(arg, list) or len(arg) not in (2, 4):
            self.fail(path, f"expected one or two comparisons, got {arg!r}; {_RANGE_SHAPE}")
            return None
        if arg[0] not in _SINGLE:
            hint = " (for 'not equal' use anything-but)" if arg[0] in ("!=", "<>") else ""
            self.fail(f"{path}[0]", f"unknown operator {arg[0]!r}{hint}; use =, >, >=, < or <=")
            return None
        if len(arg) == 4 and (arg[0] not in _LOWER or arg[2] not in _UPPER):
            self.fail(f"{path}[2]", f"a range is a lower then an upper bound; {_RANGE_SHAPE}")
            return None
        bad = [i for i in range(1, len(arg), 2) if not _in_range(arg[i])]
        for i in bad:
            self.fail(
                f"{path}[{i}]",
                f"expected a number in [-5e11, 5e11] with at most 6 decimal places, got {arg[i]!r}",
            )
        if bad:
            return None
        if len(arg) == 4 and arg[1] >= arg[3]:
            self.fail(path, f"the lower bound {arg[1]!r} must be below the upper bound {arg[3]!r}")
            return None
        if len(arg) == 2:  # the upper test of a one-sided comparison is the range limit itself
            return _numeric(_SINGLE[arg[0]], arg[1], operator.le, _LIMIT)
        return _numeric(_LOWER[arg[0]], arg[1], _UPPER[arg[2]], arg[3])

    def anything_but(self, arg: Any, path: str) -> Pred | None:
        if isinstance(arg, Mapping):
            return self.anything_but_form(arg, path)
        items = arg if isinstance(arg, list) else [arg]
        if not items or not (all(isinstance(v, str) for v in items) or all(map(_is_finite, items))):
            forms = " | ".join(_BUT_FORMS)
            shapes = (
                f"a string, a number, a list of only strings or only numbers, or {{{forms}: ...}}"
            )
            self.fail(path, f"expected {shapes}; got {arg!r}")
            return None
        excluded = frozenset(items)
        return lambda x: isinstance(x, bool) or x not in excluded  # leaves are hashable

    def anything_but_form(self, arg: Mapping[Any, Any], path: str) -> Pred | None:
        if list(arg) not in ([form] for form in _BUT_FORMS):
            self.fail(path, f"expected one of {', '.join(_BUT_FORMS)}, got {dict(arg)!r}")
            return None
        ((name, inner),) = arg.items()
        at = f"{path}.{name}"
        texts = inner if isinstance(inner, list) else [inner]
        if not texts or not all(isinstance(t, str) for t in texts):
            self.fail(at, f"expected a string or a non-empty list of strings, got {inner!r}")
            return None
        if name in ("prefix", "suffix") and "" in texts:
            self.fail(at, f"an empty {name} would exclude every string; remove it")
            return None
        if name == "wildcard":
            preds = [self.wildcard(t, at) for t in texts]
            found = tuple(p for p in preds if p is not None)
            return None if len(found) < len(preds) else lambda x: not any(p(x) for p in found)
        if name == "equals-ignore-case":
            return _anything_but_ignore_case(texts)
        test, affixes = (str.startswith if name == "prefix" else str.endswith), tuple(texts)
        return lambda x: not (isinstance(x, str) and test(x, affixes))


def _in_block(block: tuple[int, int, int], x: Any) -> bool:
    address = _address(x) if isinstance(x, str) else None
    return address is not None and address[0] == block[0] and block[1] <= address[1] <= block[2]


def _anything_but_ignore_case(texts: list[str]) -> Pred:
    """Not equal, ignoring case as event-ruler does, to any of ``texts``."""
    if all(t.isascii() for t in texts):
        lowered = frozenset(t.lower() for t in texts)
        return lambda x: not (isinstance(x, str) and x.isascii() and x.lower() in lowered)
    preds = tuple(ignore_case(t, "equals") for t in texts)
    return lambda x: not any(p(x) for p in preds)


def _wildcards(items: list[Any]) -> list[str]:
    """The wildcard texts of one field's list (plain and under anything-but)."""
    out: list[str] = []
    for item in items:
        if not isinstance(item, Mapping) or len(item) != 1:
            continue
        ((name, arg),) = item.items()
        if name == "anything-but" and isinstance(arg, Mapping) and list(arg) == ["wildcard"]:
            arg, name = arg["wildcard"], "wildcard"
        if name == "wildcard":
            out.extend(t for t in (arg if isinstance(arg, list) else [arg]) if isinstance(t, str))
    return out


_BUILDERS: Final[dict[Any, Callable[[_Compiler, Any, str], Pred | None]]] = {
    "anything-but": _Compiler.anything_but,
    "cidr": _Compiler.cidr,
    "equals-ignore-case": _Compiler.equals_ignore_case,
    "numeric": _Compiler.numeric,
    "prefix": _Compiler.prefix,
    "suffix": _Compiler.suffix,
    "wildcard": _Compiler.wildcard,
}
