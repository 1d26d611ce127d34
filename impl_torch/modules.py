"""PyTorch modules of every family: the wrapper of a stateless technique, and a head.

Module classes with learned parameters live in their family's file (``norms.py``). Parameters
were validated by the declaration (``TechniqueSpec.resolve``); modules only check the input
(dtype, rank, axis, feature size) through the same harness function as the JAX side, so both
frameworks raise the same errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.compiler import is_compiling

import harness
from harness.build import check_head_input
from impl_torch._common import InputCheck, autocast_input, follow_dtype, native_elementwise, refuse_mixed_assigned_load
from impl_torch.adapter import FRAMEWORK_DTYPES, check_array, dtype_name, from_numpy

# The parameters of every Limit built in this process, by their repr: what a compiled forward
# reads them through (_constant_parameters).
_PARAMETERS: dict[str, tuple[tuple[str, Any], ...]] = {}


@torch.compiler.assume_constant_result
def _constant_parameters(key: str) -> tuple[tuple[str, Any], ...]:
    """The parameters filed under ``key``, as constants to dynamo. Read from the module instead,
    each float is a value dynamo makes symbolic once a second Limit with another value of it
    compiles (automatic dynamic: they share this forward's code), and the functions' choices by
    parameter value (a rounding guard, a kernel's parameters) cannot take a symbol: torch 2.11
    raised, torch 2.13 broke the graph (tests/test_compile.py). A string is always a constant;
    the answer is a tuple, which dynamo takes as a constant where it does not take a dict."""
    return _PARAMETERS[key]


class Limit(nn.Module):
    """A stateless technique; its parameters are fixed when it is built."""

    def __init__(self, spec: harness.TechniqueSpec, fn: Callable[..., torch.Tensor], params: Mapping[str, Any]) -> None:
        super().__init__()
        self.technique = spec.name
        self.params = dict(params)
        self._fn = functools.partial(fn, **params)
        self._key = repr(sorted(self.params.items()))
        self._input = InputCheck(spec, self.params)
        self._check_shape = spec.min_rank > 0
        self._read_rule()

    def _read_rule(self) -> None:
        _PARAMETERS.setdefault(self._key, tuple(self.params.items()))  # again after unpickling, in a new process
        # Elementwise techniques take any float input: skip the shape check on the hot path, and
        # take from the input check's rule the dtypes that can hold the parameters (the others
        # raise in check_input) and, of those, the ones autocast never changes: nothing to check
        # or cast.
        rule = self._input.rule
        self._fast_dtypes = rule.dtypes
        self._direct = frozenset() if self._check_shape else rule.direct
        self._bind_kernel()

    def _bind_kernel(self) -> None:
        # A technique whose eager path starts with a one-pass kernel (_common.native_first): its
        # kernel bound to the parameters here and kept once made, so that forward runs it without
        # calling the technique or looking the kernel up by its parameters. At 2^16 elements,
        # where the kernel takes about 10 us and input and output fill the CPU's cache, that was
        # 2 us a call (leaky_clamp's forward, one process), 1.4 of it the keyword lookup in the
        # technique's cache. Only where the input check passes a float32 tensor as it is, the
        # only dtype the kernels take. Where no kernel serves an input, forward runs the formula
        # itself (the technique would ask again). Not pickled (ctypes objects): __setstate__
        # binds it again.
        kernel = getattr(self._fn.func, "kernel", None)
        if kernel is None or torch.float32 not in self._direct:
            self._kernel = None
            return
        self._kernel = functools.cache(functools.partial(kernel, **self.params))
        self._formula = functools.partial(self._fn.func.__wrapped__, **self.params)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_kernel", None)
        state.pop("_formula", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._read_rule()  # the input check's rule was made again from the declaration as loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = technique = self._fn
        if is_compiling():
            fn = technique = functools.partial(self._fn.func, **dict(_constant_parameters(self._key)))
        elif self._kernel is not None:
            if (y := native_elementwise(x, self._kernel)) is not None:
                return y
            fn = self._formula  # no kernel serves x: the technique would only ask again
        dtype = getattr(x, "dtype", None)
        if dtype in self._direct:
            return fn(x)
        if self._check_shape or dtype not in self._fast_dtypes:
            return fn(self._input(x))
        # The technique itself: autocast may hand the kernel a float32 tensor.
        return technique(autocast_input(x, self._input.spec))

    def extra_repr(self) -> str:
        return ", ".join([self.technique, *(f"{k}={v!r}" for k, v in self.params.items())])


class Head(nn.Module):
    """Linear(in_features, out_features) then an output-limiting technique."""

    def __init__(self, linear: nn.Linear, limit: nn.Module) -> None:
        super().__init__()
        self.linear, self.limit = linear, limit
        self.register_load_state_dict_pre_hook(refuse_mixed_assigned_load)
        self.register_load_state_dict_post_hook(_follow_assigned_dtype)

    @property
    def dtype_name(self) -> str:
        """The head's dtype: its Linear's, whatever moved it."""
        return dtype_name(self.linear.weight)

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        # .double(), .half(), .to(dtype): a head built with that dtype (its limit follows itself).
        module = super()._apply(fn, recurse)
        follow_dtype(self, self.linear.weight)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_array(x, "a head")
        check_head_input(dtype_name(x), tuple(x.shape), self.linear.in_features, self.dtype_name)
        return self.limit(self.linear(x))


def _follow_assigned_dtype(head: Head, _: Any) -> None:
    """After ``load_state_dict(..., assign=True)`` (which keeps the loaded tensors' dtype; a load
    without it converts them), a head of the loaded dtype, its limit too (a norm without tensors
    holds its dtype apart), as after ``.to(dtype)``; refuse_mixed_assigned_load has refused two."""
    head.limit.to(head.linear.weight.dtype)  # converts nothing where it already is of that dtype
    follow_dtype(head, head.linear.weight)


def make_module(spec: harness.TechniqueSpec, impl: Any, params: Mapping[str, Any]) -> nn.Module:
    """A module class is constructed with the parameters; a function is wrapped in :class:`Limit`."""
    return impl(**params) if isinstance(impl, type) else Limit(spec, impl, params)


def make_head(weight: np.ndarray, bias: np.ndarray, limit: nn.Module, dtype: str) -> Head:
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, dtype=FRAMEWORK_DTYPES[dtype])
    with torch.no_grad():
        linear.weight.copy_(from_numpy(weight, dtype))
        linear.bias.copy_(from_numpy(bias, dtype))
    return Head(linear, limit)
