"""Modules pickle: ``pickle``, ``copy.deepcopy``, ``torch.save``/``torch.load`` and a fresh process
all give back a module of the same technique, parameters, values and mode, in both frameworks."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import FRAMEWORKS, TRAIN_CASES, Case, params, run

import harness
from harness.build import record_of
from harness.sampling import input_shape, sample_input


def _trained(case: Case, framework: str, rng: np.random.Generator):
    """A module with values unlike its initial ones, in evaluation mode where it has one."""
    module = case.build(framework, "float64")
    if case.spec().takes_num_features:
        backend = harness.backend(framework)
        backend.set_state(module, {k: rng.uniform(0.5, 2.0, v.shape) for k, v in backend.get_state(module).items()})
        backend.set_training(module, False)
    return module


def _same(framework: str, a, b, x: np.ndarray) -> None:
    backend = harness.backend(framework)
    assert record_of(a) == record_of(b)
    assert backend.is_training(a) == backend.is_training(b)
    state_a, state_b = backend.get_state(a), backend.get_state(b)
    assert sorted(state_a) == sorted(state_b)
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name], err_msg=name)
    np.testing.assert_array_equal(run(framework, a, x, "float64")[0], run(framework, b, x, "float64")[0])


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_pickle_and_deepcopy_keep_technique_parameters_values_and_mode(case: Case, framework: str, rng) -> None:
    module = _trained(case, framework, rng)
    spec = case.spec()
    x = sample_input(spec, case.resolved("float64"), input_shape(spec, case.resolved("float64")), rng)
    _same(framework, module, pickle.loads(pickle.dumps(module)), x)
    _same(framework, module, copy.deepcopy(module), x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_heads_pickle_and_torch_save_loads_them(framework: str, rng) -> None:
    for name in ("smooth_clamp", "layer_norm", "batch_norm"):
        head = harness.head(name, framework, 3, 4, dtype="float64")
        x = rng.normal(size=(6, 3))
        _same(framework, head, pickle.loads(pickle.dumps(head)), x)
        if framework == "torch":
            buffer = io.BytesIO()
            torch.save(head, buffer)
            buffer.seek(0)
            _same(framework, head, torch.load(buffer, weights_only=False), x)


def test_a_fresh_process_unpickles_every_module(tmp_path: Path, rng) -> None:
    """Where a spawned worker would: a new interpreter, which finds each technique by name (each
    technique's defaults: the examples pickle alike, and each costs the new process a compile)."""
    saved = []
    for case in (c for c in TRAIN_CASES if not c.given):
        spec = case.spec()
        x = sample_input(spec, case.resolved("float64"), input_shape(spec, case.resolved("float64")), rng)
        for framework in FRAMEWORKS:
            module = _trained(case, framework, rng)
            saved.append((case.id, framework, module, x, run(framework, module, x, "float64")[0]))
    (tmp_path / "modules.pkl").write_bytes(pickle.dumps(saved))
    script = (
        "import pickle, sys, numpy as np, jax; jax.config.update('jax_enable_x64', True); import harness\n"
        "for cid, fw, module, x, y in pickle.loads(open(sys.argv[1], 'rb').read()):\n"
        "    b = harness.backend(fw)\n"
        "    np.testing.assert_array_equal(b.to_numpy(module(b.from_numpy(x, 'float64'))), y, err_msg=cid + ' ' + fw)\n"
        "print('unpickled', len(pickle.loads(open(sys.argv[1], 'rb').read())))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "modules.pkl")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"unpickled {len(saved)}" in done.stdout


def test_a_declaration_pickles_only_as_the_registered_one() -> None:
    """By name, so a variant that is not the registered declaration of its name cannot pickle
    (it would load as another); one that is registered can."""
    from dataclasses import replace

    spec = harness.get("clamp")
    assert pickle.loads(pickle.dumps(spec)) is spec
    for variant in (replace(spec, name="clamp_unregistered"), replace(spec, examples=())):
        with pytest.raises(pickle.PicklingError, match="not the registered declaration"):
            pickle.dumps(variant)


@pytest.mark.parametrize("name", ["clamp", "softmax", "layer_norm"])
def test_an_unpickled_module_makes_its_input_check_from_the_declaration(name: str) -> None:
    """The input check's rule (what a compiled module accepts) is made again from the
    declaration when a module loads, never carried in the pickle: a stale one does not survive."""
    module = harness.build(name, "torch", **({"num_features": 8} if name == "layer_norm" else {}))
    fresh = module._input.rule
    module._input.rule = fresh._replace(dtypes=frozenset(), direct=frozenset())
    if hasattr(module, "_direct"):  # Limit's copies of the rule, stale too
        module._direct = module._fast_dtypes = frozenset()
    for loaded in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        assert loaded._input.rule == fresh
        assert loaded._input.params is loaded.params
        if hasattr(loaded, "_direct"):
            assert loaded._fast_dtypes == fresh.dtypes
            assert loaded._direct == (frozenset() if loaded._check_shape else fresh.direct)
