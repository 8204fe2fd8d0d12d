"""The private Keras and Typer APIs kerasaudit relies on, checked one by one.

A minor upgrade of Keras or Typer can remove or change any of these; this file fails first,
naming the one that moved, instead of every command turning into exit 4. pyproject.toml pins
Keras to the minor release the safety allowlist was generated from; kerasaudit refuses others.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from kerasaudit._allowlist import GENERATED_FROM_KERAS
from kerasaudit._tf import check_keras_version
from kerasaudit.errors import BadInputError


def test_running_keras_is_the_release_the_allowlist_was_generated_from(keras_module: Any) -> None:
    assert keras_module.__version__.split(".")[:2] == GENERATED_FROM_KERAS.split(".")[:2]
    check_keras_version(keras_module.__version__)  # passes
    with pytest.raises(BadInputError, match=r"allowlist was generated from Keras 3\.15"):
        check_keras_version("3.99.0")


def test_functional_graph_replay_api(keras_module: Any) -> None:
    """kerasaudit.stages.scan replays a model's graph to tap inner layers (nested models too)."""
    from keras.src.models.functional import Functional

    inputs = keras_module.Input((4,))
    model = keras_module.Model(inputs, keras_module.layers.Dense(2, name="d")(inputs))
    assert isinstance(model, Functional)
    assert "operation_fn" in inspect.signature(model._run_through_graph).parameters
    x = model._standardize_inputs(keras_module.ops.ones((1, 4)))
    seen = []
    out = model._run_through_graph(
        x, operation_fn=lambda op: lambda *a, **k: seen.append(op.name) or op(*a, **k)
    )
    first = out[0] if isinstance(out, list | tuple) else out
    assert seen == ["d"] and tuple(first.shape)[-1] == 2
    assert hasattr(model.get_layer("d"), "_call_context_args")


def test_layer_graph_bookkeeping(keras_module: Any) -> None:
    """kerasaudit.inventory follows _inbound_nodes; gradcam reads _keras_history."""
    inputs = keras_module.Input((4,))
    dense = keras_module.layers.Dense(2, name="d")
    out = dense(inputs)
    keras_module.Model(inputs, out)
    assert len(dense._inbound_nodes) == 1
    assert out._keras_history[0] is dense


def test_safe_mode_scope(keras_module: Any) -> None:
    """kerasaudit.loading loads inside SafeModeScope(True), which overrides a process-wide
    enable_unsafe_deserialization()."""
    from keras.src.saving import serialization_lib

    with serialization_lib.SafeModeScope(True):
        assert serialization_lib.in_safe_mode() is True


def test_typer_vendored_click_exceptions() -> None:
    """kerasaudit.cli.app turns usage errors into one line; Typer vendors Click for them."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    assert issubclass(UsageError, ClickException)
    assert issubclass(NoArgsIsHelpError, UsageError)


def test_typer_parameters_name_their_types() -> None:
    """The 80-column help (kerasaudit.cli.app) names each option's value from its Click type
    (Typer 0.28 has no ``display_type``; 0.29 has, but imports pydantic at start-up)."""
    import typer.main

    from kerasaudit.cli.app import _type_name, app

    group = typer.main.get_command(app)
    ctx = group.make_context("kerasaudit", ["audit"], resilient_parsing=True)
    names = set()
    for name in group.list_commands(ctx):
        for param in group.get_command(ctx, name).params:
            if getattr(param, "param_type_name", "") == "option" and not param.is_flag:
                names.add(_type_name(param, ctx))
    assert {"path", "int", "float", "str", "table|json"} <= names, names
    assert not any("<" in n or "range" in n or n == "" for n in names), names
