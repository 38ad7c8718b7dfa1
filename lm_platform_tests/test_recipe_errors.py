"""Recipe mistakes as a user meets them: `python -m lm_platform check` prints one line per mistake (file,
line, field path, what is wrong, "did you mean ..."), nothing else, and no second line that only follows
from the first; licenses are SPDX ids checked at load, and a source outside the allowlist fails at load
unless it is excluded from training; a code location that loads a broken recipe fails with that line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lm_platform.cli import main
from lm_platform.recipe import RecipeError, load_recipe
from lm_platform.recipe.licenses import not_on_allowlist, spdx_problem, suggest_spdx
from lm_platform.recipe.loader import BUNDLED_DIR
from lm_platform_tests.conftest import write_demo_variant

REPO = Path(__file__).resolve().parents[1]


def _filter(raw, lang: str, name: str) -> int:
    return next(j for j, f in enumerate(raw["languages"][lang]["filters"]) if f["name"] == name)


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _misspell_filter(raw):
    raw["languages"]["vi"]["filters"][_filter(raw, "vi", "gopher_quality")]["name"] = "gopher_qualty"


def _negative_min_chars(raw):
    raw["languages"]["vi"]["filters"][_filter(raw, "vi", "length")]["min_chars"] = -5


# (mistake, field path of the one line, what the line says)
MISTAKES = [
    (
        lambda r: r["stages"][0]["blend"]["mixture"].update(en_web=0.05),
        "stages.0.blend.mixture",
        ["ratios sum to 0.95, expected 1"],
    ),
    (
        lambda r: _rename(r["stages"][1]["train"], "micro_batch_size", "micro_batch_sise"),
        "stages.1.train.micro_batch_sise",
        ["unknown key 'micro_batch_sise'", "did you mean 'micro_batch_size'?"],
    ),
    (  # a misspelt required key is one mistake, not also a missing 'license'
        lambda r: _rename(r["sources"][1], "license", "licence"),
        "sources.1.licence",
        ["unknown key 'licence'", "did you mean 'license'?"],
    ),
    (
        _misspell_filter,
        "languages.vi.filters.{gopher_quality}.name",
        ["unknown filter 'gopher_qualty'", "did you mean 'gopher_quality'?"],
    ),
    (
        lambda r: _rename(r["stages"][0]["blend"]["mixture"], "vi_news", "vi_newz"),
        "stages.0.blend.mixture.vi_newz",
        ["unknown source 'vi_newz'", "did you mean 'vi_news'?"],
    ),
    (
        lambda r: r["stages"][1].update(init_from="mian"),
        "stages.1.init_from",
        ["'mian' is not a stage", "did you mean 'main'?"],
    ),
    (
        lambda r: r["sources"][3].update(location="/nonexistent/en_web.jsonl.gz"),
        "sources.3.location",
        ["'/nonexistent/en_web.jsonl.gz' does not exist"],
    ),
    (
        lambda r: r["sources"][1].update(license="CC-BY-SA"),
        "sources.1.license",
        ["'CC-BY-SA' is not an SPDX license identifier", "did you mean 'CC-BY-SA-4.0'?", "LicenseRef-"],
    ),
    (
        lambda r: r["sources"][3].update(license="CC-BY-NC-4.0"),
        "sources.3.license",
        [not_on_allowlist(["CC-BY-NC-4.0"]), "exclude_from_training"],
    ),
    (
        _negative_min_chars,
        "languages.vi.filters.{length}.min_chars",
        ["-5 should be greater than or equal to 0"],
    ),
    (
        lambda r: r["evaluations"][0].update(kind="perplexty"),
        "evaluations.0.kind",
        ["'perplexty' is not one of", "did you mean 'perplexity'?"],
    ),
]


@pytest.mark.parametrize(("mutate", "field", "says"), MISTAKES)
def test_each_mistake_is_one_line_naming_the_field_and_the_near_name(tmp_path, capsys, mutate, field, says):
    path = write_demo_variant(tmp_path, mutate, "broken.yaml")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    field = field.format(
        gopher_quality=_filter(raw, "vi", "gopher_qualty") if "{gopher_quality}" in field else "",
        length=_filter(raw, "vi", "length") if "{length}" in field else "",
    )
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    assert len(lines) == 1, lines  # one mistake, one line: no cascade, no traceback
    assert lines[0].startswith(f"{path}:") and f": {field}: " in lines[0], lines[0]
    for text in says:
        assert text in lines[0], lines[0]
    with pytest.raises(RecipeError) as err:  # the loader's own message is the same line
        load_recipe(str(path))
    assert str(err.value) == lines[0]


def test_valid_recipes_check_clean(tmp_path, capsys):
    assert main(["check", "demo", "vi", "ja", str(write_demo_variant(tmp_path, lambda r: None))]) == 0
    out = capsys.readouterr()
    assert out.out == out.err == ""


def test_errors_name_the_line_of_the_yaml_file(tmp_path):
    """Written as a user writes it (comments, flow mappings): the line is where the key is."""
    for entry in BUNDLED_DIR.iterdir():  # the demo's data beside the copy
        if entry.suffix != ".yaml":
            (tmp_path / entry.name).symlink_to(entry)
    text = (BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "      micro_batch_size: 8\n      epochs: 2", "      micro_batch_sise: 8\n      epochs: 2"
    )
    text = text.replace("{name: length, min_chars: 200}", "{name: length, min_chars: -1}", 1)
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    got = err.value.problems
    assert len(got) == 2, got
    for problem, needle in zip(got, ["min_chars: -1", "micro_batch_sise"], strict=True):
        line = int(problem.removeprefix(f"{path}:").split(":", 1)[0])
        assert needle in lines[line - 1], (problem, lines[line - 1])


def test_several_mistakes_give_one_line_each_and_no_cascade(tmp_path):
    def mutate(raw):
        raw["stages"][0]["blend"]["mixture"].update(en_web=0.05)
        raw["stages"][1]["train"]["micro_batch_sise"] = 2
        _negative_min_chars(raw)

    path = write_demo_variant(tmp_path, mutate)
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    fields = [p.removeprefix(f"{path}:").split(": ")[1] for p in err.value.problems]
    assert fields == [
        f"languages.vi.filters.{_filter(load_recipe('demo').model_dump(), 'vi', 'length')}.min_chars",
        "stages.0.blend.mixture",
        "stages.1.train.micro_batch_sise",
    ]  # and not "stages: needs at least 1 item", which only followed from the stages' own mistakes


def test_several_cross_reference_mistakes_give_one_line_each(tmp_path):
    def mutate(raw):
        raw["sources"][3]["license"] = "CC-BY-NC-4.0"
        _rename(raw["stages"][0]["blend"]["mixture"], "vi_news", "vi_newz")
        raw["stages"][0]["blend"]["source_max_epochs"] = {
            "vi_news": 2
        }  # follows from the rename: not reported
        raw["stages"][1]["init_from"] = "mian"

    path = write_demo_variant(tmp_path, mutate)
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    fields = [p.removeprefix(f"{path}:").split(": ")[1] for p in err.value.problems]
    assert fields == ["sources.3.license", "stages.0.blend.mixture.vi_newz", "stages.1.init_from"]


def test_the_check_command_prints_only_the_mistakes_and_exits_non_zero(tmp_path):
    broken = write_demo_variant(tmp_path, lambda r: r["sources"][1].update(license="CC-BY-SA"), "b.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "lm_platform", "check", str(broken)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 1
    assert run.stderr == "" and run.stdout.count("\n") == 1
    assert run.stdout.startswith(f"{broken}:") and "did you mean 'CC-BY-SA-4.0'?" in run.stdout
    ok = subprocess.run([sys.executable, "-m", "lm_platform", "check", "demo"], capture_output=True, env=env)
    assert ok.returncode == 0 and ok.stdout == ok.stderr == b""


@pytest.mark.parametrize(
    ("written", "suggested"),
    [
        ("CC-BY-SA", "CC-BY-SA-4.0"),  # a family without its version: the newest
        ("cc-by-4.0", "CC-BY-4.0"),  # case
        ("Apache 2.0", "Apache-2.0"),  # spaces for dashes
        ("MIT License", "MIT"),
        ("ODC-BY", "ODC-By-1.0"),
    ],
)
def test_near_spdx_ids_are_suggested(written, suggested):
    assert suggest_spdx(written) == suggested
    assert f"did you mean '{suggested}'?" in spdx_problem(written)


def test_spdx_ids_custom_licenses_and_or_later_are_accepted():
    for ok in ("CC0-1.0", "ODC-By-1.0", "GPL-2.0+", "GPL-2.0", "LicenseRef-TheStack-Permissive"):
        assert spdx_problem(ok) is None, ok
    for bad in ("Public Domain", "LicenseRef-", "CC BY SA"):
        assert "not an SPDX license identifier" in spdx_problem(bad)


def test_bundled_recipes_declare_spdx_licenses():
    for name in ("demo", "vi", "ja"):
        r = load_recipe(name)
        licenses = [s.license for s in r.sources] + list(r.license_allowlist)
        licenses += [s.license for s in (r.finetune.instructions if r.finetune else ())]
        assert all(spdx_problem(lic) is None for lic in licenses), name


def _extra_source(raw, **changes):
    extra = {**raw["sources"][0], "name": "vi_extra", "priority": 0, **changes}
    raw["sources"].append(extra)


def test_a_source_excluded_from_training_may_carry_any_license_and_never_trains(tmp_path):
    path = write_demo_variant(
        tmp_path,
        lambda r: _extra_source(r, license="CC-BY-NC-4.0", exclude_from_training=True),
    )
    recipe = load_recipe(str(path))
    assert recipe.source("vi_extra").exclude_from_training
    assert "vi_extra" not in [s.name for s in recipe.tokenizer_sources()]
    assert "vi_news" in [s.name for s in recipe.tokenizer_sources()]  # extend: the target language's sources

    def in_mixture(raw):
        _extra_source(raw, exclude_from_training=True)
        raw["stages"][1]["blend"]["mixture"] = {
            "vi_news": 0.4,
            "vi_extra": 0.1,
            "ja_wiki": 0.3,
            "en_books": 0.2,
        }

    with pytest.raises(
        RecipeError, match=r"stages\.1\.blend\.mixture: source 'vi_extra' is marked exclude_from"
    ):
        load_recipe(str(write_demo_variant(tmp_path, in_mixture, "mixed.yaml")))


@pytest.mark.parametrize(
    ("license", "says"),
    [
        ("CC-BY-NC-4.0", not_on_allowlist(["CC-BY-NC-4.0"])),
        ("CC BY-NC", "did you mean 'CC-BY-NC-4.0'?"),
    ],
)
def test_license_manifests_are_checked_at_load(tmp_path, license, says):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (docs / name).write_text("text", encoding="utf-8")
    manifest = tmp_path / "licenses.json"
    manifest.write_text(
        json.dumps({"a.txt": "CC0-1.0", "b.txt": license, "c.txt": license}), encoding="utf-8"
    )

    def mutate(raw):
        _extra_source(raw, format="text_dir", location=str(docs), license_manifest=str(manifest))
        raw["sources"][-1].pop("id_field")

    with pytest.raises(RecipeError) as err:
        load_recipe(str(write_demo_variant(tmp_path, mutate)))
    (line,) = err.value.problems
    assert "sources.4.license_manifest: 'b.txt' and 1 more: " in line and says in line, line


def test_load_and_the_blend_check_say_it_in_the_same_words():
    from lm_platform.defs.blending import _license_check

    result = _license_check({"licenses": [{"license": "CC-BY-NC-4.0"}, {"license": "CC0-1.0"}]}, {"CC0-1.0"})
    assert not result.passed and result.description == not_on_allowlist(["CC-BY-NC-4.0"])


def test_a_code_location_fails_with_the_short_message(tmp_path):
    """Dagster passes a DagsterError through its load boundary as it is, so the UI's error panel and
    `dg check defs` show the recipe's line first; the `dagster` CLI prints only that line."""
    import dagster as dg
    from dagster._core.errors import DagsterUserCodeLoadError, user_code_error_boundary

    from lm_platform.defs.recipe_load import location_recipe

    broken = write_demo_variant(tmp_path, lambda r: r["stages"][1].update(init_from="mian"), "b.yaml")
    expected = str(pytest.raises(RecipeError, load_recipe, str(broken)).value)
    boundary = user_code_error_boundary(DagsterUserCodeLoadError, lambda: "Error occurred during the loading")
    with pytest.raises(dg.DagsterError) as err, boundary:
        location_recipe(str(broken))
    assert isinstance(err.value, RecipeError) and str(err.value) == expected

    env = {**os.environ, "PYTHONPATH": str(REPO), "LM_PLATFORM_RECIPE": str(broken)}
    env.pop("DAGSTER_HOME", None)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "list", "-m", "lm_platform.definitions"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 1
    assert (run.stdout + run.stderr).strip() == expected


def test_check_names_deprecated_fields_and_still_passes(tmp_path, capsys):
    def flat_lr(raw):
        raw["stages"][0]["lr"] = raw["stages"][0]["train"].pop("lr")

    path = write_demo_variant(tmp_path, flat_lr)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: stages.0.lr is deprecated: use stages.0.train.lr\n"
