"""The README's main job: `spikeff demo` trains, evaluates and writes metrics, model and figures."""
import json

from spikeff import FFNetwork, cli


def test_demo_writes_metrics_model_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and len(metrics["epochs"]) == 1
    assert 0.0 <= metrics["test_acc"] <= 1.0
    net = FFNetwork.load(out / "model.npz")
    assert net.epochs_done_ == 1
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"raster_layer1.png", "goodness_histograms.png", "confusion_goodness.png"} <= figures
    assert (out / "training_curves.png").stat().st_size > 1000
    assert "spikeff demo: test accuracy" in capsys.readouterr().out
