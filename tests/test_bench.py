"""spikeff bench: the quick run works end to end and writes a complete JSON (speed is not tested)."""
import json

from spikeff.bench import train_flops
from spikeff.cli import main


def test_train_flops_counts_all_gemms():
    # 5 forward passes' worth of samples (2B + 2B replayed + B neutral) + 2B gradient GEMMs
    sizes, B, T = [10, 4, 3], 2, 5
    per_pass = 2 * T * (10 * 4 + 4 * 3)
    assert train_flops(sizes, B, T) == per_pass * (5 * B + 2 * B)
    assert train_flops(sizes, B, T, readout=False) == per_pass * (4 * B + 2 * B)


def test_bench_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["quick"] and res["shared_machine"]
    tr = res["training"][0]
    for key in ("train_samples_per_s", "achieved_gflops", "roofline_gflops", "pct_roofline",
                "predict_goodness_samples_per_s", "predict_readout_samples_per_s"):
        assert tr[key] > 0
    mem = res["memory"][0]
    assert set(mem["peak_mb"]) == {"25", "50", "100", "200"}
    assert mem["ratio_max_T_to_min_T"] > 0 and isinstance(mem["within_10pct"], bool)
    assert "available" in res["brian2"]
    assert res["environment"]["blas"] is not None
    assert "GFLOP/s" in capsys.readouterr().out
