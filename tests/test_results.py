"""Committed results match the code that claims to make them.

Every ``results/**/*.json`` records its provenance (git commit, environment, threads; see
:func:`spikeff.runs.provenance`). A file made from a recipe (``models/*.toml``) records the recipe's
config hash at the time: when the recipe changes, the file is stale and this test names it (rerun
``make results``, or the command recorded in the file). Files of the digits studies also record,
for every network they trained, the changes their script made to the recipe and the resulting config
hash: re-deriving each config through the script's ``base_config`` catches a change of the script's
defaults as well.
"""
import json
import sys
from pathlib import Path

import pytest

from spikeff import load_config
from spikeff.runs import config_hash, recipe_hash

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted(p for p in (ROOT / "results").rglob("*.json"))
EXP = ROOT / "experiments"


def _id(p):
    return str(p.relative_to(ROOT / "results"))


def test_results_exist():
    assert RESULTS, "no results/*.json committed"


@pytest.mark.parametrize("path", RESULTS, ids=_id)
def test_result_has_provenance_and_matches_its_recipe(path):
    res = json.loads(path.read_text())
    prov = res.get("provenance")
    assert isinstance(prov, dict), f"{_id(path)}: no provenance; regenerate it (make results)"
    assert prov.get("git", {}).get("commit"), f"{_id(path)}: provenance has no git commit"
    assert prov.get("environment", {}).get("numpy"), f"{_id(path)}: provenance has no environment"
    recipe = prov.get("recipe")
    if recipe:
        now = recipe_hash(ROOT / recipe["path"])
        assert now == recipe["config_hash"], (
            f"{_id(path)} is stale: {recipe['path']} has changed since it was made "
            f"(config hash {recipe['config_hash']} then, {now} now); rerun: {res.get('command')}")
        if "recipe_overrides" in res and "config_hash" in prov:
            cfg = load_config(ROOT / recipe["path"]).replace(**res["recipe_overrides"])
            assert config_hash(cfg) == prov["config_hash"], (
                f"{_id(path)}: its config is not the recipe with its recorded overrides")


STUDIES = [p for p in RESULTS if json.loads(p.read_text()).get("configs")]


@pytest.mark.parametrize("path", STUDIES, ids=_id)
def test_study_configs_follow_the_script(path, monkeypatch):
    """Each network of a digits study = the script's base_config at the recorded size + changes."""
    monkeypatch.syspath_prepend(str(EXP))
    import _common
    res = json.loads(path.read_text())
    argv = ["--size", res["size"]] + ([] if res.get("epochs_arg") is None else ["--epochs", str(res["epochs_arg"])])
    mod = __import__(res["experiment"])
    full_epochs = getattr(mod, "EPOCHS_FULL", None)
    args = _common.parse_args(res["experiment"], "", argv, epochs_full=full_epochs)
    assert args.sizes == {k: (tuple(v) if isinstance(v, list) else v) for k, v in res["sizes"].items()} or \
        json.loads(json.dumps(args.sizes)) == res["sizes"], f"{_id(path)}: the script's sizes changed"
    for c in res["configs"]:
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in c["changes"].items()}
        assert config_hash(_common.base_config(args, **changes)) == c["config_hash"], (
            f"{_id(path)} is stale: the script now makes another config for {c['changes']}; rerun: {res['command']}")
