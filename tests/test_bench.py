"""spikeff bench: the quick run works end to end and writes a complete JSON (speed is not tested)."""
import json

import pytest

from spikeff.bench import bench_against, train_flops
from spikeff.cli import main


def test_train_flops_counts_all_gemms():
    sizes, B, T = [10, 4, 3], 2, 5
    per_pass = 2 * T * (10 * 4 + 4 * 3)
    # replay: 5 forward passes' worth of samples (2B + 2B replayed + B neutral) + 2B gradient GEMMs
    assert train_flops(sizes, B, T, store=False) == per_pass * (5 * B + 2 * B)
    assert train_flops(sizes, B, T, readout=False, store=False) == per_pass * (4 * B + 2 * B)
    # store: the first pass (2B + B neutral) + 2B gradient GEMMs, no replay
    assert train_flops(sizes, B, T) == per_pass * (3 * B + 2 * B)


def test_bench_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "gemm,training,memory,kernels,brian2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["quick"] and res["shared_machine"]
    assert res["provenance"]["git"] and res["command"].startswith("spikeff bench --quick --only")
    assert res["peak_gemm"]["peak_gflops"] > 0
    tr = res["training"][0]
    assert tr["update"] == "store"
    for key in ("train_samples_per_s", "achieved_gflops", "gemms_alone_gflops", "gemm_share_pct",
                "fraction_of_peak", "predict_goodness_samples_per_s", "predict_readout_samples_per_s"):
        assert tr[key] > 0
    replay, store = res["memory"]
    assert replay["store_budget_mb"] == 0 and set(replay["update_by_T"].values()) == {"replay"}
    assert store["update_by_T"]["25"] == "store"
    assert set(replay["peak_mb"]) == {"25", "200"}
    assert replay["ratio_max_T_to_min_T"] > 0 and isinstance(replay["within_10pct"], bool)
    kern = res["spike_kernels"]["per_density"]
    assert len(kern) >= 3 and all(r["dense_s"] > 0 and r["sparse_csr_s"] > 0 for r in kern)
    assert "available" in res["brian2"]
    assert res["environment"]["blas"] is not None
    assert "GFLOP/s" in capsys.readouterr().out


def test_bench_bad_input_gets_clear_errors(tmp_path, capsys):
    assert main(["bench", "--quick", "--only", "nope", "--out", str(tmp_path / "b.json")]) == 2
    assert "--only: ['nope'] are not sections" in capsys.readouterr().err
    assert main(["bench", "--quick", "--only", "", "--against", str(tmp_path)]) == 2
    assert "no spikeff checkout there" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(FileNotFoundError, match="no spikeff package"):
        bench_against(tmp_path)
    with pytest.raises(ValueError, match="sections"):
        from spikeff.bench import run_bench
        run_bench(quick=True, sections=("nope",))


def test_time_to_accuracy_stops_at_the_target(tmp_path):
    from spikeff.bench import time_to_accuracy
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("""
[network]
hidden_sizes = [40]
n_steps = 5
[encoding]
max_rate = "1000 Hz"
[goodness]
loss = "symba"
negatives = "readout_hard"
[training]
batch_size = 64
epochs = 3
readout = true
predict_method = "readout"
learning_rate = 0.01
readout_learning_rate = 0.01
""")
    res = time_to_accuracy(str(recipe), "digits", target=0.3, n_inference=50, n_train=500, log=lambda *a: None)
    assert res["reached"] and res["epochs_to_target"] == len(res["per_epoch"]) < 3
    assert res["per_epoch"][-1]["val_acc"] >= 0.3 and res["wall_seconds_to_target"] > 0
    assert res["inference_readout_samples_per_s"] > 0 and res["n_val"] > 0
    never = time_to_accuracy(str(recipe), "digits", target=1.01, max_epochs=1, n_inference=10, n_train=200,
                             log=lambda *a: None)
    assert not never["reached"] and never["wall_minutes_to_target"] is None and len(never["per_epoch"]) == 1
