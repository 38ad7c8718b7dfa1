"""Export of a fine-tuned model: the model card from lineage (every license that reached the model, exact
token counts from the packed datasets), a directory transformers loads, the hub push; recipe checks."""

from __future__ import annotations

import copy
import json
import logging
import re

import pytest
import torch
import yaml

from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.finetune.card import lineage, model_card
from lm_platform.finetune.export import export_model, push_to_hub
from lm_platform.recipe import RecipeError, load_recipe, parse_recipe
from lm_platform.recipe.finetune import HubConfig
from lm_platform.recipe.loader import recipe_path
from lm_platform_tests.finetune_fixtures import BASE_TOKENIZER, tiny_model
from lm_platform_tests.pack_fixtures import pack_text

LANG = {"vi_news": "vi", "ja_wiki": "ja", "en_books": "en", "en_web": "en"}


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """The demo recipe's storage with real packed datasets for both stages and its checkpoint."""
    recipe = load_recipe("demo")
    base = tmp_path_factory.mktemp("store") / "demo"
    texts = {lang: read_paragraphs(lang) for lang in ("vi", "ja", "en")}
    for st in recipe.stages:
        blend = base / "blend" / st.name / "data.parquet"
        blend.parent.mkdir(parents=True)
        docs = [
            make_doc(f"{src}/{i}", t, src, recipe.source(src).license, LANG[src])
            for src in st.blend.mixture
            for i, t in enumerate(texts[LANG[src]][:20])
        ]
        with DocWriter(blend, batch_size=50) as w:
            w.write_all(docs)
        pack_text(blend, BASE_TOKENIZER, base / "dataset" / st.name, seq_len=64, val_fraction=0.1)
    tiny_model(base / "checkpoint" / "anneal")
    for name, n in (("vi_chat", 321), ("en_alpaca", 123)):
        (base / "adapter" / name).mkdir(parents=True)
        (base / "adapter" / name / "adapter.json").write_text(json.dumps({"target_tokens": n, "rank": 8}))
    return recipe, base


def test_model_card_lists_every_license_and_exact_token_counts(storage):
    recipe, base = storage
    lin = lineage(recipe, "merged/final", base)
    card = model_card(recipe, "demo_chat", "merged/final", lin, base, "bundled:demo", {"perplexity": 12.5})
    assert [s["stage"] for s in lin.stages] == ["main", "anneal"]
    assert {a["name"] for a in lin.adapters} == {"vi_chat", "en_alpaca"}
    # Every license of every source of every stage and every instruction set.
    assert "Licenses that reached the model: CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0" in card
    # Token counts are the packed datasets' exact counts, row by row.
    rows = re.findall(r"^\| (\w+) \| ([\w.-]+) \| (\w+) \| (\d+) \|$", card, re.M)
    for stage in ("main", "anneal"):
        index = json.loads((base / "dataset" / stage / "index.json").read_text())
        got = {src: int(n) for src, lic, st, n in rows if st == stage}
        # what trained the model: the train split, never the held-out validation rows
        train = index["splits"]["train"]
        assert index["splits"]["val"]["tokens"] > 0
        assert got == {s: n for s, n in train["sources"].items() if n}
        assert sum(got.values()) == train["tokens"] < index["tokens"]
        assert all(lic == recipe.source(src).license for src, lic, st, _ in rows if st == stage)
    assert "| vi_chat (instructions) | CC0-1.0 | adapter/vi_chat | 321 |" in card
    # Attribution for CC-BY sources, the share-alike warning for ja_wiki's CC-BY-SA, provenance, scores.
    for member in ("vi_news", "ja_wiki", "en_web", "en_alpaca"):
        assert re.search(rf"^- {member}: .*licensed under CC-BY", card, re.M), member
    assert "Share-alike warning" in card and "CC-BY-SA-4.0" in card
    assert "dare_ties" in card and "della_linear" in card and "| perplexity | 12.5 |" in card
    assert "git commit:" in card and "transformers==" in card and "main=" in card


def test_model_card_under_an_object_store_root_reads_what_the_store_committed(storage, tmp_path):
    """Under an s3:// root the export may run where the cache never filled the packed datasets, blends,
    adapters' records or dedup figures (a fresh pod): the card reads the store's committed copies of those
    small files, without filling the shards, and says exactly what it says on a local root."""
    import shutil

    from lm_platform.storage import LocalCache, LocalStore
    from lm_platform.storage import cache as store_cache

    recipe, base = storage
    local = tmp_path / "local" / "demo"
    shutil.copytree(base, local)
    (local / "dedup" / "figures").mkdir(parents=True)
    (local / "dedup" / "figures" / "vi_news.json").write_text(json.dumps({"docs_in": 40, "exact_removed": 3}))
    for shard, kept in (("00000", 7), ("00001", 5)):  # en_web's quality step: a report per curated shard
        report = {
            "rule": "top 0.6",
            "scored": 10,
            "kept": kept,
            "threshold": 0.5,
            "scores": {},
            "model_auc": 0.9,
        }
        (local / "curated" / "en_web").mkdir(parents=True, exist_ok=True)
        (local / "curated" / "en_web" / f"{shard}.quality.json").write_text(json.dumps(report))
    expected = model_card(
        recipe, "demo_chat", "merged/final", lineage(recipe, "merged/final", local), local, "bundled:demo", {}
    )
    assert (
        "| vi_news | CC-BY-4.0 | main |" in expected and "- vi_news: docs_in=40, exact_removed=3" in expected
    )
    assert "- quality en_web: top 0.6, kept 12 of 20 scored" in expected

    store = LocalStore(tmp_path / "store")
    for kind in sorted(local.iterdir()):
        for item in sorted(kind.iterdir()):
            store.publish(item, f"demo/{kind.name}/{item.name}")
    cache = LocalCache(store, tmp_path / "cache")  # empty, as on a new machine
    store_cache.activate(cache)
    try:
        remote = cache.root / "demo"
        lin = lineage(recipe, "merged/final", remote)
        card = model_card(recipe, "demo_chat", "merged/final", lin, remote, "bundled:demo", {})
    finally:
        store_cache.activate(None)
    assert card == expected
    assert not (remote / "dataset").exists()  # the packed datasets' shards were not fetched for it


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_export_loads_with_its_chat_template_in_the_models_dtype(storage, tmp_path, dtype):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, base = storage
    res = export_model(base / "checkpoint" / "anneal", tmp_path / "out", dtype, "# card\n")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    want = torch.float32 if dtype == "auto" else torch.bfloat16
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {want}  # noqa: SIM118
    assert res.dtype == str(want).removeprefix("torch.")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "xin chào"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert model.get_input_embeddings().num_embeddings == len(tok) == res.vocab_size
    assert (tmp_path / "out" / "README.md").read_text() == "# card\n"


class FakeHub:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, *, token, private, exist_ok):
        self.calls.append(("create_repo", repo_id, token))

    def upload_folder(self, *, repo_id, folder_path, token, commit_message):
        self.calls.append(("upload_folder", repo_id, token, folder_path))


def test_hub_push_uses_the_token_and_never_shows_it(tmp_path, caplog):
    hub = HubConfig(repo_id="org/demo-chat", token_env="LM_TEST_HUB_TOKEN")
    secret = "hf_SECRET_0123456789"
    fake = FakeHub()
    with caplog.at_level(logging.DEBUG):
        res = push_to_hub(tmp_path, hub, fake, env={"LM_TEST_HUB_TOKEN": secret})
    assert res.pushed and [c[0] for c in fake.calls] == ["create_repo", "upload_folder"]
    assert all(c[2] == secret for c in fake.calls)
    assert secret not in repr(res) and secret not in caplog.text
    none = FakeHub()
    res = push_to_hub(tmp_path, hub, none, env={})
    assert not res.pushed and none.calls == [] and "LM_TEST_HUB_TOKEN" in res.message


def _demo_raw():
    return yaml.safe_load(recipe_path("demo").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r["merges"][0]["models"][0].update(model="HuggingFaceTB/SmolLM2-360M"),
            r"merges\.0\.models\.0\.model: .*hub ids are not accepted",
        ),
        (
            lambda r: r["merges"][0]["models"][0].update(model="adapter/nope"),
            r"merges\.0\.models\.0\.model: unknown instruction set 'nope'",
        ),
        (
            lambda r: r["merges"][0].update(base="merged/final"),
            r"merges\.0\.base: unknown earlier merge 'final'",
        ),
        (lambda r: r["merges"][0]["models"][0].update(epsilon=0.1), r"only della methods take epsilon"),
        (lambda r: r["exports"][0].update(model="relative/dir/x"), r"exports\.0\.model"),
        (
            lambda r: r["finetune"]["instructions"][0].update(license="LicenseRef-Proprietary"),
            r"finetune\.instructions\.0\.license: licenses not on the allowlist: \['LicenseRef-Proprietary'\]",
        ),
        (
            lambda r: r["finetune"]["instructions"][0].update(location="missing.jsonl"),
            r"finetune\.instructions\.0\.location: .*does not exist",
        ),
    ],
)
def test_recipe_errors_name_the_field(edit, message):
    raw = copy.deepcopy(_demo_raw())
    edit(raw)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw, recipe_path("demo").parent, "demo.yaml")


def test_demo_recipe_plans_an_adapter_per_set_and_a_two_stage_merge():
    r = load_recipe("demo")
    assert [s.name for s in r.finetune.instructions] == ["vi_chat", "en_alpaca"]
    assert [m.method for m in r.merges] == ["dare_ties", "della_linear"]
    assert "merged/instruct" in [m.model for m in r.merges[1].models]
