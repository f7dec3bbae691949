"""One source for choices: the config accepts exactly what the registries hold (read when a config
is made, so entries registered at run time count), and recipes are found by name."""
import dataclasses

import numpy as np
import pytest

from spikeff import ConfigError, FFConfig, FFNetwork, load_config
from spikeff import config as config_mod
from spikeff import engines, goodness
from spikeff.backend import BACKENDS
from spikeff.encoding import ENCODINGS
from spikeff.learning import LOSSES, LR_SCHEDULES, OPTIMIZERS
from spikeff.negatives import NEGATIVES

# what each choice field must accept: the registry (or module) that implements it
REGISTRIES = {
    "encoding": lambda: ENCODINGS,
    "goodness": goodness.available_goodness,
    "loss": lambda: LOSSES,
    "negatives": lambda: NEGATIVES,
    "optimizer": lambda: list(OPTIMIZERS),
    "lr_schedule": lambda: LR_SCHEDULES,
    "engine": engines.available_engines,
    "backend": lambda: BACKENDS,
}
# settings some values need besides the field itself
COMPANIONS = {("negatives", "hybrid"): {"predict_method": "readout"}}


def test_choice_fields_are_the_registries():
    ch = config_mod.choices()
    for field, registry in REGISTRIES.items():
        assert list(ch[field]) == list(registry()), field
    # every choice field of FFConfig is covered: a str field with a default in choices()
    str_fields = {f.name for f in dataclasses.fields(FFConfig) if f.type == "str"}
    assert set(ch) == str_fields


@pytest.mark.parametrize("field", sorted(config_mod.choices()))
def test_every_registry_entry_is_accepted_and_others_refused(field):
    allowed = config_mod.choices()[field]
    assert len(allowed) >= 2
    for value in allowed:
        cfg = FFConfig(**{field: value, **COMPANIONS.get((field, value), {})})
        assert getattr(cfg, field) == value
        assert getattr(FFConfig.from_dict({field: value, **COMPANIONS.get((field, value), {})}), field) == value
    with pytest.raises(ConfigError) as e:
        FFConfig(**{field: "not_registered"})
    assert str(e.value) == f"{field}: 'not_registered' is not valid; choose one of {list(allowed)}"


def test_goodness_registered_at_run_time_can_be_named_in_a_config(tmp_path, monkeypatch, digits):
    monkeypatch.setattr(goodness, "_REGISTRY", dict(goodness._REGISTRY))    # undone after the test
    toml = tmp_path / "mine.toml"
    toml.write_text('[network]\nhidden_sizes = [20]\nn_steps = 6\n[goodness]\ngoodness = "cubic_relu"\n'
                    '[training]\nepochs = 1\nbatch_size = 40\n')
    with pytest.raises(ConfigError, match="goodness: 'cubic_relu' is not valid"):
        load_config(toml)
    calls = []

    def g(v):
        calls.append(v.shape)
        return np.maximum(v, 0) ** 3

    goodness.register_goodness("cubic_relu", g, lambda v: 3 * np.maximum(v, 0) ** 2, "relu(v)^3")
    assert "cubic_relu" in config_mod.choices()["goodness"]
    cfg = load_config(toml)
    assert cfg.goodness == "cubic_relu" and FFConfig(goodness="cubic_relu").goodness == "cubic_relu"
    net = FFNetwork(cfg).fit(digits.X_train[:80], digits.y_train[:80])
    assert calls, "training did not use the registered goodness"
    assert net.goodness(digits.X_test[:4], digits.y_test[:4]).shape == (4, 1)


def test_engine_registered_at_run_time_is_accepted(monkeypatch):
    monkeypatch.setitem(engines._ENGINES, "my_engine", "spikeff.engines.vectorized")
    assert FFConfig(engine="my_engine").engine == "my_engine"
    assert "my_engine" in config_mod.choices()["engine"]


def test_load_config_takes_a_recipe_name_or_a_path(tmp_path):
    names = config_mod.available_recipes()
    assert {"digits", "fashion_mnist"} <= set(names)
    assert load_config("digits") == load_config(config_mod.MODELS_DIR / "digits.toml") == load_config("models/digits.toml")
    assert load_config("digits.toml") == load_config("digits")
    with pytest.raises(FileNotFoundError) as e:
        load_config("no_such_recipe")
    assert str(names) in str(e.value) and "no_such_recipe" in str(e.value)
    (tmp_path / "x.toml").write_text("[training]\nepochs = 2\n")
    assert load_config(tmp_path / "x.toml").epochs == 2 and load_config(str(tmp_path / "x.toml")).epochs == 2


def test_cli_choices_come_from_the_registries():
    from spikeff.cli import build_parser
    from spikeff.data import DATASETS, IMAGE_DATASETS
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command").choices

    def choices(cmd, dest):
        return list(next(a for a in sub[cmd]._actions if a.dest == dest).choices)

    assert choices("train", "engine") == engines.available_engines()
    assert choices("train", "dataset") == list(DATASETS) == choices("eval", "dataset")
    assert choices("export", "calib_dataset") == list(IMAGE_DATASETS)
    from spikeff.export import nir
    assert choices("export", "nir_flavour") == list(nir.FLAVOURS) and choices("export", "nir_delay") == list(nir.DELAYS)
    assert choices("import", "convention") == list(nir.CONVENTIONS)
