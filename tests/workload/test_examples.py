"""The example workloads compute what they claim: word count and column sum against Python on
the same input (random inputs; run in-process by the runner, the code the worker executes)."""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.workload import Grants, Limits, examples
from node.workload.runner import Runner, write_input


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner()


@pytest.fixture(scope="module")
def input_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield os.path.join(d, "stdin")


def _run(runner: Runner, path: str, name: str, data: bytes) -> dict:  # type: ignore[type-arg]
    module, sha = examples.load(name)
    write_input(path, data)
    return runner.run(sha, module, path, Limits(wall_time_s=20), Grants())


def reference_word_count(data: bytes) -> dict[str, int]:
    return dict(Counter(w.lower().decode() for w in re.findall(rb"[A-Za-z0-9]+", data)))


text = st.lists(st.one_of(
    st.sampled_from(["the", "The", "THE", "a", "zebra", "42", "x1", "Ünïcode", "don't"]),
    st.text(max_size=12),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
), max_size=60).flatmap(lambda words: st.lists(
    st.sampled_from([" ", "\n", "\t", ",", ". ", "--", "\r\n", "\0"]),
    min_size=len(words), max_size=len(words)).map(lambda seps: "".join(
        w + s for w, s in zip(words, seps, strict=True))))


@settings(max_examples=60, deadline=None)
@given(text)
def test_wordcount_matches_python(runner: Runner, input_path: str, s: str) -> None:
    data = s.encode("utf-8", "surrogatepass")
    reply = _run(runner, input_path, "wordcount", data)
    assert reply["kind"] is None, reply["message"]
    out = reply["stdout"]
    assert json.loads(out) == reference_word_count(data)
    # Sorted keys: replicas of a fragment produce identical bytes.
    keys = list(json.loads(out))
    assert keys == sorted(keys)


numbers = st.lists(st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False).map(repr),
), max_size=80)


@settings(max_examples=60, deadline=None)
@given(numbers, st.sampled_from(["\n", "\n\n", " \n", "\r\n"]))
def test_sum_matches_python(runner: Runner, input_path: str, nums: list[str], sep: str) -> None:
    data = "".join(n + sep for n in nums).encode()
    reply = _run(runner, input_path, "sum", data)
    assert reply["kind"] is None, reply["message"]
    got = json.loads(reply["stdout"])
    # In input order, one double addition at a time, as the module does (not math.fsum).
    expected = functools.reduce(operator.add, (float(n) for n in nums), 0.0)
    assert got == {"sum": expected, "count": len(nums)}


def test_sum_refuses_a_bad_record(runner: Runner, input_path: str) -> None:
    reply = _run(runner, input_path, "sum", b"1\n2\nthree\n4\n")
    assert reply["kind"] == "exit_code"
    assert reply["exit_code"] == 1
    assert b"line 3" in reply["stderr"]
    assert reply["stdout"] == b""


def test_runner_checks_the_hash_again_before_compiling(input_path: str) -> None:
    # Defence in depth: the worker never compiles (nor caches) bytes under another's hash.
    runner = Runner()
    module, sha = examples.load("sum")
    other = examples.hashes()["wordcount"]
    write_input(input_path, b"1\n")
    reply = runner.run(other, module, input_path, Limits(), Grants())
    assert reply["kind"] == "hash_mismatch"
    assert not runner.has(other)
    assert runner.run(sha, module, input_path, Limits(), Grants())["kind"] is None
