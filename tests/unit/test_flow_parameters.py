"""Typed flow parameters: the schema Prefect builds for its forms, and validation before a run.

The signature below is the one proposed for ``flows/rebalance.py:rebalance_smallcase``; Prefect
builds the deployment's form from it with ``prefect.utilities.callables.parameter_schema``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from prefect import flow
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from saras.domain.parameters import Composition, ExecutionParameters
from saras.domain.policy import RebalancePolicy


@flow(name="rebalance-smallcase-proposed")
def proposed_rebalance(
    smallcase: str,
    constituents: Composition | None = None,
    require_approval: bool = True,
    dry_run: bool = False,
    policy: RebalancePolicy | None = None,
    execution: ExecutionParameters | None = None,
) -> None:
    """Plan every active investment of a smallcase toward its (optionally new) weights.

    Args:
        smallcase: Name or id of the smallcase.
        constituents: A new composition to apply on approval; empty: keep the current one.
        require_approval: Pause for an analyst's approval of this exact plan.
        dry_run: Only report the plan; write nothing.
        policy: Overrides of the smallcase's stored policy, for this run only.
        execution: How patient the execution is.
    """


def _schema() -> dict[str, Any]:
    return parameter_schema(proposed_rebalance).model_dump_for_openapi()


def test_schema_has_typed_models_with_descriptions() -> None:
    schema = _schema()
    props, definitions = schema["properties"], schema["definitions"]
    assert props["smallcase"]["description"] == "Name or id of the smallcase."
    assert props["policy"]["description"].startswith("Overrides of the smallcase's stored")
    # the models are referenced, not untyped objects
    assert {"$ref": "#/definitions/RebalancePolicy"} in props["policy"]["anyOf"]
    assert {"$ref": "#/definitions/ExecutionParameters"} in props["execution"]["anyOf"]
    composition = next(a for a in props["constituents"]["anyOf"] if a.get("type") == "array")
    assert composition["items"] == {"$ref": "#/definitions/Constituent"}
    constituent = definitions["Constituent"]
    assert set(constituent["required"]) == {"symbol", "exchange", "weight"}
    assert constituent["additionalProperties"] is False
    for name in ("RebalancePolicy", "ExecutionParameters", "Constituent"):
        for field, spec in definitions[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    policy = definitions["RebalancePolicy"]
    assert policy["additionalProperties"] is False
    assert {"drift_band_pct", "relative_drift_band_pct", "min_trade_value", "cooldown_days"} <= set(
        policy["properties"]
    )
    assert definitions["CalendarTrigger"]["enum"] == ["none", "weekly", "monthly", "quarterly"]


def test_unknown_policy_key_fails_before_the_run_naming_the_field() -> None:
    with pytest.raises(ParameterTypeError, match="drift_band"):
        proposed_rebalance.validate_parameters({"smallcase": "S", "policy": {"drift_band": "2"}})
    with pytest.raises(ParameterTypeError, match="weight"):
        proposed_rebalance.validate_parameters(
            {"smallcase": "S", "constituents": [{"symbol": "A", "exchange": "NSE", "weight": 0}]}
        )
    with pytest.raises(ParameterTypeError, match="sum to 90"):
        proposed_rebalance.validate_parameters(
            {
                "smallcase": "S",
                "constituents": [{"symbol": "A", "exchange": "NSE", "weight": "90"}],
            }
        )


def test_validated_policy_keeps_which_fields_the_run_set() -> None:
    params = proposed_rebalance.validate_parameters(
        {"smallcase": "S", "policy": {"cooldown_days": 3}, "execution": {"poll_interval": 0.5}}
    )
    policy = params["policy"]
    assert isinstance(policy, RebalancePolicy)
    assert policy.model_fields_set == {"cooldown_days"}
    stored = RebalancePolicy(relative_drift_band_pct=Decimal(25))
    merged = stored.with_overrides(policy)
    assert merged.cooldown_days == 3 and merged.relative_drift_band_pct == Decimal(25)
    assert params["execution"].as_settings_kwargs()["poll_interval"] == 0.5


def test_evaluate_rebalances_schema() -> None:
    from flows.evaluate_rebalances import evaluate_rebalances

    schema = parameter_schema(evaluate_rebalances).model_dump_for_openapi()
    props = schema["properties"]
    assert {"format": "date-time", "type": "string"} in props["as_of"]["anyOf"]
    assert props["exchanges"]["description"].startswith("Only the smallcases trading")
    for name, spec in props.items():
        assert spec.get("description"), name
    params = evaluate_rebalances.validate_parameters({"as_of": "2026-11-27T21:30:00+00:00"})
    assert isinstance(params["as_of"], datetime) and params["as_of"].tzinfo is not None


def test_the_real_flows_take_typed_parameters() -> None:
    from flows.execution import execute_run
    from flows.investments import exit_smallcase, invest_in_smallcase
    from flows.maintenance import maintain
    from flows.rebalance import rebalance_smallcase
    from flows.repair import repair_run

    props = parameter_schema(rebalance_smallcase).model_dump_for_openapi()["properties"]
    assert {"$ref": "#/definitions/RebalancePolicy"} in props["policy"]["anyOf"]
    assert props["exclude_investments"]["description"].startswith("Investments (ids")
    for name, spec in props.items():
        assert spec.get("description"), name
    for f in (execute_run, invest_in_smallcase, exit_smallcase, maintain, repair_run):
        execution = parameter_schema(f).model_dump_for_openapi()["properties"]["execution"]
        assert {"$ref": "#/definitions/ExecutionParameters"} in execution["anyOf"], f.name
    with pytest.raises(ParameterTypeError, match=r"execution\.no_such_setting"):
        execute_run.validate_parameters({"run_id": "r", "execution": {"no_such_setting": 1}})
    with pytest.raises(ParameterTypeError, match="lookup_horizon"):
        execute_run.validate_parameters(
            {"run_id": "r", "execution": {"request_timeout": 2, "lookup_horizon": 1}}
        )
    with pytest.raises(ParameterTypeError, match=r"exclude_investments\.0"):
        rebalance_smallcase.validate_parameters({"smallcase": "S", "exclude_investments": ["x"]})


def test_settings_kwargs() -> None:
    from saras.domain.parameters import settings_kwargs

    assert settings_kwargs(None) is None
    assert settings_kwargs({"poll_interval": 0.5}) == {"poll_interval": 0.5}
    kwargs = settings_kwargs(ExecutionParameters(request_timeout=1, lookup_horizon=3))
    assert kwargs is not None and kwargs["lookup_horizon"] == 3 and kwargs["poll_interval"] == 1.0


def test_every_deployed_flow_describes_every_parameter() -> None:
    """Prefect's forms show each parameter's description: none of a deployed flow is bare."""
    import importlib
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    entrypoints = sorted({d["entrypoint"] for d in deployments})
    assert len(entrypoints) >= 10
    bare = []
    for entrypoint in entrypoints:
        path, name = entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        schema = parameter_schema(getattr(module, name).fn)
        bare += [
            f"{entrypoint} {p}"
            for p, spec in schema.properties.items()
            if not spec.get("description")
        ]
    assert bare == []
