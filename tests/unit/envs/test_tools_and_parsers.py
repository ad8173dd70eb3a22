"""Tool-call parsers, the tool registry's error handling and timeout, ToolEnv, the calculator task."""

from __future__ import annotations

import time

import pytest

from rlsys.envs import ToolCall, ToolError, ToolRegistry, get_parser, load_object
from rlsys.envs.calculator import (calculator, calculator_reward, final_answer, make_calculator_dataset,
                                   split_problems)
from rlsys.envs.tool_env import ToolEnv, row_tool_kwargs


def test_tag_parser_reads_name_and_argument():
    calls = get_parser("tag").parse("[calc:12*34] and [calc:5+6]")
    assert calls == [ToolCall("calc", {"_positional": "12*34"}), ToolCall("calc", {"_positional": "5+6"})]
    assert get_parser("tag").parse("12*34=408") == []


def test_hermes_parser_reads_json_and_reports_bad_blocks():
    text = ('<tool_call>{"name": "calc", "arguments": {"expression": "2*3"}}</tool_call>'
            '<tool_call>{"name": "calc", "arguments": "{\\"expression\\": \\"4*5\\"}"}</tool_call>'
            '<tool_call>{not json}</tool_call>')
    ok, as_string, bad = get_parser("hermes").parse(text)
    assert ok == ToolCall("calc", {"expression": "2*3"}) and as_string == ToolCall("calc", {"expression": "4*5"})
    assert bad.error and "not valid JSON" in bad.error
    with pytest.raises(ValueError, match="rollout.multi_turn.parser='xml'"):
        get_parser("xml")


def test_registry_runs_tools_and_names_each_failure():
    from tests.agent_envs import garbage_tool, hanging_tool, raising_tool

    registry = ToolRegistry({"calc": "rlsys.envs.calculator:calculator", "boom": raising_tool,
                             "hang": hanging_tool, "junk": garbage_tool}, timeout_s=0.3)
    assert registry.call(ToolCall("calc", {"_positional": "12*34"})) == "408"
    assert registry.call(ToolCall("calc", {"expression": "7-9"})) == "-2"
    with pytest.raises(ToolError, match="tool 'boom' raised RuntimeError: broken tool"):
        registry.call(ToolCall("boom", {"_positional": "1"}))
    start = time.perf_counter()
    with pytest.raises(ToolError, match="tool 'hang' timed out"):
        registry.call(ToolCall("hang", {"_positional": "1"}))
    assert time.perf_counter() - start < 2.0
    with pytest.raises(ToolError, match="tool 'junk' returned a object"):
        registry.call(ToolCall("junk", {"_positional": "1"}))
    with pytest.raises(ToolError, match="unknown tool 'nope'"):
        registry.call(ToolCall("nope", {}))
    with pytest.raises(ValueError, match="rollout.multi_turn.tools.bad"):
        ToolRegistry({"bad": "rlsys.envs.calculator:no_such_tool"})


def test_tool_env_penalises_or_raises_and_reads_verl_tools_kwargs():
    from tests.agent_envs import raising_tool

    registry = ToolRegistry({"calc": calculator, "boom": raising_tool}, timeout_s=1.0)
    env = ToolEnv(registry, get_parser("tag"), tool_error_penalty=-0.5)
    env.reset({"extra_info": {"tools_kwargs": {"calc": {"create_kwargs": {}, "execute_kwargs": {}}}}})
    assert env.step("[calc:12*34]").observation == "(408)"
    failed = env.step("[boom:1]")
    assert failed.reward == -0.5 and not failed.done and "broken tool" in failed.error
    assert failed.observation.startswith("(error: tool 'boom' raised")
    assert env.step("408").done
    strict = ToolEnv(registry, get_parser("tag"), on_tool_error="raise")
    strict.reset({})
    with pytest.raises(ToolError, match="boom"):
        strict.step("[boom:1]")
    assert row_tool_kwargs({"extra_info": {"tools_kwargs": {"t": {"unit": "cm"}}}}) == {"t": {"unit": "cm"}}


def test_calculator_task():
    assert calculator("37*58") == "2146" and calculator("9/3") == "3"
    with pytest.raises(ValueError, match="cannot evaluate"):
        calculator("__import__('os')")
    assert final_answer("[calc:37*58]2146") == "2146" and final_answer("2146") == "2146"
    assert calculator_reward("calculator", "[calc:37*58]2146", "2146") == 1.0
    assert calculator_reward("calculator", "[calc:37*58]", "2146") == 0.0
    train, val = set(split_problems("train")), set(split_problems("val"))
    assert not train & val and len(train) + len(val) == 89 * 89
    rows = make_calculator_dataset(8, seed=1, split="val")
    assert all(int(r["ground_truth"]) == eval(r["prompt"][:-1]) for r in rows)


def test_load_object_names_the_key():
    with pytest.raises(ValueError, match="rollout.multi_turn.env='nope'"):
        load_object("nope", "rollout.multi_turn.env")
    assert load_object("rlsys.envs.tool_env:ToolEnv", "k") is ToolEnv
