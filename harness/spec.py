"""Typed records that declare a technique once, for every framework.

A :class:`TechniqueSpec` is the single source of truth for a technique: its parameters and
their validation, its formula, its output bounds, its kinks and the gradient at each, and a
numpy reference of its formula. Implementations in ``impl_torch`` and ``impl_jax`` honour it;
tests and benchmarks read it. Nothing here imports torch or jax.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from harness.numerics import compute_dtype, finfo, module_input_dtypes
from harness.tolerances import Tolerance, check_declared

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")


class Framework(StrEnum):
    """The frameworks every technique is implemented in. Members equal their strings, so
    ``build(name, "torch")`` and ``build(name, Framework.TORCH)`` are the same call."""

    TORCH = "torch"
    JAX = "jax"


FrameworkName = Literal["torch", "jax"]


class Family(StrEnum):
    """The built-in families; each is one module name in ``harness``, ``impl_torch`` and ``impl_jax``
    (its declarations, and its implementations, inverses and module classes, in that order).
    A plugin may name a family of its own."""

    CLAMPS = "clamps"  # piecewise linear with saturating (or leaky, or straight-through) bounds
    SQUASHES = "squashes"  # smooth monotone maps of the reals onto a bounded interval
    SIMPLEX = "simplex"  # row-wise maps onto the probability simplex (or its log)
    NORMS = "norms"  # normalization layers with learned affine parameters


class _Required:
    """Marker default for a parameter the caller must give (only ``num_features``)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a technique.

    ``kind`` is the Python type a value must have after normalization (``float``, ``int``,
    ``bool``, ``str``, or ``float | None`` spelled as ``"optional_float"``). ``check``
    receives the normalized value and returns ``None`` when it is allowed, otherwise a
    sentence saying what is allowed. Ints are accepted for floats; bools are never accepted
    for numbers (``lo=True`` is almost certainly a mistake).
    """

    name: str
    kind: str
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None

    def normalize(self, technique: str, value: Any) -> Any:
        """Return ``value`` converted to ``kind``, or raise TypeError/ValueError."""
        where = f"{technique}: parameter {self.name!r}"
        if self.kind in ("float", "optional_float"):
            if value is None and self.kind == "optional_float":
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                allowed = "a real number or None" if self.kind == "optional_float" else "a real number"
                raise TypeError(f"{where} must be {allowed}, got {value!r} ({type(value).__name__})")
            try:
                value = float(value)
            except OverflowError:  # an int beyond float's range (10**400)
                bits = int(value).bit_length()
                raise ValueError(f"{where} must be a finite real number, got an int of {bits} bits") from None
        elif self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{where} must be an int, got {value!r} ({type(value).__name__})")
            value = int(value)
        elif self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{where} must be True or False, got {value!r}")
            value = bool(value)
        elif self.kind == "str":
            if not isinstance(value, str):
                raise TypeError(f"{where} must be a string, got {value!r}")
        else:  # pragma: no cover - a declaration error, caught by the catalogue tests
            raise AssertionError(f"unknown parameter kind {self.kind!r}")
        if self.check is not None:
            problem = self.check(value)
            if problem is not None:
                raise ValueError(f"{where} {problem}, got {value!r}")
        return value


@dataclass(frozen=True)
class Kink:
    """A point where a piecewise technique changes formula, with its declared gradient.

    ``left`` and ``right`` are the derivatives just below and just above ``x`` (the one-sided
    limits); ``at`` is the gradient both implementations return at exactly ``x``. ``second`` is
    the second derivative they return there in every second-order mode (double backward,
    Hessian-vector products, ``hessian``): where the first derivative jumps none exists, and this
    says what is returned instead, as ``at`` does for the first. The built-ins' pieces are linear
    at their kinks, or join with equal second derivatives (C2), so it is 0 on both sides too.
    """

    x: float
    left: float
    at: float
    right: float
    note: str = ""
    second: float = 0.0


# How an input is cast, and a module moved, in each framework: the fix an error suggests.
_CAST = {"torch": "x.to(torch.{dtype})", "jax": "x.astype(jnp.{dtype})"}
_MOVE = {"torch": " or move it with module.to(torch.{dtype})", "jax": ""}


@dataclass(frozen=True)
class TechniqueSpec:
    """The declaration of one output-limiting technique.

    Contract:
      * ``family`` is a :class:`Family` for the built-ins, the module name of its declaration and
        of both implementations; a plugin may give a name of its own.
      * ``params`` lists every keyword the technique accepts; :meth:`resolve` fills defaults,
        normalizes types and raises ``TypeError`` (unknown name, wrong type, missing
        ``num_features``) or ``ValueError`` (a value outside what is allowed). It runs before any
        framework is touched, so both frameworks reject bad parameters identically.
      * ``bounds_doc`` states the bounds for README readers, e.g. ``"[max(lo, 0), hi]"``.
      * ``bounds_fn(params)`` returns the closed interval ``(lo, hi)`` that every output lies
        in, in the input's dtype, rounding included (``-inf``/``inf`` where unbounded).
      * ``kinks_fn(params)`` returns every kink; both implementations give exactly ``Kink.at``
        there, whatever a framework primitive would do.
      * ``reference(x, params)`` is an independent float64 numpy version of ``formula`` for
        the stateless techniques (``None`` for modules with learned parameters).
      * ``inverse_reference(y, params)`` is the numpy inverse of invertible techniques: the open
        range (lo, hi) maps onto the reals, lo and hi to -inf and inf, anything outside to NaN.
      * ``vjp_reference(x, cotangent, params)`` gives the input VJP for techniques whose declared
        gradient is not the derivative of their forward (straight-through estimators); ``None``
        means the derivative of ``reference``.
      * ``reduction_axes(ndim, params)`` names the axes each output element depends on besides
        its own position (empty for elementwise techniques): NaN spreads exactly along them, in
        the values and in the first derivatives (a NaN input's input VJP and JVP are NaN in its
        group, whatever the cotangent or tangent), except where ``vjp_reference`` declares a
        derivative that does not depend on the input (ste_clamp's 1) and where the map is affine
        in the input (a stateful technique in evaluation mode). Never the derivative of a piece
        that a framework's comparison with NaN happened to pick.
      * ``feature_axis`` is where ``num_features`` sits for techniques that take it.
      * ``check_dtype(params, dtype)`` names what the input's dtype (or the float32 that float16
        and bfloat16 compute in) cannot hold for these parameters, or ``None``: checked at every
        call, since one module may see several dtypes, so both frameworks raise the same error
        instead of overflowing, dividing by zero or returning NaN differently.
      * ``autocast_float32`` names the devices (``"cuda"``, ``"cpu"``) on which ``torch.autocast``
        runs the technique in float32, as ATen's autocast policy runs the framework's own op: a
        float16 or bfloat16 input then gives a float32 output. Elsewhere autocast leaves it in
        the input's dtype (JAX has no autocast).
      * ``tolerances`` maps (dtype, quantity), quantity "value" or "vjp", to a
        :class:`~harness.tolerances.Tolerance` that replaces the dtype's default for this technique
        in the parity tests, ``harness check`` and the benchmark's output check; each carries its
        reason (``harness.tolerances.shifted_values()`` gives the built-ins' for outputs that are a
        bound plus or minus a term).
      * ``examples`` are extra parameter sets that the generic tests run besides the defaults;
        ``rejects`` are parameter sets that must raise ``ValueError``; ``dtype_rejects`` are
        (parameters, dtype) pairs that build but must raise ``ValueError`` at the call.
    """

    name: str
    family: Family | str
    formula: str
    bounds_doc: str
    gradient_convention: str
    params: tuple[Param, ...]
    bounds_fn: Callable[[Mapping[str, Any]], tuple[float, float]]
    kinks_fn: Callable[[Mapping[str, Any]], tuple[Kink, ...]] = lambda p: ()
    reference: Callable[..., np.ndarray] | None = None
    inverse_reference: Callable[..., np.ndarray] | None = None
    vjp_reference: Callable[..., np.ndarray] | None = None
    reduction_axes: Callable[[int, Mapping[str, Any]], tuple[int, ...]] = lambda ndim, p: ()
    min_rank: int = 0
    feature_axis: int | None = None
    stateful: bool = False
    monotone: bool = False
    invertible: bool = False
    check_params: Callable[[Mapping[str, Any]], str | None] | None = None
    check_dtype: Callable[[Mapping[str, Any], str], str | None] | None = None
    autocast_float32: frozenset[str] = frozenset()
    examples: tuple[Mapping[str, Any], ...] = ()
    rejects: tuple[Mapping[str, Any], ...] = ()
    dtype_rejects: tuple[tuple[Mapping[str, Any], str], ...] = ()
    tolerances: Mapping[tuple[str, str], Tolerance] = field(default_factory=dict)
    notes: str = ""
    _by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params})
        check_declared(self.name, self.tolerances, DTYPES)

    def __hash__(self) -> int:
        # By name: the fields hold dicts (examples), and a declaration is looked up by name anyway.
        # Equal declarations have equal names, so this agrees with the field-wise ==.
        return hash(self.name)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickled by name, as a reference to the registry's declaration: its checks and formulas
        # are functions (lambdas among them) that pickle cannot carry, and a declaration is
        # frozen, so a module unpickled elsewhere (torch.save, multiprocessing) gets the same one.
        # Only a registered declaration has a name to go by; a variant would load as another.
        try:
            registered = declared(self.name) is self
        except LookupError:
            registered = False
        if not registered:
            raise pickle.PicklingError(
                f"{self.name!r} is not the registered declaration of that name, so it cannot be pickled by name; "
                "declare it with harness.declare (and, for another process, in a plugin it loads)"
            )
        return declared, (self.name,)

    @property
    def takes_num_features(self) -> bool:
        """True when the technique has learned parameters sized by ``num_features``."""
        return "num_features" in self._by_name

    def resolve(self, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """Validate parameters and fill defaults; the one place parameters are checked."""
        given = dict(params or {}, **kwargs)
        unknown = sorted(set(given) - set(self._by_name))
        if unknown:
            allowed = ", ".join(p.name for p in self.params) or "none"
            raise TypeError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
        resolved: dict[str, Any] = {}
        for p in self.params:
            if p.name not in given:
                if p.default is REQUIRED:
                    raise TypeError(
                        f"{self.name}: missing required parameter {p.name!r} ({p.doc}); pass it, e.g. {p.name}=64"
                    )
                resolved[p.name] = p.default
            else:
                resolved[p.name] = p.normalize(self.name, given[p.name])
        if self.check_params is not None:
            problem = self.check_params(resolved)
            if problem is not None:
                raise ValueError(f"{self.name}: {problem}")
        return resolved

    def _with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        # bounds() and kinks() answer for partial parameter sets; num_features may be absent.
        try:
            return self.resolve(params)
        except TypeError as error:
            if "missing required parameter 'num_features'" not in str(error):
                raise
            return self.resolve(params, num_features=1) | {"num_features": None}

    def bounds(self, **params: Any) -> tuple[float, float]:
        """The closed interval ``(lo, hi)`` every output lies in, for these parameters."""
        lo, hi = self.bounds_fn(self._with_defaults(params))
        return float(lo), float(hi)

    def kinks(self, **params: Any) -> tuple[Kink, ...]:
        """Every kink for these parameters, with its declared gradient."""
        return tuple(self.kinks_fn(self._with_defaults(params)))

    def check_input(self, dtype: str, shape: tuple[int, ...], params: Mapping[str, Any], *, framework: str) -> None:
        """Raise the error both frameworks give for an input they cannot take: the same words,
        and the fix in the idiom of ``framework`` ("torch" or "jax")."""
        if dtype not in DTYPES:
            raise TypeError(
                f"{self.name} takes a floating-point input ({', '.join(DTYPES)}), got {dtype}; "
                f"cast it first, e.g. {_CAST[framework].format(dtype='float32')}"
            )
        ndim = len(shape)
        if ndim < self.min_rank:
            raise ValueError(
                f"{self.name} needs an input with at least {self.min_rank} dimension(s), got shape {shape}"
            )
        if "axis" in params and not -ndim <= params["axis"] < ndim:
            raise ValueError(
                f"{self.name}: axis {params['axis']} is out of range for a {ndim}-d input; "
                f"allowed: {-ndim} to {ndim - 1}"
            )
        if self.feature_axis is not None and shape[self.feature_axis] != params["num_features"]:
            raise ValueError(
                f"{self.name} was built with num_features={params['num_features']} but the input has "
                f"{shape[self.feature_axis]} at axis {self.feature_axis} (shape {shape})"
            )
        if "dtype" in params and dtype not in module_input_dtypes(params["dtype"]):
            *others, last = module_input_dtypes(params["dtype"])
            allowed = f"{', '.join(others)} or {last}" if others else last
            raise TypeError(
                f"{self.name} has {params['dtype']} parameters, which take {allowed} inputs, got {dtype}; "
                f"cast the input ({_CAST[framework].format(dtype=params['dtype'])}), or build the module with "
                f"dtype={dtype!r}{_MOVE[framework].format(dtype=dtype)}"
            )
        problem = self.dtype_problem(params, dtype)
        if problem is not None:
            raise ValueError(f"{self.name} on a {dtype} input: {problem}")

    def takes_dtype(self, params: Mapping[str, Any], dtype: str) -> bool:
        """Whether :meth:`check_input` accepts inputs of ``dtype`` (of a shape it accepts): the
        dtype half of its rule, for a check that decides from a few attributes once made."""
        in_module = "dtype" not in params or dtype in module_input_dtypes(params["dtype"])
        return dtype in DTYPES and in_module and self.dtype_problem(params, dtype) is None

    def dtype_problem(self, params: Mapping[str, Any], dtype: str) -> str | None:
        """What ``dtype`` cannot hold of these parameters (see ``check_dtype``), or ``None``."""
        return self.check_dtype(params, dtype) if self.check_dtype is not None else None


# The registry's lookup by name, set by harness.registry when it loads (importing harness.spec
# imports the harness package, and so the registry, first): declarations do not import it.
_lookup: Callable[[str], TechniqueSpec] | None = None


def declared(name: str) -> TechniqueSpec:
    """The registered declaration of ``name`` (what a pickled declaration unpickles to)."""
    if _lookup is None:  # pragma: no cover - harness/__init__ imports the registry
        raise RuntimeError("harness.registry is not loaded; import harness first")
    return _lookup(name)


def finite(value: float) -> str | None:
    return None if math.isfinite(value) else "must be finite"


def positive(value: float) -> str | None:
    return None if value > 0 and math.isfinite(value) else "must be a finite number > 0"


def one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(map(repr, allowed))}"

    return check


def bounds_fit(params: Mapping[str, Any], dtype: str) -> str | None:
    """lo and hi are finite in the input's dtype: a bound it cannot hold rounds to an infinity,
    outside the declared interval."""
    biggest = finfo(dtype)["max"]
    if max(abs(params["lo"]), abs(params["hi"])) > biggest:
        return (
            f"lo and hi must lie within +-{biggest:.6g} (the largest finite {dtype}), got lo={params['lo']!r}, "
            f"hi={params['hi']!r}; choose bounds the dtype can hold or use a wider dtype"
        )
    return None


def width_fits(params: Mapping[str, Any], dtype: str) -> str | None:
    """hi - lo is finite where it is computed (float32 for float16/bfloat16)."""
    compute = compute_dtype(dtype)
    biggest = finfo(compute)["max"]
    width = params["hi"] - params["lo"]
    if width > biggest:
        return f"hi - lo = {width:.6g} must be finite in {compute} (at most {biggest:.6g}); narrow [lo, hi]"
    return None


def scale_fits(name: str, value: float, dtype: str) -> str | None:
    """A scale the formula divides by and multiplies with: it and its reciprocal must be normal
    numbers where they are computed (XLA flushes subnormals to zero, ATen does not)."""
    compute = compute_dtype(dtype)
    tiny = finfo(compute)["tiny"]
    if not 4.0 * tiny <= value <= 1.0 / (4.0 * tiny):
        allowed = f"[{4 * tiny:.3g}, {1 / (4 * tiny):.3g}]"
        return f"{name} = {value:.6g} must lie in {allowed} in {compute}, so it and its reciprocal stay normal numbers"
    return None


def all_of(*checks: Callable[[Mapping[str, Any], str], str | None]) -> Callable[[Mapping[str, Any], str], str | None]:
    """The first problem any of ``checks`` finds."""

    def check(params: Mapping[str, Any], dtype: str) -> str | None:
        return next((p for p in (c(params, dtype) for c in checks) if p is not None), None)

    return check


def lo_below_hi(params: Mapping[str, Any]) -> str | None:
    if params["lo"] >= params["hi"]:
        return f"lo must be < hi, got lo={params['lo']!r}, hi={params['hi']!r}"
    return None


def module_params(extra: tuple[Param, ...]) -> tuple[Param, ...]:
    """``num_features``, ``dtype`` and ``seed``, which every technique with parameters takes."""
    return (
        Param(
            "num_features", "int", REQUIRED, "the size of the feature axis", lambda v: None if v > 0 else "must be > 0"
        ),
        *extra,
        Param("dtype", "str", "float32", "dtype of the learned parameters and of the input", one_of(*DTYPES)),
        Param(
            "seed",
            "int",
            0,
            "seed of any random parameter draw, the same values in both frameworks (the normalizations draw "
            "nothing: weight 1 and bias 0, as in PyTorch)",
        ),
    )
