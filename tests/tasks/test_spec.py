"""Job specs: a valid spec parses (TOML and JSON alike), every error is named with its path, and
the split properties hold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.scheduler import Requirements, Weights
from node.tasks.spec import (
    JobSpec,
    SpecError,
    SplitSpec,
    directory_files,
    load_spec,
    parse_spec,
    render_spec,
    split_input,
)

WASM = b"\x00asm\x01\x00\x00\x00"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "wc.wasm").write_bytes(WASM)
    (tmp_path / "book.txt").write_text("a b\nc\n")
    (tmp_path / "parts").mkdir()
    for name in ("b.txt", "a.txt", ".hidden"):
        (tmp_path / "parts" / name).write_text(name)
    return tmp_path


SHA = hashlib.sha256(WASM).hexdigest()

GOOD = f"""
version = 1
name = "word count"
redundancy = 2
queue_timeout_s = 120
[module]
path = "wc.wasm"
sha256 = "{SHA}"
[input]
path = "book.txt"
[split]
mode = "records"
fragments = 4
[requirements]
tee_kinds = ["sev-snp", "tdx"]
min_score = 60
cores = 2
memory_mib = 512
accelerators = ["gpu"]
regions = ["eu"]
providers = ["ovh", "aws"]
max_price_core_s = 2000
max_price_gib = 50000
[limits]
fuel = 1_000_000
memory_mib = 128
wall_time_s = 2.5
max_output_bytes = 4096
[aggregation]
kind = "merge-counts"
[weights]
price = 900
"""


def test_a_full_spec_parses(work: Path) -> None:
    (work / "job.toml").write_text(GOOD)
    spec = load_spec(work / "job.toml")
    assert spec.module.path == str(work / "wc.wasm") and spec.module_hash == hashlib.sha256(WASM).digest()
    assert spec.input.path == str(work / "book.txt") and spec.split == SplitSpec("records", 4)
    assert spec.requirements == Requirements(("sev-snp", "tdx"), 600, 2, 512, ("gpu",), ("eu",),
                                             ("ovh", "aws"), 2000, 50000)
    assert spec.limits.wall_time_ms == 2500 and spec.limits.fuel == 1_000_000
    assert spec.redundancy == 2 and spec.queue_timeout_s == 120 and spec.aggregation.kind == "merge-counts"
    assert spec.weights == Weights(price=900)
    assert len(spec.digest()) == 32 and spec.digest() == load_spec(work / "job.toml").digest()


def test_a_spec_becomes_a_submit_command_the_state_accepts(work: Path) -> None:
    from consensus.state import Join, SwarmState, apply
    from consensus.tasks import TASK_REGISTRY, job
    from node.tasks.spec import submit_command

    (work / "job.toml").write_text(GOOD)
    spec = load_spec(work / "job.toml")
    frags = split_input((work / "book.txt").read_bytes(), spec.split)
    cmd = submit_command(spec, job_id="j1", owner="n0", fragments=frags, now_ms=1_000)
    assert (cmd.fragments, cmd.redundancy, cmd.queue_deadline_ms) == (len(frags), 2, 121_000)
    s, r = apply(SwarmState(), Join("n0", "p", "eu", "sev-snp", 900, True))
    s, r = TASK_REGISTRY.apply(s, TASK_REGISTRY.decode(TASK_REGISTRY.encode(cmd)))
    assert r.ok, r.error
    committed = job(s, "j1")
    assert committed is not None and committed["spec"] == spec.digest()


def test_json_is_accepted_with_the_same_meaning(work: Path) -> None:
    import tomllib

    (work / "job.toml").write_text(GOOD)
    (work / "job.json").write_text(json.dumps(tomllib.loads(GOOD)))
    assert load_spec(work / "job.json") == load_spec(work / "job.toml")


def test_defaults_for_a_minimal_spec(work: Path) -> None:
    spec = parse_spec(f'version = 1\n[module]\npath = "wc.wasm"\nsha256 = "{SHA}"\n'
                      '[input]\nobject = "' + "ab" * 16 + '"\n', base_dir=work)
    assert isinstance(spec, JobSpec)
    assert spec.input.object_id == "ab" * 16 and spec.split == SplitSpec("bytes", 1)
    assert spec.redundancy == 1 and spec.aggregation.kind == "concat" and spec.weights == Weights()


def test_a_rendered_spec_parses_to_what_was_asked(work: Path) -> None:
    """render_spec (what the demo, the chaos clients and the tests submit) is read back by the
    parser with every field as given, including a name that needs quoting and a reducer."""
    (work / "red.wasm").write_bytes(WASM + b"r")
    text = render_spec(work / "wc.wasm", work / "book.txt", fragments=2, split="records",
                       aggregation="wasm", name='a "quoted" name 🐝', top="redundancy = 2\n",
                       reducer=work / "red.wasm", extra="[limits]\nfuel = 1000\n")
    spec = parsed(text, work)
    assert spec.name == 'a "quoted" name 🐝' and spec.redundancy == 2 and spec.limits.fuel == 1000
    assert spec.split == SplitSpec("records", 2) and spec.aggregation.kind == "wasm"
    assert spec.module.sha256 == SHA and spec.input.path == str(work / "book.txt")
    assert spec.aggregation.module is not None
    assert spec.aggregation.module.sha256 == hashlib.sha256(WASM + b"r").hexdigest()
    files = render_spec(work / "wc.wasm", work / "parts", fragments=None, split="files")
    assert "fragments" not in files and parsed(files, work).split.mode == "files"


def parsed(text: str, work: Path) -> JobSpec:
    spec = parse_spec(text, base_dir=work)
    assert isinstance(spec, JobSpec)
    return spec


def errors_of(text: str, work: Path, **kw: object) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(text, base_dir=work, **kw)  # type: ignore[arg-type]
    out: dict[str, str] = {}
    for path, why in exc.value.errors:  # a field may have several problems: keep them all
        out[path] = f"{out[path]}; {why}" if path in out else why
    return out


def test_every_error_is_named_at_once(work: Path) -> None:
    bad = """
version = 2
colour = "blue"
redundancy = 0
[module]
path = "wc.bin"
sha256 = "xyz"
[input]
path = "book.txt"
object = "zz"
[split]
mode = "lines"
fragments = 0
[requirements]
tee_kinds = ["sev", 3]
min_score = 101
cores = "two"
max_price_core_s = -1
[limits]
fuel = 0
wall_time_s = -1
[aggregation]
kind = "median"
[weights]
score = 1001
speed = 1
"""
    errs = errors_of(bad, work)
    for path in ("version", "colour", "redundancy", "module.path", "module.sha256", "input",
                 "input.object", "split.mode", "split.fragments", "requirements.tee_kinds",
                 "requirements.min_score", "requirements.cores", "requirements.max_price_core_s",
                 "limits.fuel", "limits.wall_time_s", "aggregation.kind", "weights.score", "weights.speed"):
        assert path in errs, path
    assert "not a known version" in errs["version"] and "unknown key" in errs["colour"]
    assert "not a .wasm file" in errs["module.path"]
    assert "101 outside 0..100" in errs["requirements.min_score"]
    assert "expected an integer, got str" in errs["requirements.cores"]


def test_the_module_hash_must_match_the_file(work: Path) -> None:
    text = GOOD.replace(SHA, "0" * 64)
    errs = errors_of(text, work)
    assert errs["module.sha256"].startswith("does not match wc.wasm: the file hashes to " + SHA)
    assert "cannot read" in errors_of(GOOD.replace('"wc.wasm"', '"gone.wasm"'), work)["module.path"]
    # Without file checks the declared hash is taken as is (the agent checks the bytes it runs).
    assert parse_spec(text, base_dir=work, check_files=False).module.sha256 == "0" * 64


def test_input_and_split_rules(work: Path) -> None:
    assert "not a readable file" in errors_of(GOOD.replace('"book.txt"', '"nope.txt"'), work)["input.path"]
    files = GOOD.replace('mode = "records"\nfragments = 4', 'mode = "files"')
    assert "not a directory" in errors_of(files, work)["input.path"]
    spec = parse_spec(files.replace('"book.txt"', '"parts"'), base_dir=work)
    assert spec.split == SplitSpec("files", 2)
    assert [p.name for p in directory_files(Path(spec.input.path))] == ["a.txt", "b.txt"]
    both = GOOD.replace('mode = "records"\nfragments = 4', 'mode = "files"\nfragments = 3')
    assert "not with mode files" in errors_of(both.replace('"book.txt"', '"parts"'), work)["split.fragments"]
    neither = GOOD.replace('path = "book.txt"', "")
    assert "exactly one of" in errors_of(neither, work)["input"]


def test_aggregation_rules(work: Path) -> None:
    wasm = GOOD.replace('kind = "merge-counts"', f'kind = "wasm"\nmodule = "wc.wasm"\nsha256 = "{SHA}"')
    assert parse_spec(wasm, base_dir=work).aggregation.module is not None
    missing = GOOD.replace('kind = "merge-counts"', 'kind = "wasm"')
    errs = errors_of(missing, work)
    assert "aggregation.module" in errs and "aggregation.sha256" in errs
    hist = GOOD.replace('kind = "merge-counts"', 'kind = "histogram"\nbin_width = "0.5"')
    assert parse_spec(hist, base_dir=work).aggregation.bin_width == "0.5"
    assert "positive decimal" in errors_of(hist.replace('"0.5"', '"-1"'), work)["aggregation.bin_width"]
    assert "only with kind histogram" in errors_of(
        GOOD.replace('kind = "merge-counts"', 'kind = "sum"\nbin_width = 2'), work)["aggregation.bin_width"]


def test_not_toml_and_oversized_specs_are_refused(work: Path) -> None:
    assert "not valid TOML" in errors_of("version = = 1", work)[""]
    assert "not valid JSON" in errors_of("{", work, fmt="json")[""]
    assert "bytes >" in errors_of("#" * 300_000, work)[""]
    errs = errors_of(GOOD.replace("price = 900", "score = 0\nlatency = 0\nbandwidth = 0\nprice = 0\nfit = 0"),
                     work)
    assert "at least one weight" in errs["weights"]


# --------------------------------------------------------------------------- split


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 40))
def test_byte_split_restores_the_input(data: bytes, n: int) -> None:
    parts = split_input(data, SplitSpec("bytes", n))
    assert b"".join(parts) == data
    assert 1 <= len(parts) <= n
    assert len(parts) == min(n, max(1, len(data)))
    if data:
        assert all(parts) and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == split_input(data, SplitSpec("bytes", n))


lines = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(lines, st.booleans(), st.integers(1, 40))
def test_record_split_never_cuts_a_line(recs: list[bytes], final_newline: bool, n: int) -> None:
    data = b"\n".join(recs) + (b"\n" if final_newline and recs else b"")
    parts = split_input(data, SplitSpec("records", n))
    assert b"".join(parts) == data
    assert 1 <= len(parts) <= n
    assert all(parts) or parts == [b""]
    for p in parts[:-1]:
        assert p.endswith(b"\n")  # every cut is just after a newline: no line is ever split
    assert sum(p.count(b"\n") for p in parts) == data.count(b"\n")
    assert parts == split_input(data, SplitSpec("records", n))


def test_record_split_balances_regular_lines() -> None:
    data = b"".join(b"line %03d\n" % i for i in range(100))
    parts = split_input(data, SplitSpec("records", 4))
    assert [p.count(b"\n") for p in parts] == [25, 25, 25, 25]
    line = b"one long line without end"
    assert split_input(line, SplitSpec("records", 5)) == [line]


def test_files_mode_does_not_split_bytes() -> None:
    with pytest.raises(ValueError, match="one fragment per file"):
        split_input(b"x", SplitSpec("files", 2))


PRIVATE = GOOD.replace('[aggregation]\nkind = "merge-counts"\n', "")


@pytest.mark.parametrize(("table", "errors"), [
    ('dataset = "census"\nkind = "count"\nepsilon = 0.5\n', []),
    ('dataset = "census"\nkind = "mean"\nepsilon = 0.5\nlower = 0\nupper = 120\ncontributions = 2\n', []),
    ('dataset = "census"\nkind = "mean"\nepsilon = 0.5\n', ["privacy.lower and privacy.upper"]),
    ('dataset = "census"\nkind = "count"\nepsilon = 0\n', ["privacy.epsilon"]),
    ('dataset = "census"\nkind = "count"\nepsilon = -1\n', ["privacy.epsilon"]),
    ('dataset = "census"\nkind = "count"\n', ["privacy.epsilon"]),
    ('dataset = "census"\nkind = "sum"\nepsilon = 1\nlower = 5\nupper = 5\n',
     ["privacy.lower < privacy.upper, both within ±1e+15"]),
    ('dataset = "census"\nkind = "histogram"\nepsilon = 1\n', ["privacy.categories"]),
    ('dataset = "no spaces"\nkind = "median"\nepsilon = 1\ncolour = 3\n',
     ["privacy.colour", "privacy.dataset", "privacy.kind"]),
    ('dataset = "census"\nkind = "count"\nepsilon = 1\ncontributions = 0\n', ["privacy.contributions"]),
])
def test_the_privacy_table_names_every_error(work: Path, table: str, errors: list[str]) -> None:
    try:
        spec = parse_spec(PRIVATE + "[privacy]\n" + table, base_dir=work)
    except SpecError as exc:
        assert sorted(p for p, _ in exc.errors) == sorted(errors), exc.errors
        return
    assert errors == [] and spec.privacy is not None and spec.privacy.dataset == "census"


def test_privacy_replaces_the_aggregation_and_becomes_a_charged_query(work: Path) -> None:
    from consensus import budgets
    from node.tasks.private_query import decode_query
    from node.tasks.spec import submit_command

    with pytest.raises(SpecError) as err:
        parse_spec(GOOD + '[privacy]\ndataset = "d"\nkind = "count"\nepsilon = 1\n', base_dir=work)
    assert [p for p, _ in err.value.errors] == ["aggregation.kind"]
    spec = parse_spec(PRIVATE + '[privacy]\ndataset = "d"\nkind = "count"\nepsilon = 0.25\n'
                      'contributions = 2\n', base_dir=work)
    cmd = submit_command(spec, job_id="j", owner="n0", fragments=[b"1\n"], now_ms=0)
    assert cmd.privacy is not None and cmd.privacy.dataset == "d"
    assert decode_query(cmd.privacy.query) == spec.privacy
    # OpenDP's map at 2 contributions: the noise was scaled so that the loss is the epsilon asked
    assert cmd.privacy.epsilon == budgets.to_units(0.25)[0]
    assert spec.digest() != parse_spec(PRIVATE + '[privacy]\ndataset = "d"\nkind = "count"\n'
                                       'epsilon = 0.5\n', base_dir=work).digest()


def test_adaptive_replication_keys(work: Path) -> None:
    """``adaptive`` and ``spot_check`` (docs/tasks.md, "Adaptive replication"): the rate in ppm,
    0.1 by default, carried into the submit command the state accepts."""
    from consensus.state import Join, SwarmState, apply
    from consensus.tasks import TASK_REGISTRY, job
    from node.tasks.spec import submit_command

    spec = parse_spec(GOOD.replace("redundancy = 2\n", "redundancy = 2\nadaptive = true\n"
                                                       "spot_check = 0.05\n"), base_dir=work)
    assert spec.adaptive and spec.spot_check_ppm == 50_000
    default = parse_spec(GOOD.replace("redundancy = 2\n", "redundancy = 2\nadaptive = true\n"),
                         base_dir=work)
    assert default.spot_check_ppm == 100_000 and default.digest() != spec.digest()
    off = parse_spec(GOOD.replace("redundancy = 2\n", "redundancy = 2\nadaptive = false\n"),
                     base_dir=work)
    assert not off.adaptive and off.spot_check_ppm == 0 and off.digest() == load_spec_text(work).digest()
    cmd = submit_command(spec, job_id="j1", owner="n0", fragments=[b"a", b"b"], now_ms=0)
    assert cmd.adaptive and cmd.spot_check_ppm == 50_000
    s, _ = apply(SwarmState(), Join("n0", "p", "eu", "sev-snp", 900, True))
    s, r = TASK_REGISTRY.apply(s, TASK_REGISTRY.decode(TASK_REGISTRY.encode(cmd)))
    assert r.ok, r.error
    committed = job(s, "j1")
    assert committed is not None and committed["adapt"] == 50_000
    assert [len(fr) for fr in committed["frags"]] == [1, 1]


def load_spec_text(work: Path) -> JobSpec:
    return parse_spec(GOOD, base_dir=work)


@pytest.mark.parametrize("keys,field,why", [
    ('adaptive = "yes"', "adaptive", "expected true or false"),
    ("adaptive = 1", "adaptive", "expected true or false"),
    ("spot_check = 0.1", "spot_check", "only with adaptive = true"),
    ("adaptive = true\nspot_check = 1.5", "spot_check", "outside 0..1"),
    ("adaptive = true\nspot_check = -0.1", "spot_check", "outside 0..1"),
    ('adaptive = true\nspot_check = "0.1"', "spot_check", "expected a number"),
    ("adaptive = true\nspot_check = true", "spot_check", "expected a number"),
    ("adaptive = true\nspot_check = 0.0000001", "spot_check", "six decimal places"),
    ("adaptive = true\nspot_check = nan", "spot_check", "outside 0..1"),
])
def test_adaptive_errors_are_named(work: Path, keys: str, field: str, why: str) -> None:
    errs = errors_of(GOOD.replace("redundancy = 2\n", f"redundancy = 2\n{keys}\n"), work)
    assert why in errs[field], errs


def test_adaptive_needs_replicas_to_adapt(work: Path) -> None:
    errs = errors_of(GOOD.replace("redundancy = 2\n", "redundancy = 1\nadaptive = true\n"), work)
    assert "needs redundancy 2 or more" in errs["adaptive"]
