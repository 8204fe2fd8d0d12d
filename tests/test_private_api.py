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


def test_typer_parameters_describe_their_type() -> None:
    """The 80-column help (kerasaudit.cli.app) asks each parameter for its display type, which
    Typer 0.29 added (0.28 has none: every command would crash before parsing)."""
    from typer.core import TyperArgument, TyperOption

    assert callable(getattr(TyperArgument, "display_type", None))
    assert callable(getattr(TyperOption, "display_type", None))
