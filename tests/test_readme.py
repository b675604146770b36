import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_api_example_runs_as_written(capsys):
    (example,) = [b for b in python_blocks() if "pruner.prune(model, calibration)" in b]
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    match = re.search(r"sparsity (\S+), relative reconstruction error (\S+)", out)
    assert match, out
    assert float(match.group(1)) == 0.5
    assert 0.0 < float(match.group(2)) < 1.0
    w = namespace["model"].model.layers[3].mlp.gate_proj.weight
    assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all())


def test_readme_callback_example_defines_a_callback():
    (block,) = [b for b in python_blocks() if "class StopAfterLayer" in b]
    namespace = {}
    exec(block, namespace)
    from hf_ssgr import PrunerControl, PrunerState, PruningConfig

    control = PrunerControl()
    namespace["StopAfterLayer"]().on_layer_end(PruningConfig(), PrunerState(), control, layer_index=1)
    assert control.should_stop
