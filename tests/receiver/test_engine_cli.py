"""`kube-ballast remediations pause|resume|approve|records`: the commands write the same
objects the engine reads, so a pause from the shell stops the next decision and an
approval from the shell releases a waiting plan."""

# The fixtures come from test_engine_support (tests/receiver/conftest.py belongs to the
# webhook's tests); importing them by name is what pytest needs, and F811 is ruff
# mistaking each use as a parameter for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from test_engine_support import (  # noqa: F401  (fixtures are imported by name)
    EngineFactory,
    FakeAction,
    FakeClock,
    api,
    clock,
    engines,
    kubeconfig,
    make_alert,
    make_config,
    make_group,
    sim,
    wait_state,
)

from kubeballast import remediationscli
from kubeballast.core.config import ActionConfig, KubernetesAccessConfig, ReceiverConfig


def _command(config: ReceiverConfig, *argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    remediationscli.add_arguments(parser)
    return remediationscli.run(parser.parse_args(argv), config)


async def test_pause_resume_approve_and_records_from_the_shell(
    engines: EngineFactory, api: Any, clock: FakeClock, kubeconfig: Path
) -> None:
    config = make_config(
        actions=[
            ActionConfig(
                name="fake",
                alerts=("FakeAlert",),
                dry_run=False,
                cooldown_seconds=0.0,
                require_approval=True,
            )
        ]
    )
    access = KubernetesAccessConfig(kubeconfig_path=str(kubeconfig))
    shell = dataclasses.replace(
        config, remediations=dataclasses.replace(config.remediations, kubernetes=access)
    )

    def run(*argv: str) -> Any:
        # The commands run their own event loop, as the CLI does: off this one.
        return asyncio.to_thread(_command, shell, *argv)

    fake = FakeAction()
    engine = await engines(config, [fake])

    assert (await run("pause", "--reason", "etcd upgrade"))["paused"] is True
    await engine.accept(make_group(make_alert("fp-1")))
    [refused] = await wait_state(api, config, clock, "refused")
    assert refused.reason == "paused"
    assert "etcd upgrade" in refused.detail

    assert (await run("resume"))["paused"] is False
    await engine.accept(make_group(make_alert("fp-2")))
    [waiting] = await wait_state(api, config, clock, "awaiting-approval")
    approved = await run("approve", waiting.approval_id)
    assert approved["record"] == waiting.key
    [done] = await wait_state(api, config, clock, "succeeded")
    assert done.approved_by.startswith("cli")
    assert fake.count("execute") == 1

    listing = await run("records", "--limit", "5")
    assert listing["paused"] is False
    assert {r["state"] for r in listing["records"]} == {"refused", "succeeded"}
